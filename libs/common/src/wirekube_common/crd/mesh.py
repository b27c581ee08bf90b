"""WireKubeMesh: global mesh settings, normally one object named ``default``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wirekube_common.crd.base import (
    InvalidObject,
    ObjectMeta,
    get,
    get_required,
    get_str_list,
    object_dict,
    prune,
    section,
)

KIND = "WireKubeMesh"
PLURAL = "wirekubemeshes"
DEFAULT_NAME = "default"

RelayMode = Literal["auto", "always", "never"]
RELAY_MODES: tuple[str, ...] = ("auto", "always", "never")
RELAY_PROVIDERS: tuple[str, ...] = ("external", "managed")
#: ``tls`` is ours beyond the seed: the same relay framing inside TLS (port 443
#: through firewalls that pass only TLS).
RELAY_TRANSPORTS: tuple[str, ...] = ("tcp", "tls")


@dataclass(frozen=True)
class ExternalRelay:
    """``serverName`` and ``proxy`` are ours beyond the seed: the name a TLS
    relay's certificate must carry (default: the endpoint's host) and an HTTP
    CONNECT proxy URL (default: the agent's HTTPS_PROXY/NO_PROXY)."""

    endpoint: str
    transport: str = "tcp"
    server_name: str | None = None
    proxy: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str) -> ExternalRelay:
        transport = get(d, "transport", str, "tcp", path)
        if transport not in RELAY_TRANSPORTS:
            raise InvalidObject(
                f"{path}.transport", f"must be one of {', '.join(RELAY_TRANSPORTS)}"
            )
        return cls(
            endpoint=get_required(d, "endpoint", str, path),
            transport=transport,
            server_name=get(d, "serverName", str, None, path),  # type: ignore[arg-type]
            proxy=get(d, "proxy", str, None, path),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "endpoint": self.endpoint,
                "transport": self.transport,
                "serverName": self.server_name,
                "proxy": self.proxy,
            }
        )


@dataclass(frozen=True)
class ManagedRelay:
    """``spec.relay.managed``. ``externalIPs`` is an extension beyond the seed
    (docs/managed-relay.md): the addresses given to the relay Service's
    ``spec.externalIPs``, which a ``ClusterIP`` relay needs to be reachable at
    all (agents never use a ClusterIP)."""

    replicas: int = 1
    service_type: str = "LoadBalancer"
    port: int = 3478
    external_ips: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str) -> ManagedRelay:
        return cls(
            replicas=get(d, "replicas", int, 1, path),
            service_type=get(d, "serviceType", str, "LoadBalancer", path),
            port=get(d, "port", int, 3478, path),
            external_ips=get_str_list(d, "externalIPs", path),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replicas": self.replicas,
            "serviceType": self.service_type,
            "port": self.port,
        }
        if self.external_ips:
            out["externalIPs"] = list(self.external_ips)
        return out


@dataclass(frozen=True)
class RelaySpec:
    mode: str = "auto"
    provider: str | None = None
    handshake_timeout_seconds: int = 30
    direct_retry_interval_seconds: int = 120
    external: ExternalRelay | None = None
    managed: ManagedRelay | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str) -> RelaySpec:
        mode = get(d, "mode", str, "auto", path)
        if mode not in RELAY_MODES:
            raise InvalidObject(f"{path}.mode", f"must be one of {', '.join(RELAY_MODES)}")
        provider = get(d, "provider", str, None, path)  # type: ignore[arg-type]
        if provider is not None and provider not in RELAY_PROVIDERS:
            raise InvalidObject(f"{path}.provider", f"must be one of {', '.join(RELAY_PROVIDERS)}")
        ext = section(d, "external", f"{path}.external")
        man = section(d, "managed", f"{path}.managed")
        external = ExternalRelay.from_dict(ext, f"{path}.external") if "external" in d else None
        if provider == "external" and external is None:
            raise InvalidObject(f"{path}.external.endpoint", "required when provider is external")
        return cls(
            mode=mode,
            provider=provider,
            handshake_timeout_seconds=get(d, "handshakeTimeoutSeconds", int, 30, path),
            direct_retry_interval_seconds=get(d, "directRetryIntervalSeconds", int, 120, path),
            external=external,
            managed=ManagedRelay.from_dict(man, f"{path}.managed") if "managed" in d else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "mode": self.mode,
                "provider": self.provider,
                "handshakeTimeoutSeconds": self.handshake_timeout_seconds,
                "directRetryIntervalSeconds": self.direct_retry_interval_seconds,
                "external": self.external.to_dict() if self.external else None,
                "managed": self.managed.to_dict() if self.managed else None,
            }
        )


@dataclass(frozen=True)
class MeshSpec:
    listen_port: int = 51820
    interface_name: str = "wire_kube"
    mtu: int = 1420
    stun_servers: tuple[str, ...] = ()
    relay: RelaySpec = field(default_factory=RelaySpec)
    # Ours beyond the seed (docs/keyrotation.md): every agent makes a new key
    # pair this often; None: keys rotate only when asked (the Node annotation).
    key_rotation_interval_hours: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "spec") -> MeshSpec:
        interval = get(d, "keyRotationIntervalHours", float, None, path)  # type: ignore[arg-type]
        if interval is not None and not interval > 0:
            raise InvalidObject(f"{path}.keyRotationIntervalHours", "must be greater than 0")
        return cls(
            listen_port=get(d, "listenPort", int, 51820, path),
            interface_name=get(d, "interfaceName", str, "wire_kube", path),
            mtu=get(d, "mtu", int, 1420, path),
            stun_servers=get_str_list(d, "stunServers", path),
            relay=RelaySpec.from_dict(section(d, "relay", f"{path}.relay"), f"{path}.relay"),
            key_rotation_interval_hours=interval,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "listenPort": self.listen_port,
            "interfaceName": self.interface_name,
            "mtu": self.mtu,
        }
        if self.stun_servers:
            out["stunServers"] = list(self.stun_servers)
        out["relay"] = self.relay.to_dict()
        if self.key_rotation_interval_hours is not None:
            out["keyRotationIntervalHours"] = self.key_rotation_interval_hours
        return out


@dataclass(frozen=True)
class Mesh:
    metadata: ObjectMeta
    spec: MeshSpec = field(default_factory=MeshSpec)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Mesh:
        return cls(
            metadata=ObjectMeta.from_dict(obj),
            spec=MeshSpec.from_dict(section(obj, "spec", "spec")),
        )

    def to_dict(self) -> dict[str, Any]:
        return object_dict(KIND, self.metadata, self.spec.to_dict())
