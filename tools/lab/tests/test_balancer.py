"""The ``load-balancer`` host role: topology validation, its ruleset and its set-up script."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from wirekube_lab.addressing import plan_lab
from wirekube_lab.commands import namespace_script
from wirekube_lab.naming import RunIds
from wirekube_lab.nftrules import balancer_ruleset
from wirekube_lab.topology import TopologyError, parse_topology

POOL: dict[str, Any] = {
    "networks": {"vpc": {"nat": "symmetric"}},
    "hosts": {
        "n1": {"network": "vpc", "role": "node"},
        "r1": {"network": "internet", "role": "relay"},
        "r2": {"network": "internet", "role": "relay"},
        "r3": {"network": "internet", "role": "relay"},
        "lb": {"network": "internet", "role": "load-balancer", "backends": ["r1", "r2", "r3"]},
    },
}


def changed(host: str, **fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(POOL)
    doc["hosts"][host].update(fields)
    return doc


def test_a_pool_behind_a_balancer_parses_with_defaults() -> None:
    lb = parse_topology(POOL).host("lb")
    assert lb.role == "load-balancer"
    assert lb.backends == ("r1", "r2", "r3")
    assert lb.ports == (3478,)
    assert lb.balance == "random"
    rr = parse_topology(changed("lb", ports=[3478, 443], balance="round-robin")).host("lb")
    assert (rr.ports, rr.balance) == ((3478, 443), "round-robin")


@pytest.mark.parametrize(
    ("host", "fields", "message"),
    [
        ("lb", {"backends": []}, "hosts.lb.backends: a list of at least one relay host"),
        ("lb", {"backends": "r1"}, "hosts.lb.backends: a list of at least one relay host"),
        ("lb", {"backends": ["r1", "r1"]}, "a backend is listed twice"),
        ("lb", {"backends": ["r1", "r9"]}, "hosts.lb.backends: unknown host 'r9'"),
        ("lb", {"backends": ["r1", "n1"]}, "'n1' has role node, not relay"),
        ("lb", {"backends": [1]}, "hosts.lb.backends[0]: expected a string"),
        ("lb", {"ports": []}, "hosts.lb.ports: expected a non-empty list"),
        ("lb", {"ports": [0]}, "ports are within 1..65535"),
        ("lb", {"ports": [3478, 3478]}, "a port is listed twice"),
        ("lb", {"ports": ["3478"]}, "hosts.lb.ports[0]: expected an integer"),
        ("lb", {"balance": "least-conn"}, "unknown balance 'least-conn'"),
        ("lb", {"network": "vpc"}, "hosts.lb.network: a load-balancer is on the internet"),
        ("r1", {"network": "vpc"}, "hosts.lb.backends: 'r1' is not on the internet"),
        ("r1", {"backends": ["r2"]}, "hosts.r1.backends: only meaningful for role load-balancer"),
        ("r1", {"balance": "random"}, "hosts.r1.balance: only meaningful for role load-balancer"),
        ("lb", {"role": "plain"}, "hosts.lb.backends: only meaningful for role load-balancer"),
    ],
)
def test_invalid_balancers_name_the_problem(
    host: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology(changed(host, **fields))
    assert message in str(info.value)


def test_the_ruleset_picks_a_backend_per_new_connection_and_keeps_the_port() -> None:
    backends = [IPv4Address("198.18.0.11"), IPv4Address("198.18.0.12")]
    text = balancer_ruleset(IPv4Address("198.18.0.20"), backends, [3478, 443], "random")
    assert (
        "ip daddr 198.18.0.20 tcp dport { 3478, 443 } "
        "dnat ip to numgen random mod 2 map { 0 : 198.18.0.11, 1 : 198.18.0.12 }"
    ) in text
    assert "ct status dnat masquerade" in text  # replies return through the balancer
    assert "numgen inc mod 2" in balancer_ruleset(
        IPv4Address("198.18.0.20"), backends, [3478], "round-robin"
    )
    for line in text.splitlines():
        if line.strip().startswith(("ip ", "ct ")):
            assert 'comment "' in line


def test_the_balancer_namespace_forwards_with_its_backends_addresses() -> None:
    plan = plan_lab(parse_topology(POOL), RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))
    lb = plan.host("lb")
    script = namespace_script(plan, lb.ns)
    addrs = [str(plan.host(r).address) for r in ("r1", "r2", "r3")]
    assert f"0 : {addrs[0]}, 1 : {addrs[1]}, 2 : {addrs[2]}" in script
    assert f"ip daddr {lb.address} tcp dport {{ 3478 }}" in script
    assert "net/ipv4/ip_forward" in script
    assert "send_redirects" in script  # no ICMP redirect sends clients around it
    relay_script = namespace_script(plan, plan.host("r1").ns)
    assert "nft" not in relay_script and "ip_forward" not in relay_script
