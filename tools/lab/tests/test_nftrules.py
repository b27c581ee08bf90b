"""nftables rulesets per NAT kind: the statements that make each kind what it is."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from wirekube_lab.addressing import LabPlan, plan_lab
from wirekube_lab.naming import RunIds
from wirekube_lab.nftrules import internet_ruleset, router_ruleset
from wirekube_lab.topology import NAT_KINDS, parse_topology


def lab_plan(kind: str, **nat: object) -> LabPlan:
    doc = {
        "networks": {"n": {"nat": {"kind": kind, **nat}}},
        "hosts": {
            "h": {"network": "n", "role": "node"},
            "p": {"network": "n", "role": "node", "public_ip": kind != "public"},
        },
    }
    return plan_lab(parse_topology(doc), RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))


def ruleset(kind: str, **nat: object) -> str:
    return router_ruleset(lab_plan(kind, **nat).routers[0])


def test_every_rule_has_a_comment() -> None:
    for kind in NAT_KINDS:
        for line in ruleset(kind).splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith(
                ("table", "chain", "type", "flags", "timeout", "map", "set", "}")
            ):
                assert 'comment "' in stripped, (kind, stripped)


def test_port_restricted_is_plain_masquerade() -> None:
    text = ruleset("port-restricted")
    assert 'oifname "wan0" masquerade comment' in text
    assert "fully-random" not in text
    assert "udp_mappings" not in text
    assert "policy drop" in text  # forward: conntrack-only return traffic


def test_symmetric_randomises_every_flow() -> None:
    assert 'oifname "wan0" masquerade random,fully-random' in ruleset("symmetric")


def test_full_cone_maps_any_remote() -> None:
    text = ruleset("full-cone")
    assert "map udp_mappings" in text
    assert "udp_contacted" not in text
    assert "dnat ip to udp dport map @udp_mappings" in text
    assert (
        "update @udp_mappings { udp sport : ct original ip saddr . ct original proto-src }" in text
    )
    assert "priority srcnat + 10" in text  # after source NAT: the mapped port is visible
    assert "timeout 120s" in text


def test_address_restricted_checks_contacted_remotes() -> None:
    text = ruleset("address-restricted", mapping_timeout=45)
    assert "set udp_contacted" in text
    assert "udp dport . ip saddr @udp_contacted dnat ip to udp dport map @udp_mappings" in text
    assert "update @udp_contacted { udp sport . ip daddr }" in text
    assert "timeout 45s" in text


def test_tcp_only_lets_only_tcp_out() -> None:
    text = ruleset("tcp-only")
    assert 'iifname "lan0" oifname "wan0" meta l4proto tcp accept' in text
    assert 'iifname "lan0" oifname "wan0" accept' not in text


def test_public_router_neither_translates_nor_filters() -> None:
    text = ruleset("public")
    assert "masquerade" not in text
    assert 'iifname "wan0" oifname "lan0" accept' in text


@pytest.mark.parametrize("kind", [k for k in NAT_KINDS if k != "public"])
def test_one_to_one_nat_for_public_ip_nodes(kind: str) -> None:
    plan = lab_plan(kind)
    router = plan.routers[0]
    ((private, public),) = router.one_to_one
    text = router_ruleset(router)
    assert f'iifname "wan0" ip daddr {public} dnat ip to {private}' in text
    assert f'oifname "wan0" ip saddr {private} snat ip to {public}' in text
    assert text.index(f"snat ip to {public}") < text.index("masquerade")  # 1:1 first
    assert "ct status dnat accept" in text
    # hairpin: the LAN reaches the public address, replies return via the router
    assert f'iifname "lan0" ip daddr {public} dnat ip to {private}' in text
    assert f'oifname "lan0" ct status dnat ip saddr {private} snat ip to {public}' in text
    rand = " fully-random" if kind == "symmetric" else ""
    assert (
        f'oifname "lan0" ct status dnat ip saddr {router.lan_cidr} '
        f"snat ip to {router.wan_address}{rand}"
    ) in text


@pytest.mark.parametrize("kind", NAT_KINDS)
def test_unsolicited_inbound_is_dropped_unless_asked(kind: str) -> None:
    assert 'iifname "wan0" drop' in ruleset(kind)
    assert 'iifname "wan0" drop' not in ruleset(kind, inbound_to_router=True)


def test_internet_namespace_only_opens_the_apiserver_door() -> None:
    plan = lab_plan("symmetric")
    text = internet_ruleset(plan.control)
    assert "ip daddr 100.64.0.1 meta l4proto tcp dnat ip to 100.64.1.1" in text
    assert 'oifname "cp0" masquerade' in text
    assert 'oifname "cp0" ct status dnat accept' in text
    assert text.index('oifname "cp0" ct status dnat accept') < text.index('oifname "cp0" drop')
    assert 'iifname "cp0" drop' in text


def test_tls_only_lets_only_the_proxy_out_to_443() -> None:
    doc = {
        "networks": {"corp": {"nat": "tls-only"}},
        "hosts": {
            "n": {"network": "corp", "role": "node"},
            "px": {"network": "corp", "role": "proxy"},
        },
    }
    plan = plan_lab(parse_topology(doc), RunIds(1, "aaaaa"), IPv4Network("100.64.1.0/30"))
    router = plan.routers[0]
    proxy = plan.host("px").addresses[0]
    assert router.proxies == (proxy,)
    text = router_ruleset(router)
    assert f"ip saddr {{ {proxy} }} tcp dport 443 accept" in text
    assert (
        'ip daddr 100.64.0.1 meta l4proto tcp accept comment "the lab\'s API server door"' in text
    )
    assert 'iifname "lan0" oifname "wan0" accept' not in text
    assert 'meta l4proto tcp accept comment "only TCP leaves"' not in text
    assert "policy drop" in text


def test_tls_only_without_a_proxy_lets_nothing_but_the_api_server_out() -> None:
    text = ruleset("tls-only")
    assert "dport 443" not in text
    assert "ip daddr 100.64.0.1" in text
