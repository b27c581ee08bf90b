"""Topology parsing and validation: good files parse, bad ones fail with a precise message."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab.topology import (
    VPN_LABEL,
    TopologyError,
    load_topology,
    pair_key,
    parse_topology,
)

SHIPPED = sorted((Path(__file__).resolve().parents[3] / "lab" / "topologies").glob("*.yaml"))

BASE: dict[str, Any] = {
    "name": "t",
    "networks": {
        "home": {"nat": {"kind": "address-restricted", "mapping_timeout": 30}},
        "vpc": {"nat": "symmetric", "cidr": "10.9.0.0/24", "router": "natgw"},
    },
    "hosts": {
        "node-1": {"network": "home", "role": "node", "labels": {"zone": "a"}},
        "node-2": {"network": "vpc", "role": "node", "address": "10.9.0.50"},
        "node-3": {"network": "vpc", "role": "node", "public_ip": True},
        "stun": {"network": "internet", "role": "stun"},
    },
    "mesh": {"relay": {"mode": "auto", "handshakeTimeoutSeconds": 3}},
    "expect": {
        "paths": {"node-1/node-2": "direct", "node-3/node-1": "direct", "node-2/node-3": "direct"}
    },
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    cursor = doc
    for key in parents:
        cursor = cursor[key]
    if value is _DELETE:
        del cursor[last]
    else:
        cursor[last] = value
    return doc


_DELETE = object()


def test_base_parses_with_defaults() -> None:
    topo = parse_topology(BASE)
    assert [n.name for n in topo.networks] == ["home", "vpc"]
    home = topo.network("home")
    assert home.router == "home-gw"
    assert home.nat.kind == "address-restricted"
    assert home.nat.mapping_timeout == 30
    assert not home.nat.inbound_to_router
    vpc = topo.network("vpc")
    assert vpc.router == "natgw"
    assert vpc.cidr == IPv4Network("10.9.0.0/24")
    assert topo.host("node-2").address == IPv4Address("10.9.0.50")
    assert topo.host("node-3").public_ip
    assert topo.host("stun").addresses == 2  # STUN responders get two addresses by default
    assert topo.host("node-1").addresses == 1
    assert topo.host("node-1").labels_dict == {VPN_LABEL: "true", "zone": "a"}
    assert topo.mesh["relay"]["handshakeTimeoutSeconds"] == 3
    assert topo.expected_paths[pair_key("node-3", "node-1")] == "direct"
    assert [h.name for h in topo.nodes] == ["node-1", "node-2", "node-3"]


def test_vpn_label_can_be_overridden() -> None:
    doc = with_change("hosts.node-1.labels", {VPN_LABEL: "false"})
    assert parse_topology(doc).host("node-1").labels_dict[VPN_LABEL] == "false"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("networks.home.nat.kind", "cone", "networks.home.nat.kind: unknown NAT kind 'cone'"),
        ("networks.home.nat.colour", "x", "networks.home.nat.colour: unknown key"),
        ("networks.home.nat.mapping_timeout", 1, "must be within 5..3600"),
        ("networks.home.nat.inbound_to_router", "yes", "expected true or false"),
        ("networks.vpc.cidr", "8.8.8.0/24", "must be a private (RFC 1918) range"),
        ("networks.vpc.cidr", "10.9.0.1/24", "not an IPv4 network"),
        ("networks.vpc.cidr", "10.9.0.0/30", "too small"),
        ("networks.vpc.router", "node-1", "hosts.node-1: name already used by router of vpc"),
        (
            "networks.home.router",
            "natgw",
            "networks.vpc.router: name 'natgw' already used by router of home",
        ),
        ("networks.Bad_Name", {"nat": "symmetric"}, "not a valid name"),
        ("networks.internet", {"nat": "symmetric"}, "'internet' is implicit"),
        ("hosts.node-1.network", "vpc-z", "hosts.node-1.network: unknown network 'vpc-z'"),
        ("hosts.node-1.role", "router", "unknown role 'router'"),
        ("hosts.node-1.address", "10.1.0.20", "needs an explicit cidr"),
        ("hosts.node-2.address", "10.9.1.5", "is not a usable host address"),
        ("hosts.node-2.address", "10.9.0.1", "the first address belongs to the gateway"),
        ("hosts.node-2.address", "not-an-ip", "not an IPv4 address"),
        ("hosts.stun.public_ip", True, "a host on the internet is already public"),
        ("hosts.stun.labels", {"a": "b"}, "only meaningful for role node"),
        ("hosts.node-1.labels", {"a": True}, "expected a string value"),
        ("hosts.node-1.addresses", 9, "must be within 1..4"),
        (
            "hosts.node-1",
            {"network": "home", "public_ip": False, "public_address": "198.18.2.9"},
            "given but public_ip is false",
        ),
        ("hosts.node-3.public_address", "203.0.113.9", "must lie in 198.18.0.0/16"),
        ("hosts.node-1.extra", 1, "hosts.node-1.extra: unknown key"),
        ("hosts", {}, "at least one host"),
        ("mesh.relayMode", "auto", "not a WireKubeMesh spec field"),
        ("mesh.relay", "auto", "mesh.relay: expected a mapping"),
        ("expect.paths.node-1/node-2", "maybe", "unknown path mode 'maybe'"),
        ("expect.paths.node-1/stun", "direct", "'stun' is not a host with role node"),
        ("expect.paths.node-1", "direct", "a key is two different node names"),
        ("expect.paths.node-2/node-1", "relay", "pair listed twice"),
        ("expect.paths.node-2/node-3", _DELETE, "missing node pairs: node-2/node-3"),
        ("colour", "blue", "topology.colour: unknown key"),
    ],
)
def test_invalid_topologies_name_the_problem(path: str, value: Any, message: str) -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology(with_change(path, value))
    assert message in str(info.value)


def test_public_network_rules() -> None:
    doc = with_change("networks.pub", {"nat": "public", "cidr": "10.5.0.0/24"})
    with pytest.raises(TopologyError, match=r"must lie in 198\.19\.0\.0/16"):
        parse_topology(doc)
    doc = with_change("networks.pub", {"nat": "public"})
    doc["hosts"]["p1"] = {"network": "pub", "public_ip": True}
    with pytest.raises(TopologyError, match="has no NAT; its hosts are public"):
        parse_topology(doc)


def test_overlapping_networks_and_duplicate_addresses() -> None:
    doc = with_change("networks.home.cidr", "10.9.0.0/16")
    with pytest.raises(TopologyError, match="overlaps network"):
        parse_topology(doc)
    doc = copy.deepcopy(BASE)
    doc["hosts"]["node-4"] = {"network": "vpc", "address": "10.9.0.50"}
    with pytest.raises(TopologyError, match="already used by node-2"):
        parse_topology(doc)


def test_not_a_mapping() -> None:
    with pytest.raises(TopologyError, match="topology: expected a mapping, got list"):
        parse_topology([1, 2])


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hosts: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(path)


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-lab.yaml"
    path.write_text("hosts:\n  a: {network: internet}\n")
    assert load_topology(path).name == "my-lab"


def test_shipped_topologies_are_complete() -> None:
    names = {p.stem for p in SHIPPED}
    for n in range(1, 6):
        assert any(name.startswith(f"topology-{n}-") for name in names), n
    assert {
        "topology-3-multi-cloud-port-restricted",
        "topology-4-home-lab-cloud-port-restricted",
    } <= names
    for path in SHIPPED:
        topo = load_topology(path)
        assert topo.name == path.stem
        nodes = topo.nodes
        assert len(topo.expect_paths) == len(nodes) * (len(nodes) - 1) // 2, path
        assert [h for h in topo.hosts if h.role == "relay" and h.network == "internet"], path
        assert [h for h in topo.hosts if h.role == "stun" and h.addresses >= 2], path
        kinds = {n.nat.kind for n in topo.networks}
        # Home routers are address-restricted (or port-restricted in the variants),
        # cloud NAT gateways symmetric; tls-egress.yaml (ours) adds a tls-only site.
        allowed = {"address-restricted", "port-restricted", "symmetric", "tcp-only", "tls-only"}
        assert kinds <= allowed, path


def test_port_restricted_variants_differ_only_in_home_routers() -> None:
    by_name = {p.stem: load_topology(p) for p in SHIPPED}
    for base in ("topology-3-multi-cloud", "topology-4-home-lab-cloud"):
        a, b = by_name[base], by_name[f"{base}-port-restricted"]
        assert [h for h in a.hosts] == [h for h in b.hosts]
        for na, nb in zip(a.networks, b.networks, strict=True):
            if na.nat.kind == "address-restricted":
                assert nb.nat.kind == "port-restricted"
            else:
                assert na == nb
