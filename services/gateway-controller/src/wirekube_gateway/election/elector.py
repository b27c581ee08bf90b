"""Leader election on a coordination.k8s.io/v1 Lease, as a pure state machine.

The caller reads the Lease, asks ``plan`` what to write (create, update or
nothing), writes it with optimistic concurrency (``resourceVersion``), and
reports success with ``succeeded``; ``is_leader(now)`` says whether to act.
No I/O here; ``leader`` does the requests.

Semantics (those of client-go's leaderelection, which operators know):

* A Lease held by someone else is respected until ``leaseDurationSeconds``
  after we *observed* its last change, measured on our own monotonic clock;
  the holder's timestamps are written for humans only, so clock skew between
  machines never matters.
* A Lease with an empty holder (released at shutdown) is free at once.
* The leader renews every retry period; it stops acting when its last
  successful renewal is ``renew_deadline`` old, which is shorter than the lease
  duration: a partitioned leader stops before a standby may start.
* ``leaseTransitions`` counts changes of holder; ``acquireTime`` is when the
  current holder took over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from wirekube_common.kube.times import format_micro_time, parse_time


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_s: float
    acquire_time: dt.datetime | None = None
    renew_time: dt.datetime | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        """Tolerant: a field we cannot read counts as absent (an empty or
        garbled Lease must not wedge the election)."""

        def when(key: str) -> dt.datetime | None:
            value = spec.get(key)
            try:
                return parse_time(value) if isinstance(value, str) else None
            except ValueError:
                return None

        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=holder if isinstance(holder, str) else "",
            duration_s=float(duration) if isinstance(duration, int) and duration > 0 else 0.0,
            acquire_time=when("acquireTime"),
            renew_time=when("renewTime"),
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, round(self.duration_s)),
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_micro_time(self.renew_time)
        return spec


class Action(Enum):
    NONE = "none"
    CREATE = "create"
    UPDATE = "update"


@dataclass(frozen=True)
class Attempt:
    action: Action
    record: LeaseRecord | None
    reason: str


class Elector:
    def __init__(self, identity: str, lease_duration_s: float, renew_deadline_s: float) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if renew_deadline_s >= lease_duration_s:
            raise ValueError("renew deadline must be shorter than the lease duration")
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0  # our monotonic time when `observed` last changed
        self.renewed_at: float | None = None  # start of our last successful acquire/renew

    def is_leader(self, now: float) -> bool:
        return self.renewed_at is not None and now - self.renewed_at < self.renew_deadline_s

    @property
    def holder(self) -> str:
        return self.observed.holder if self.observed else ""

    def plan(self, current: LeaseRecord | None, now: float, wall: dt.datetime) -> Attempt:
        """What to write, given the Lease as just read (None: it does not exist)."""
        if current is None:
            record = LeaseRecord(self.identity, self.lease_duration_s, wall, wall, 0)
            return Attempt(Action.CREATE, record, "no lease yet")
        if current != self.observed:
            self.observed, self.observed_at = current, now
        mine = current.holder == self.identity
        if current.holder and not mine:
            duration = current.duration_s or self.lease_duration_s
            if now < self.observed_at + duration:
                self.renewed_at = None  # someone else holds it: we are certainly not leading
                return Attempt(Action.NONE, None, f"held by {current.holder}")
        record = LeaseRecord(
            holder=self.identity,
            duration_s=self.lease_duration_s,
            acquire_time=current.acquire_time if mine and current.acquire_time else wall,
            renew_time=wall,
            transitions=current.transitions + (0 if mine else 1),
        )
        if mine:
            reason = "renew"
        elif current.holder:
            reason = f"{current.holder} stopped renewing"
        else:
            reason = "lease released"
        return Attempt(Action.UPDATE, record, reason)

    def succeeded(self, written: LeaseRecord, started: float) -> None:
        """The write planned at monotonic time ``started`` was accepted."""
        self.observed, self.observed_at = written, started
        self.renewed_at = started if written.holder == self.identity else None

    def release(self, wall: dt.datetime) -> LeaseRecord | None:
        """The record that hands the Lease over at once (None: not ours to
        release). Written with the observed resourceVersion, so it fails
        harmlessly if someone took the Lease in the meantime."""
        if self.observed is None or self.observed.holder != self.identity:
            return None
        return LeaseRecord(
            holder="",
            duration_s=1.0,
            acquire_time=None,
            renew_time=wall,
            transitions=self.observed.transitions,
        )

    def released(self) -> None:
        self.renewed_at = None
