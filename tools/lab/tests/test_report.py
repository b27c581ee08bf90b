"""The run document: ok/exit status and text rendering."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from wirekube_lab.addressing import plan_lab
from wirekube_lab.naming import RunIds
from wirekube_lab.report import EXIT_FAILED, EXIT_OK, document, exit_code, failures, render_text
from wirekube_lab.selftest import targets
from wirekube_lab.topology import parse_topology

TOPO_SPEC: dict[str, Any] = {
    "name": "r",
    "networks": {"home": {"nat": "address-restricted"}, "vpc": {"nat": "symmetric"}},
    "hosts": {
        "n1": {"network": "home", "role": "node"},
        "n2": {"network": "vpc", "role": "node"},
        "n3": {"network": "vpc", "role": "node", "public_ip": True},
        "s": {"network": "internet", "role": "stun"},
    },
    "expect": {"paths": {"n1/n2": "direct", "n1/n3": "direct", "n2/n3": "direct"}},
}
TOPO = parse_topology(TOPO_SPEC)
DESCRIBED: dict[str, Any] = {
    "name": "r",
    "run": "abcde",
    "networks": [
        {
            "name": "home",
            "router": "home-gw",
            "nat": "address-restricted",
            "cidr": "10.1.0.0/24",
            "wan_address": "198.18.1.1",
        }
    ],
    "hosts": [
        {
            "name": "n1",
            "role": "node",
            "network": "home",
            "addresses": ["10.1.0.10"],
            "public_address": "198.18.1.1",
        }
    ],
}


def selftest(ok: bool) -> dict[str, Any]:
    return {
        "network": "home",
        "router": "home-gw",
        "kind": "address-restricted",
        "host": "n1",
        "ok": ok,
        "seen": {
            "mapping": "endpoint-independent",
            "filtering": "address-dependent",
            "udp": True,
            "tcp": True,
        },
        "problems": []
        if ok
        else ["filtering address-and-port-dependent, expected address-dependent"],
    }


def doc(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "topology": TOPO,
        "described": DESCRIBED,
        "nat_selftest": [selftest(True)],
        "selftest_note": None,
        "driver": "none",
        "driver_note": "no driver",
        "steady": True,
        "paths": None,
        "pings": None,
        "timings": {"build_s": 0.1},
    }
    args.update(kw)
    return document(**args)


def test_all_good() -> None:
    d = doc()
    assert d["ok"] is True
    assert exit_code(d) == EXIT_OK
    assert set(d) >= {"ok", "topology", "nat_selftest", "paths", "pings", "mesh", "timings"}
    assert d["topology"]["expect_paths"] == {
        "n1/n2": "direct",
        "n1/n3": "direct",
        "n2/n3": "direct",
    }
    text = render_text(d)
    assert "PASS" in text and "RESULT: ok" in text and "expected paths" in text


def test_selftest_failure_fails_the_run() -> None:
    d = doc(nat_selftest=[selftest(False)])
    assert exit_code(d) == EXIT_FAILED
    assert failures(d) == [
        "NAT self-test home (address-restricted, from n1): filtering address-and-port-dependent, expected address-dependent"
    ]
    assert "RESULT: FAILED" in render_text(d)


def test_paths_are_compared_with_expectations() -> None:
    d = doc(paths={"n2/n1": "relay", "n1/n3": "direct", "n2/n3": "direct"})
    assert d["paths"]["n1/n2"] == {"mode": "relay", "expected": "direct"}
    assert failures(d) == ["path n1/n2: relay, expected direct"]
    assert exit_code(doc(steady=False)) == EXIT_FAILED


def test_pings_are_rendered() -> None:
    d = doc(pings={"n1": {"n2": {"sent": 3, "received": 3, "rtt_avg_ms": 0.2}}})
    assert "3/3" in render_text(d)


def test_a_dark_pair_fails_the_run_unless_no_path_is_expected() -> None:
    dark = {"sent": 3, "received": 0, "rtt_avg_ms": None}
    d = doc(pings={"n1": {"n2": dark, "n3": {"sent": 3, "received": 1, "rtt_avg_ms": 0.4}}})
    assert failures(d) == ["pings n1 -> n2: none of 3 answered"]
    assert exit_code(d) == EXIT_FAILED and "RESULT: FAILED" in render_text(d)
    # relay mode never between two NATs that cannot punch: no path, by design
    spec = {
        **TOPO_SPEC,
        "expect": {"paths": {"n1/n2": "none", "n1/n3": "direct", "n2/n3": "direct"}},
    }
    unreachable = doc(topology=parse_topology(spec), pings={"n1": {"n2": dark}})
    assert failures(unreachable) == []


def test_selftest_targets() -> None:
    plan = plan_lab(TOPO, RunIds(1, "aaaaa"), IPv4Network("100.64.0.4/30"))
    assert [(t.network, t.kind, t.host) for t in targets(plan)] == [
        ("home", "address-restricted", "n1"),
        ("vpc", "symmetric", "n2"),
        ("vpc", "one-to-one", "n3"),
    ]
