"""WireKubeGateway status: what it should say, and the smallest patch (pure).

Fields (all owned by the controller): ``activePeer`` - what agents route
through (absent when no peerRef is usable); ``ready`` - the active peer is
known healthy and carries at least one route for at least one client;
``routesInjected`` - see ``wirekube_common.gateway.routes_injected``;
``peerHealth`` - ``healthy``/``unhealthy`` per peerRef with a verdict
(peers still awaiting their first verdict are left out rather than guessed);
``lastHealthCheck`` - the newest probe any peer reported; ``observedGeneration``;
and one ``Ready`` condition whose reason says which rule decided and whose
message says why, naming peers.

Writes are JSON merge patches (RFC 7386) of the status subresource computed
against the status last seen, so a pass that changes nothing writes nothing;
``lastHealthCheck`` alone triggers a write only once per
``LAST_HEALTH_CHECK_REFRESH_S`` (see timers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.gwhealth.checker import State
from wirekube_common.kube.mergepatch import merge_patch
from wirekube_common.kube.times import format_time, parse_time
from wirekube_gateway.gateways.health import Verdict
from wirekube_gateway.timers import LAST_HEALTH_CHECK_REFRESH_S

READY = "Ready"


class ReadyReason:
    ACTIVE = "Active"
    NO_PEERS = "NoPeers"
    NO_HEALTHY_PEER = "NoHealthyPeer"
    AWAITING = "AwaitingHealthReports"
    NO_CLIENTS = "NoClients"
    NO_ROUTES = "NoRoutesInjected"
    INVALID_HEALTH_CHECK = "InvalidHealthCheck"
    INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class Outcome:
    """Everything decided for one gateway in one pass."""

    order: tuple[str, ...]  # spec.peerRefs
    active: str | None
    verdicts: Mapping[str, Verdict]
    routes_injected: int
    clients: int
    last_health_check: dt.datetime | None = None
    invalid_check: str | None = None  # why spec.healthCheck.target cannot be probed
    notes: tuple[str, ...] = field(default_factory=tuple)  # spec problems worth a mention


def _health_summary(order: Sequence[str], verdicts: Mapping[str, Verdict]) -> str:
    return "; ".join(verdicts[p].describe(p) for p in dict.fromkeys(order))


def ready_condition(o: Outcome) -> tuple[bool, str, str]:
    """(ready, reason, message)."""
    notes = "".join(f" Note: {n}." for n in o.notes)
    if o.invalid_check is not None:
        return False, ReadyReason.INVALID_HEALTH_CHECK, f"{o.invalid_check}.{notes}"
    if o.active is None:
        return (
            False,
            ReadyReason.NO_PEERS,
            f"no peerRef is a usable WireKubePeer: {_health_summary(o.order, o.verdicts)}.{notes}",
        )
    state = o.verdicts[o.active].state
    health = _health_summary(o.order, o.verdicts)
    if state is State.UNKNOWN:
        return (
            False,
            ReadyReason.AWAITING,
            f"{o.active} is active, awaiting its first health verdict: {health}.{notes}",
        )
    if state is not State.HEALTHY:
        return (
            False,
            ReadyReason.NO_HEALTHY_PEER,
            f"no healthy peerRef; keeping {o.active} active: {health}.{notes}",
        )
    if o.clients == 0:
        return (
            False,
            ReadyReason.NO_CLIENTS,
            f"{o.active} is active but no mesh peer is a client of this gateway.{notes}",
        )
    if o.routes_injected == 0:
        return (
            False,
            ReadyReason.NO_ROUTES,
            f"{o.active} is active but carries no route: every route is served by a gateway "
            f"whose name sorts first, or equals a mesh peer's address.{notes}",
        )
    return (
        True,
        ReadyReason.ACTIVE,
        f"{o.active} is active, carrying {o.routes_injected} route(s) for {o.clients} "
        f"client(s); {health}.{notes}",
    )


def _condition(
    current: Mapping[str, Any],
    ready: bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> dict[str, Any]:
    status = "True" if ready else "False"
    previous = next(
        (
            c
            for c in current.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == READY
        ),
        None,
    )
    since = format_time(now)
    if previous is not None and previous.get("status") == status:
        since = str(previous.get("lastTransitionTime") or since)
    return {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def desired_status(
    o: Outcome, generation: int, current: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any]:
    ready, reason, message = ready_condition(o)
    status: dict[str, Any] = {
        "ready": ready,
        "routesInjected": o.routes_injected,
        "observedGeneration": generation,
        "conditions": [_condition(current, ready, reason, message, generation, now)],
    }
    if o.active is not None:
        status["activePeer"] = o.active
    health = {p: str(v.state) for p, v in o.verdicts.items() if v.state is not State.UNKNOWN}
    if health:
        status["peerHealth"] = health
    if o.last_health_check is not None:
        status["lastHealthCheck"] = format_time(o.last_health_check)
    return status


def invalid_spec_status(
    problem: str, generation: int, current: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """For a gateway the controller cannot read: say so, and leave the routing
    fields (activePeer, routesInjected, peerHealth) as they are."""
    status = {
        k: v
        for k, v in current.items()
        if k in ("activePeer", "routesInjected", "peerHealth", "lastHealthCheck")
    }
    status.update(
        {
            "ready": False,
            "observedGeneration": generation,
            "conditions": [
                _condition(
                    current,
                    False,
                    ReadyReason.INVALID_SPEC,
                    f"invalid spec: {problem}",
                    generation,
                    now,
                )
            ],
        }
    )
    return status


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status patch to send, or None when there is nothing worth writing."""
    patch = merge_patch(current, desired)
    if not patch:
        return None
    if patch.keys() == {"lastHealthCheck"} and "lastHealthCheck" in current:
        try:
            moved = parse_time(str(desired["lastHealthCheck"])) - parse_time(
                str(current["lastHealthCheck"])
            )
        except (ValueError, KeyError):
            return patch
        if moved.total_seconds() < LAST_HEALTH_CHECK_REFRESH_S:
            return None
    return patch
