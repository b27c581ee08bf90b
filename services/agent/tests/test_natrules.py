"""The active gateway node's nftables rules: rendering and diffing (pure)."""

from __future__ import annotations

from wirekube_agent.gateway.natrules import (
    COMMENT_MAX,
    NftRule,
    Observed,
    counters,
    parse_listing,
    rules_for,
    script,
)
from wirekube_common.gateway import GatewayDuty


def duty(
    gateway: str = "vpc-b", *cidrs: str, snat: bool = True, source: str | None = "172.20.1.11"
) -> GatewayDuty:
    return GatewayDuty(
        gateway=gateway,
        cidrs=cidrs or ("172.20.1.0/24",),
        snat=snat,
        snat_source=source if snat else None,
        client_sources=("10.231.1.10/32",),
    )


def test_snat_to_the_source_with_forward_and_reply_rules_per_cidr() -> None:
    rules, problems = rules_for([duty("vpc-b", "172.20.1.0/24", "172.21.0.0/16")], "wire_kube")
    assert problems == []
    by = {(r.purpose, r.cidr) for r in rules}
    assert by == {
        (p, c) for p in ("forward", "return", "snat") for c in ("172.20.1.0/24", "172.21.0.0/16")
    }
    snat = next(r for r in rules if r.purpose == "snat" and r.cidr == "172.20.1.0/24")
    assert snat.chain == "postrouting"
    assert snat.render() == (
        'iifname "wire_kube" oifname != "wire_kube" ip daddr 172.20.1.0/24 counter '
        'snat ip to 172.20.1.11 comment "wirekube gateway vpc-b: snat wire_kube -> '
        '172.20.1.0/24 to 172.20.1.11"'
    )
    fwd = next(r for r in rules if r.purpose == "forward" and r.cidr == "172.20.1.0/24")
    assert fwd.chain == "forward"
    assert fwd.render().startswith('iifname "wire_kube" ip daddr 172.20.1.0/24 counter accept')
    ret = next(r for r in rules if r.purpose == "return" and r.cidr == "172.20.1.0/24")
    assert "ip saddr 172.20.1.0/24 ct state established,related" in ret.render()
    assert ret.render().startswith('oifname "wire_kube"')


def test_snat_off_forwards_only_and_no_source_means_masquerade() -> None:
    off, _ = rules_for([duty(snat=False)], "wire_kube")
    assert {r.purpose for r in off} == {"forward", "return"}
    masq, _ = rules_for([duty(source=None)], "wire_kube")
    assert {r.purpose for r in masq} == {"forward", "return", "masquerade"}
    rule = next(r for r in masq if r.purpose == "masquerade")
    assert "counter masquerade comment" in rule.render()


def test_a_bad_source_ip_masquerades_and_says_so_a_bad_cidr_is_skipped() -> None:
    rules, problems = rules_for([duty("g", "172.20.1.0/24", "not-a-cidr", source="1.2.3")], "wk0")
    assert {r.purpose for r in rules} == {"forward", "return", "masquerade"}
    assert {r.cidr for r in rules} == {"172.20.1.0/24"}
    assert any("'1.2.3' is not an IPv4 address" in p for p in problems)
    assert any("'not-a-cidr'" in p for p in problems)


def test_cidrs_are_normalised_and_an_unusable_interface_name_yields_nothing() -> None:
    rules, _ = rules_for([duty("g", "172.20.1.7/24")], "wire_kube")
    assert {r.cidr for r in rules} == {"172.20.1.0/24"}
    rules, problems = rules_for([duty()], 'wk" accept')
    assert rules == frozenset() and problems


def test_comments_are_unique_keys_safe_and_bounded() -> None:
    a = NftRule("vpc-b", "snat", "172.20.1.0/24", "wire_kube", "172.20.1.11")
    b = NftRule("vpc-b", "snat", "172.20.1.0/24", "wire_kube", "172.20.1.12")
    assert a.key() != b.key()  # a new source is a new rule, not an in-place edit
    assert a.key() == NftRule("vpc-b", "snat", "172.20.1.0/24", "wire_kube", "172.20.1.11").key()
    long1 = NftRule("x" * 250 + "a", "snat", "172.20.1.0/24", "wire_kube", "172.20.1.11")
    long2 = NftRule("x" * 250 + "b", "snat", "172.20.1.0/24", "wire_kube", "172.20.1.11")
    assert len(long1.comment) <= COMMENT_MAX and len(long2.comment) <= COMMENT_MAX
    assert long1.comment != long2.comment
    assert long1.comment.endswith("snat wire_kube -> 172.20.1.0/24 to 172.20.1.11")
    odd = NftRule('Evil"; flush ruleset', "forward", "10.0.0.0/8", "wire_kube")
    assert '"' not in odd.comment and ";" not in odd.comment


def test_script_creates_the_table_and_chains_then_adds_only_the_difference() -> None:
    rules, _ = rules_for([duty()], "wire_kube")
    first = script(rules, Observed())
    assert first is not None
    lines = first.splitlines()
    assert lines[0] == "add table ip wirekube"
    assert (
        "add chain ip wirekube forward { type filter hook forward priority filter; policy accept; }"
        in lines
    )
    assert (
        "add chain ip wirekube postrouting { type nat hook postrouting priority srcnat; policy accept; }"
        in lines
    )
    assert sum(line.startswith("add rule ip wirekube ") for line in lines) == 3
    # Everything in place: nothing to do.
    observed = Observed(
        table=True,
        chains=frozenset({"forward", "postrouting"}),
        rules={r.key(): i for i, r in enumerate(sorted(rules, key=NftRule.key), 1)},
    )
    assert script(rules, observed) is None


def test_failover_away_and_a_new_source_replace_only_what_changed() -> None:
    old, _ = rules_for([duty(source="172.20.1.11")], "wire_kube")
    handles = {r.key(): i for i, r in enumerate(sorted(old, key=NftRule.key), 10)}
    observed = Observed(True, frozenset({"forward", "postrouting"}), handles)
    new, _ = rules_for([duty(source="172.20.1.99")], "wire_kube")
    text = script(new, observed)
    assert text is not None
    lines = text.splitlines()
    snat_old = next(r for r in old if r.purpose == "snat")
    assert lines == [
        f"delete rule ip wirekube postrouting handle {handles[snat_old.key()]}",
        "add rule ip wirekube postrouting " + next(r for r in new if r.purpose == "snat").render(),
    ]
    # No duty left: the whole table goes, in one statement.
    assert script(frozenset(), observed) == "delete table ip wirekube\n"
    assert script(frozenset(), Observed()) is None


def test_foreign_and_duplicate_rules_in_our_table_are_deleted() -> None:
    rules, _ = rules_for([duty(snat=False)], "wire_kube")
    keys = sorted(r.key() for r in rules)
    observed = parse_listing(
        listing(
            [
                (keys[0][0], keys[0][1], 4),
                (keys[1][0], keys[1][1], 5),
                (keys[1][0], keys[1][1], 6),
                ("forward", None, 7),
            ]
        )
    )
    text = script(rules, observed)
    assert text is not None
    assert sorted(text.splitlines()) == [
        "delete rule ip wirekube forward handle 6",
        "delete rule ip wirekube forward handle 7",
    ]


def listing(rules: list[tuple[str, str | None, int]]) -> dict[str, object]:
    items: list[dict[str, object]] = [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "wirekube", "handle": 1}},
        {"chain": {"family": "ip", "table": "wirekube", "name": "forward", "handle": 1}},
        {"chain": {"family": "ip", "table": "wirekube", "name": "postrouting", "handle": 2}},
    ]
    for chain, comment, handle in rules:
        rule: dict[str, object] = {
            "family": "ip",
            "table": "wirekube",
            "chain": chain,
            "handle": handle,
            "expr": [{"counter": {"packets": handle, "bytes": handle * 100}}, {"accept": None}],
        }
        if comment is not None:
            rule["comment"] = comment
        items.append({"rule": rule})
    return {"nftables": items}


def test_parse_listing_and_counters() -> None:
    doc = listing([("forward", "a", 3), ("postrouting", "b", 4)])
    observed = parse_listing(doc)
    assert observed.table and observed.chains == {"forward", "postrouting"}
    assert observed.rules == {("forward", "a"): 3, ("postrouting", "b"): 4}
    assert counters(doc) == {"a": (3, 300), "b": (4, 400)}
    assert parse_listing({}) == Observed()
    assert parse_listing({"nftables": "garbage"}) == Observed()
