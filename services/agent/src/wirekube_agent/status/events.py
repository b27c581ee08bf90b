"""Kubernetes Events for path changes, rate-limited. Pure.

A path that changes transport (direct -> relay, relay -> direct) or loses
its last working path is worth an Event on our own WireKubePeer: `kubectl
describe wirekubepeer node-x` and `wirekubectl why` show the history without
anyone reading agent logs. Events are API writes, so they go through a token
bucket of their own (``EVENT_BURST``, then one per ``EVENT_REFILL_S``): a
mesh-wide outage that moves every peer at once costs a handful of Events per
agent, and the next Event that gets through says how many were left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from wirekube_agent.paths.rules import PathState
from wirekube_common.wireguard.types import format_endpoint

# A start-up or a relay outage changes many peers within a second; ten Events
# cover a small mesh's whole story, and a large one's first ten are enough to
# see what happened (the rest is counted).
EVENT_BURST = 10.0
# Afterwards one Event per 30 s per agent: a flapping pair cannot flood the
# API server's event store (Events live an hour by default).
EVENT_REFILL_S = 30.0
REASON = "PathChanged"


@dataclass(frozen=True)
class PathEvent:
    peer: str
    message: str
    warning: bool  # a path got worse (direct -> relay, or none left)


@dataclass(frozen=True)
class EventBudget:
    tokens: float = EVENT_BURST
    at: float = 0.0
    suppressed: int = 0  # events left out since the last one recorded

    def available(self, now: float) -> float:
        return min(EVENT_BURST, self.tokens + max(0.0, now - self.at) / EVENT_REFILL_S)


def changes(before: Mapping[str, PathState], after: Mapping[str, PathState]) -> list[PathEvent]:
    """Transport changes and lost paths of peers we already had (new peers,
    removed ones and unproven direct guesses given up are not path changes)."""
    out: list[PathEvent] = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None:
            continue
        if old.transport == "direct" and old.phase != "up" and new.transport == "relay":
            continue  # a direct guess never proven (start-up before the relay): no change of path
        if old.transport != new.transport:
            via = (
                f" via {format_endpoint(new.endpoint)}"
                if new.transport == "direct" and new.endpoint
                else ""
            )
            failures = f", {new.failures} direct failures" if new.failures else ""
            out.append(
                PathEvent(
                    name,
                    f"{name}: {old.transport} -> {new.transport}{via} "
                    f"(rule {new.rule}, reason {new.reason}{failures})",
                    warning=new.transport == "relay",
                )
            )
        elif old.routed and not new.routed:
            out.append(
                PathEvent(name, f"{name}: no working path ({new.transport} {new.phase})", True)
            )
    return out


def admit(
    budget: EventBudget, events: list[PathEvent], now: float
) -> tuple[EventBudget, list[PathEvent]]:
    """The events the budget allows now (the first says how many were left out
    before it), and the budget after them."""
    if not events:
        return budget, []
    tokens = budget.available(now)
    allowed = int(tokens)
    taken = events[:allowed]
    left_out = budget.suppressed + len(events) - len(taken)
    if taken and budget.suppressed:
        first = taken[0]
        note = f" ({budget.suppressed} earlier path changes not recorded: rate limit)"
        taken[0] = replace(first, message=first.message + note)
        left_out = len(events) - len(taken)
    return EventBudget(tokens - len(taken), now, left_out), taken
