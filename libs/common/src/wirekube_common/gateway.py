"""Who routes what through a WireKubeGateway: pure functions over CRD models.

Shared by the gateway controller (``status.routesInjected``) and the node
agents (which CIDRs go into which WireGuard peer's AllowedIPs, and what the
active gateway node forwards and masquerades), so both sides agree exactly.

The contract between the controller and the agents is ``status.activePeer``:
the controller alone judges health and elects the active peer; agents never
second-guess it. An agent routes a gateway's CIDRs to ``status.activePeer``
whenever it is set, *regardless of* ``status.ready`` (ready=false with an
active peer means "no peer is known to be healthy, the last active one is kept":
taking the routes away would turn a degraded gateway into a dead one).

Client selection (CRD reference, ``spec.clientRefs``): with ``clientRefs``
empty, every mesh peer is a client except

* the gateway's own ``peerRefs`` (they sit in the routed network already), and
* *same-CIDR peers*: peers any of whose allowedIPs overlaps one of the routes
  (the node is inside, or itself advertises, that network; routing it through
  the tunnel would cut it off from its own LAN).

Two more exclusions follow from how WireGuard works and apply to explicit
``clientRefs`` too: *passive* peers (empty allowedIPs) have no tunnel entry on
the gateway, so replies could never reach them; and names that match no
WireKubePeer are simply not clients (yet).

Conflicts, resolved the same way on every node so configurations never flap:

* WireGuard gives each AllowedIP to exactly one peer. When two gateways serve
  the same CIDR to the same client, the gateway whose name sorts first wins
  for that client; different but overlapping CIDRs coexist (longest prefix).
* A route equal to some mesh peer's own allowedIP entry is never injected: it
  would move that node's address away from that node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wirekube_common.crd import Gateway, Peer

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Peers = Mapping[str, Peer] | Iterable[Peer]


@dataclass(frozen=True)
class InjectedRoute:
    """A gateway CIDR that a client routes through the gateway's active peer."""

    cidr: str  # normalised, e.g. "172.20.0.0/16"
    via: str  # the active gateway peer (WireKubePeer name)
    gateway: str

    def key(self) -> str:
        # One AllowedIP belongs to one WireGuard peer: the CIDR alone identifies it.
        return self.cidr


@dataclass(frozen=True)
class GatewayDuty:
    """What the active gateway peer's node does for one gateway: forward traffic
    from the mesh to ``cidrs`` and, with SNAT, masquerade it as ``snat_source``."""

    gateway: str
    cidrs: tuple[str, ...]
    snat: bool
    snat_source: str | None  # spec.snat.sourceIP, else the peer's first IPv4 allowedIP
    client_sources: tuple[str, ...]  # allowedIPs of the clients, sorted

    def key(self) -> str:
        return self.gateway


def _as_map(peers: Peers) -> Mapping[str, Peer]:
    if isinstance(peers, Mapping):
        return peers
    return {p.name: p for p in peers}


def _network(text: str) -> Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def route_networks(gateway: Gateway) -> tuple[ipaddress.IPv4Network, ...]:
    """The gateway's valid route CIDRs, normalised, de-duplicated, in spec order."""
    out: list[ipaddress.IPv4Network] = []
    for route in gateway.spec.routes:
        net = _network(route.cidr)
        if isinstance(net, ipaddress.IPv4Network) and net not in out:
            out.append(net)
    return tuple(out)


def invalid_routes(gateway: Gateway) -> list[str]:
    """Route CIDRs that are not IPv4 networks (the CRD rejects them; defence in depth)."""
    return [
        r.cidr
        for r in gateway.spec.routes
        if not isinstance(_network(r.cidr), ipaddress.IPv4Network)
    ]


def peer_networks(peer: Peer) -> tuple[Network, ...]:
    """A peer's valid allowedIPs as networks (malformed entries are ignored)."""
    nets = (_network(a) for a in peer.spec.allowed_ips or ())
    return tuple(n for n in nets if n is not None)


def is_passive(peer: Peer) -> bool:
    return not peer_networks(peer)


def is_same_cidr(peer: Peer, routes: Iterable[Network]) -> bool:
    """True when one of the peer's allowedIPs overlaps one of ``routes``."""
    mine = peer_networks(peer)
    return any(a.version == r.version and a.overlaps(r) for a in mine for r in routes)


def is_client(gateway: Gateway, peer: Peer) -> bool:
    """Whether ``peer`` routes ``gateway``'s CIDRs through the gateway (see module doc)."""
    spec = gateway.spec
    if spec.client_refs and peer.name not in spec.client_refs:
        return False
    if peer.name in spec.peer_refs or is_passive(peer):
        return False
    return not is_same_cidr(peer, route_networks(gateway))


def clients_for(gateway: Gateway, peers: Peers) -> set[str]:
    """Names of the WireKubePeers that route through ``gateway``."""
    return {name for name, peer in _as_map(peers).items() if is_client(gateway, peer)}


def usable_active_peer(gateway: Gateway, peers: Peers) -> str | None:
    """``status.activePeer`` when it names an existing, non-passive WireKubePeer."""
    active = gateway.status.active_peer
    if not active:
        return None
    peer = _as_map(peers).get(active)
    if peer is None or is_passive(peer):
        return None
    return active


def _taken(peers: Mapping[str, Peer]) -> set[Network]:
    return {net for peer in peers.values() for net in peer_networks(peer)}


def _routes_for(
    peer: Peer, gateways: Iterable[Gateway], peers: Mapping[str, Peer], taken: set[Network]
) -> list[InjectedRoute]:
    claimed: set[ipaddress.IPv4Network] = set()
    out: list[InjectedRoute] = []
    for gateway in sorted(gateways, key=lambda g: g.metadata.name):
        via = usable_active_peer(gateway, peers)
        if via is None or via == peer.name or not is_client(gateway, peer):
            continue
        for net in route_networks(gateway):
            if net in claimed or net in taken:
                continue
            claimed.add(net)
            out.append(InjectedRoute(str(net), via, gateway.metadata.name))
    return out


def active_routes_for(
    peer_name: str, gateways: Iterable[Gateway], peers: Peers
) -> list[InjectedRoute]:
    """The gateway routes ``peer_name``'s agent installs: each CIDR with the
    WireGuard peer (the gateway's active peer) whose AllowedIPs carry it.
    Empty when ``peer_name`` is not a known WireKubePeer."""
    by_name = _as_map(peers)
    peer = by_name.get(peer_name)
    if peer is None:
        return []
    return _routes_for(peer, gateways, by_name, _taken(by_name))


def extra_allowed_ips(
    peer_name: str, gateways: Iterable[Gateway], peers: Peers
) -> dict[str, tuple[str, ...]]:
    """``active_routes_for`` grouped by WireGuard peer: peer name -> extra AllowedIPs."""
    out: dict[str, list[str]] = {}
    for route in active_routes_for(peer_name, gateways, peers):
        out.setdefault(route.via, []).append(route.cidr)
    return {via: tuple(cidrs) for via, cidrs in out.items()}


def routes_injected(gateway: Gateway, gateways: Iterable[Gateway], peers: Peers) -> int:
    """How many of ``gateway``'s CIDRs the active peer carries for at least one
    client (``status.routesInjected``); ``gateways`` is every gateway with the
    active peers it is about to have, ``gateway`` included or not."""
    by_name = _as_map(peers)
    name = gateway.metadata.name
    if usable_active_peer(gateway, by_name) is None:
        return 0
    others = [g for g in gateways if g.metadata.name != name]
    everyone = [*others, gateway]
    taken = _taken(by_name)
    wanted = set(route_networks(gateway))
    carried: set[str] = set()
    for client in clients_for(gateway, by_name):
        for route in _routes_for(by_name[client], everyone, by_name, taken):
            if route.gateway == name:
                carried.add(route.cidr)
        if len(carried) == len(wanted):
            break
    return len(carried)


def duties_for(peer_name: str, gateways: Iterable[Gateway], peers: Peers) -> list[GatewayDuty]:
    """What ``peer_name``'s node must do as the active peer of some gateways."""
    by_name = _as_map(peers)
    me = by_name.get(peer_name)
    if me is None:
        return []
    out: list[GatewayDuty] = []
    for gateway in sorted(gateways, key=lambda g: g.metadata.name):
        if usable_active_peer(gateway, by_name) != peer_name:
            continue
        snat = gateway.spec.snat
        source = None
        if snat is not None and snat.enabled:
            source = snat.source_ip or next(
                (str(n.network_address) for n in peer_networks(me) if n.version == 4), None
            )
        clients = clients_for(gateway, by_name)
        sources = sorted(
            {str(n) for c in clients for n in peer_networks(by_name[c])},
        )
        out.append(
            GatewayDuty(
                gateway=gateway.metadata.name,
                cidrs=tuple(str(n) for n in route_networks(gateway)),
                snat=bool(snat and snat.enabled),
                snat_source=source,
                client_sources=tuple(sources),
            )
        )
    return out
