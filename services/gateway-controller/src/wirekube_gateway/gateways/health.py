"""Per-peer health of one gateway, from the agents' heartbeat reports (pure).

Where the verdicts come from (see ``wirekube_common.gwhealth``): each gateway
peer's agent probes ``healthCheck.target`` from its own node and renews a Lease
with its consecutive-failure verdict after every probe. The controller does not
probe; it judges the reports:

* checks disabled: every existing, non-passive peerRef is healthy (failover
  then happens only when a peer disappears or turns passive);
* no WireKubePeer by that name, or one with no allowedIPs (passive: no tunnel
  can reach it): unhealthy, whatever any report says;
* a fresh report made under the current check: its verdict (healthy,
  unhealthy, or unknown while an agent has fewer failures than the threshold
  and no success yet);
* a report not renewed for its TTL (``report_ttl_s``): unhealthy - the node or
  its agent is gone, which must fail over like an unreachable target;
* no report yet: unknown for one TTL after the controller first saw this
  check, unhealthy after that (an agent that never reports is not a gateway).

Freshness is measured on the controller's monotonic clock from when it saw
each report change (``ReportClock``), never by comparing the agent's
timestamps with ours, so clock skew between nodes cannot fake or hide a dead
agent. Only the first sighting of a report (a controller start or takeover)
trusts its age by the wall clock, clamped at zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from wirekube_common.crd import Gateway, Peer
from wirekube_common.gateway import is_passive
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import HealthReport, check_fingerprint, report_ttl_s


class Reason(StrEnum):
    NOT_CHECKED = "NotChecked"
    PROBE = "Probe"
    PEER_NOT_FOUND = "PeerNotFound"
    PEER_PASSIVE = "PeerPassive"
    REPORT_STALE = "ReportStale"
    NO_REPORT = "NoReport"
    AWAITING_REPORT = "AwaitingReport"


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: Reason
    detail: str = ""

    @property
    def eligible(self) -> bool:
        """Whether the peer could carry traffic at all (exists, not passive)."""
        return self.reason not in (Reason.PEER_NOT_FOUND, Reason.PEER_PASSIVE)

    def describe(self, peer: str) -> str:
        return f"{peer}: {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Seen:
    renew_key: str  # what changes on every renewal (the probe time)
    renewed_at: float  # our monotonic time of that renewal


class ReportClock:
    """When each report was last renewed, on our monotonic clock."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Seen] = {}

    def observe(self, reports: Iterable[HealthReport], now: float, wall: float) -> None:
        current: dict[tuple[str, str], Seen] = {}
        for report in reports:
            key = report.key()
            renew_key = report.probed_at.isoformat()
            previous = self._seen.get(key)
            if previous is not None and previous.renew_key == renew_key:
                current[key] = previous
            elif previous is not None:
                current[key] = Seen(renew_key, now)
            else:
                age = max(0.0, wall - report.probed_at.timestamp())
                current[key] = Seen(renew_key, now - age)
        self._seen = current

    def age(self, key: tuple[str, str], now: float) -> float | None:
        seen = self._seen.get(key)
        return None if seen is None else now - seen.renewed_at


def evaluate(
    gateway: Gateway,
    peers: Mapping[str, Peer],
    reports: Mapping[tuple[str, str], HealthReport],
    clock: ReportClock,
    check_seen_for: float,
    now: float,
) -> dict[str, Verdict]:
    """A verdict for every peerRef. ``check_seen_for``: how long this
    controller has known the gateway's current healthCheck."""
    check = gateway.spec.health_check
    enabled = check is not None and check.enabled
    out: dict[str, Verdict] = {}
    for name in gateway.spec.peer_refs:
        peer = peers.get(name)
        if peer is None:
            out[name] = Verdict(State.UNHEALTHY, Reason.PEER_NOT_FOUND, "no such WireKubePeer")
        elif is_passive(peer):
            out[name] = Verdict(State.UNHEALTHY, Reason.PEER_PASSIVE, "no allowedIPs (passive)")
        elif check is None or not enabled:
            out[name] = Verdict(State.HEALTHY, Reason.NOT_CHECKED)
        else:
            out[name] = _from_report(gateway, name, reports, clock, check_seen_for, now)
    return out


def _from_report(
    gateway: Gateway,
    peer: str,
    reports: Mapping[tuple[str, str], HealthReport],
    clock: ReportClock,
    check_seen_for: float,
    now: float,
) -> Verdict:
    check = gateway.spec.health_check
    assert check is not None
    ttl = report_ttl_s(check)
    key = (gateway.metadata.name, peer)
    report = reports.get(key)
    if report is None or report.check != check_fingerprint(check):
        if check_seen_for < ttl:
            return Verdict(State.UNKNOWN, Reason.AWAITING_REPORT, "no health report yet")
        return Verdict(
            State.UNHEALTHY,
            Reason.NO_REPORT,
            f"no health report from the peer's agent in {ttl:.0f}s (is it running?)",
        )
    age = clock.age(key, now)
    if age is None or age > ttl:
        seconds = "?" if age is None else f"{age:.0f}"
        return Verdict(
            State.UNHEALTHY, Reason.REPORT_STALE, f"agent stopped reporting {seconds}s ago"
        )
    return Verdict(report.state, Reason.PROBE, report.detail)
