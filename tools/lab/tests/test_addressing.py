"""The address plan: deterministic, collision-free, and shaped as documented."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from wirekube_lab.addressing import (
    APISERVER_ADDRESS,
    pick_control_subnet,
    plan_lab,
)
from wirekube_lab.naming import RunIds
from wirekube_lab.topology import TopologyError, parse_topology

IDS = RunIds(pid=4242, run="abcde")
CONTROL = IPv4Network("100.64.7.4/30")

DOC = {
    "name": "plan",
    "networks": {
        "home": {"nat": "address-restricted"},
        "vpc": {"nat": "symmetric", "cidr": "10.1.0.0/24"},  # collides with the default of #1
        "pub": {"nat": "public"},
    },
    "hosts": {
        "a": {"network": "home", "role": "node"},
        "b": {"network": "vpc", "role": "node", "address": "10.1.0.10"},
        "c": {"network": "vpc", "role": "node"},
        "d": {"network": "vpc", "role": "node", "public_ip": True},
        "e": {"network": "pub", "role": "node"},
        "stun": {"network": "internet", "role": "stun"},
        "relay": {"network": "internet", "role": "relay", "address": "198.18.0.10"},
    },
}


def plan():  # type: ignore[no-untyped-def]
    return plan_lab(parse_topology(DOC), IDS, CONTROL)


def test_namespaces_carry_the_run_prefix() -> None:
    p = plan()
    assert p.internet_ns == "wklab-4242-abcde-internet"
    assert all(ns.startswith("wklab-4242-abcde-") for ns in p.namespaces)
    assert p.router("home").ns == "wklab-4242-abcde-home-gw"
    assert p.host("a").ns == "wklab-4242-abcde-a"
    assert len(set(p.namespaces)) == len(p.namespaces) == 1 + 3 + 7


def test_default_cidrs_avoid_explicit_ones() -> None:
    p = plan()
    assert p.router("home").lan_cidr == IPv4Network("10.2.0.0/24")  # 10.1 is taken by vpc
    assert p.router("vpc").lan_cidr == IPv4Network("10.1.0.0/24")
    assert p.router("pub").lan_cidr == IPv4Network("198.19.1.0/24")
    assert p.router("home").lan_address == IPv4Address("10.2.0.1")


def test_host_addresses_skip_fixed_ones() -> None:
    p = plan()
    assert p.host("b").addresses == (IPv4Address("10.1.0.10"),)
    assert p.host("c").addresses == (IPv4Address("10.1.0.11"),)
    assert p.host("relay").address == IPv4Address("198.18.0.10")
    assert p.host("stun").addresses == (IPv4Address("198.18.0.11"), IPv4Address("198.18.0.12"))
    assert p.host("a").gateway == IPv4Address("10.2.0.1")
    assert p.host("stun").gateway == IPv4Address("198.18.0.1")
    assert p.host("stun").prefixlen == 16


def test_public_addresses() -> None:
    p = plan()
    vpc = p.router("vpc")
    assert p.host("c").public_address == vpc.wan_address  # masqueraded
    assert p.host("d").public_address == IPv4Address("198.18.2.1")  # 1:1 NAT
    assert vpc.one_to_one == ((p.host("d").address, IPv4Address("198.18.2.1")),)
    assert p.host("e").public_address == p.host("e").address  # routed, no NAT
    assert p.host("stun").public_address == p.host("stun").address
    wans = [r.wan_address for r in p.routers]
    assert wans == [IPv4Address(f"198.18.1.{i}") for i in (1, 2, 3)]


def test_every_host_and_router_has_one_uplink_port() -> None:
    p = plan()
    ports = [v.b for v in p.veths]
    assert len(set(ports)) == len(ports)
    for h in p.hosts:
        veth = next(v for v in p.veths if v.a.ns == h.ns)
        assert veth.a.ifname == "eth0"
        assert veth.b == h.uplink
        expected_ns = p.internet_ns if h.network == "internet" else p.router(h.network).ns
        assert veth.b.ns == expected_ns
    for r in p.routers:
        veth = next(v for v in p.veths if v.a.ns == r.ns)
        assert (veth.a.ifname, veth.b.ns, veth.bridge) == ("wan0", p.internet_ns, "br0")


def test_veth_ends_never_share_an_interface_index() -> None:
    # The kernel defers carrier changes of a veth whose peer has the same
    # ifindex by up to a second: every end gets a lab-unique index.
    p = plan()
    indexes = [end.ifindex for v in p.veths for end in (v.a, v.b)]
    assert all(i >= 10 for i in indexes)
    assert len(set(indexes)) == len(indexes)


def test_control_link_addresses() -> None:
    p = plan()
    assert p.control.root_address == IPv4Address("100.64.7.5")
    assert p.control.inet_address == IPv4Address("100.64.7.6")
    assert p.control.root_ifname == "wklabcdecp"


def test_plan_is_deterministic() -> None:
    assert plan() == plan()


def test_pick_control_subnet() -> None:
    assert pick_control_subnet([], seed=0) == IPv4Network("100.64.0.4/30")
    assert APISERVER_ADDRESS in IPv4Network("100.64.0.0/30")
    used = [IPv4Network("100.64.0.4/30"), IPv4Network("100.64.0.8/29")]
    assert pick_control_subnet(used, seed=1) == IPv4Network("100.64.0.16/30")
    assert pick_control_subnet([], seed=16383) == IPv4Network("100.64.255.252/30")
    assert pick_control_subnet([], seed=16384) == IPv4Network("100.64.0.4/30")  # wraps, skips 0
    with pytest.raises(RuntimeError, match="no free /30"):
        pick_control_subnet([IPv4Network("100.64.0.0/16")], seed=5)


def test_fixed_block_must_fit() -> None:
    doc = {
        "networks": {"v": {"nat": "symmetric", "cidr": "10.3.0.0/28"}},
        "hosts": {"s": {"network": "v", "address": "10.3.0.14", "addresses": 2}},
    }
    with pytest.raises(TopologyError, match="do not fit"):
        plan_lab(parse_topology(doc), IDS, CONTROL)


def test_pool_exhaustion_is_reported() -> None:
    doc = {
        "networks": {"v": {"nat": "symmetric", "cidr": "10.3.0.0/28"}},
        "hosts": {f"h{i}": {"network": "v"} for i in range(14)},
    }
    with pytest.raises(TopologyError, match=r"no free address left in 10\.3\.0\.0/28"):
        plan_lab(parse_topology(doc), IDS, CONTROL)
