"""The mesh as the CLI shows it: WireKubePeers, the mesh spec and Nodes in,
one immutable view out. Pure (no I/O), so every command's data is unit-tested.

A pair's path is read from both ends: each agent publishes, for every peer,
the transport it uses (``peerTransports``) and why (``peerPaths``). Both
agree on a settled pair; "mixed" is a pair in transition (one end moved
first), "down" a pair where at least one end has no working path.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wirekube_common.crd import InvalidObject, Mesh, MeshSpec, Peer, PeerPath

VPN_LABEL = "wirekube.io/vpn-enabled"
PairState = Literal["direct", "relay", "mixed", "down"]


class UnknownNode(LookupError):
    """A node name that is not in the mesh (the message lists the known ones)."""


@dataclass(frozen=True)
class NodeView:
    node: str
    peer: str  # the WireKubePeer's name
    public_key: str
    endpoint: str | None
    discovery: str | None
    nat_type: str
    nat_mapping: str
    nat_filtering: str
    public_ip: str
    internal_endpoint: str | None
    connected: bool | None
    last_handshake: str | None
    created: str
    transports: Mapping[str, str] = field(default_factory=dict)  # by peer name
    paths: Mapping[str, PeerPath] = field(default_factory=dict)  # by peer name
    ready: Mapping[str, Any] | None = None  # the Ready condition

    @property
    def direct(self) -> int:
        return sum(1 for t in self.transports.values() if t == "direct")

    @property
    def relayed(self) -> int:
        return sum(1 for t in self.transports.values() if t == "relay")

    @property
    def median_rtt_ms(self) -> float | None:
        rtts = [p.rtt_ms for p in self.paths.values() if p.rtt_ms is not None]
        return round(statistics.median(rtts), 2) if rtts else None

    @property
    def network(self) -> str:
        """What groups nodes into networks: one public address = one NAT."""
        if self.nat_mapping == "none":
            return "public"
        if self.nat_filtering == "blocked":
            return f"tcp-only {self.public_ip or self.node}"
        return self.public_ip or f"unknown ({self.node})"


@dataclass(frozen=True)
class PairView:
    a: NodeView
    b: NodeView
    state: PairState
    a_path: PeerPath | None  # a's entry for b
    b_path: PeerPath | None  # b's entry for a
    a_transport: str | None
    b_transport: str | None

    @property
    def rtt_ms(self) -> float | None:
        rtts = [p.rtt_ms for p in (self.a_path, self.b_path) if p and p.rtt_ms is not None]
        # each end publishes the RTT on the path it uses (direct or relay)
        return (
            round(statistics.median(rtts), 2)
            if rtts and self.state in ("direct", "relay")
            else None
        )


@dataclass(frozen=True)
class MeshView:
    nodes: tuple[NodeView, ...]
    mesh: MeshSpec | None  # None: no WireKubeMesh "default"
    labelled_nodes: tuple[str, ...] = ()  # Node objects labelled for the mesh
    invalid: tuple[tuple[str, str], ...] = ()  # WireKubePeers that do not parse

    @property
    def spec(self) -> MeshSpec:
        return self.mesh if self.mesh is not None else MeshSpec()

    def node(self, name: str) -> NodeView:
        for n in self.nodes:
            if name in (n.node, n.peer):
                return n
        known = ", ".join(n.node for n in self.nodes) or "none"
        raise UnknownNode(f"no node {name!r} in the mesh (nodes: {known})")

    def pair(self, a: str, b: str) -> PairView:
        return pair_view(self.node(a), self.node(b))

    def pairs(self) -> list[PairView]:
        nodes = self.nodes
        return [pair_view(x, y) for i, x in enumerate(nodes) for y in nodes[i + 1 :]]


def pair_view(a: NodeView, b: NodeView) -> PairView:
    ta, tb = a.transports.get(b.peer), b.transports.get(a.peer)
    state: PairState
    if ta is None or tb is None:
        state = "down"
    elif ta == tb:
        state = "direct" if ta == "direct" else "relay"
    else:
        state = "mixed"
    return PairView(a, b, state, a.paths.get(b.peer), b.paths.get(a.peer), ta, tb)


def node_view(peer: Peer) -> NodeView:
    st = peer.status
    ready = next((c for c in st.conditions if c.get("type") == "Ready"), None)
    return NodeView(
        node=peer.node or peer.name,
        peer=peer.name,
        public_key=peer.spec.public_key,
        endpoint=peer.spec.endpoint,
        discovery=st.endpoint_discovery_method,
        nat_type=st.nat_type or "",
        nat_mapping=st.nat_mapping or "",
        nat_filtering=st.nat_filtering or "",
        public_ip=st.public_ip or "",
        internal_endpoint=st.internal_endpoint,
        connected=st.connected,
        last_handshake=st.last_handshake,
        created=peer.metadata.creation_timestamp,
        transports=dict(st.peer_transports),
        paths=dict(st.peer_paths),
        ready=ready,
    )


def build(
    peers: Iterable[Mapping[str, Any]],
    mesh: Mapping[str, Any] | None,
    nodes: Iterable[Mapping[str, Any]] = (),
) -> MeshView:
    """The view of raw API objects (lists' ``items``)."""
    views: list[NodeView] = []
    invalid: list[tuple[str, str]] = []
    for obj in peers:
        name = str((obj.get("metadata") or {}).get("name", "?"))
        try:
            views.append(node_view(Peer.from_dict(obj)))
        except (InvalidObject, ValueError, TypeError) as exc:
            invalid.append((name, str(exc)))
    spec: MeshSpec | None = None
    if mesh is not None:
        try:
            spec = Mesh.from_dict(mesh).spec
        except (InvalidObject, ValueError, TypeError) as exc:
            invalid.append(("WireKubeMesh default", str(exc)))
            spec = MeshSpec()
    labelled = tuple(
        sorted(
            str(n["metadata"]["name"])
            for n in nodes
            if ((n.get("metadata") or {}).get("labels") or {}).get(VPN_LABEL) == "true"
        )
    )
    views.sort(key=lambda v: v.node)
    return MeshView(tuple(views), spec, labelled, tuple(invalid))
