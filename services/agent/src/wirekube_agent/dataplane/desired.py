"""Desired state of this node's data plane, as plain data. Pure.

From the other nodes' validated peers and each peer's current path, compute
the WireGuard peer entries, the routes in our table and our ip rules. Nothing
here looks at the kernel: ``diff`` compares the result with what the kernel
reports, and ``reconciler`` applies only the difference.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace

from wirekube_agent.model import (
    FAMILY_OF_VERSION,
    FWMARK,
    ROUTE_TABLE,
    RULE_PRIORITY_CONTROL,
    RULE_PRIORITY_MARKED,
    RULE_PRIORITY_TABLE,
    DesiredState,
    Endpoint,
    IPAddress,
    IPNetwork,
    NodeInfo,
    RemotePeer,
    Route,
    Rule,
    WgPeer,
)
from wirekube_agent.paths.rules import PathState
from wirekube_agent.timers import DEFAULT_PERSISTENT_KEEPALIVE_S

MAIN_TABLE = 254


def select_peers(
    peers: Mapping[str, RemotePeer], own_key: bytes, node: NodeInfo
) -> tuple[dict[str, RemotePeer], list[tuple[str, str]]]:
    """The peers this node configures, with every conflict resolved.

    Left out: passive peers, our own key, a second object claiming a key that
    is already taken. Dropped from a peer's allowedIPs: a prefix another peer
    already claims, and any prefix containing this node's own address. Claims
    are taken oldest first (then by name), so a conflict resolves the same way
    on every node and in favour of the object that was there first.
    Returns the accepted peers and (peer, reason) pairs for what was left out.
    """
    warnings: list[tuple[str, str]] = []
    own_ips = set(node.internal_ips) | set(node.external_ips)
    owner: dict[IPNetwork, str] = {}
    key_owner: dict[bytes, str] = {}
    accepted: dict[str, RemotePeer] = {}
    for peer in sorted(peers.values(), key=lambda p: (p.created or "~", p.name)):
        if peer.public_key == own_key or peer.passive:
            continue  # our own object / user-managed passive mode
        if peer.public_key in key_owner:
            warnings.append((peer.name, f"public key already used by {key_owner[peer.public_key]}"))
            continue
        key_owner[peer.public_key] = peer.name
        allowed: list[IPNetwork] = []
        for net in peer.allowed_ips:
            if any(ip in net for ip in own_ips):
                warnings.append((peer.name, f"allowedIP {net} contains this node's own address"))
            elif net in owner:
                warnings.append((peer.name, f"allowedIP {net} already belongs to {owner[net]}"))
            else:
                owner[net] = peer.name
                allowed.append(net)
        accepted[peer.name] = (
            peer
            if len(allowed) == len(peer.allowed_ips)
            else replace(peer, allowed_ips=tuple(allowed))
        )
    return accepted, warnings


def with_gateway_routes(
    accepted: Mapping[str, RemotePeer],
    routes: Mapping[str, Iterable[IPNetwork]],
    node: NodeInfo,
) -> tuple[dict[str, RemotePeer], list[str]]:
    """Add WireKubeGateway CIDRs to the AllowedIPs of the peers carrying them.

    ``routes`` (peer name -> CIDRs, from ``wirekube_common.gateway``) is
    applied after ``select_peers`` resolved every node's own claims, so a
    gateway CIDR can never steal a node's prefix, nor a node's prefix a
    gateway's: a CIDR equal to a prefix some peer already has is dropped, and
    so is one containing this node's own address (our LAN would vanish into
    the tunnel). Overlapping prefixes coexist — a node's /32 inside a gateway
    /16 keeps its traffic by longest match, in WireGuard and in our table.
    The CIDRs then follow the peer's path like its /32 (``desired_state``
    routes them only while the path is routed).
    Returns the peers and a description of each CIDR that was left out.
    """
    out = dict(accepted)
    problems: list[str] = []
    own_ips = set(node.internal_ips) | set(node.external_ips)
    owner = {net: name for name, peer in accepted.items() for net in peer.allowed_ips}
    for name in sorted(routes):
        cidrs = list(dict.fromkeys(routes[name]))
        peer = out.get(name)
        if peer is None:
            problems.append(
                f"gateway routes {', '.join(map(str, cidrs))} via {name}: "
                f"{name} is not a configured peer"
            )
            continue
        extra: list[IPNetwork] = []
        for net in cidrs:
            if net in owner:
                problems.append(f"gateway route {net} via {name}: already belongs to {owner[net]}")
            elif any(ip.version == net.version and ip in net for ip in own_ips):
                problems.append(f"gateway route {net} via {name}: contains this node's own address")
            else:
                owner[net] = name
                extra.append(net)
        if extra:
            out[name] = replace(peer, allowed_ips=(*peer.allowed_ips, *extra))
    return out, problems


def desired_state(
    *,
    interface: str,
    listen_port: int,
    mtu: int,
    node: NodeInfo,
    peers: Mapping[str, RemotePeer],
    paths: Mapping[str, PathState],
    relay_endpoints: Mapping[bytes, Endpoint],
    control_destinations: Iterable[IPAddress] = (),
) -> DesiredState:
    """WireGuard entries for every accepted peer; routes only for routed paths."""
    wg: dict[bytes, WgPeer] = {}
    routes: set[Route] = set()
    for name, peer in peers.items():
        path = paths.get(name)
        if path is not None and path.transport == "relay":
            endpoint = relay_endpoints.get(peer.public_key)
        else:
            endpoint = path.endpoint if path is not None else peer.endpoint
        wg[peer.public_key] = WgPeer(
            public_key=peer.public_key,
            endpoint=endpoint,
            allowed_ips=frozenset(peer.allowed_ips),
            persistent_keepalive=(
                peer.persistent_keepalive
                if peer.persistent_keepalive is not None
                else DEFAULT_PERSISTENT_KEEPALIVE_S
            ),
        )
        if path is not None and path.routed:
            for net in peer.allowed_ips:
                routes.add(Route(dst=net, oif=interface, src=_source_for(net, node)))
    return DesiredState(
        interface=interface,
        listen_port=listen_port,
        mtu=mtu,
        peers=wg,
        routes=frozenset(routes),
        rules=frozenset(rules_for(routes, control_destinations)),
    )


def _source_for(net: IPNetwork, node: NodeInfo) -> IPAddress | None:
    """Source address for tunnelled packets: the node IP the peers know us by.

    The wire_kube interface has no address of its own; without an explicit
    source the kernel would pick any local address, which the peer's
    WireGuard would then drop for not being in our allowedIPs.
    """
    for ip in (*node.internal_ips, *node.external_ips):
        if ip.version == net.version:
            return ip
    return None


def rules_for(routes: Iterable[Route], control_destinations: Iterable[IPAddress]) -> set[Rule]:
    """Our ip rules, per address family that has routes.

    1. WireGuard's own encrypted packets carry FWMARK and use the main table,
       so they never loop back into the tunnel.
    2. Control-plane destinations (the API server) always use the main table,
       so a broken tunnel never cuts the agent off from the API it needs to
       repair it.
    3. Everything else consults our table first; a miss falls through to main.
    """
    families = {r.dst.version for r in routes}
    rules: set[Rule] = set()
    for version in families:
        family = FAMILY_OF_VERSION[version]
        rules.add(Rule(RULE_PRIORITY_MARKED, MAIN_TABLE, family, fwmark=FWMARK))
        for ip in control_destinations:
            if ip.version == version:
                rules.add(
                    Rule(RULE_PRIORITY_CONTROL, MAIN_TABLE, family, dst=ipaddress.ip_network(ip))
                )
        rules.add(Rule(RULE_PRIORITY_TABLE, ROUTE_TABLE, family))
    return rules
