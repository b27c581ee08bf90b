"""Consecutive-failure health, exactly as ``spec.healthCheck`` defines it (pure).

A peer starts ``unknown``. One successful probe makes it ``healthy`` and resets
the failure count; ``failureThreshold`` consecutive failures make it
``unhealthy``; fewer failures leave the state as it was (a healthy peer that
missed one probe is still healthy; a peer never yet seen succeeding stays
unknown rather than being called healthy on no evidence). ``since`` is the
time of the last state change, for the controller's failback hold and for
humans.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ProbeHealth:
    failure_threshold: int
    state: State = State.UNKNOWN
    consecutive_failures: int = 0
    since: float | None = None  # wall-clock time of the last state change
    probes: int = 0

    def record(self, ok: bool, now: float) -> ProbeHealth:
        if ok:
            state, failures = State.HEALTHY, 0
        else:
            failures = self.consecutive_failures + 1
            state = State.UNHEALTHY if failures >= max(1, self.failure_threshold) else self.state
        since = now if state != self.state else self.since
        return replace(
            self, state=state, consecutive_failures=failures, since=since, probes=self.probes + 1
        )
