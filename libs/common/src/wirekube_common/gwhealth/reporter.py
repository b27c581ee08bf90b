"""The agent-side health checker: probe each gateway this peer serves, publish
the verdict as a heartbeat Lease (see ``report``).

Self-contained so the node agent can embed it with three lines::

    reporter = GatewayHealthReporter(peer_name, KubeLeaseWriter(rest))
    tasks["gateway-health"] = reporter.run          # one supervisor task
    reporter.update(gateways)                       # whenever the gateway cache changes

``update`` takes every WireKubeGateway (models) and is safe to call from any
thread; the reporter keeps one probe loop per gateway whose ``peerRefs`` name
this peer and whose ``healthCheck.enabled`` is true, restarting a loop only
when that gateway's check (or uid) changed. ``python -m wirekube_common.gwhealth``
runs it standalone with its own gateway watch.

A probe loop: probe with ``timeoutSeconds``, fold the result into the
consecutive-failure state (``checker``), publish a Lease, sleep until
``intervalSeconds`` after the probe started (probes never overlap). Publishing
never delays probing: a slow API server only delays the write, and a write that
is overtaken by a newer report is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from wirekube_common.crd import Gateway, GatewayHealthCheck
from wirekube_common.gwhealth.checker import ProbeHealth
from wirekube_common.gwhealth.probe import ProbeResult, probe
from wirekube_common.gwhealth.report import (
    NAMESPACE,
    HealthReport,
    check_fingerprint,
    leases_path,
    report_ttl_s,
    to_lease,
)
from wirekube_common.gwhealth.target import InvalidTarget, ProbeTarget, parse_target
from wirekube_common.kube.times import from_unix

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "wirekube-agent-gateway-health"
# A probe loop's first probe starts within this much of the loop's start, so
# that many gateways (or many agents restarted together) do not probe in step.
START_JITTER_S = 1.0
# Bound on one Lease write; the next report supersedes a failed one anyway.
WRITE_TIMEOUT_S = 10.0

ProbeFn = Callable[[ProbeTarget, float], Awaitable[ProbeResult]]


class LeaseWriter(Protocol):
    def apply(self, lease: dict[str, Any]) -> None: ...


class KubeLeaseWriter:
    """Server-side apply: one request creates or renews the Lease, no read first."""

    def __init__(self, rest: Any, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self._rest = rest
        self._timeout = timeout_s

    def apply(self, lease: dict[str, Any]) -> None:
        meta = lease["metadata"]
        self._rest.call(
            "PATCH",
            leases_path(meta["namespace"], meta["name"]),
            [("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=lease,  # JSON is YAML: the apply patch goes as JSON
            content_type=APPLY_PATCH,
            timeout=self._timeout,
        )


@dataclass(frozen=True)
class Assignment:
    """One gateway this peer health-checks."""

    gateway: str
    uid: str
    check: GatewayHealthCheck

    def key(self) -> str:
        return self.gateway


def assignments_for(peer_name: str, gateways: Iterable[Gateway]) -> dict[str, Assignment]:
    out: dict[str, Assignment] = {}
    for gw in gateways:
        check = gw.spec.health_check
        if check is None or not check.enabled or peer_name not in gw.spec.peer_refs:
            continue
        out[gw.metadata.name] = Assignment(gw.metadata.name, gw.metadata.uid, check)
    return out


class _Publisher:
    """Latest-wins writes for one gateway's Lease, one at a time, off the probe loop."""

    def __init__(self, writer: LeaseWriter, name: str) -> None:
        self._writer = writer
        self._name = name
        self._pending: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self.writes = 0

    def publish(self, lease: dict[str, Any]) -> None:
        self._pending = lease
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"lease-{self._name}")

    async def _drain(self) -> None:
        while self._pending is not None:
            lease, self._pending = self._pending, None
            try:
                await asyncio.to_thread(self._writer.apply, lease)
            except Exception as exc:
                if not self.failing:
                    log.warning(
                        "cannot publish gateway health report; retrying with the next probe",
                        extra={"gateway": self._name, "error": f"{type(exc).__name__}: {exc}"},
                    )
                self.failing = True
                continue
            self.writes += 1
            if self.failing:
                log.info("gateway health reports published again", extra={"gateway": self._name})
            self.failing = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class GatewayHealthReporter:
    def __init__(
        self,
        peer_name: str,
        writer: LeaseWriter,
        *,
        namespace: str = NAMESPACE,
        probe_fn: ProbeFn = probe,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.peer_name = peer_name
        self._writer = writer
        self._namespace = namespace
        self._probe = probe_fn
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._desired: dict[str, Assignment] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._health: dict[str, ProbeHealth] = {}
        self._writes_done = 0  # by probe loops that have ended
        self._publishers: dict[str, _Publisher] = {}

    # -- inputs ----------------------------------------------------------------
    def update(self, gateways: Iterable[Gateway]) -> None:
        desired = assignments_for(self.peer_name, gateways)
        with self._lock:
            if desired == self._desired:
                return
            self._desired = desired
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            loop.call_soon_threadsafe(changed.set)

    def health(self) -> dict[str, ProbeHealth]:
        """The current verdict per gateway (for metrics and tests)."""
        return dict(self._health)

    @property
    def writes(self) -> int:
        """Lease writes that succeeded (for metrics and tests)."""
        return self._writes_done + sum(p.writes for p in self._publishers.values())

    # -- the task ----------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        running: dict[str, tuple[Assignment, asyncio.Task[None]]] = {}
        try:
            while True:
                self._changed.clear()
                with self._lock:
                    desired = dict(self._desired)
                for name, (assignment, task) in list(running.items()):
                    if desired.get(name) != assignment:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        del running[name]
                        self._health.pop(name, None)
                        log.info("stopped health checks", extra={"gateway": name})
                for name, assignment in desired.items():
                    if name not in running:
                        task = asyncio.create_task(self._probe_loop(assignment), name=f"gw-{name}")
                        running[name] = (assignment, task)
                        log.info(
                            "health-checking gateway target",
                            extra={"gateway": name, "target": assignment.check.target},
                        )
                changed = asyncio.create_task(self._changed.wait())
                done, _ = await asyncio.wait(
                    [changed, *(t for _, t in running.values())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                changed.cancel()
                for _, task in running.values():
                    if task in done:  # a probe loop never ends on its own
                        raise RuntimeError(f"probe loop {task.get_name()} ended") from (
                            task.exception() if not task.cancelled() else None
                        )
        finally:
            for _, task in running.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in running.values()), return_exceptions=True)

    async def _probe_loop(self, a: Assignment) -> None:
        loop = asyncio.get_running_loop()
        check = a.check
        fingerprint = check_fingerprint(check)
        ttl = report_ttl_s(check)
        acquired = from_unix(self._wall())
        publisher = _Publisher(self._writer, a.gateway)
        self._publishers[a.gateway] = publisher
        health = ProbeHealth(check.failure_threshold)
        try:
            target: ProbeTarget | None = parse_target(check.target)
            bad_target = ""
        except InvalidTarget as exc:
            target, bad_target = None, f"invalid healthCheck.target: {exc}"
        await asyncio.sleep(random.uniform(0, min(START_JITTER_S, check.interval_seconds / 10)))
        try:
            while True:
                started = loop.time()
                if target is None:
                    result = ProbeResult(False, bad_target)
                else:
                    try:
                        # The probe honours the timeout; the margin only guards against a bug.
                        async with asyncio.timeout(check.timeout_seconds + 5):
                            result = await self._probe(target, float(check.timeout_seconds))
                    except TimeoutError:
                        result = ProbeResult(False, f"probe overran {check.timeout_seconds}s")
                now = self._wall()
                before = health.state
                health = health.record(result.ok, now)
                self._health[a.gateway] = health
                if health.state != before:
                    log.info(
                        "gateway target %s",
                        health.state,
                        extra={
                            "gateway": a.gateway,
                            "target": check.target,
                            "detail": result.detail,
                        },
                    )
                report = HealthReport(
                    gateway=a.gateway,
                    peer=self.peer_name,
                    check=fingerprint,
                    state=health.state,
                    consecutive_failures=health.consecutive_failures,
                    probed_at=from_unix(now),
                    detail=result.detail,
                    since=from_unix(health.since) if health.since is not None else None,
                )
                publisher.publish(
                    to_lease(
                        report,
                        ttl_s=ttl,
                        gateway_uid=a.uid,
                        namespace=self._namespace,
                        acquired_at=acquired,
                    )
                )
                await asyncio.sleep(max(0.0, started + check.interval_seconds - loop.time()))
        finally:
            await publisher.close()
            self._writes_done += publisher.writes
            if self._publishers.get(a.gateway) is publisher:
                del self._publishers[a.gateway]
