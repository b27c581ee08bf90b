from __future__ import annotations

from wirekube_common.gwhealth.checker import ProbeHealth, State


def run(threshold: int, results: str) -> list[tuple[State, int]]:
    h = ProbeHealth(threshold)
    out = []
    for i, r in enumerate(results):
        h = h.record(r == "+", float(i))
        out.append((h.state, h.consecutive_failures))
    return out


def test_starts_unknown_and_one_success_makes_healthy() -> None:
    assert ProbeHealth(3).state is State.UNKNOWN
    assert run(3, "+") == [(State.HEALTHY, 0)]


def test_threshold_consecutive_failures_make_unhealthy() -> None:
    states = [s for s, _ in run(3, "+--+---+")]
    assert states == [State.HEALTHY] * 6 + [State.UNHEALTHY, State.HEALTHY]


def test_never_succeeded_stays_unknown_until_threshold() -> None:
    assert run(3, "---") == [
        (State.UNKNOWN, 1),
        (State.UNKNOWN, 2),
        (State.UNHEALTHY, 3),
    ]


def test_threshold_one() -> None:
    assert [s for s, _ in run(1, "+-+")] == [State.HEALTHY, State.UNHEALTHY, State.HEALTHY]


def test_since_moves_only_on_transitions() -> None:
    h = ProbeHealth(2)
    h = h.record(True, 10.0)
    assert h.since == 10.0
    h = h.record(False, 20.0)
    assert (h.state, h.since) == (State.HEALTHY, 10.0)
    h = h.record(False, 30.0)
    assert (h.state, h.since) == (State.UNHEALTHY, 30.0)
    h = h.record(False, 40.0)
    assert (h.since, h.consecutive_failures, h.probes) == (30.0, 3, 4)
