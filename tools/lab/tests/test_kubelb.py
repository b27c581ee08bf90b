"""kubelb: which listeners and backends a LoadBalancer Service gets, and the ruleset."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Network
from typing import Any

import pytest

from wirekube_lab.addressing import plan_lab
from wirekube_lab.commands import namespace_script
from wirekube_lab.kubelb import (
    Listener,
    assign_addresses,
    balancer_ruleset,
    plan_listeners,
    wanted_status,
)
from wirekube_lab.naming import RunIds
from wirekube_lab.topology import TopologyError, parse_topology

NODES = {"node-pub": "198.18.0.10", "node-x": "198.18.0.11"}
LB = "198.18.0.50"


def svc(name: str, type_: str = "LoadBalancer", policy: str = "Local", **port: Any) -> dict:
    p = {"name": "relay", "port": 3478, "nodePort": 31000, "protocol": "TCP", **port}
    return {
        "metadata": {"namespace": "ns", "name": name, "creationTimestamp": f"2026-01-01T{name}"},
        "spec": {"type": type_, "externalTrafficPolicy": policy, "ports": [p]},
    }


def endpoints(service: str, *eps: tuple[str, bool]) -> dict:
    return {
        "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"nodeName": n, "conditions": {"ready": r}} for n, r in eps],
    }


def test_local_policy_sends_only_to_nodes_with_a_ready_endpoint() -> None:
    slices = [endpoints("relay", ("node-pub", True), ("node-x", False), ("node-a", True))]
    got = plan_listeners([svc("relay")], slices, NODES, {"ns/relay": LB})
    # node-a has an endpoint but the balancer cannot reach it (behind a NAT).
    assert got == [Listener("ns/relay", LB, "TCP", 3478, 31000, ("198.18.0.10",))]


def test_cluster_policy_sends_to_every_reachable_node() -> None:
    got = plan_listeners([svc("relay", policy="Cluster")], [], NODES, {"ns/relay": LB})
    assert got[0].backends == ("198.18.0.10", "198.18.0.11")


def test_services_without_an_address_other_types_and_sctp_are_left_alone() -> None:
    services = [
        svc("a"),
        svc("b", port=53, protocol="UDP"),
        svc("c", type_="NodePort", port=4000),
        svc("d", port=5000, protocol="SCTP"),
        svc("e", port=4443, nodePort=None),
        svc("f"),  # no address for it
    ]
    addresses = {"ns/a": LB, "ns/b": "198.18.0.51", "ns/c": LB, "ns/d": LB, "ns/e": LB}
    got = plan_listeners(services, [endpoints("a", ("node-pub", True))], NODES, addresses)
    assert [(ls.service, ls.protocol, ls.port) for ls in got] == [
        ("ns/a", "TCP", 3478),
        ("ns/b", "UDP", 53),
    ]


def test_addresses_first_come_and_kept_for_the_service_life() -> None:
    pool = ["198.18.0.50", "198.18.0.51"]
    first = assign_addresses([svc("stun"), svc("relay")], {}, pool)
    assert first == {"ns/relay": "198.18.0.50", "ns/stun": "198.18.0.51"}  # older first
    third = assign_addresses([svc("stun"), svc("relay"), svc("x")], first, pool)
    assert third == first  # none left: x stays pending
    gone = assign_addresses([svc("stun"), svc("x")], third, pool)
    assert gone == {"ns/stun": "198.18.0.51", "ns/x": "198.18.0.50"}


def test_ruleset_dnats_to_node_ports_and_replaces_the_table() -> None:
    text = balancer_ruleset(
        [
            Listener("ns/a", LB, "TCP", 3478, 31000, ("198.18.0.10", "198.18.0.11")),
            Listener("ns/a", LB, "UDP", 3478, 31002, ("198.18.0.10",)),
            Listener("ns/b", LB, "TCP", 443, 31001, ()),
        ]
    )
    assert text.startswith("add table ip wklab\ndelete table ip wklab\n")
    assert (
        f"ip daddr {LB} tcp dport 3478 dnat ip to numgen random mod 2 map "
        "{ 0 : 198.18.0.10 . 31000, 1 : 198.18.0.11 . 31000 }" in text
    )
    assert f"ip daddr {LB} udp dport 3478 dnat ip to numgen random mod 1" in text
    assert "dport 443" not in text  # no backend: nothing forwarded
    assert "ct status dnat masquerade" in text


def test_ruleset_is_valid_nftables() -> None:
    text = balancer_ruleset(
        [
            Listener("ns/a", LB, "TCP", 3478, 31000, ("198.18.0.10", "198.18.0.11")),
            Listener("ns/a", LB, "UDP", 3478, 31001, ("198.18.0.10",)),
        ]
    )
    # Checked only (-c), in a throwaway network namespace.
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=text,
        text=True,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_status_patched_only_when_it_differs() -> None:
    s = svc("a")
    patch = wanted_status(s, "198.18.0.99")
    assert patch == {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.99", "ipMode": "VIP"}]}}
    }
    s["status"] = patch["status"]
    assert wanted_status(s, "198.18.0.99") is None


def test_a_balancer_without_backends_is_left_to_kubelb() -> None:
    topo = parse_topology(
        {
            "hosts": {
                "n": {"network": "internet", "role": "node"},
                "lb": {"network": "internet", "role": "load-balancer"},
            }
        }
    )
    assert topo.host("lb").backends == ()
    plan = plan_lab(topo, RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))
    script = namespace_script(plan, plan.host("lb").ns)
    assert "nft" not in script
    assert "echo 1 > /proc/sys/net/ipv4/ip_forward" in script
    with pytest.raises(TopologyError, match="only meaningful with backends"):
        parse_topology(
            {"hosts": {"lb": {"network": "internet", "role": "load-balancer", "ports": [1]}}}
        )
