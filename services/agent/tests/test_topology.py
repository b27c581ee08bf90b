import ipaddress
import socket

from wirekube_agent.dataplane.desired import desired_state, select_peers
from wirekube_agent.model import FWMARK, ROUTE_TABLE, Route
from wirekube_agent.paths.rules import PathState

from .helpers import key, node, remote

UP = PathState("direct", "up", 0.0, None)
PROBING = PathState("direct", "probing", 0.0, None)


class Plan:
    def __init__(self, peers, paths, **kw):  # type: ignore[no-untyped-def]
        n = kw.pop("node", node())
        accepted, self.warnings = select_peers({p.name: p for p in peers}, key(1), n)
        self.state = desired_state(
            interface="wire_kube",
            listen_port=51820,
            mtu=1420,
            node=n,
            peers=accepted,
            paths=paths,
            relay_endpoints=kw.pop("relay_endpoints", {}),
            control_destinations=kw.pop("control", [ipaddress.ip_address("100.64.0.1")]),
        )


plan_for = Plan


def test_every_active_peer_gets_a_wireguard_entry_but_only_up_paths_get_routes() -> None:
    b = remote("node-b", 2, "10.0.0.2")
    c = remote("node-c", 3, "10.0.0.3")
    plan = plan_for([b, c], {"node-b": UP, "node-c": PROBING})
    assert set(plan.state.peers) == {key(2), key(3)}
    assert plan.state.peers[key(2)].persistent_keepalive == 25
    assert plan.state.routes == {
        Route(ipaddress.ip_network("10.0.0.2/32"), "wire_kube", ipaddress.ip_address("10.0.0.1"))
    }
    assert all(r.table == ROUTE_TABLE for r in plan.state.routes)


def test_rules_protect_wireguard_traffic_and_the_api_server() -> None:
    plan = plan_for([remote("node-b", 2, "10.0.0.2")], {"node-b": UP})
    rules = sorted(plan.state.rules, key=lambda r: r.priority)
    assert [r.family for r in rules] == [socket.AF_INET] * 3
    marked, control, table = rules
    assert (marked.fwmark, marked.table) == (FWMARK, 254)
    assert (str(control.dst), control.table) == ("100.64.0.1/32", 254)
    assert table.table == ROUTE_TABLE and table.fwmark is None and table.dst is None
    # no routes at all -> no rules (nothing to protect, nothing to capture)
    assert plan_for([remote("node-b", 2, "10.0.0.2")], {"node-b": PROBING}).state.rules == set()


def test_passive_and_own_and_duplicate_peers() -> None:
    passive = remote("node-p", 4, "10.0.0.4", allowed_ips=())
    own = remote("node-a-copy", 1, "10.0.0.9")
    first = remote("node-b", 2, "10.0.0.2")
    dup = remote("node-z", 2, "10.0.0.8")
    plan = plan_for([passive, own, first, dup], {n: UP for n in ("node-p", "node-b", "node-z")})
    assert set(plan.state.peers) == {key(2)}
    assert plan.state.peers[key(2)].allowed_ips == {ipaddress.ip_network("10.0.0.2/32")}
    assert ("node-z", "public key already used by node-b") in plan.warnings


def test_conflicting_and_self_capturing_allowed_ips_are_dropped() -> None:
    b = remote("node-b", 2, "10.0.0.2")
    thief = remote(
        "node-c",
        3,
        "10.0.0.3",
        allowed_ips=(ipaddress.ip_network("10.0.0.2/32"), ipaddress.ip_network("10.0.0.0/30")),
    )
    plan = plan_for([b, thief], {"node-b": UP, "node-c": UP})
    assert plan.state.peers[key(3)].allowed_ips == frozenset()
    reasons = [why for name, why in plan.warnings if name == "node-c"]
    assert any("already belongs to node-b" in r for r in reasons)
    assert any("own address" in r for r in reasons)


def test_relay_path_uses_the_bridge_endpoint() -> None:
    b = remote("node-b", 2, "10.0.0.2")
    relay = PathState("relay", "probing", 0.0, ("10.0.0.2", 51820))
    plan = plan_for([b], {"node-b": relay}, relay_endpoints={key(2): ("127.0.0.1", 40000)})
    assert plan.state.peers[key(2)].endpoint == ("127.0.0.1", 40000)
    assert plan.state.routes  # a relay path carries traffic from the first packet


def test_the_older_claim_wins_whatever_the_names() -> None:
    owner = remote("node-n2", 2, "10.0.0.2", created="2026-01-01T00:00:00Z")
    newcomer = remote(
        "node-aaa",
        2,
        "10.0.0.9",
        created="2026-06-01T00:00:00Z",
        allowed_ips=(ipaddress.ip_network("10.0.0.2/32"),),
    )
    plan = plan_for([owner, newcomer], {"node-n2": UP, "node-aaa": UP})
    assert plan.state.peers[key(2)].allowed_ips == {ipaddress.ip_network("10.0.0.2/32")}
    assert ("node-aaa", "public key already used by node-n2") in plan.warnings
    hijack = remote(
        "node-aaa",
        3,
        "10.0.0.3",
        created="2026-06-01T00:00:00Z",
        allowed_ips=(ipaddress.ip_network("10.0.0.2/32"),),
    )
    plan = plan_for([owner, hijack], {"node-n2": UP, "node-aaa": UP})
    assert plan.state.peers[key(2)].allowed_ips == {ipaddress.ip_network("10.0.0.2/32")}
    assert plan.state.peers[key(3)].allowed_ips == frozenset()
