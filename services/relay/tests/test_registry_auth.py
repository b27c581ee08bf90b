"""Registry policy and allow-list admission (pure)."""

from __future__ import annotations

import pytest

from wirekube_common import keyswitch, wgkey
from wirekube_relay.client.auth import ROTATION_GRACE_S, AllowList, peer_key, retained
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


T0 = 1_800_000_000.0
OLD, NEW = b"o" * 32, b"n" * 32
SWITCH = T0 + keyswitch.SWITCH_LEAD_S
UNTIL = SWITCH + ROTATION_GRACE_S


@pytest.mark.parametrize(
    ("previous", "current", "announced", "kept", "now", "expected"),
    [
        # rotated with an instant: the old key stays until the instant + grace
        ({"a": OLD}, {"a": NEW}, {"a": SWITCH}, {}, T0, {"a": (OLD, UNTIL)}),
        # ... through later changes of other peers, and not a moment longer
        ({"a": NEW}, {"a": NEW}, {}, {"a": (OLD, UNTIL)}, UNTIL - 0.01, {"a": (OLD, UNTIL)}),
        ({"a": NEW}, {"a": NEW}, {}, {"a": (OLD, UNTIL)}, UNTIL, {}),
        # no instant (an agent that restarted with a new key, or not a rotation): at once
        ({"a": OLD}, {"a": NEW}, {"a": None}, {}, T0, {}),
        # seen only after instant + grace: at once
        ({"a": OLD}, {"a": NEW}, {"a": SWITCH}, {}, UNTIL + 1, {}),
        # an instant far ahead: bounded by MAX_HOLD_S from now
        (
            {"a": OLD},
            {"a": NEW},
            {"a": T0 + 3600},
            {},
            T0,
            {"a": (OLD, T0 + keyswitch.MAX_HOLD_S + ROTATION_GRACE_S)},
        ),
        # the peer is gone, or its old key is back: nothing to keep
        ({"a": NEW}, {}, {}, {"a": (OLD, UNTIL)}, T0, {}),
        ({"a": NEW}, {"a": OLD}, {"a": None}, {"a": (OLD, UNTIL)}, T0, {}),
    ],
)
def test_a_rotated_nodes_old_key_is_admitted_until_its_switch(
    previous: dict[str, bytes],
    current: dict[str, bytes],
    announced: dict[str, float | None],
    kept: dict[str, tuple[bytes, float]],
    now: float,
    expected: dict[str, tuple[bytes, float]],
) -> None:
    assert retained(previous, current, announced, kept, now) == expected
