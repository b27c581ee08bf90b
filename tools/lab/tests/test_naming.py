"""Run identities and the sweep's name parsing: strict, so foreign namespaces are never touched."""

from __future__ import annotations

import os

from wirekube_lab.naming import IFNAMSIZ, RunIds, parse_netns, stale_namespaces


def test_new_run_ids_embed_our_pid() -> None:
    ids = RunIds.new()
    assert ids.pid == os.getpid()
    assert len(ids.run) == 5
    assert ids.prefix == f"wklab-{os.getpid()}-{ids.run}-"
    assert RunIds.new().run != ids.run or RunIds.new().run != ids.run


def test_interface_names_fit_the_kernel_limit() -> None:
    ids = RunIds(123, "ab1cd")
    assert ids.control_ifname == "wklab1cdcp"
    assert len(ids.control_ifname) <= IFNAMSIZ
    assert ids.wireguard_ifname(0) == "wkab1cd0"
    assert len(ids.wireguard_ifname(999)) <= IFNAMSIZ


def test_parse_roundtrip() -> None:
    ids = RunIds(98765, "q1w2e")
    parsed = parse_netns(ids.netns("vpc-a-gw"))
    assert parsed is not None
    assert (parsed.pid, parsed.run, parsed.entity) == (98765, "q1w2e", "vpc-a-gw")


def test_foreign_names_are_ignored() -> None:
    for name in [
        "wklab-12-abcde",  # no entity
        "wklab-0-abcde-x",  # pid 0
        "wklab-12-ABCDE-x",
        "wklab-12-abcd-x",
        "xwklab-12-abcde-x",
        "h3exp-a",
        "wklab-abc-abcde-x",
        "wklab-12-abcde-x y",
    ]:
        assert parse_netns(name) is None, name


def test_stale_namespaces() -> None:
    names = ["wklab-10-aaaaa-internet", "wklab-11-bbbbb-node-1", "other", "wklab-10-aaaaa-n1"]
    stale = stale_namespaces(names, alive={11})
    assert [p.name for p in stale] == ["wklab-10-aaaaa-internet", "wklab-10-aaaaa-n1"]
