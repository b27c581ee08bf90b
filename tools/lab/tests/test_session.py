"""The pure parts of up/exec/down: the exec command line and the summary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wirekube_lab.__main__ import _split_dashes
from wirekube_lab.session import SessionError, exec_argv, summary

STATE = {
    "pid": 1,
    "topology": "t",
    "steady": True,
    "kubeconfig": "/s/kubeconfig",
    "lab_kubeconfig": "/s/kubeconfig-lab",
    "nodes": ["node-1", "node-2"],
    "namespaces": {
        "node-1": "wklab-1-abcde-node-1",
        "node-2": "wklab-1-abcde-node-2",
        "home-gw": "wklab-1-abcde-home-gw",
    },
    "addresses": {"node-1": "10.1.0.10", "node-2": "10.2.0.10"},
    "agents": {"node-1": os.getpid(), "node-2": 2**22 + 12345},
}


def test_exec_enters_the_agents_mount_namespace_when_it_runs() -> None:
    assert exec_argv(STATE, "node-1", ["wg", "show"]) == [
        "nsenter",
        "-t",
        str(os.getpid()),
        "-m",
        "-n",
        "wg",
        "show",
    ]
    # no live agent (or a router): the namespace alone
    assert exec_argv(STATE, "node-2", ["true"])[:4] == [
        "ip",
        "netns",
        "exec",
        "wklab-1-abcde-node-2",
    ]
    assert exec_argv(STATE, "home-gw", ["nft", "list", "ruleset"])[3] == "wklab-1-abcde-home-gw"
    with pytest.raises(SessionError, match="home-gw"):
        exec_argv(STATE, "node-9", ["true"])
    with pytest.raises(SessionError, match="nothing to run"):
        exec_argv(STATE, "node-1", [])


def test_summary_says_where_the_kubeconfig_is_and_what_to_try() -> None:
    text = summary(STATE, Path("/s"))
    assert "/s/kubeconfig" in text and "wirekubectl why node-1 node-2" in text
    assert "wirekube-lab down" in text and "--state-dir /s" in text


def test_exec_options_before_the_dashes() -> None:
    assert _split_dashes(["--state-dir", "/x", "--", "ls", "--", "-l"]) == (
        ["--state-dir", "/x"],
        True,
        ["ls", "--", "-l"],
    )
    assert _split_dashes(["ls"]) == (["ls"], False, [])
