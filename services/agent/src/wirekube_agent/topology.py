"""Desired state of this node's data plane, as plain data. Pure.

From the other nodes' validated peers and each peer's current path, compute
the WireGuard peer entries, the routes in our table and our ip rules. Nothing
here looks at the kernel: ``diff`` compares the result with what the kernel
reports, and ``reconciler`` applies only the difference.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wirekube_agent.model import (
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
from wirekube_agent.paths import PathState
from wirekube_agent.timers import DEFAULT_PERSISTENT_KEEPALIVE_S

MAIN_TABLE = 254


@dataclass
class Plan:
    state: DesiredState
    # Human-readable reasons for every peer or prefix left out, for logs/Events.
    warnings: list[tuple[str, str]] = field(default_factory=list)


def desired_state(
    *,
    interface: str,
    listen_port: int,
    mtu: int,
    node: NodeInfo,
    own_key: bytes,
    peers: Mapping[str, RemotePeer],
    paths: Mapping[str, PathState],
    relay_endpoints: Mapping[bytes, Endpoint],
    control_destinations: Iterable[IPAddress] = (),
) -> Plan:
    warnings: list[tuple[str, str]] = []
    own_ips = set(node.internal_ips) | set(node.external_ips)
    owner: dict[IPNetwork, str] = {}
    wg: dict[bytes, WgPeer] = {}
    routes: set[Route] = set()
    seen_keys: dict[bytes, str] = {}

    for name in sorted(peers):  # sorted: conflicts resolve the same way on every node
        peer = peers[name]
        if peer.public_key == own_key:
            continue  # our own object, or a copy of our key: never a peer
        if peer.public_key in seen_keys:
            warnings.append((name, f"public key already used by {seen_keys[peer.public_key]}"))
            continue
        if peer.passive:
            continue
        seen_keys[peer.public_key] = name
        allowed: set[IPNetwork] = set()
        for net in peer.allowed_ips:
            if any(ip in net for ip in own_ips):
                warnings.append((name, f"allowedIP {net} contains this node's own address"))
                continue
            if net in owner:
                warnings.append((name, f"allowedIP {net} already belongs to {owner[net]}"))
                continue
            owner[net] = name
            allowed.add(net)
        path = paths.get(name)
        if path is not None and path.transport == "relay":
            endpoint = relay_endpoints.get(peer.public_key)
        else:
            endpoint = path.endpoint if path is not None else peer.endpoint
        wg[peer.public_key] = WgPeer(
            public_key=peer.public_key,
            endpoint=endpoint,
            allowed_ips=frozenset(allowed),
            persistent_keepalive=(
                peer.persistent_keepalive
                if peer.persistent_keepalive is not None
                else DEFAULT_PERSISTENT_KEEPALIVE_S
            ),
        )
        if path is not None and path.routed:
            for net in allowed:
                routes.add(Route(dst=net, oif=interface, src=_source_for(net, node)))

    return Plan(
        DesiredState(
            interface=interface,
            listen_port=listen_port,
            mtu=mtu,
            peers=wg,
            routes=frozenset(routes),
            rules=frozenset(rules_for(routes, control_destinations)),
        ),
        warnings,
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
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        rules.add(Rule(RULE_PRIORITY_MARKED, MAIN_TABLE, family, fwmark=FWMARK))
        for ip in control_destinations:
            if ip.version == version:
                rules.add(
                    Rule(RULE_PRIORITY_CONTROL, MAIN_TABLE, family, dst=ipaddress.ip_network(ip))
                )
        rules.add(Rule(RULE_PRIORITY_TABLE, ROUTE_TABLE, family))
    return rules
