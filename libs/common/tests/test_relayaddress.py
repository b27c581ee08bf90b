"""The shared relay-address rule: ExternalIP -> LoadBalancer -> NodePort, never
ClusterIP; for a NodePort, a node ExternalIP over InternalIPs, sticky."""

from __future__ import annotations

from typing import Any

from wirekube_common.relayaddress import (
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    NodeAddresses,
    choose,
    needs_nodes,
    status_host,
)


def service(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Any:
    base: dict[str, Any] = {
        "type": "NodePort",
        "clusterIP": "10.96.0.50",
        "ports": [{"name": "relay", "port": 3478, "nodePort": 31478}],
    }
    base.update(spec or {})
    return {"spec": base, "status": status or {}}


def node(
    name: str, internal: str = "", external: str = "", ready: bool | None = None
) -> NodeAddresses:
    return NodeAddresses(
        name, (internal,) if internal else (), (external,) if external else (), ready
    )


NODES = [
    node("b-nat", "10.1.0.5"),
    node("c-public", "10.0.0.7", "203.0.113.7"),
    node("d-public", "10.0.0.8", "203.0.113.8"),
]


def test_external_ip_first_then_load_balancer_ip_then_hostname() -> None:
    lb = {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}
    a = choose(service({"externalIPs": ["198.51.100.1"]}, lb), NODES, 3478)
    assert (a.host, a.port, a.source) == ("198.51.100.1", 3478, EXTERNAL_IP)
    a = choose(service(status=lb), NODES, 3478)
    assert (a.host, a.port, a.source) == ("198.51.100.9", 3478, LOAD_BALANCER)
    named = {"loadBalancer": {"ingress": [{"hostname": "relay.lb.example"}]}}
    a = choose(service(status=named), NODES, 3478)
    assert (a.host, a.source, a.is_ip) == ("relay.lb.example", LOAD_BALANCER, False)


def test_never_the_cluster_ip() -> None:
    cluster = {"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.50", "ports": [{"port": 3478}]}}
    a = choose(cluster, NODES, 3478)
    assert not a.found and "never use a ClusterIP" in a.reason
    assert not choose(None, NODES, 3478).found
    assert not choose({"spec": {"ports": []}}, NODES, 3478).found


def test_node_port_prefers_a_node_external_ip_over_any_internal_ip() -> None:
    # Even the caller's own node (NAT'd, InternalIP only) loses to an ExternalIP.
    a = choose(service(), NODES, 3478, local="b-nat")
    assert (a.host, a.port, a.source, a.node) == ("203.0.113.7", 31478, NODE_PORT, "c-public")
    assert "ExternalIP" in a.reason


def test_node_port_is_sticky_while_the_current_address_stays_usable() -> None:
    a = choose(service(), NODES, 3478, current="203.0.113.8")
    assert (a.host, a.node) == ("203.0.113.8", "d-public")
    assert a.reason == choose(service(), NODES[2:], 3478).reason, "kept or chosen: one sentence"
    # A new node whose name sorts first moves nobody.
    more = [node("a-new", "10.0.0.1", "203.0.113.1"), *NODES]
    assert choose(service(), more, 3478, current="203.0.113.8").host == "203.0.113.8"
    # The current node turned NotReady: move on.
    down = [n if n.name != "d-public" else node("d-public", "10.0.0.8", "203.0.113.8", False)
            for n in NODES]  # fmt: skip
    assert choose(service(), down, 3478, current="203.0.113.8").host == "203.0.113.7"


def test_ready_nodes_before_nodes_of_unknown_readiness_and_never_not_ready() -> None:
    nodes = [
        node("a", "10.0.0.1", "203.0.113.1", False),
        node("b", "10.0.0.2", "203.0.113.2"),
        node("c", "10.0.0.3", "203.0.113.3", True),
    ]
    assert choose(service(), nodes, 3478).node == "c"
    assert choose(service(), nodes[:2], 3478).node == "b"


def test_without_any_external_ip_an_agent_uses_its_own_internal_ip() -> None:
    nat = [node("a", "10.0.0.1"), node("b", "10.0.0.2")]
    mine = choose(service(), nat, 3478, local="b")
    assert (mine.host, mine.node) == ("10.0.0.2", "b") and "own InternalIP" in mine.reason
    controller = choose(service(), nat, 3478)
    assert (controller.host, controller.node) == ("10.0.0.1", "a")
    assert "reachable only from its own network" in controller.reason
    assert not choose(service(), [node("x")], 3478).found


def test_node_addresses_from_a_node_object() -> None:
    obj = {
        "metadata": {"name": "n1"},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "ExternalIP", "address": "203.0.113.1"},
                {"type": "ExternalIP", "address": "not-an-ip"},
                "garbage",
            ],
            "conditions": [{"type": "Ready", "status": "False"}],
        },
    }
    assert NodeAddresses.from_object(obj) == node("n1", "10.0.0.1", "203.0.113.1", False)
    assert NodeAddresses.from_object({"metadata": {"name": "bare"}}) == node("bare")


def test_needs_nodes_and_status_host() -> None:
    assert needs_nodes(service())
    assert not needs_nodes(service({"externalIPs": ["198.51.100.1"]}))
    assert not needs_nodes(service(status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}))
    assert not needs_nodes({"spec": {"ports": [{"port": 3478}]}}) and not needs_nodes(None)
    mesh = {"status": {"relay": {"address": "203.0.113.7:31478"}}}
    assert status_host(mesh) == "203.0.113.7"
    assert status_host({"status": {"relay": {"address": "[2001:db8::1]:31478"}}}) == "2001:db8::1"
    assert status_host({}) is None and status_host({"status": {"relay": "x"}}) is None
