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


def test_context_selects_cluster_and_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    from wirekube_cli.kube import Cluster  # noqa: PLC0415

    doc = {
        "current-context": "one",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://127.0.0.1:6443"}},
            {"name": "c2", "cluster": {"server": "https://127.0.0.2:7443"}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c1", "user": "u"}},
            {"name": "two", "context": {"cluster": "c2", "user": "u"}},
        ],
    }
    kc = tmp_path / "config"
    kc.write_text(yaml.safe_dump(doc))
    assert Cluster(str(kc)).server == "https://127.0.0.1:6443"
    assert Cluster(str(kc), "two").server == "https://127.0.0.2:7443"
    with pytest.raises(CliError, match="three") as err:
        Cluster(str(kc), "three")
    assert err.value.code == EXIT_NO_CONFIG
