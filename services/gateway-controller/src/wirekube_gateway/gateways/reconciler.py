"""The gateway controller loop: observe (caches) -> decide (pure) -> write (leader only).

Three informers keep caches of WireKubeGateways, WireKubePeers and the agents'
health-report Leases; any change, the leadership changing, or a one-second tick
(reports going stale and failback holds ending are functions of time) wakes
one pass. A pass reads the caches, asks ``gateways.decide`` what every
gateway's status should be (verdicts, active peer, routes, conditions) and,
*only while leading*, merge-patches what changed and records an Event when
the active peer moves.

Standbys run the same passes without writing, so their memory (when each
report was last renewed, since when each peer has been healthy) is warm when
they take over. The incumbent active peer always comes from the gateway's
status, so a new leader continues where the old one stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.crd import InvalidObject, Peer
from wirekube_common.gwhealth.report import (
    LABEL_SELECTOR,
    HealthReport,
    InvalidReport,
    from_lease,
    leases_path,
)
from wirekube_common.kube.watch import Informer
from wirekube_common.wakeup import Wakeup
from wirekube_gateway.election.leader import LeaderElection
from wirekube_gateway.gateways.decide import Memory, StatusWrite, decide
from wirekube_gateway.gateways.failover import Choice
from wirekube_gateway.gateways.health import ReportClock
from wirekube_gateway.gateways.status import Outcome, status_patch
from wirekube_gateway.kube import GATEWAYS_PATH, PEERS_PATH, ApiException, ControllerApi
from wirekube_gateway.timers import DEBOUNCE_S, TICK_S, WRITE_TIMEOUT_S

log = logging.getLogger(__name__)


@dataclass
class Stats:
    passes: int = 0
    last_pass: float = 0.0  # monotonic; for liveness
    pass_seconds: float = 0.0
    status_writes: int = 0
    write_errors: int = 0
    active_changes: dict[str, int] = field(default_factory=dict)


class Controller:
    def __init__(
        self,
        api: ControllerApi,
        election: LeaderElection,
        health_namespace: str,
        failback: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.election = election
        self.failback = failback
        self.clock = clock
        self.wall = wall
        self.wake = Wakeup()
        self.stop_threads = threading.Event()
        self.gateways = Informer("wirekubegateways", api.new_rest(), GATEWAYS_PATH, self.wake.set)
        self.peers = Informer("wirekubepeers", api.new_rest(), PEERS_PATH, self.wake.set)
        self.reports = Informer(
            "gateway-health-reports",
            api.new_rest(),
            leases_path(health_namespace),
            self.wake.set,
            label_selector=LABEL_SELECTOR,
        )
        self.informers = (self.gateways, self.peers, self.reports)
        self.report_clock = ReportClock()
        self.memory: dict[str, Memory] = {}
        self.outcomes: dict[str, Outcome] = {}  # last pass, for metrics
        self.stats = Stats()
        self._written: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (rv, status)
        self._rejected: dict[str, str] = {}  # "kind/name" -> problem logged

    # -- scheduling ------------------------------------------------------------------
    async def run(self) -> None:
        while not all(i.synced.is_set() for i in self.informers):
            self.stats.last_pass = self.clock()  # waiting for the API is not being stuck
            await asyncio.sleep(0.2)
        leadership = self.election.changed
        while True:
            started = self.clock()
            try:
                await asyncio.to_thread(self.reconcile)
            except Exception:
                log.exception("reconcile pass failed; retrying on the next tick")
            self.stats.pass_seconds = self.clock() - started
            self.stats.passes += 1
            self.stats.last_pass = self.clock()
            waiters = [
                asyncio.create_task(self.wake.wait()),
                asyncio.create_task(leadership.wait()),
            ]
            await asyncio.wait(waiters, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if self.wake.is_set():
                await asyncio.sleep(DEBOUNCE_S)
            self.wake.clear()
            leadership.clear()

    # -- one pass ----------------------------------------------------------------------
    def _reject(self, key: str, problem: str) -> None:
        if self._rejected.get(key) != problem:
            self._rejected[key] = problem
            log.warning("ignoring malformed object", extra={"object": key, "error": problem})

    def _peers(self) -> dict[str, Peer]:
        out: dict[str, Peer] = {}
        for name, obj in self.peers.snapshot().items():
            try:
                out[name] = Peer.from_dict(obj)
                self._rejected.pop(f"peer/{name}", None)
            except InvalidObject as exc:
                self._reject(f"peer/{name}", str(exc))
        return out

    def _reports(self) -> dict[tuple[str, str], HealthReport]:
        out: dict[tuple[str, str], HealthReport] = {}
        for name, obj in self.reports.snapshot().items():
            try:
                report = from_lease(obj)
            except InvalidReport as exc:
                self._reject(f"lease/{name}", str(exc))
                continue
            out[report.key()] = report
        return out

    def reconcile(self) -> None:
        now, wall = self.clock(), self.wall()
        now_dt = dt.datetime.fromtimestamp(wall, dt.UTC)
        # -- observe
        peers = self._peers()
        reports = self._reports()
        self.report_clock.observe(reports.values(), now, wall)
        raw = self.gateways.snapshot()
        # -- decide (pure)
        decided = decide(
            raw, peers, reports, self.report_clock, self.memory, now, now_dt, self.failback
        )
        # -- apply
        for name in self._written.keys() - raw.keys():
            del self._written[name]
        self.memory, self.outcomes = decided.memory, decided.outcomes
        invalid = dict(decided.invalid)
        for write in decided.writes:
            name = str((write.obj.get("metadata") or {}).get("name", ""))
            if name in invalid:
                self._reject(f"gateway/{name}", invalid[name])
            self._write(write)

    def _write(self, write: StatusWrite) -> None:
        obj, current, desired, choice = write.obj, write.current, write.desired, write.choice
        if not self.election.is_leader():
            return
        patch = status_patch(current, desired)
        if patch is None:
            return
        meta = obj.get("metadata") or {}
        name, rv, uid = (
            str(meta["name"]),
            str(meta.get("resourceVersion", "")),
            str(meta.get("uid", "")),
        )
        if self._written.get(name) == (rv, desired):
            return  # our write is on its way back through the watch
        try:
            self.api.patch_gateway_status(name, uid, rv, patch, WRITE_TIMEOUT_S)
        except ApiException as exc:
            self.stats.write_errors += 1
            if exc.status == 409:
                log.debug("gateway changed under us; recomputing", extra={"gateway": name})
            else:
                log.warning(
                    "status write failed",
                    extra={"gateway": name, "status": exc.status, "error": str(exc.reason)},
                )
            return
        except Exception as exc:
            self.stats.write_errors += 1
            log.warning(
                "status write failed",
                extra={"gateway": name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        self.stats.status_writes += 1
        self._written[name] = (rv, desired)
        log.info(
            "status updated",
            extra={
                "gateway": name,
                "active": desired.get("activePeer"),
                "ready": desired.get("ready"),
                "reason": desired["conditions"][0]["reason"],
            },
        )
        before = current.get("activePeer")
        after = desired.get("activePeer")
        if choice is not None and after != before:
            self.stats.active_changes[name] = self.stats.active_changes.get(name, 0) + 1
            self._event(name, uid, before, after, choice)

    def _event(self, name: str, uid: str, before: Any, after: Any, choice: Choice) -> None:
        failover = bool(before) and choice.why.startswith("failover")
        message = f"active peer {before or '(none)'} -> {after or '(none)'}: {choice.why}"
        log.log(logging.WARNING if failover else logging.INFO, message, extra={"gateway": name})
        try:
            self.api.record_event(
                name, uid, "ActivePeerChanged", message, failover, WRITE_TIMEOUT_S
            )
        except Exception as exc:  # events are best effort
            log.debug("event not recorded", extra={"gateway": name, "error": str(exc)})
