"""The controller's /livez and /readyz decisions, on a stand-in controller."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from wirekube_gateway.metrics import liveness, readiness
from wirekube_gateway.timers import STALL_S


def controller(last_pass: float, last_attempt: float, synced: bool = True) -> Any:
    event = threading.Event()
    if synced:
        event.set()
    return SimpleNamespace(
        stats=SimpleNamespace(last_pass=last_pass),
        election=SimpleNamespace(last_attempt=last_attempt, is_leader=lambda: False),
        informers=[SimpleNamespace(name="wirekubegateways", synced=event)],
    )


def test_live_while_both_loops_progress() -> None:
    c = controller(100.0, 100.0)
    assert liveness(c, lambda: 100.0 + STALL_S)() == (True, "ok (standby)")
    assert liveness(c, lambda: 101.0 + STALL_S)() == (False, "stalled: reconcile, leader-election")
    assert liveness(controller(100.0, 150.0), lambda: 101.0 + STALL_S)() == (
        False,
        "stalled: reconcile",
    )


def test_ready_needs_synced_informers() -> None:
    assert readiness(controller(100.0, 100.0), lambda: 101.0)() == (True, "ok (standby)")
    assert readiness(controller(100.0, 100.0, synced=False), lambda: 101.0)() == (
        False,
        "informers not synced: wirekubegateways",
    )
    assert not readiness(controller(0.0, 0.0), lambda: 101.0 + STALL_S)()[0]
