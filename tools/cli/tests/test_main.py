"""The command line itself: --help everywhere, usage errors exit 2."""

from __future__ import annotations

import pytest

from wirekube_cli.__main__ import main

COMMANDS = ["status", "paths", "why", "graph", "relays", "doctor"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: wirekubectl") and "--kubeconfig" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paths", "-o", "xml"]) == 2
    assert main(["why", "node-1"]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
