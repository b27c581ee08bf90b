"""The agent's liveness and readiness decisions (pure)."""

from __future__ import annotations

from dataclasses import replace

from wirekube_agent.health import LoopFacts, interface_up, liveness, readiness
from wirekube_agent.timers import LIVENESS_PASS_STALL_S

HEALTHY = LoopFacts(
    synced_at=100.0,
    last_pass_at=150.0,
    last_pass_ok=True,
    participating=True,
    interface="wire_kube",
    interface_up=True,
)


def test_liveness_follows_the_last_pass() -> None:
    assert liveness(HEALTHY, 151.0)[0]
    assert liveness(HEALTHY, 150.0 + LIVENESS_PASS_STALL_S)[0]
    ok, why = liveness(HEALTHY, 150.0 + LIVENESS_PASS_STALL_S + 1)
    assert not ok and "stalled" in why


def test_waiting_for_the_api_server_is_not_a_wedge() -> None:
    waiting = replace(HEALTHY, synced_at=None, last_pass_at=None)
    assert liveness(waiting, 1e9)[0]
    assert not readiness(waiting)[0]


def test_after_sync_the_first_pass_is_due_within_the_bound() -> None:
    no_pass = replace(HEALTHY, last_pass_at=None)
    assert liveness(no_pass, 100.0 + LIVENESS_PASS_STALL_S)[0]
    assert not liveness(no_pass, 101.0 + LIVENESS_PASS_STALL_S)[0]


def test_a_failing_pass_keeps_it_alive_but_not_ready() -> None:
    failing = replace(HEALTHY, last_pass_ok=False)
    assert liveness(failing, 151.0)[0]
    assert readiness(failing) == (False, "the last reconcile pass failed (see the log)")


def test_readiness() -> None:
    assert readiness(HEALTHY) == (True, "ok: wire_kube up, peers synced")
    assert not readiness(replace(HEALTHY, interface_up=False))[0]
    assert not readiness(replace(HEALTHY, interface=None, interface_up=False))[0]
    assert not readiness(replace(HEALTHY, participating=False))[0]


def test_interface_up_asks_the_kernel() -> None:
    assert interface_up("lo")
    assert not interface_up("no-such-if0")
