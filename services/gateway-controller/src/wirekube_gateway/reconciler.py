"""The controller loop: observe (caches) -> decide (pure) -> write (leader only).

Three informers keep caches of WireKubeGateways, WireKubePeers and the agents'
health-report Leases; any change, the leadership changing, or a one-second tick
(reports going stale and failback holds ending are functions of time) wakes
one pass. A pass reads the caches and, per gateway: parses it (a gateway the
controller cannot read gets ``Ready=False/InvalidSpec``, never a crash), judges
every peerRef (``health``), picks the active peer (``failover``), counts the
routes it carries (``wirekube_common.gateway``), builds the status
(``status``) and, *only while leading*, merge-patches what changed.

Standbys run the same passes without writing, so their memory (when each
report was last renewed, since when each peer has been healthy) is warm when
they take over. The incumbent active peer always comes from the gateway's
status, so a new leader continues where the old one stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.crd import Gateway, InvalidObject, Peer
from wirekube_common.gateway import clients_for, invalid_routes, routes_injected
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import (
    LABEL_SELECTOR,
    HealthReport,
    InvalidReport,
    check_fingerprint,
    from_lease,
    leases_path,
)
from wirekube_common.gwhealth.target import InvalidTarget, parse_target
from wirekube_common.kube.watch import Informer
from wirekube_common.wakeup import Wakeup
from wirekube_gateway.failover import Choice, choose_active, failback_hold_s
from wirekube_gateway.health import ReportClock, Verdict, evaluate
from wirekube_gateway.kube import GATEWAYS_PATH, PEERS_PATH, ApiException, ControllerApi
from wirekube_gateway.leader import LeaderElection
from wirekube_gateway.status import (
    Outcome,
    desired_status,
    invalid_spec_status,
    status_patch,
)
from wirekube_gateway.timers import (
    DEBOUNCE_S,
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_INTERVAL_S,
    FAILBACK_HOLD_FACTOR,
    TICK_S,
    WRITE_TIMEOUT_S,
)

log = logging.getLogger(__name__)


@dataclass
class Memory:
    """What the controller remembers about one gateway between passes."""

    check: str | None = None  # fingerprint of the healthCheck in force
    check_since: float = 0.0  # when we first saw that check (monotonic)
    healthy_since: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    gateway: Gateway
    verdicts: Mapping[str, Verdict]
    choice: Choice


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
        peers = self._peers()
        reports = self._reports()
        self.report_clock.observe(reports.values(), now, wall)
        raw = self.gateways.snapshot()
        for gone in self.memory.keys() - raw.keys():
            del self.memory[gone]
            self.outcomes.pop(gone, None)
            self._written.pop(gone, None)
        decisions: dict[str, Decision] = {}
        for name, obj in sorted(raw.items()):
            try:
                gateway = Gateway.from_dict(obj)
            except InvalidObject as exc:
                self._invalid(name, obj, str(exc), now_dt)
                continue
            decisions[name] = self._decide(gateway, peers, reports, now)
        resolved = [
            dataclasses.replace(
                d.gateway, status=dataclasses.replace(d.gateway.status, active_peer=d.choice.active)
            )
            for d in decisions.values()
        ]
        for gw in resolved:
            d = decisions[gw.metadata.name]
            outcome = Outcome(
                order=gw.spec.peer_refs,
                active=d.choice.active,
                verdicts=d.verdicts,
                routes_injected=routes_injected(gw, resolved, peers),
                clients=len(clients_for(gw, peers)),
                last_health_check=_last_check(gw, reports),
                invalid_check=_invalid_check(gw),
                notes=_notes(gw, peers),
            )
            self.outcomes[gw.metadata.name] = outcome
            obj = raw[gw.metadata.name]
            current = obj.get("status") or {}
            desired = desired_status(outcome, gw.metadata.generation, current, now_dt)
            self._write(obj, current, desired, d.choice)

    def _decide(
        self,
        gateway: Gateway,
        peers: Mapping[str, Peer],
        reports: Mapping[tuple[str, str], HealthReport],
        now: float,
    ) -> Decision:
        name = gateway.metadata.name
        mem = self.memory.setdefault(name, Memory(check_since=now))
        check = gateway.spec.health_check
        fingerprint = check_fingerprint(check) if check is not None and check.enabled else None
        if fingerprint != mem.check:
            mem.check, mem.check_since = fingerprint, now
        verdicts = evaluate(gateway, peers, reports, self.report_clock, now - mem.check_since, now)
        for peer, verdict in verdicts.items():
            if verdict.state is State.HEALTHY:
                mem.healthy_since.setdefault(peer, now)
            else:
                mem.healthy_since.pop(peer, None)
        for peer in mem.healthy_since.keys() - verdicts.keys():
            del mem.healthy_since[peer]
        threshold = (
            check.failure_threshold if check and check.enabled else DEFAULT_FAILURE_THRESHOLD
        )
        interval = check.interval_seconds if check and check.enabled else DEFAULT_INTERVAL_S
        choice = choose_active(
            gateway.spec.peer_refs,
            verdicts,
            gateway.status.active_peer,
            mem.healthy_since,
            now,
            failback_hold_s(threshold, interval, FAILBACK_HOLD_FACTOR),
            self.failback,
        )
        return Decision(gateway, verdicts, choice)

    def _invalid(self, name: str, obj: Mapping[str, Any], problem: str, now: dt.datetime) -> None:
        self._reject(f"gateway/{name}", problem)
        self.outcomes.pop(name, None)
        meta = obj.get("metadata") or {}
        current = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
        desired = invalid_spec_status(problem, int(meta.get("generation") or 0), current or {}, now)
        self._write(obj, current or {}, desired, None)

    def _write(
        self,
        obj: Mapping[str, Any],
        current: Mapping[str, Any],
        desired: dict[str, Any],
        choice: Choice | None,
    ) -> None:
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


def _last_check(
    gateway: Gateway, reports: Mapping[tuple[str, str], HealthReport]
) -> dt.datetime | None:
    check = gateway.spec.health_check
    if check is None or not check.enabled:
        return None
    fingerprint = check_fingerprint(check)
    times = [
        r.probed_at
        for peer in gateway.spec.peer_refs
        if (r := reports.get((gateway.metadata.name, peer))) is not None and r.check == fingerprint
    ]
    return max(times, default=None)


def _invalid_check(gateway: Gateway) -> str | None:
    check = gateway.spec.health_check
    if check is None or not check.enabled:
        return None
    try:
        parse_target(check.target)
    except InvalidTarget as exc:
        return f"healthCheck.target cannot be probed: {exc}"
    return None


def _notes(gateway: Gateway, peers: Mapping[str, Peer]) -> tuple[str, ...]:
    notes = []
    bad = invalid_routes(gateway)
    if bad:
        notes.append(f"ignoring invalid route CIDRs {', '.join(bad)}")
    unknown = [c for c in gateway.spec.client_refs if c not in peers]
    if unknown:
        notes.append(f"clientRefs without a WireKubePeer: {', '.join(unknown)}")
    return tuple(notes)
