"""WireKubePeer: one per participating node, written by that node's agent.

``spec`` is mostly the agent's, except ``allowedIPs`` which a user may take
over (see the agent's registration logic); ``status`` is the agent's report of
what its data plane is doing.
"""

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
    get_str_map,
    object_dict,
    prune,
    section,
)

KIND = "WireKubePeer"
PLURAL = "wirekubepeers"
NODE_LABEL = "wirekube.io/node"
NAME_PREFIX = "node-"

TRANSPORTS: tuple[str, ...] = ("direct", "relay")


def peer_name_for_node(node: str) -> str:
    return f"{NAME_PREFIX}{node}"


def derive_transport_mode(peer_transports: Mapping[str, str]) -> str:
    """Aggregate per-peer transports: all direct / all relay / mixed; "" if none."""
    kinds = set(peer_transports.values())
    if not kinds:
        return ""
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed"


@dataclass(frozen=True)
class PeerSpec:
    public_key: str
    endpoint: str | None = None
    # None and () both mean passive mode; kept apart only for exact round-trips.
    allowed_ips: tuple[str, ...] | None = None
    persistent_keepalive: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "spec") -> PeerSpec:
        allowed = d.get("allowedIPs")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed)
        ):
            raise InvalidObject(f"{path}.allowedIPs", "expected a list of strings")
        return cls(
            public_key=get_required(d, "publicKey", str, path),
            endpoint=get(d, "endpoint", str, None, path),  # type: ignore[arg-type]
            allowed_ips=tuple(allowed) if allowed is not None else None,
            persistent_keepalive=get(d, "persistentKeepalive", int, None, path),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "publicKey": self.public_key,
                "endpoint": self.endpoint,
                "allowedIPs": list(self.allowed_ips) if self.allowed_ips is not None else None,
                "persistentKeepalive": self.persistent_keepalive,
            }
        )


# Bounds of ``status.peerPaths`` (the CRD schema enforces the same).
MAX_PEER_PATHS = 4096
MAX_CANDIDATES = 4


@dataclass(frozen=True)
class ProbeCandidate:
    """One direct candidate of a peer and when a probe to it was last answered."""

    endpoint: str
    last_answer: str | None = None  # RFC 3339; None: never answered (recently)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str) -> ProbeCandidate:
        return cls(
            endpoint=get_required(d, "endpoint", str, path),
            last_answer=get(d, "lastAnswer", str, None, path),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return prune({"endpoint": self.endpoint, "lastAnswer": self.last_answer})


@dataclass(frozen=True)
class PeerPath:
    """Why the path to one peer is what it is (``status.peerPaths[name]``).

    ``rule`` is what both sides' published NAT facts say of the pair
    (same-network, tcp-only, public, cone-cone, cone-symmetric,
    symmetric-port-restricted, symmetric-symmetric, unknown); ``reason`` is
    the branch of the agent's path decision that holds it there (mode-always,
    mode-never, no-relay, probe-answered, direct-failed, predicted-relay,
    probing). docs/why-relayed.md lists them in words.
    """

    transport: str  # direct | relay
    phase: str  # probing | up | down
    rule: str
    reason: str
    since: str | None = None  # RFC 3339: when this transport began
    failures: int = 0  # direct paths to this peer that died (consecutive count)
    endpoint: str | None = None  # the direct endpoint in use or tried
    next_attempt: str | None = None  # RFC 3339: the next direct probe burst (relayed)
    rtt_ms: float | None = None  # the last probe's round trip on the path in use
    candidates: tuple[ProbeCandidate, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str) -> PeerPath:
        raw = d.get("candidates") or []
        if not isinstance(raw, list) or not all(isinstance(c, Mapping) for c in raw):
            raise InvalidObject(f"{path}.candidates", "expected a list of objects")
        return cls(
            transport=get_required(d, "transport", str, path),
            phase=get(d, "phase", str, "", path),
            rule=get(d, "rule", str, "unknown", path),
            reason=get(d, "reason", str, "", path),
            since=get(d, "since", str, None, path),  # type: ignore[arg-type]
            failures=get(d, "failures", int, 0, path),
            endpoint=get(d, "endpoint", str, None, path),  # type: ignore[arg-type]
            next_attempt=get(d, "nextAttempt", str, None, path),  # type: ignore[arg-type]
            rtt_ms=get(d, "rttMs", float, None, path),  # type: ignore[arg-type]
            candidates=tuple(
                ProbeCandidate.from_dict(c, f"{path}.candidates[{i}]") for i, c in enumerate(raw)
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "transport": self.transport,
                "phase": self.phase,
                "rule": self.rule,
                "reason": self.reason,
                "since": self.since,
                "failures": self.failures or None,
                "endpoint": self.endpoint,
                "nextAttempt": self.next_attempt,
                "rttMs": self.rtt_ms,
                "candidates": [c.to_dict() for c in self.candidates] or None,
            }
        )


def get_peer_paths(d: Mapping[str, Any], path: str) -> dict[str, PeerPath]:
    value = d.get("peerPaths")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()
    ):
        raise InvalidObject(f"{path}.peerPaths", "expected a map of objects")
    return {k: PeerPath.from_dict(v, f"{path}.peerPaths.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class PeerStatus:
    connected: bool | None = None
    nat_type: str | None = None
    transport_mode: str | None = None
    peer_transports: Mapping[str, str] = field(default_factory=dict)
    endpoint_discovery_method: str | None = None
    last_handshake: str | None = None  # RFC 3339, as the API stores it
    nat_mapping: str | None = None
    nat_filtering: str | None = None
    internal_endpoint: str | None = None
    public_ip: str | None = None
    observed_generation: int | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()
    # Why each peer's path is what it is (ours beyond the seed's reference).
    peer_paths: Mapping[str, PeerPath] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "status") -> PeerStatus:
        return cls(
            connected=get(d, "connected", bool, None, path),  # type: ignore[arg-type]
            nat_type=get(d, "natType", str, None, path),  # type: ignore[arg-type]
            transport_mode=get(d, "transportMode", str, None, path),  # type: ignore[arg-type]
            peer_transports=get_str_map(d, "peerTransports", path),
            endpoint_discovery_method=get(d, "endpointDiscoveryMethod", str, None, path),  # type: ignore[arg-type]
            last_handshake=get(d, "lastHandshake", str, None, path),  # type: ignore[arg-type]
            nat_mapping=get(d, "natMapping", str, None, path),  # type: ignore[arg-type]
            nat_filtering=get(d, "natFiltering", str, None, path),  # type: ignore[arg-type]
            internal_endpoint=get(d, "internalEndpoint", str, None, path),  # type: ignore[arg-type]
            public_ip=get(d, "publicIP", str, None, path),  # type: ignore[arg-type]
            observed_generation=get(d, "observedGeneration", int, None, path),  # type: ignore[arg-type]
            conditions=get_conditions(d, path),
            peer_paths=get_peer_paths(d, path),
        )

    def to_dict(self) -> dict[str, Any]:
        return prune(
            {
                "connected": self.connected,
                "natType": self.nat_type,
                "transportMode": self.transport_mode,
                "peerTransports": dict(self.peer_transports) if self.peer_transports else None,
                "endpointDiscoveryMethod": self.endpoint_discovery_method,
                "lastHandshake": self.last_handshake,
                "natMapping": self.nat_mapping,
                "natFiltering": self.nat_filtering,
                "internalEndpoint": self.internal_endpoint,
                "publicIP": self.public_ip,
                "observedGeneration": self.observed_generation,
                "conditions": [dict(c) for c in self.conditions] if self.conditions else None,
                "peerPaths": (
                    {k: v.to_dict() for k, v in self.peer_paths.items()}
                    if self.peer_paths
                    else None
                ),
            }
        )


@dataclass(frozen=True)
class Peer:
    metadata: ObjectMeta
    spec: PeerSpec
    status: PeerStatus = field(default_factory=PeerStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def node(self) -> str | None:
        label = self.metadata.labels.get(NODE_LABEL)
        if label:
            return label
        if self.metadata.name.startswith(NAME_PREFIX):
            return self.metadata.name[len(NAME_PREFIX) :]
        return None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Peer:
        return cls(
            metadata=ObjectMeta.from_dict(obj),
            spec=PeerSpec.from_dict(section(obj, "spec", "spec")),
            status=PeerStatus.from_dict(section(obj, "status", "status")),
        )

    def to_dict(self) -> dict[str, Any]:
        return object_dict(KIND, self.metadata, self.spec.to_dict(), self.status.to_dict())
