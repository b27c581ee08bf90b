"""Presence table (pure): newest registration wins, late withdrawals, bounds, versions."""

from __future__ import annotations

import pytest

from wirekube_relay.mesh.presence import Presence, PresenceFull

K1 = b"\x01" * 32
K2 = b"\x02" * 32


def _table() -> Presence[str]:
    return Presence(max_keys=3, max_replicas=2)


def test_a_key_registered_elsewhere_routes_to_that_replica() -> None:
    p = _table()
    assert p.route(K1) is None
    p.add("r2", K1, 10)
    assert p.route(K1) == "r2"


def test_the_newest_registration_wins_whatever_the_order_announcements_arrive_in() -> None:
    p = _table()
    p.add("r2", K1, 10)
    p.add("r3", K1, 20)
    assert p.route(K1) == "r3"
    q = _table()
    q.add("r3", K1, 20)
    q.add("r2", K1, 10)
    assert q.route(K1) == "r3"


def test_equal_versions_break_ties_the_same_way_everywhere() -> None:
    p, q = _table(), _table()
    p.add("r2", K1, 10)
    p.add("r3", K1, 10)
    q.add("r3", K1, 10)
    q.add("r2", K1, 10)
    assert p.route(K1) == q.route(K1) == "r3"


def test_a_withdrawal_falls_back_to_the_next_newest() -> None:
    p = _table()
    p.add("r2", K1, 10)
    p.add("r3", K1, 20)
    p.remove("r3", K1, 20)
    assert p.route(K1) == "r2"
    p.remove("r2", K1, 10)
    assert p.route(K1) is None


def test_a_late_withdrawal_does_not_remove_a_newer_registration() -> None:
    p = _table()
    p.add("r2", K1, 10)
    p.add("r2", K1, 30)  # the agent re-registered on r2
    p.remove("r2", K1, 10)  # the old connection's close, arriving late
    assert p.route(K1) == "r2"


def test_a_replica_that_goes_away_takes_its_keys_with_it() -> None:
    p = _table()
    p.add("r2", K1, 10)
    p.add("r2", K2, 10)
    p.add("r3", K1, 5)
    p.reset("r2")
    assert p.route(K1) == "r3"
    assert p.route(K2) is None
    assert len(p) == 1


def test_local_versions_are_newer_than_anything_seen() -> None:
    p = _table()
    p.add("r2", K1, 5_000_000)  # another replica's clock runs ahead
    v = p.register_local(K1, now_us=1_000)
    assert v > 5_000_000
    assert p.superseded(K1) is None
    p.add("r3", K1, v + 1)  # the agent moved on after that
    assert p.superseded(K1) == "r3"


def test_local_versions_grow_even_if_the_clock_does_not() -> None:
    p = _table()
    a = p.register_local(K1, now_us=100)
    b = p.register_local(K1, now_us=100)
    c = p.register_local(K2, now_us=50)
    assert a < b < c


def test_unregistering_returns_the_version_to_withdraw() -> None:
    p = _table()
    v = p.register_local(K1, now_us=100)
    assert p.local_entries() == [(K1, v)]
    assert p.unregister_local(K1) == v
    assert p.unregister_local(K1) is None


def test_keys_per_replica_are_bounded() -> None:
    p = _table()
    for i in range(3):
        p.add("r2", bytes([i]) * 32, 1)
    p.add("r2", b"\x00" * 32, 2)  # an update of a known key is fine
    with pytest.raises(PresenceFull):
        p.add("r2", b"\x09" * 32, 1)


def test_replicas_are_bounded() -> None:
    p = _table()
    p.add("r2", K1, 1)
    p.add("r3", K1, 1)
    with pytest.raises(PresenceFull):
        p.add("r4", K1, 1)
