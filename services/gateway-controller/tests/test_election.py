"""Leader election state machine with a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from wirekube_gateway.election.elector import Action, Elector, LeaseRecord

WALL = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def elector(name: str) -> Elector:
    return Elector(name, lease_duration_s=15, renew_deadline_s=10)


class FakeLease:
    """An apiserver's view of one Lease: optimistic concurrency by version."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0

    def attempt(self, e: Elector, now: float) -> Action:
        seen_version = self.version
        attempt = e.plan(self.record, now, WALL + dt.timedelta(seconds=now))
        if attempt.action is not Action.NONE and self.version == seen_version:
            assert attempt.record is not None
            self.record, self.version = attempt.record, self.version + 1
            e.succeeded(attempt.record, now)
        return attempt.action


def test_first_candidate_creates_and_leads() -> None:
    lease, a = FakeLease(), elector("a")
    assert lease.attempt(a, 0.0) is Action.CREATE
    assert a.is_leader(0.0) and a.is_leader(9.9) and not a.is_leader(10.0)
    assert lease.record is not None and lease.record.holder == "a"
    assert lease.record.transitions == 0


def test_only_one_leads_and_the_standby_waits_the_lease_duration() -> None:
    lease, a, b = FakeLease(), elector("a"), elector("b")
    lease.attempt(a, 0.0)
    assert lease.attempt(b, 0.5) is Action.NONE and not b.is_leader(0.5)
    # a renews every 2 s until t=6, then dies.
    for t in (2.0, 4.0, 6.0):
        assert lease.attempt(a, t) is Action.UPDATE
        assert lease.attempt(b, t + 0.5) is Action.NONE
    # b last saw a change at 6.5 (its own clock): it waits until 21.5.
    assert lease.attempt(b, 21.0) is Action.NONE
    assert lease.attempt(b, 21.5) is Action.UPDATE and b.is_leader(21.5)
    assert lease.record is not None
    assert (lease.record.holder, lease.record.transitions) == ("b", 1)
    assert lease.record.acquire_time == WALL + dt.timedelta(seconds=21.5)
    # The old leader had already stopped acting at 6 + 10.
    assert not a.is_leader(16.0)


def test_renewal_keeps_acquire_time() -> None:
    lease, a = FakeLease(), elector("a")
    lease.attempt(a, 0.0)
    lease.attempt(a, 2.0)
    assert lease.record is not None
    assert lease.record.acquire_time == WALL
    assert lease.record.renew_time == WALL + dt.timedelta(seconds=2)


def test_skewed_holder_timestamps_do_not_matter() -> None:
    """A holder whose wall clock is an hour behind still keeps its lease."""
    b = elector("b")
    stale_looking = LeaseRecord("a", 15, WALL - dt.timedelta(hours=1), WALL - dt.timedelta(hours=1))
    assert b.plan(stale_looking, 100.0, WALL).action is Action.NONE
    assert b.plan(stale_looking, 114.9, WALL).action is Action.NONE
    assert b.plan(stale_looking, 115.0, WALL).action is Action.UPDATE


def test_release_hands_over_at_once() -> None:
    lease, a, b = FakeLease(), elector("a"), elector("b")
    lease.attempt(a, 0.0)
    lease.attempt(b, 0.1)
    released = a.release(WALL)
    assert released is not None and released.holder == "" and released.duration_s == 1
    lease.record, lease.version = released, lease.version + 1
    a.released()
    assert not a.is_leader(0.2)
    assert lease.attempt(b, 0.3) is Action.UPDATE and b.is_leader(0.3)
    assert lease.record is not None and lease.record.transitions == 1


def test_release_only_what_we_hold() -> None:
    lease, a, b = FakeLease(), elector("a"), elector("b")
    assert a.release(WALL) is None
    lease.attempt(a, 0.0)
    lease.attempt(b, 0.1)
    assert b.release(WALL) is None


def test_lost_race_is_not_leadership() -> None:
    a, b = elector("a"), elector("b")
    attempt_a = a.plan(None, 0.0, WALL)
    attempt_b = b.plan(None, 0.0, WALL)
    assert attempt_a.action is attempt_b.action is Action.CREATE
    assert attempt_a.record is not None
    a.succeeded(attempt_a.record, 0.0)  # b's create got 409 AlreadyExists: nothing recorded
    assert a.is_leader(1.0) and not b.is_leader(1.0)


def test_seeing_another_holder_ends_leadership_at_once() -> None:
    a = elector("a")
    a.plan(None, 0.0, WALL)
    a.succeeded(LeaseRecord("a", 15, WALL, WALL), 0.0)
    assert a.is_leader(1.0)
    assert a.plan(LeaseRecord("b", 15, WALL, WALL, 1), 1.0, WALL).action is Action.NONE
    assert not a.is_leader(1.0)


def test_garbled_lease_spec_reads_as_free() -> None:
    record = LeaseRecord.from_spec({"holderIdentity": 5, "renewTime": "soon"})
    assert record == LeaseRecord("", 0.0)
    assert elector("a").plan(record, 0.0, WALL).action is Action.UPDATE


def test_spec_round_trip() -> None:
    record = LeaseRecord("a", 15, WALL, WALL + dt.timedelta(microseconds=5), 3)
    assert LeaseRecord.from_spec(record.to_spec()) == record


def test_bad_configuration() -> None:
    with pytest.raises(ValueError):
        Elector("", 15, 10)
    with pytest.raises(ValueError):
        Elector("a", 10, 10)
