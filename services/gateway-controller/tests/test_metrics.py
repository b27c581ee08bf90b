"""The controller's collector: one scrape per pass state, valid exposition
(``promtool check metrics``), and a deleted gateway leaves no series."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wirekube_common.gwhealth.checker import State
from wirekube_gateway.gateways.health import Reason, Verdict
from wirekube_gateway.gateways.reconciler import Stats
from wirekube_gateway.gateways.status import Outcome
from wirekube_gateway.metrics import ControllerCollector

H = Verdict(State.HEALTHY, Reason.PROBE, "tcp connect in 1 ms")
Q = Verdict(State.UNKNOWN, Reason.AWAITING_REPORT, "no health report yet")


def controller(outcomes: dict[str, Outcome]) -> Any:
    return SimpleNamespace(
        election=SimpleNamespace(is_leader=lambda: True, became_leader=1),
        outcomes=outcomes,
        stats=Stats(passes=3, status_writes=2, active_changes={"vpc-b": 1}),
        api=SimpleNamespace(requests=9),
        informers=[SimpleNamespace(name="wirekubegateways", healthy=True)],
    )


def scrape(c: Any) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    registry = CollectorRegistry()
    registry.register(ControllerCollector(c))
    text = generate_latest(registry).decode()
    return text, {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_gateway_readiness_peer_health_and_clients() -> None:
    ready = Outcome(("node-b1", "node-b2"), "node-b1", {"node-b1": H, "node-b2": Q}, 2, 3)
    text, m = scrape(controller({"vpc-b": ready}))
    assert m[("wirekube_gateway_ready", (("gateway", "vpc-b"),))] == 1.0
    assert m[("wirekube_gateway_active_peer", (("gateway", "vpc-b"), ("peer", "node-b1")))] == 1.0
    assert m[("wirekube_gateway_clients", (("gateway", "vpc-b"),))] == 3.0
    health = {
        (dict(lb)["peer"], dict(lb)["state"]): v
        for (n, lb), v in m.items()
        if n == "wirekube_gateway_peer_health"
    }
    assert health == {
        ("node-b1", "healthy"): 1.0,
        ("node-b1", "unhealthy"): 0.0,
        ("node-b1", "unknown"): 0.0,
        ("node-b2", "healthy"): 0.0,
        ("node-b2", "unhealthy"): 0.0,
        ("node-b2", "unknown"): 1.0,
    }
    assert m[("wirekube_gateway_active_peer_changes_total", (("gateway", "vpc-b"),))] == 1.0
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_a_deleted_gateway_leaves_no_series() -> None:
    _, m = scrape(controller({}))
    assert not any("gateway" in dict(labels) for _, labels in m)
