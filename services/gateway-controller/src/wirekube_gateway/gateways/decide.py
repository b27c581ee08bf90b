"""One controller pass's decision for every WireKubeGateway. Pure.

Plain data in (the gateways as the watch shows them, the parsed peers and
health reports, when each report was last renewed, what the last pass
remembered, the clock), plain data out (``Pass``): per gateway the status it
should have, the outcome metrics read, and the next pass's memory. Per
gateway: parse it (a gateway the controller cannot read gets
``Ready=False/InvalidSpec``, never a crash), judge every peerRef
(``health``), pick the active peer (``failover``), count the routes it
carries (``wirekube_common.gateway``) and build the status (``status``).

``gateways.reconciler`` observes, calls ``decide`` and, *only while
leading*, writes what changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.crd import Gateway, InvalidObject, Peer
from wirekube_common.gateway import clients_for, invalid_routes, routes_injected
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import HealthReport, check_fingerprint
from wirekube_common.gwhealth.target import InvalidTarget, parse_target
from wirekube_gateway.gateways.failover import Choice, choose_active, failback_hold_s
from wirekube_gateway.gateways.health import ReportClock, Verdict, evaluate
from wirekube_gateway.gateways.status import Outcome, desired_status, invalid_spec_status
from wirekube_gateway.timers import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_INTERVAL_S,
    FAILBACK_HOLD_FACTOR,
)


@dataclass(frozen=True)
class Memory:
    """What the controller remembers about one gateway between passes."""

    check: str | None = None  # fingerprint of the healthCheck in force
    check_since: float = 0.0  # when we first saw that check (monotonic)
    healthy_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    gateway: Gateway
    verdicts: Mapping[str, Verdict]
    choice: Choice


@dataclass(frozen=True)
class StatusWrite:
    """The status one gateway should have; the reconciler patches what differs
    from ``current`` (``status.status_patch``) while it leads."""

    obj: Mapping[str, Any]  # the gateway as the watch shows it
    current: Mapping[str, Any]  # its status there
    desired: dict[str, Any]
    choice: Choice | None  # None: an invalid gateway (no active-peer Event)


@dataclass(frozen=True)
class Pass:
    writes: list[StatusWrite]  # invalid gateways first, then the rest, by name
    outcomes: dict[str, Outcome]  # per valid gateway (metrics)
    memory: dict[str, Memory]
    invalid: list[tuple[str, str]]  # (gateway name, problem): logged once per problem


def decide(
    raw: Mapping[str, Mapping[str, Any]],
    peers: Mapping[str, Peer],
    reports: Mapping[tuple[str, str], HealthReport],
    clock: ReportClock,
    memory: Mapping[str, Memory],
    now: float,
    now_dt: dt.datetime,
    failback: bool = True,
) -> Pass:
    """Every gateway's status for one pass. ``clock``: when each report was
    last renewed (observed before the pass); ``now``: monotonic; ``now_dt``: wall."""
    new_memory = {name: m for name, m in memory.items() if name in raw}
    writes: list[StatusWrite] = []
    invalid: list[tuple[str, str]] = []
    decisions: dict[str, Decision] = {}
    for name, obj in sorted(raw.items()):
        try:
            gateway = Gateway.from_dict(obj)
        except InvalidObject as exc:
            invalid.append((name, str(exc)))
            writes.append(_invalid(obj, str(exc), now_dt))
            continue
        mem = new_memory.get(name) or Memory(check_since=now)
        decisions[name], new_memory[name] = decide_gateway(
            gateway, peers, reports, clock, mem, now, failback
        )
    resolved = [
        dataclasses.replace(
            d.gateway, status=dataclasses.replace(d.gateway.status, active_peer=d.choice.active)
        )
        for d in decisions.values()
    ]
    outcomes: dict[str, Outcome] = {}
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
        outcomes[gw.metadata.name] = outcome
        obj = raw[gw.metadata.name]
        current = obj.get("status") or {}
        desired = desired_status(outcome, gw.metadata.generation, current, now_dt)
        writes.append(StatusWrite(obj, current, desired, d.choice))
    return Pass(writes, outcomes, new_memory, invalid)


def decide_gateway(
    gateway: Gateway,
    peers: Mapping[str, Peer],
    reports: Mapping[tuple[str, str], HealthReport],
    clock: ReportClock,
    mem: Memory,
    now: float,
    failback: bool = True,
) -> tuple[Decision, Memory]:
    """One gateway: its peers' verdicts and the active peer, and the memory
    the next pass needs (the check in force, since when each peer is healthy)."""
    check = gateway.spec.health_check
    fingerprint = check_fingerprint(check) if check is not None and check.enabled else None
    if fingerprint != mem.check:
        mem = Memory(fingerprint, now, mem.healthy_since)
    verdicts = evaluate(gateway, peers, reports, clock, now - mem.check_since, now)
    healthy_since = {
        peer: mem.healthy_since.get(peer, now)
        for peer, verdict in verdicts.items()
        if verdict.state is State.HEALTHY
    }
    mem = Memory(mem.check, mem.check_since, healthy_since)
    threshold = check.failure_threshold if check and check.enabled else DEFAULT_FAILURE_THRESHOLD
    interval = check.interval_seconds if check and check.enabled else DEFAULT_INTERVAL_S
    choice = choose_active(
        gateway.spec.peer_refs,
        verdicts,
        gateway.status.active_peer,
        healthy_since,
        now,
        failback_hold_s(threshold, interval, FAILBACK_HOLD_FACTOR),
        failback,
    )
    return Decision(gateway, verdicts, choice), mem


def _invalid(obj: Mapping[str, Any], problem: str, now: dt.datetime) -> StatusWrite:
    meta = obj.get("metadata") or {}
    current = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    desired = invalid_spec_status(problem, int(meta.get("generation") or 0), current or {}, now)
    return StatusWrite(obj, current or {}, desired, None)


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
