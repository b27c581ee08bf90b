"""Registry policy and allow-list admission (pure)."""

from __future__ import annotations

from wirekube_common import wgkey
from wirekube_relay.client.auth import AllowList, peer_key
from wirekube_relay.client.registry import Registry


def test_registry_newest_wins_and_conditional_unregister() -> None:
    reg: Registry[str] = Registry()
    assert reg.register(b"k", "c1") is None
    assert reg.register(b"k", "c1") is None  # same connection again: nothing replaced
    assert reg.register(b"k", "c2") == "c1"
    assert not reg.unregister(b"k", "c1")  # stale owner cannot remove the new one
    assert reg.get(b"k") == "c2"
    assert reg.unregister(b"k", "c2")
    assert len(reg) == 0


def test_peer_key_translation() -> None:
    key = wgkey.public_key(wgkey.generate_private_key())
    assert peer_key({"spec": {"publicKey": wgkey.encode(key)}}) == key
    assert peer_key({"spec": {"publicKey": "not-a-key"}}) is None
    assert peer_key({"spec": {}}) is None
    assert peer_key({}) is None


def test_allowlist_fails_closed_until_synced_and_reports_removals() -> None:
    k1, k2 = b"1" * 32, b"2" * 32
    allow = AllowList(enabled=True)
    removed: list[set[bytes]] = []
    allow.on_removed = removed.append
    assert allow.allows(k1) == "allowlist-not-ready"
    allow.replace([k1, k2])
    assert allow.allows(k1) is None and allow.allows(b"3" * 32) == "not-allowed"
    allow.replace([k1])
    assert removed == [{k2}]
    allow.replace([k2])
    assert removed == [{k2}, {k1}]
    assert allow.allows(k2) is None and allow.allows(k1) == "not-allowed"


def test_disabled_allowlist_admits_everyone() -> None:
    allow = AllowList(enabled=False)
    assert allow.allows(b"x" * 32) is None
