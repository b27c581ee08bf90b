"""Which kubeconfig the CLI uses, and its friendly error when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from wirekube_cli.errors import EXIT_NO_CONFIG, CliError
from wirekube_cli.kube import find_kubeconfig


def test_kubeconfig_search_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    default = home / ".kube" / "config"
    default.write_text("{}")
    first, second = tmp_path / "a", tmp_path / "b"
    second.write_text("{}")
    env = {"HOME": str(home), "KUBECONFIG": f"{first}:{second}"}
    assert find_kubeconfig(None, env) == str(second)  # the first existing one
    assert find_kubeconfig(None, {"HOME": str(home)}) == str(default)
    assert find_kubeconfig(str(second), env) == str(second)
    assert find_kubeconfig(None, {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "x"}) is None


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no kubeconfig found") as err:
        find_kubeconfig(None, {"HOME": str(tmp_path)})
    assert err.value.code == EXIT_NO_CONFIG
    with pytest.raises(CliError, match="does not exist"):
        find_kubeconfig(str(tmp_path / "missing"), {})
