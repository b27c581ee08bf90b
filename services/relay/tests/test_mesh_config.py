"""The mesh flags: secret file, static peers, POD_IP, and running alone without a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from wirekube_relay import timers
from wirekube_relay.__main__ import mesh_config, parse_args
from wirekube_relay.mesh.pool import parse_peers, resolve_delay


def test_without_a_secret_file_the_relay_runs_alone() -> None:
    assert mesh_config(parse_args(["--mesh-peers", "10.0.0.1:3478"]), 3478) is None


def test_flags_and_pod_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123\n")
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    args = parse_args(
        ["--mesh-secret-file", str(secret), "--mesh-dns", "wirekube-relay-pool.ns.svc"]
    )
    cfg = mesh_config(args, 3478)
    assert cfg is not None
    assert cfg.secret == b"0123456789abcdef0123"
    assert cfg.dns_name == "wirekube-relay-pool.ns.svc"
    assert cfg.self_hosts == ("10.1.2.3",)
    assert cfg.static_peers == ()


def test_environment_variables_configure_the_mesh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123")
    monkeypatch.setenv("WIREKUBE_RELAY_MESH_SECRET_FILE", str(secret))
    monkeypatch.setenv("WIREKUBE_RELAY_MESH_PEERS", "r1.example:4000, 10.0.0.2")
    monkeypatch.delenv("POD_IP", raising=False)
    cfg = mesh_config(parse_args([]), 3478)
    assert cfg is not None
    assert cfg.static_peers == (("r1.example", 4000), ("10.0.0.2", 3478))
    assert cfg.self_hosts == ()


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        mesh_config(parse_args(["--mesh-secret-file", str(secret)]), 3478)


def test_peer_lists() -> None:
    assert parse_peers("", 3478) == []
    assert parse_peers("a:1,,b", 3478) == [("a", 1), ("b", 3478)]
    assert parse_peers("[fd00::1]:3478,[fd00::2]", 9) == [("fd00::1", 3478), ("fd00::2", 9)]


def test_the_pool_name_is_asked_again_soon_until_it_names_another_replica() -> None:
    assert resolve_delay(found_others=False) == timers.MESH_RESOLVE_RETRY
    assert resolve_delay(found_others=True) == timers.MESH_RESOLVE_INTERVAL == 30.0


def test_the_pool_name_is_asked_again_soon_while_a_named_replica_has_no_link() -> None:
    # All replicas replaced at once: the answer names the old, dead ones.
    assert resolve_delay(found_others=True, unlinked=True) == timers.MESH_RESOLVE_RETRY
    assert resolve_delay(found_others=False, unlinked=True) == timers.MESH_RESOLVE_RETRY
