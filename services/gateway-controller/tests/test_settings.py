"""Flags and environment of the managed relay reconciler."""

from __future__ import annotations

import pytest

from wirekube_gateway.settings import (
    DEFAULT_RELAY_IMAGE,
    SettingsError,
    build_parser,
    from_args,
)


def settings(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name in ("WIREKUBE_RELAY_IMAGE", "WIREKUBE_MANAGED_RELAY", "POD_NAMESPACE",
                 "WIREKUBE_RELAY_NAMESPACE", "WIREKUBE_RELAY_IMAGE_PULL_POLICY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return from_args(build_parser().parse_args(["--identity", "x", *argv]))


def test_defaults_run_the_managed_relay_in_the_pods_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings([], monkeypatch, POD_NAMESPACE="wk")
    assert s.managed_relay is not None
    assert (s.managed_relay.namespace, s.managed_relay.image) == ("wk", DEFAULT_RELAY_IMAGE)
    assert s.managed_relay.image_pull_policy == "IfNotPresent" and s.mesh_name == "default"


def test_the_image_comes_from_the_environment_and_flags_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings([], monkeypatch, WIREKUBE_RELAY_IMAGE="reg.example/wirekube/relay:9",
                 WIREKUBE_RELAY_IMAGE_PULL_POLICY="Never")  # fmt: skip
    assert s.managed_relay is not None
    assert (s.managed_relay.image, s.managed_relay.image_pull_policy) == (
        "reg.example/wirekube/relay:9",
        "Never",
    )
    s = settings(["--relay-image", "other:1"], monkeypatch, WIREKUBE_RELAY_IMAGE="env:2")
    assert s.managed_relay is not None and s.managed_relay.image == "other:1"


def test_off_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(["--managed-relay", "off"], monkeypatch).managed_relay is None
    assert settings([], monkeypatch, WIREKUBE_MANAGED_RELAY="off").managed_relay is None
    with pytest.raises(SettingsError, match="--relay-image"):
        settings(["--relay-image", "has space"], monkeypatch)
    with pytest.raises(SettingsError, match="on or off"):
        settings([], monkeypatch, WIREKUBE_MANAGED_RELAY="no")
    with pytest.raises(SettingsError, match="pull-policy"):
        settings([], monkeypatch, WIREKUBE_RELAY_IMAGE_PULL_POLICY="Sometimes")
    with pytest.raises(SystemExit):
        settings(["--relay-image-pull-policy", "Sometimes"], monkeypatch)
