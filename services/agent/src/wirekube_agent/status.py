"""This node's WireKubePeer status, derived from path state. Pure.

Writes are the scarce resource: every agent watches every WireKubePeer, so each
status write fans out to N watchers. The agent therefore writes only its own
object, only when a field changed, through a token bucket (a few writes
``STATUS_SPACING_S`` apart so start-up and path changes show within a second
or two, then one per ``STATUS_REFILL_S``), and ``lastHandshake`` only when it
moved by a minute or more — total writes grow O(N) with the mesh, never O(N^2).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from wirekube_agent.paths import PathState
from wirekube_agent.timers import (
    HANDSHAKE_FRESH_S,
    STATUS_BURST,
    STATUS_HANDSHAKE_GRANULARITY_S,
    STATUS_REFILL_S,
    STATUS_SPACING_S,
)
from wirekube_common.crd import PeerStatus, derive_transport_mode


@dataclass(frozen=True)
class LocalReport:
    """Facts about this node that other agents use for path selection."""

    endpoint_discovery_method: str | None = None
    nat_type: str | None = None
    nat_mapping: str | None = None
    nat_filtering: str | None = None
    internal_endpoint: str | None = None
    public_ip: str | None = None


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0


def derive(
    paths: Mapping[str, PathState],
    handshakes: Mapping[str, float],
    local: LocalReport,
    previous: PeerStatus,
    now: float,
    fresh_after: float = 0.0,
) -> PeerStatus:
    """The status to publish. ``handshakes`` maps peer name → last handshake.

    ``fresh_after``: our key rotated then; the first handshake after it is
    published at once, whatever the granularity, as the proof (for
    ``wirekubectl rotate-key --wait``) that the new key works."""
    transports = {name: p.transport for name, p in paths.items() if p.routed}
    latest = max(handshakes.values(), default=0.0)
    connected = latest > 0 and now - latest < HANDSHAKE_FRESH_S
    published = parse_rfc3339(previous.last_handshake)
    first_after_rotation = published < fresh_after <= latest
    if latest and (latest - published >= STATUS_HANDSHAKE_GRANULARITY_S or first_after_rotation):
        last_handshake = rfc3339(latest)
    else:
        last_handshake = (
            previous.last_handshake if published else (rfc3339(latest) if latest else None)
        )
    nat_type = local.nat_type if local.nat_type is not None else previous.nat_type
    return PeerStatus(
        connected=connected,
        nat_type=nat_type,
        transport_mode=derive_transport_mode(transports) or None,
        peer_transports=transports,
        endpoint_discovery_method=local.endpoint_discovery_method,
        last_handshake=last_handshake,
        nat_mapping=local.nat_mapping if local.nat_mapping is not None else previous.nat_mapping,
        nat_filtering=(
            local.nat_filtering if local.nat_filtering is not None else previous.nat_filtering
        ),
        internal_endpoint=local.internal_endpoint,
        public_ip=local.public_ip,
        observed_generation=previous.observed_generation,
        conditions=previous.conditions,
    )


@dataclass(frozen=True)
class WriteBudget:
    """Token bucket for status writes: ``tokens`` as of ``at``."""

    tokens: float = STATUS_BURST
    at: float = 0.0
    last: float = float("-inf")  # the last write

    def available(self, now: float) -> float:
        return min(STATUS_BURST, self.tokens + max(0.0, now - self.at) / STATUS_REFILL_S)

    def spend(self, now: float) -> WriteBudget:
        return WriteBudget(self.available(now) - 1, now, now)


def should_write(current: PeerStatus, new: PeerStatus, budget: WriteBudget, now: float) -> bool:
    return (
        current.to_dict() != new.to_dict()
        and budget.available(now) >= 1
        and now - budget.last >= STATUS_SPACING_S
    )


@dataclass(frozen=True)
class Written:
    """Our last successful status write, and the resourceVersion our object
    had in the informer when we wrote it."""

    status: PeerStatus
    over: str


def baseline(current: PeerStatus, current_rv: str, written: Written | None) -> PeerStatus:
    """What a new status is compared with and patched from: ``current``, the
    informer's copy of our object, unless the informer has not seen anything
    since our last write (its copy still has the resourceVersion it had when
    we wrote); then what we wrote.

    The informer's copy can be stale for minutes: a NAT in front of the node
    that lost the watch connection's mapping leaves the watch silent until its
    read timeout. Compared with that copy, a status that changed and changed
    back (direct -> relay -> direct) looked unchanged and the published one
    stayed wrong, and one that changed once was rewritten every refill of the
    write budget (both seen in the lab after a conntrack flush).
    """
    if written is not None and current_rv == written.over:
        return written.status
    return current
