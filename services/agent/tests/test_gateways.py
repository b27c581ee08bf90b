"""WireKubeGateways on the agent: client routes and gateway duties (pure).

From CRD objects through ``GatewayCache.assignment``, ``select_peers`` +
``with_gateway_routes`` and ``desired_state`` to the WireGuard/route diff a
failover produces.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from wirekube_agent.dataplane import diff
from wirekube_agent.dataplane.desired import desired_state, select_peers, with_gateway_routes
from wirekube_agent.gateway.cache import EMPTY, GatewayCache, assign
from wirekube_agent.k8s.translate import peer_from_object
from wirekube_agent.model import FWMARK, Route
from wirekube_agent.paths.rules import PathState
from wirekube_common.crd import Gateway, Peer
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import key, node, peer_obj, remote

UP = PathState("direct", "up", 0.0, None)
PROBING = PathState("direct", "probing", 0.0, None)
CIDR = ipaddress.ip_network("172.20.1.0/24")
ME = "node-a1"


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def gw_obj(
    name: str = "vpc-b", active: str | None = "node-b1", rv: str = "1", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "peerRefs": ["node-b1", "node-b2"],
        "routes": [{"cidr": "172.20.1.0/24"}],
        "snat": {"enabled": True},
    }
    body.update(spec)
    obj: dict[str, Any] = {
        "apiVersion": "wirekube.io/v1alpha1",
        "kind": "WireKubeGateway",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": rv},
        "spec": body,
    }
    if active:
        obj["status"] = {"activePeer": active}
    return obj


PEERS = {
    "node-a1": peer_obj("node-a1", 1, "10.231.1.10"),
    "node-a2": peer_obj("node-a2", 5, "10.231.1.11"),
    "node-b1": peer_obj("node-b1", 2, "172.20.1.11"),
    "node-b2": peer_obj("node-b2", 3, "172.20.1.12"),
}


def models(objs: dict[str, dict[str, Any]]) -> dict[str, Peer]:
    return {n: Peer.from_dict(o) for n, o in objs.items()}


def test_a_client_routes_the_cidrs_via_the_active_peer_others_get_nothing() -> None:
    gws = [Gateway.from_dict(gw_obj())]
    mine = assign(ME, gws, models(PEERS))
    assert mine.routes == {"node-b1": (CIDR,)} and mine.duties == ()
    b1 = assign("node-b1", gws, models(PEERS))
    assert b1.routes == {}
    (duty,) = b1.duties
    assert (duty.gateway, duty.cidrs, duty.snat, duty.snat_source) == (
        "vpc-b",
        ("172.20.1.0/24",),
        True,
        "172.20.1.11",
    )
    assert assign("node-b2", gws, models(PEERS)) == EMPTY  # the standby: nothing
    # clientRefs limit the clients; no activePeer, nothing for anyone
    only_a2 = [Gateway.from_dict(gw_obj(clientRefs=["node-a2"]))]
    assert assign(ME, only_a2, models(PEERS)).routes == {}
    assert assign("node-a2", only_a2, models(PEERS)).routes == {"node-b1": (CIDR,)}
    assert assign(ME, [Gateway.from_dict(gw_obj(active=None))], models(PEERS)) == EMPTY
    assert assign("node-unknown", gws, models(PEERS)) == EMPTY


def test_cache_parses_once_skips_malformed_and_memoises_the_assignment() -> None:
    cache = GatewayCache()
    bad = gw_obj("broken", rv="7")
    del bad["spec"]["routes"]
    parsed = cache.update({"vpc-b": gw_obj(), "broken": bad})
    assert [g.metadata.name for g in parsed] == ["vpc-b"]
    reads = []

    def snapshot() -> dict[str, dict[str, Any]]:
        reads.append(1)
        return dict(PEERS)

    first = cache.assignment(ME, snapshot)
    assert first.routes == {"node-b1": (CIDR,)}
    assert cache.assignment(ME, snapshot) is first  # nothing changed: memoised
    # failover: a new status is a new plan
    cache.update({"vpc-b": gw_obj(active="node-b2", rv="2")})
    assert cache.assignment(ME, snapshot).routes == {"node-b2": (CIDR,)}
    # a peer changed (new resourceVersion): re-planned from the new object
    changed = dict(PEERS)
    changed["node-a1"] = peer_obj("node-a1", 1, "172.20.1.50")  # now inside VPC B: same-CIDR
    changed["node-a1"]["metadata"]["resourceVersion"] = "2"
    assert cache.assignment(ME, lambda: changed).routes == {}
    # no gateways: the peer cache is never even read
    cache.update({})
    reads.clear()
    assert cache.assignment(ME, snapshot) == EMPTY and reads == []


def accepted(
    routes: dict[str, tuple[ipaddress.IPv4Network, ...]], *extra: Any
) -> tuple[dict[str, Any], list[str]]:
    remotes = {n: peer_from_object(o) for n, o in PEERS.items() if n != ME}
    for r in extra:
        remotes[r.name] = r
    peers, warnings = select_peers(remotes, key(1), node("a1", "10.231.1.10"))
    assert warnings == []
    return with_gateway_routes(peers, routes, node("a1", "10.231.1.10"))


def test_gateway_cidrs_join_the_active_peers_allowed_ips_only() -> None:
    peers, problems = accepted({"node-b1": (CIDR,)})
    assert problems == []
    assert peers["node-b1"].allowed_ips == (net("172.20.1.11/32"), CIDR)
    assert peers["node-b2"].allowed_ips == (net("172.20.1.12/32"),)


def test_a_gateway_cidr_never_steals_or_is_stolen_by_a_node_prefix() -> None:
    # A node that claims exactly the CIDR keeps it; the gateway CIDR is dropped.
    owner = remote("node-x", 9, "172.20.9.1", allowed_ips=(CIDR,))
    peers, problems = accepted({"node-b1": (CIDR,)}, owner)
    assert peers["node-x"].allowed_ips == (CIDR,)
    assert peers["node-b1"].allowed_ips == (net("172.20.1.11/32"),)
    assert problems == ["gateway route 172.20.1.0/24 via node-b1: already belongs to node-x"]
    # A CIDR containing this node's own address is never routed into the tunnel.
    lan = net("10.231.1.0/24")
    peers, problems = accepted({"node-b1": (lan,)})
    assert lan not in peers["node-b1"].allowed_ips
    assert problems == ["gateway route 10.231.1.0/24 via node-b1: contains this node's own address"]
    # A peer we do not configure cannot carry routes.
    _, problems = accepted({"node-gone": (CIDR,)})
    assert problems == [
        "gateway routes 172.20.1.0/24 via node-gone: node-gone is not a configured peer"
    ]
    # Overlap is fine: b2's /32 stays b2's inside b1's /24 (longest match).
    peers, problems = accepted({"node-b1": (CIDR,)})
    assert net("172.20.1.12/32") in peers["node-b2"].allowed_ips and problems == []


def state(routes: dict[str, tuple[ipaddress.IPv4Network, ...]], paths: dict[str, PathState]):  # type: ignore[no-untyped-def]
    peers, _ = accepted(routes)
    return desired_state(
        interface="wire_kube",
        listen_port=51820,
        mtu=1420,
        node=node("a1", "10.231.1.10"),
        peers=peers,
        paths=paths,
        relay_endpoints={},
    )


def device_from(want) -> DeviceState:  # type: ignore[no-untyped-def]
    return DeviceState(
        key(1),
        51820,
        FWMARK,
        {
            k: PeerState(k, p.endpoint, p.allowed_ips, p.persistent_keepalive)
            for k, p in want.peers.items()
        },
    )


def test_the_cidr_is_routed_only_while_the_active_peers_path_is() -> None:
    up = state({"node-b1": (CIDR,)}, {"node-b1": UP, "node-b2": UP, "node-a2": UP})
    src = ipaddress.ip_address("10.231.1.10")
    assert Route(CIDR, "wire_kube", src) in up.routes
    assert CIDR in up.peers[key(2)].allowed_ips
    down = state({"node-b1": (CIDR,)}, {"node-b1": PROBING, "node-b2": UP, "node-a2": UP})
    assert all(r.dst != CIDR for r in down.routes)
    assert CIDR in down.peers[key(2)].allowed_ips  # WireGuard still knows where it goes


def test_failover_is_one_wireguard_change_and_no_route_change() -> None:
    paths = {"node-b1": UP, "node-b2": UP, "node-a2": UP}
    before = state({"node-b1": (CIDR,)}, paths)
    after = state({"node-b2": (CIDR,)}, paths)
    endpoints = {k: p.endpoint for k, p in before.peers.items()}
    ops = diff.operations(
        after, device_from(before), before.routes, before.rules, endpoints, key(1), FWMARK
    )
    assert ops.wireguard is not None
    changes = {p.public_key: p for p in ops.wireguard.peers}
    assert set(changes) == {key(2), key(3)}  # b1 loses the CIDR, b2 gains it; a2 untouched
    assert changes[key(2)].allowed_ips == (net("172.20.1.11/32"),)
    assert set(changes[key(3)].allowed_ips or ()) == {net("172.20.1.12/32"), CIDR}
    assert all(p.endpoint is None and not p.remove for p in changes.values())
    # The route is "172.20.1.0/24 dev wire_kube": it does not name the peer.
    assert ops.routes_delete == () and ops.routes_replace == ()
    assert ops.rules_add == () and ops.rules_delete == ()
