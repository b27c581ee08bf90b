"""gateways.decide: a controller pass as tables of observations (no I/O).

Each pass is what the leader (or a warm standby) would decide: the statuses
to write, the outcomes metrics read, and the memory the next pass needs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import HealthReport
from wirekube_gateway.gateways.decide import Memory, decide
from wirekube_gateway.gateways.health import ReportClock

from .test_health import FP, PEERS, T0, report

NOW_DT = dt.datetime.fromtimestamp(T0, dt.UTC)


def gateway_obj(name: str = "gw", active: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "peerRefs": ["b1", "b2"],
        "routes": [{"cidr": "172.20.0.0/16"}],
        "healthCheck": {
            "enabled": True,
            "target": "172.20.1.254:443",
            "intervalSeconds": 5,
            "timeoutSeconds": 1,
            "failureThreshold": 2,
        },
    }
    body.update(spec)
    obj: dict[str, Any] = {
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1", "uid": "u"},
        "spec": body,
    }
    if active is not None:
        obj["status"] = {"activePeer": active}
    return obj


def run(
    raw: dict[str, dict[str, Any]],
    reports: list[HealthReport],
    memory: dict[str, Memory] | None = None,
    now: float = 0.0,
) -> Any:
    clock = ReportClock()
    clock.observe(reports, now, T0 + now)
    by_key = {r.key(): r for r in reports}
    return decide(raw, PEERS, by_key, clock, memory or {}, now, NOW_DT)


@pytest.mark.parametrize(
    ("incumbent", "b1", "b2", "active", "why"),
    [
        # A new gateway: the preferred peer, once it reported healthy.
        (None, State.HEALTHY, State.HEALTHY, "b1", ""),
        # The incumbent fails: the next healthy peerRef, at once.
        ("b1", State.UNHEALTHY, State.HEALTHY, "b2", "failover"),
        # A healthy incumbent stays (failback waits for its hold).
        ("b2", State.HEALTHY, State.HEALTHY, "b2", ""),
        # Nobody healthy: the incumbent stays (fail static).
        ("b1", State.UNHEALTHY, State.UNHEALTHY, "b1", ""),
    ],
)
def test_the_active_peer_per_pass(
    incumbent: str | None, b1: State, b2: State, active: str, why: str
) -> None:
    reports = [report("b1", b1, T0), report("b2", b2, T0)]
    decided = run({"gw": gateway_obj(active=incumbent)}, reports)
    (write,) = decided.writes
    assert write.desired.get("activePeer") == active
    assert write.choice is not None and write.choice.why.startswith(why)
    assert decided.outcomes["gw"].active == active
    # Only healthy peers start their healthy-since clock.
    healthy = {p for p, s in (("b1", b1), ("b2", b2)) if s is State.HEALTHY}
    assert set(decided.memory["gw"].healthy_since) == healthy


def test_healthy_since_carries_over_and_a_new_check_restarts_its_clock() -> None:
    def fresh(now: float) -> list[HealthReport]:
        return [report("b1", State.HEALTHY, T0 + now), report("b2", State.HEALTHY, T0 + now)]

    first = run({"gw": gateway_obj()}, fresh(10.0), now=10.0)
    assert first.memory["gw"] == Memory(FP, 10.0, {"b1": 10.0, "b2": 10.0})
    later = run({"gw": gateway_obj()}, fresh(20.0), first.memory, now=20.0)
    assert later.memory["gw"].healthy_since == {"b1": 10.0, "b2": 10.0}
    assert later.memory["gw"].check_since == 10.0
    check = {**gateway_obj()["spec"]["healthCheck"], "target": "172.20.1.253:443"}
    moved = run({"gw": gateway_obj(healthCheck=check)}, fresh(30.0), first.memory, now=30.0)
    assert not moved.invalid
    assert moved.memory["gw"].check not in (None, FP)
    assert moved.memory["gw"].check_since == 30.0


def test_an_invalid_gateway_says_so_and_a_deleted_one_is_forgotten() -> None:
    reports = [report("b1", State.HEALTHY, T0)]
    first = run({"gw": gateway_obj(), "old": gateway_obj("old")}, reports)
    broken = gateway_obj(active="b1", routes="not a list")
    decided = run({"gw": broken}, reports, first.memory)
    assert [name for name, _ in decided.invalid] == ["gw"]
    (write,) = decided.writes
    assert write.choice is None
    assert write.desired["conditions"][0]["reason"] == "InvalidSpec"
    assert write.desired.get("activePeer") == "b1"  # routing fields left as they are
    assert decided.outcomes == {}
    # The invalid gateway keeps its memory (it may be fixed); the deleted one goes.
    assert set(decided.memory) == {"gw"}
