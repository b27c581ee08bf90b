"""Status content, Ready condition and minimal merge patches."""

from __future__ import annotations

import datetime as dt

from wirekube_common.gwhealth.checker import State
from wirekube_common.kube.mergepatch import merge_patch
from wirekube_gateway.gateways.health import Reason, Verdict
from wirekube_gateway.gateways.status import (
    Outcome,
    ReadyReason,
    desired_status,
    invalid_spec_status,
    ready_condition,
    status_patch,
)

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
H = Verdict(State.HEALTHY, Reason.PROBE, "tcp connect in 1 ms")
U = Verdict(State.UNHEALTHY, Reason.PROBE, "refused")
Q = Verdict(State.UNKNOWN, Reason.AWAITING_REPORT, "no health report yet")
GONE = Verdict(State.UNHEALTHY, Reason.PEER_NOT_FOUND, "no such WireKubePeer")


def outcome(**kw: object) -> Outcome:
    base: dict[str, object] = {
        "order": ("b1", "b2"),
        "active": "b1",
        "verdicts": {"b1": H, "b2": U},
        "routes_injected": 1,
        "clients": 3,
        "last_health_check": NOW,
    }
    base.update(kw)
    return Outcome(**base)  # type: ignore[arg-type]


def test_ready_status() -> None:
    status = desired_status(outcome(), 7, {}, NOW)
    assert status == {
        "activePeer": "b1",
        "ready": True,
        "routesInjected": 1,
        "peerHealth": {"b1": "healthy", "b2": "unhealthy"},
        "lastHealthCheck": "2025-03-01T12:00:00Z",
        "observedGeneration": 7,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Active",
                "message": "b1 is active, carrying 1 route(s) for 3 client(s); "
                "b1: healthy (tcp connect in 1 ms); b2: unhealthy (refused).",
                "lastTransitionTime": "2025-03-01T12:00:00Z",
                "observedGeneration": 7,
            }
        ],
    }


def test_reasons() -> None:
    cases = [
        (outcome(active=None, verdicts={"b1": GONE, "b2": GONE}), ReadyReason.NO_PEERS),
        (outcome(verdicts={"b1": U, "b2": U}), ReadyReason.NO_HEALTHY_PEER),
        (outcome(verdicts={"b1": Q, "b2": U}), ReadyReason.AWAITING),
        (outcome(clients=0, routes_injected=0), ReadyReason.NO_CLIENTS),
        (outcome(routes_injected=0), ReadyReason.NO_ROUTES),
        (
            outcome(invalid_check="healthCheck.target 'x:0': bad port"),
            ReadyReason.INVALID_HEALTH_CHECK,
        ),
    ]
    for o, reason in cases:
        ready, got, message = ready_condition(o)
        assert (ready, got) == (False, reason), message
    _, _, message = ready_condition(outcome(active=None, verdicts={"b1": GONE, "b2": GONE}))
    assert "b1: unhealthy (no such WireKubePeer)" in message


def test_unknown_peers_are_left_out_of_peer_health_and_no_active_means_no_field() -> None:
    status = desired_status(outcome(active=None, verdicts={"b1": Q, "b2": GONE}), 1, {}, NOW)
    assert status["peerHealth"] == {"b2": "unhealthy"}
    assert "activePeer" not in status


def test_transition_time_kept_while_the_condition_status_holds() -> None:
    first = desired_status(outcome(), 1, {}, NOW)
    later = NOW + dt.timedelta(minutes=5)
    same = desired_status(outcome(verdicts={"b1": H, "b2": H}), 1, first, later)
    assert same["conditions"][0]["lastTransitionTime"] == "2025-03-01T12:00:00Z"
    flipped = desired_status(outcome(verdicts={"b1": U, "b2": U}), 1, first, later)
    assert flipped["conditions"][0]["lastTransitionTime"] == "2025-03-01T12:05:00Z"


def test_merge_patch_is_minimal_and_removes_with_null() -> None:
    old = {"activePeer": "b1", "ready": True, "peerHealth": {"b1": "healthy", "b2": "healthy"}}
    new = {"ready": True, "peerHealth": {"b1": "healthy", "b3": "unhealthy"}}
    assert merge_patch(old, new) == {
        "activePeer": None,
        "peerHealth": {"b2": None, "b3": "unhealthy"},
    }
    assert merge_patch(new, new) == {}


def test_no_write_when_nothing_changed_and_last_check_throttled() -> None:
    current = desired_status(outcome(), 1, {}, NOW)
    assert status_patch(current, desired_status(outcome(), 1, current, NOW)) is None
    soon = desired_status(
        outcome(last_health_check=NOW + dt.timedelta(seconds=30)), 1, current, NOW
    )
    assert status_patch(current, soon) is None
    late = desired_status(
        outcome(last_health_check=NOW + dt.timedelta(seconds=60)), 1, current, NOW
    )
    assert status_patch(current, late) == {"lastHealthCheck": "2025-03-01T12:01:00Z"}
    # Any other change carries the fresh lastHealthCheck along at once.
    moved = desired_status(
        outcome(
            active="b2",
            verdicts={"b1": U, "b2": H},
            last_health_check=NOW + dt.timedelta(seconds=5),
        ),
        1,
        current,
        NOW,
    )
    patch = status_patch(current, moved)
    assert patch is not None and patch["activePeer"] == "b2"
    assert patch["lastHealthCheck"] == "2025-03-01T12:00:05Z"


def test_invalid_spec_keeps_routing_fields() -> None:
    current = desired_status(outcome(), 1, {}, NOW)
    status = invalid_spec_status("spec.routes: at least one route is required", 2, current, NOW)
    assert status["activePeer"] == "b1" and status["ready"] is False
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert status["observedGeneration"] == 2
