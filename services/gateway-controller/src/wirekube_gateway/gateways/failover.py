"""Which peerRef is active (pure): ordered preference, sticky on purpose.

1. Keep the incumbent (``status.activePeer``) while it is healthy, or still
   unknown (just started, no verdict yet: switching on no evidence would cost
   a disruption for nothing).
2. Failback: a healthy incumbent yields only to an *earlier* peerRef that has
   been healthy without interruption for the hold time
   (``FAILBACK_HOLD_FACTOR`` x failureThreshold x intervalSeconds). The order of
   peerRefs is the user's preference, so the primary does come back - but a
   flapping primary never does, and each switch (new SNAT source, broken
   connections) happens at most once per incident. ``failback=False`` makes
   the incumbent keep the role until it fails (VRRP's "no preempt").
3. Failover: an unhealthy, missing or passive incumbent is replaced by the
   first healthy peerRef, immediately (the failure threshold already
   debounced the verdict).
4. Fail static: with no healthy peer, an eligible incumbent stays active (and
   the gateway is not ready). When every gateway probe fails together the
   target itself is usually down, not every gateway - withdrawing the routes
   would turn a degraded gateway into a dead one.
5. No incumbent (a new gateway): the first peerRef that is healthy or has
   not reported yet. The agents' first probes are jittered, so "first
   healthy" alone would hand a new gateway to whichever peer happened to
   report first, for a whole failback hold. Waiting for the preferred peer's
   first report is what VRRP's master-down wait does; a preferred peer that
   never reports turns unhealthy after one report TTL and rule 3 applies.
   Nobody healthy or awaited: the first unknown peerRef, else the first
   eligible one, so a new gateway gets a path at once.
6. Nothing eligible (no peerRef exists, or all are passive): no active peer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wirekube_common.gwhealth.checker import State
from wirekube_gateway.gateways.health import Reason, Verdict


@dataclass(frozen=True)
class Choice:
    active: str | None
    why: str


def choose_active(
    order: Sequence[str],
    verdicts: Mapping[str, Verdict],
    incumbent: str | None,
    healthy_since: Mapping[str, float],
    now: float,
    hold_s: float,
    failback: bool = True,
) -> Choice:
    eligible = [p for p in order if verdicts[p].eligible]
    if not eligible:
        return Choice(None, "no peerRef exists as a usable WireKubePeer")
    healthy = [p for p in eligible if verdicts[p].state is State.HEALTHY]
    if incumbent in eligible:
        state = verdicts[incumbent].state
        if state is State.HEALTHY:
            if failback:
                for p in healthy:
                    if p == incumbent:
                        break
                    stable_for = now - healthy_since.get(p, now)
                    if stable_for >= hold_s:
                        return Choice(p, f"failback: {p} healthy for {stable_for:.0f}s")
            return Choice(incumbent, "incumbent healthy")
        if state is State.UNKNOWN:
            return Choice(incumbent, "incumbent not yet checked")
    if incumbent is None:
        for p in eligible:
            if verdicts[p].state is State.HEALTHY:
                return Choice(p, "first healthy peerRef")
            if verdicts[p].reason is Reason.AWAITING_REPORT:
                return Choice(p, "first peerRef, awaiting its first health report")
    if healthy:
        return Choice(healthy[0], f"failover: {incumbent} is {_why_not(incumbent, verdicts)}")
    if incumbent in eligible:
        return Choice(incumbent, "no healthy peerRef; keeping the active one")
    unknown = [p for p in eligible if verdicts[p].state is State.UNKNOWN]
    first = unknown[0] if unknown else eligible[0]
    return Choice(first, "no healthy peerRef yet")


def _why_not(peer: str, verdicts: Mapping[str, Verdict]) -> str:
    verdict = verdicts.get(peer)
    if verdict is None:
        return "no longer a peerRef"
    return str(verdict.state) + (f" ({verdict.detail})" if verdict.detail else "")


def failback_hold_s(failure_threshold: int, interval_s: int, factor: int) -> float:
    return float(factor * max(1, failure_threshold) * max(1, interval_s))
