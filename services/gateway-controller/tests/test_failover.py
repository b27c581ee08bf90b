"""Active-peer selection: ordered preference, failover, failback hold, fail-static."""

from __future__ import annotations

import pytest

from wirekube_common.gwhealth.checker import State
from wirekube_gateway.gateways.failover import choose_active, failback_hold_s
from wirekube_gateway.gateways.health import Reason, Verdict

H = Verdict(State.HEALTHY, Reason.PROBE)
U = Verdict(State.UNHEALTHY, Reason.PROBE, "refused")
Q = Verdict(State.UNKNOWN, Reason.AWAITING_REPORT)
GONE = Verdict(State.UNHEALTHY, Reason.PEER_NOT_FOUND)
PASSIVE = Verdict(State.UNHEALTHY, Reason.PEER_PASSIVE)
ORDER = ("b1", "b2", "b3")
HOLD = 60.0


def pick(
    verdicts: dict[str, Verdict],
    incumbent: str | None,
    since: dict[str, float] | None = None,
    now: float = 1000.0,
    failback: bool = True,
) -> str | None:
    return choose_active(ORDER, verdicts, incumbent, since or {}, now, HOLD, failback).active


@pytest.mark.parametrize(
    ("verdicts", "incumbent", "expected"),
    [
        # A new gateway: the first healthy peerRef.
        ({"b1": H, "b2": H, "b3": H}, None, "b1"),
        ({"b1": U, "b2": H, "b3": H}, None, "b2"),
        # ...or an earlier one that has not reported yet (first probes are jittered)
        ({"b1": Q, "b2": H, "b3": H}, None, "b1"),
        # but not one whose probes are failing (unknown below the threshold)
        ({"b1": Verdict(State.UNKNOWN, Reason.PROBE), "b2": H, "b3": H}, None, "b2"),
        # Nobody known healthy yet: the first unknown, else the first that exists.
        ({"b1": Q, "b2": Q, "b3": Q}, None, "b1"),
        ({"b1": U, "b2": Q, "b3": U}, None, "b2"),
        ({"b1": GONE, "b2": U, "b3": U}, None, "b2"),
        # Nothing usable at all.
        ({"b1": GONE, "b2": PASSIVE, "b3": GONE}, None, None),
        ({"b1": GONE, "b2": PASSIVE, "b3": GONE}, "b2", None),
        # Failover: to the first healthy one, not merely the next in line.
        ({"b1": U, "b2": U, "b3": H}, "b1", "b3"),
        ({"b1": U, "b2": H, "b3": H}, "b1", "b2"),
        ({"b1": GONE, "b2": H, "b3": H}, "b1", "b2"),
        ({"b1": PASSIVE, "b2": H, "b3": H}, "b1", "b2"),
        ({"b1": H, "b2": H, "b3": H}, "b9", "b1"),  # incumbent no longer a peerRef
        # Sticky: a healthy or not-yet-judged incumbent stays.
        ({"b1": U, "b2": H, "b3": H}, "b3", "b3"),
        ({"b1": H, "b2": Q, "b3": H}, "b2", "b2"),
        # Fail static: nobody healthy, keep the incumbent.
        ({"b1": U, "b2": U, "b3": Q}, "b2", "b2"),
    ],
)
def test_table(verdicts: dict[str, Verdict], incumbent: str | None, expected: str | None) -> None:
    assert pick(verdicts, incumbent) == expected


def test_failback_only_after_the_hold() -> None:
    all_healthy = {"b1": H, "b2": H, "b3": H}
    assert pick(all_healthy, "b2", since={"b1": 950.0}) == "b2"  # healthy for 50 s < 60 s
    assert pick(all_healthy, "b2", since={"b1": 940.0}) == "b1"  # 60 s: back to the primary
    # Never to a later peer, whatever its history.
    assert pick(all_healthy, "b2", since={"b1": 999.0, "b3": 0.0}) == "b2"
    # The earliest stable one wins when several earlier peers qualify.
    assert pick(all_healthy, "b3", since={"b1": 999.0, "b2": 0.0}) == "b2"


def test_failback_disabled_keeps_a_healthy_incumbent_forever() -> None:
    all_healthy = {"b1": H, "b2": H, "b3": H}
    assert pick(all_healthy, "b2", since={"b1": 0.0}, failback=False) == "b2"
    # ...but still fails over when it breaks.
    assert pick({"b1": H, "b2": U, "b3": H}, "b2", failback=False) == "b1"


def test_why_is_explained() -> None:
    choice = choose_active(ORDER, {"b1": U, "b2": H, "b3": H}, "b1", {}, 0.0, HOLD)
    assert choice.why == "failover: b1 is unhealthy (refused)"


def test_hold_is_twice_the_detection_time() -> None:
    assert failback_hold_s(3, 30, 2) == 180.0
    assert failback_hold_s(1, 5, 2) == 10.0
