"""The agent-side reporter with a scripted probe and an in-memory Lease writer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import yaml

from wirekube_common.crd import Gateway
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.probe import ProbeResult
from wirekube_common.gwhealth.report import check_fingerprint, from_lease
from wirekube_common.gwhealth.reporter import GatewayHealthReporter, assignments_for
from wirekube_common.gwhealth.target import ProbeTarget


def gw(name: str, peers: str, target: str = "10.9.0.1:443", enabled: bool = True) -> Gateway:
    return Gateway.from_dict(
        yaml.safe_load(f"""
metadata: {{name: {name}, uid: uid-{name}}}
spec:
  peerRefs: [{peers}]
  routes: [{{cidr: 10.9.0.0/16}}]
  healthCheck: {{enabled: {str(enabled).lower()}, target: "{target}", intervalSeconds: 0,
                 timeoutSeconds: 1, failureThreshold: 2}}
""")
    )


class Writer:
    def __init__(self) -> None:
        self.leases: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.fail = False

    def apply(self, lease: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("api down")
        with self.lock:
            self.leases.append(lease)

    def reports(self, gateway: str) -> list[Any]:
        with self.lock:
            return [
                from_lease(x)
                for x in self.leases
                if x["metadata"]["annotations"]["gateway-health.wirekube.io/gateway"] == gateway
            ]


def scripted(outcomes: dict[str, list[bool]]) -> tuple[Callable[..., Any], list[str]]:
    seen: list[str] = []

    async def probe(target: ProbeTarget, timeout: float) -> ProbeResult:
        await asyncio.sleep(0.02)
        seen.append(str(target))
        script = outcomes.get(str(target)) or [True]
        ok = script.pop(0) if len(script) > 1 else script[0]
        return ProbeResult(ok, "ok" if ok else "refused")

    return probe, seen


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_assignments_only_for_enabled_checks_naming_this_peer() -> None:
    gws = [gw("a", "node-b1, node-b2"), gw("b", "node-b2"), gw("c", "node-b1", enabled=False)]
    assert set(assignments_for("node-b1", gws)) == {"a"}
    assert set(assignments_for("node-b2", gws)) == {"a", "b"}


def test_probe_results_become_leases_with_threshold_semantics() -> None:
    writer = Writer()
    probe, seen = scripted({"10.9.0.1:443": [True, False, False, False]})

    async def main() -> None:
        reporter = GatewayHealthReporter("node-b1", writer, probe_fn=probe)
        reporter.update([gw("a", "node-b1"), gw("other", "node-b9")])
        task = asyncio.create_task(reporter.run())
        await until(lambda: any(r.state is State.UNHEALTHY for r in writer.reports("a")))
        assert set(reporter.health()) == {"a"}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    reports = writer.reports("a")
    assert reports[0].state is State.HEALTHY and reports[0].consecutive_failures == 0
    first_bad = next(r for r in reports if r.state is State.UNHEALTHY)
    assert first_bad.consecutive_failures == 2  # failureThreshold
    assert all(r.peer == "node-b1" and r.detail for r in reports)
    assert reports[0].check == check_fingerprint(gw("a", "node-b1").spec.health_check)  # type: ignore[arg-type]
    assert writer.reports("other") == [] and set(seen) == {"10.9.0.1:443"}


def test_changed_check_restarts_and_removed_gateway_stops() -> None:
    writer = Writer()
    probe, seen = scripted({})

    async def main() -> None:
        reporter = GatewayHealthReporter("node-b1", writer, probe_fn=probe)
        task = asyncio.create_task(reporter.run())
        await asyncio.sleep(0)
        # update() from another thread, as the agent's reconcile thread would.
        await asyncio.to_thread(reporter.update, [gw("a", "node-b1")])
        await until(lambda: len(writer.reports("a")) >= 2)
        reporter.update([gw("a", "node-b1", target="10.9.0.2:22")])
        await until(lambda: any(r.check.startswith("10.9.0.2:22") for r in writer.reports("a")))
        reporter.update([])
        await until(lambda: reporter.health() == {})
        count = len(seen)
        await asyncio.sleep(0.2)
        assert len(seen) == count  # no more probing
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert "10.9.0.1:443" in seen and "10.9.0.2:22" in seen


def test_invalid_target_is_reported_unhealthy_not_a_crash() -> None:
    writer = Writer()
    probe, seen = scripted({})

    async def main() -> None:
        reporter = GatewayHealthReporter("node-b1", writer, probe_fn=probe)
        reporter.update([gw("a", "node-b1", target="10.0.0.1:99999")])
        task = asyncio.create_task(reporter.run())
        await until(lambda: any(r.state is State.UNHEALTHY for r in writer.reports("a")))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert seen == []
    assert "invalid healthCheck.target" in writer.reports("a")[-1].detail


def test_write_failures_do_not_stop_probing() -> None:
    writer = Writer()
    writer.fail = True
    probe, seen = scripted({})

    async def main() -> None:
        reporter = GatewayHealthReporter("node-b1", writer, probe_fn=probe)
        reporter.update([gw("a", "node-b1")])
        task = asyncio.create_task(reporter.run())
        await until(lambda: len(seen) >= 3)
        assert reporter.writes == 0
        writer.fail = False
        await until(lambda: reporter.writes >= 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert writer.reports("a")[-1].state is State.HEALTHY
