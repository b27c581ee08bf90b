"""kubelb: addresses, targets and the ruleset a LoadBalancer Service gets, and the loop."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Network
from typing import Any

import pytest

from wirekube_lab.addressing import plan_lab
from wirekube_lab.commands import namespace_script
from wirekube_lab.kubelb import (
    LOAD_BALANCER_CLASS,
    TARGET_TYPE_ANNOTATION,
    KubeLoadBalancer,
    Listener,
    NodeReach,
    assign_addresses,
    balancer_ruleset,
    node_reach,
    ours,
    plan_listeners,
    wanted_status,
)
from wirekube_lab.naming import RunIds
from wirekube_lab.topology import TopologyError, parse_topology

REACH = NodeReach(
    {"node-pub": "198.18.0.10", "node-x": "198.18.0.11"}, frozenset({"node-pub", "node-x"})
)
LB = "198.18.0.50"


def svc(name: str, type_: str = "LoadBalancer", policy: str = "Local", **port: Any) -> dict:
    p = {"name": "relay", "port": 3478, "nodePort": 31000, "protocol": "TCP", **port}
    return {
        "metadata": {"namespace": "ns", "name": name, "creationTimestamp": f"2026-01-01T{name}"},
        "spec": {"type": type_, "externalTrafficPolicy": policy, "ports": [p]},
    }


def endpoints(service: str, *eps: tuple[str, str, bool], port: int = 3478) -> dict:
    """A slice of ``(nodeName, pod IP, ready)`` endpoints for port ``relay``."""
    return {
        "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "relay", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"nodeName": n, "addresses": [ip], "conditions": {"ready": r}} for n, ip, r in eps
        ],
    }


SLICE = endpoints(
    "relay",
    ("node-pub", "10.244.0.5", True),
    ("node-pub", "10.244.0.6", True),
    ("node-x", "10.244.1.5", False),  # not ready
    ("node-a", "10.244.2.5", True),  # behind a NAT: neither node nor pods reachable
)


def test_instance_targets_local_policy_only_nodes_with_a_ready_endpoint() -> None:
    got = plan_listeners([svc("relay")], [SLICE], REACH, {"ns/relay": LB})
    assert got == [Listener("ns/relay", LB, "TCP", 3478, (("198.18.0.10", 31000),))]


def test_instance_targets_cluster_policy_every_reachable_node() -> None:
    got = plan_listeners([svc("relay", policy="Cluster")], [], REACH, {"ns/relay": LB})
    assert got[0].targets == (("198.18.0.10", 31000), ("198.18.0.11", 31000))


def test_ip_targets_are_the_ready_endpoints_the_balancer_routes_to() -> None:
    got = plan_listeners([svc("relay")], [SLICE], REACH, {"ns/relay": LB}, "ip")
    assert got[0].targets == (("10.244.0.5", 3478), ("10.244.0.6", 3478))
    # The target port is the endpoint's (the Service's targetPort, resolved).
    other = endpoints("relay", ("node-pub", "10.244.0.5", True), port=13478)
    assert plan_listeners([svc("relay")], [other], REACH, {"ns/relay": LB}, "ip")[0].targets == (
        ("10.244.0.5", 13478),
    )


def test_the_annotation_picks_the_target_type_per_service() -> None:
    s = svc("relay")
    s["metadata"]["annotations"] = {TARGET_TYPE_ANNOTATION: "ip"}
    assert plan_listeners([s], [SLICE], REACH, {"ns/relay": LB})[0].targets[0] == (
        "10.244.0.5",
        3478,
    )
    s["metadata"]["annotations"] = {TARGET_TYPE_ANNOTATION: "bogus"}  # unknown: the default
    assert plan_listeners([s], [SLICE], REACH, {"ns/relay": LB}, "instance")[0].targets == (
        ("198.18.0.10", 31000),
    )


def test_no_ready_endpoint_no_target_but_the_listener_stays() -> None:
    got = plan_listeners([svc("relay")], [], REACH, {"ns/relay": LB}, "ip")
    assert got == [Listener("ns/relay", LB, "TCP", 3478, ())]


def test_services_without_an_address_other_types_classes_and_sctp_are_left_alone() -> None:
    classed = svc("g")
    classed["spec"]["loadBalancerClass"] = "example.com/other"
    mine = svc("h", port=4001)
    mine["spec"]["loadBalancerClass"] = LOAD_BALANCER_CLASS
    services = [
        svc("a"),
        svc("b", port=53, protocol="UDP", policy="Cluster"),
        svc("c", type_="NodePort", port=4000),
        svc("d", port=5000, protocol="SCTP"),
        svc("e", port=4443, nodePort=None),
        svc("f"),  # no address for it
        classed,
        mine,
    ]
    assert [ours(s) for s in services] == [True, True, False, True, True, True, False, True]
    addresses = {k: LB for k in ("ns/a", "ns/b", "ns/c", "ns/d", "ns/e", "ns/g", "ns/h")}
    got = plan_listeners(services, [], REACH, addresses)
    assert [(ls.service, ls.protocol, ls.port) for ls in got] == [
        ("ns/a", "TCP", 3478),
        ("ns/b", "UDP", 53),
        ("ns/h", "TCP", 4001),
    ]


def test_addresses_first_come_kept_for_the_service_life_and_requested_ones() -> None:
    pool = ["198.18.0.50", "198.18.0.51"]
    first = assign_addresses([svc("stun"), svc("relay")], {}, pool)
    assert first == {"ns/relay": "198.18.0.50", "ns/stun": "198.18.0.51"}  # older first
    third = assign_addresses([svc("stun"), svc("relay"), svc("x")], first, pool)
    assert third == first  # none left: x stays pending
    gone = assign_addresses([svc("stun"), svc("x")], third, pool)
    assert gone == {"ns/stun": "198.18.0.51", "ns/x": "198.18.0.50"}
    wants = svc("w")
    wants["spec"]["loadBalancerIP"] = "198.18.0.51"
    assert assign_addresses([wants, svc("relay")], {}, pool) == {
        "ns/relay": "198.18.0.50",
        "ns/w": "198.18.0.51",
    }
    wants["spec"]["loadBalancerIP"] = "198.18.0.99"  # not in the pool: pending
    assert assign_addresses([wants], {}, pool) == {}


def test_ruleset_dnats_each_new_flow_to_one_target_and_replaces_the_table() -> None:
    listeners = [
        Listener("ns/a", LB, "TCP", 3478, (("10.244.0.5", 3478), ("10.244.0.6", 3478))),
        Listener("ns/a", LB, "UDP", 3478, (("198.18.0.10", 31002),)),
        Listener("ns/b", LB, "TCP", 443, ()),
    ]
    text = balancer_ruleset(listeners, "round-robin")
    assert text.startswith("add table ip wklab\ndelete table ip wklab\n")
    assert (
        f"ip daddr {LB} tcp dport 3478 dnat ip to numgen inc mod 2 map "
        "{ 0 : 10.244.0.5 . 3478, 1 : 10.244.0.6 . 3478 }" in text
    )
    assert f"ip daddr {LB} udp dport 3478 dnat ip to numgen inc mod 1" in text
    assert "dport 443" not in text  # no target: nothing forwarded
    assert "ct status dnat masquerade" in text
    assert "numgen random mod 2" in balancer_ruleset(listeners)


@pytest.mark.parametrize("listeners", [[], "some"])
def test_ruleset_is_valid_nftables(listeners: Any) -> None:
    if listeners == "some":
        listeners = [
            Listener("ns/a", LB, "TCP", 3478, (("198.18.0.10", 31000), ("10.244.0.6", 3478))),
            Listener("ns/a", LB, "UDP", 3478, (("198.18.0.10", 31001),)),
        ]
    # Checked only (-c), in a throwaway network namespace.
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=balancer_ruleset(listeners, "round-robin"),
        text=True,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_status_is_a_proxy_ingress_patched_only_when_it_differs() -> None:
    s = svc("a")
    patch = wanted_status(s, "198.18.0.99")
    assert patch == {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.99", "ipMode": "Proxy"}]}}
    }
    s["status"] = patch["status"]
    assert wanted_status(s, "198.18.0.99") is None
    assert wanted_status(s, "198.18.0.98") is not None


TOPOLOGY = {
    "networks": {
        "vpc": {"nat": "symmetric"},
        "pubnet": {"nat": "public"},
    },
    "hosts": {
        "n-inet": {"network": "internet", "role": "node"},
        "n-nat": {"network": "vpc", "role": "node"},
        "n-1to1": {"network": "vpc", "role": "node", "public_ip": True},
        "n-pub": {"network": "pubnet", "role": "node"},
        "lb": {"network": "internet", "role": "load-balancer", "addresses": 2},
    },
}


def test_node_reach_follows_the_lab_routing() -> None:
    plan = plan_lab(parse_topology(TOPOLOGY), RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))
    reach = node_reach(plan, ["n-inet", "n-nat", "n-1to1", "n-pub"])
    assert reach.addresses == {
        "n-inet": str(plan.host("n-inet").address),
        "n-1to1": str(plan.host("n-1to1").public_address),
        "n-pub": str(plan.host("n-pub").address),
    }
    assert reach.pod_routed == {"n-inet", "n-pub"}  # a 1:1 address carries no pod routes


def test_a_balancer_without_backends_is_left_to_kubelb() -> None:
    topo = parse_topology(TOPOLOGY)
    assert topo.host("lb").backends == ()
    assert (topo.host("lb").targets, topo.host("lb").balance) == ("instance", "random")
    plan = plan_lab(topo, RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))
    script = namespace_script(plan, plan.host("lb").ns)
    assert "nft" not in script
    assert "echo 1 > /proc/sys/net/ipv4/ip_forward" in script
    ok = {"network": "internet", "role": "load-balancer", "targets": "ip", "balance": "round-robin"}
    lb = parse_topology({"hosts": {"lb": ok}}).host("lb")
    assert (lb.targets, lb.balance) == ("ip", "round-robin")
    for bad, match in [
        ({"ports": [1]}, "ports: only meaningful with backends"),
        ({"targets": "pods"}, "unknown targets 'pods'"),
        ({"balance": "least-conn"}, "unknown balance"),
    ]:
        with pytest.raises(TopologyError, match=match):
            parse_topology(
                {"hosts": {"lb": {"network": "internet", "role": "load-balancer", **bad}}}
            )
    with pytest.raises(TopologyError, match="targets: only meaningful without backends"):
        parse_topology(
            {
                "hosts": {
                    "r": {"network": "internet", "role": "relay"},
                    "lb": {
                        "network": "internet",
                        "role": "load-balancer",
                        "backends": ["r"],
                        "targets": "ip",
                    },
                }
            }
        )
    with pytest.raises(TopologyError, match="only meaningful for role load-balancer"):
        parse_topology({"hosts": {"x": {"network": "internet", "targets": "ip"}}})


class FakeApi:
    """An API server's state for the loop (a fake of I/O; the decisions are real)."""

    def __init__(self, services: list[dict], slices: list[dict]) -> None:
        self.services = services
        self.slices = slices
        self.patches: list[tuple[str, str, dict]] = []
        self.closed = False

    def list_services(self) -> list[dict[str, Any]]:
        return self.services

    def list_endpoint_slices(self) -> list[dict[str, Any]]:
        return self.slices

    def patch_service_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append((namespace, name, patch))
        for s in self.services:
            if s["metadata"]["name"] == name:
                s["status"] = patch["status"]

    def close(self) -> None:
        self.closed = True


def test_the_loop_applies_only_changes_and_patches_status_once() -> None:
    api = FakeApi([svc("relay"), svc("other", type_="ClusterIP")], [SLICE])
    applied: list[str] = []
    lb = KubeLoadBalancer(api, applied.append, [LB], REACH, targets="ip")
    lb.sync_once()
    lb.sync_once()
    assert len(applied) == 1 and "10.244.0.5 . 3478" in applied[0]
    assert api.patches == [
        ("ns", "relay", {"status": {"loadBalancer": {"ingress": [{"ip": LB, "ipMode": "Proxy"}]}}})
    ]
    api.slices = []  # every replica gone: the listener forwards nothing
    lb.sync_once()
    assert len(applied) == 2 and "dnat ip to" not in applied[1]
    assert lb.listeners == [Listener("ns/relay", LB, "TCP", 3478, ())]
