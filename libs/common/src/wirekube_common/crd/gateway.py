"""WireKubeGateway: a virtual gateway to networks behind designated mesh nodes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.crd.base import (
    InvalidObject,
    ObjectMeta,
    get,
    get_conditions,
    get_required,
    get_str_list,
    get_str_map,
    object_dict,
    prune,
    section,
)

KIND = "WireKubeGateway"
PLURAL = "wirekubegateways"


@dataclass(frozen=True)
class GatewayRoute:
    cidr: str
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return prune({"cidr": self.cidr, "description": self.description})


@dataclass(frozen=True)
class GatewaySNAT:
    enabled: bool
    source_ip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return prune({"enabled": self.enabled, "sourceIP": self.source_ip})


@dataclass(frozen=True)
class GatewayHealthCheck:
    enabled: bool
    target: str
    interval_seconds: int = 30
    timeout_seconds: int = 5
    failure_threshold: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "target": self.target,
            "intervalSeconds": self.interval_seconds,
            "timeoutSeconds": self.timeout_seconds,
            "failureThreshold": self.failure_threshold,
        }


@dataclass(frozen=True)
class GatewaySpec:
    peer_refs: tuple[str, ...]
    routes: tuple[GatewayRoute, ...]
    client_refs: tuple[str, ...] = ()
    snat: GatewaySNAT | None = None
    health_check: GatewayHealthCheck | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "spec") -> GatewaySpec:
        peer_refs = get_str_list(d, "peerRefs", path)
        if not peer_refs:
            raise InvalidObject(f"{path}.peerRefs", "at least one peer is required")
        raw_routes = d.get("routes")
        if not isinstance(raw_routes, list) or not raw_routes:
            raise InvalidObject(f"{path}.routes", "at least one route is required")
        routes = []
        for i, r in enumerate(raw_routes):
            rpath = f"{path}.routes[{i}]"
            if not isinstance(r, Mapping):
                raise InvalidObject(rpath, "expected an object")
            routes.append(
                GatewayRoute(
                    cidr=get_required(r, "cidr", str, rpath),
                    description=get(r, "description", str, None, rpath),  # type: ignore[arg-type]
                )
            )
        snat = None
        if "snat" in d:
            s = section(d, "snat", f"{path}.snat")
            snat = GatewaySNAT(
                enabled=get_required(s, "enabled", bool, f"{path}.snat"),
                source_ip=get(s, "sourceIP", str, None, f"{path}.snat"),  # type: ignore[arg-type]
            )
        health = None
        if "healthCheck" in d:
            h = section(d, "healthCheck", f"{path}.healthCheck")
            hp = f"{path}.healthCheck"
            health = GatewayHealthCheck(
                enabled=get_required(h, "enabled", bool, hp),
                target=get_required(h, "target", str, hp),
                interval_seconds=get(h, "intervalSeconds", int, 30, hp),
                timeout_seconds=get(h, "timeoutSeconds", int, 5, hp),
                failure_threshold=get(h, "failureThreshold", int, 3, hp),
            )
        return cls(
            peer_refs=peer_refs,
            routes=tuple(routes),
            client_refs=get_str_list(d, "clientRefs", path),
            snat=snat,
            health_check=health,
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "peerRefs": list(self.peer_refs),
                "clientRefs": list(self.client_refs) if self.client_refs else None,
                "routes": [r.to_dict() for r in self.routes],
                "snat": self.snat.to_dict() if self.snat else None,
                "healthCheck": self.health_check.to_dict() if self.health_check else None,
            }
        )


@dataclass(frozen=True)
class GatewayStatus:
    active_peer: str | None = None
    ready: bool | None = None
    routes_injected: int | None = None
    peer_health: Mapping[str, str] = field(default_factory=dict)
    last_health_check: str | None = None
    observed_generation: int | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "status") -> GatewayStatus:
        return cls(
            active_peer=get(d, "activePeer", str, None, path),  # type: ignore[arg-type]
            ready=get(d, "ready", bool, None, path),  # type: ignore[arg-type]
            routes_injected=get(d, "routesInjected", int, None, path),  # type: ignore[arg-type]
            peer_health=get_str_map(d, "peerHealth", path),
            last_health_check=get(d, "lastHealthCheck", str, None, path),  # type: ignore[arg-type]
            observed_generation=get(d, "observedGeneration", int, None, path),  # type: ignore[arg-type]
            conditions=get_conditions(d, path),
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "activePeer": self.active_peer,
                "ready": self.ready,
                "routesInjected": self.routes_injected,
                "peerHealth": dict(self.peer_health) if self.peer_health else None,
                "lastHealthCheck": self.last_health_check,
                "observedGeneration": self.observed_generation,
                "conditions": [dict(c) for c in self.conditions] if self.conditions else None,
            }
        )


@dataclass(frozen=True)
class Gateway:
    metadata: ObjectMeta
    spec: GatewaySpec
    status: GatewayStatus = field(default_factory=GatewayStatus)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Gateway:
        return cls(
            metadata=ObjectMeta.from_dict(obj),
            spec=GatewaySpec.from_dict(section(obj, "spec", "spec")),
            status=GatewayStatus.from_dict(section(obj, "status", "status")),
        )

    def to_dict(self) -> dict[str, Any]:
        return object_dict(KIND, self.metadata, self.spec.to_dict(), self.status.to_dict())
