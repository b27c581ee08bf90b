"""Rendering a plan into ip/nft commands."""

from __future__ import annotations

from ipaddress import IPv4Network

from wirekube_lab.addressing import plan_lab
from wirekube_lab.commands import control_batch, namespace_script, root_batch
from wirekube_lab.naming import RunIds
from wirekube_lab.topology import parse_topology

PLAN = plan_lab(
    parse_topology(
        {
            "networks": {"home": {"nat": "port-restricted"}, "pub": {"nat": "public"}},
            "hosts": {
                "a": {"network": "home"},
                "b": {"network": "pub"},
                "s": {"network": "internet", "role": "stun"},
            },
        }
    ),
    RunIds(7, "zzzzz"),
    IPv4Network("100.64.9.8/30"),
)


def test_root_batch_creates_namespaces_then_veths_inside_them() -> None:
    lines = root_batch(PLAN)
    adds = [line for line in lines if line.startswith("netns add")]
    assert len(adds) == len(PLAN.namespaces)
    assert lines[: len(adds)] == adds
    assert (
        "link add wan0 netns wklab-7-zzzzz-home-gw index 12 type veth "
        "peer name p1 netns wklab-7-zzzzz-internet index 11" in lines
    )
    assert (
        "link add eth0 netns wklab-7-zzzzz-a index 16 type veth "
        "peer name p3 netns wklab-7-zzzzz-home-gw index 15" in lines
    )


def test_control_batch() -> None:
    assert control_batch(PLAN) == [
        "link add wklzzzzzcp type veth peer name cp0 netns wklab-7-zzzzz-internet index 9",
        "address add 100.64.9.9/30 dev wklzzzzzcp",
        "link set wklzzzzzcp up",
    ]


def test_internet_script() -> None:
    text = namespace_script(PLAN, PLAN.internet_ns)
    assert "address add 198.18.0.1/16 dev br0" in text
    assert "address add 100.64.9.10/30 dev cp0" in text
    assert "route add 198.19.1.0/24 via 198.18.1.2" in text  # the public network is routed
    assert "route add default" not in text  # nothing leaves the lab
    # Off first (inherited from the root namespace), then on: the last write wins.
    assert text.rindex("echo 1 > /proc/sys/net/ipv4/ip_forward") > text.index(
        "echo 0 > /proc/sys/net/ipv4/ip_forward"
    )
    assert "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables" in text
    assert "nft -f -" in text


def test_router_script() -> None:
    text = namespace_script(PLAN, PLAN.router("home").ns)
    assert "address add 198.18.1.1/16 dev wan0" in text
    assert "link add lan0 type bridge" in text
    assert "link set p3 master lan0" in text
    assert "address add 10.1.0.1/24 dev lan0" in text
    assert "route add default via 198.18.0.1" in text
    assert "nf_conntrack_udp_timeout_stream" in text


def test_host_script() -> None:
    text = namespace_script(PLAN, PLAN.host("s").ns)
    # A host does not forward, whatever the root namespace it inherits from does.
    assert "echo 0 > /proc/sys/net/ipv4/ip_forward" in text
    assert "echo 1 > /proc/sys/net/ipv4/ip_forward" not in text
    assert "address add 198.18.0.10/16 dev eth0" in text
    assert "address add 198.18.0.11/16 dev eth0" in text
    assert "route add default via 198.18.0.1" in text
    assert "nft" not in text
    assert text.startswith("set -e\n")
