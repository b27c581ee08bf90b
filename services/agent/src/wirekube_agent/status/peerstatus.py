"""This node's WireKubePeer status, derived from path state. Pure.

Writes are the scarce resource: every agent watches every WireKubePeer, so each
status write fans out to N watchers. The agent therefore writes only its own
object, only when a field changed, through a token bucket (a few writes
``STATUS_SPACING_S`` apart so start-up and path changes show within a second
or two, then one per ``STATUS_REFILL_S``), and ``lastHandshake`` only when it
moved by a minute or more — total writes grow O(N) with the mesh, never O(N^2).

``peerPaths`` says why each peer's path is what it is (rule and reason from
``paths.rules.step``, failures, since when, probe RTT and answers, the next retry).
Its rule, reason, failures and endpoint are written at once when they change
(``WHY_KEYS``: they change with the decision, rarely); the details change with
every probe and only ride along with writes made for other reasons, so a
quiet mesh still writes nothing. The ``Ready`` condition sums it up.

``publish`` is the pass's decision (called from ``decide``): the patch to
write, if any, and what to remember once it is written; ``sample`` keeps
the probe details between samples. The reconciler only performs the write.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_agent.model import Endpoint
from wirekube_agent.paths.rules import LocalFacts, PathState, ProbeView, Target
from wirekube_agent.timers import (
    HANDSHAKE_FRESH_S,
    STATUS_BURST,
    STATUS_CANDIDATES_MAX_PEERS,
    STATUS_DETAIL_SAMPLE_S,
    STATUS_HANDSHAKE_GRANULARITY_S,
    STATUS_REFILL_S,
    STATUS_SPACING_S,
)
from wirekube_common.crd import PeerPath, PeerStatus, ProbeCandidate, derive_transport_mode
from wirekube_common.crd.peer import MAX_CANDIDATES
from wirekube_common.kube.mergepatch import merge_patch
from wirekube_common.wireguard.types import format_endpoint

READY = "Ready"
# The keys of a peerPaths entry that say *why*: they change only when the
# decision does (rarely, and mostly with the transport), and `why` must not
# show an old reason, so a change of one is written at once. Phase, since,
# RTT, candidate answers and the next retry are details.
WHY_KEYS = ("transport", "rule", "reason", "failures", "endpoint")
# peer_path is a pure function of frozen values and is asked for every peer on
# every pass; almost all answers repeat (measured at 1000 peers: 8.6 ms per
# pass uncached). Room for two passes of the CRD's 4096 peers.
PEER_PATH_CACHE = 8192


@dataclass(frozen=True)
class PeerProbe:
    """What the prober knows of one peer: its candidates, when each answered
    (latest, epoch seconds) and the last probe's RTT (seconds) directly and
    through the relay."""

    candidates: tuple[Endpoint, ...] = ()
    answered: tuple[tuple[Endpoint, float], ...] = ()
    rtt: float | None = None  # direct
    relay_rtt: float | None = None  # through the relay


@dataclass(frozen=True)
class LocalReport:
    """Facts about this node that other agents use for path selection."""

    endpoint_discovery_method: str | None = None
    nat_type: str | None = None
    nat_mapping: str | None = None
    nat_filtering: str | None = None
    internal_endpoint: str | None = None
    public_ip: str | None = None


def local_report(local: LocalFacts, discovered_by: str | None, listen_port: int) -> LocalReport:
    """Our own facts (as path selection sees them) as the status reports them."""
    ip = local.internal_ip
    return LocalReport(
        endpoint_discovery_method=discovered_by,
        nat_type=local.nat_type or None,
        nat_mapping=local.mapping or None,
        nat_filtering=local.filtering or None,
        internal_endpoint=format_endpoint((ip, listen_port)) if ip else None,
        public_ip=local.public_ip or None,
    )


@dataclass(frozen=True)
class Sample:
    """The probe details the status shows, by peer name, and when sampled."""

    probes: Mapping[str, PeerProbe]
    at: float = float("-inf")


def sample(
    previous: Sample,
    paths_changed: bool,
    names: Mapping[bytes, str],
    targets: Mapping[bytes, Target],
    views: Mapping[bytes, ProbeView],
    rtts: Mapping[bytes, tuple[float | None, float | None]],
    now: float,
) -> Sample:
    """Probe details only ride along with status writes (``should_write``):
    sampled at every path change and every ``STATUS_DETAIL_SAMPLE_S``;
    between samples the previous sample stands, so ``peer_path`` answers from
    its cache."""
    if not paths_changed and now - previous.at < STATUS_DETAIL_SAMPLE_S:
        return previous
    return Sample(
        {
            name: PeerProbe(targets[k].candidates, views[k].answered, *rtts.get(k, (None, None)))
            for k, name in names.items()
            if k in targets
        },
        now,
    )


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
    probes: Mapping[str, PeerProbe] | None = None,
    fresh_after: float = 0.0,
) -> PeerStatus:
    """The status to publish. ``handshakes`` maps peer name → last handshake;
    ``probes`` (by peer name) fills in peerPaths' probe results.

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
    detailed = len(paths) <= STATUS_CANDIDATES_MAX_PEERS
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
        conditions=_with_condition(previous.conditions, ready_condition(paths, previous, now)),
        peer_paths={
            name: peer_path(p, (probes or {}).get(name, PeerProbe()), detailed)
            for name, p in paths.items()
        },
    )


@functools.lru_cache(maxsize=PEER_PATH_CACHE)
def peer_path(state: PathState, probe: PeerProbe, detailed: bool = True) -> PeerPath:
    """One peer's ``status.peerPaths`` entry (pure); its probe candidates only
    when ``detailed`` (see ``STATUS_CANDIDATES_MAX_PEERS``)."""
    answered = dict(probe.answered)
    relayed = state.transport == "relay"
    rtt = probe.relay_rtt if relayed else probe.rtt  # on the path in use
    return PeerPath(
        transport=state.transport,
        phase=state.phase,
        rule=state.rule,
        reason=state.reason,
        since=rfc3339(state.since) if state.since else None,
        failures=state.failures,
        endpoint=format_endpoint(state.endpoint) if state.endpoint and not relayed else None,
        next_attempt=rfc3339(state.next_burst) if relayed and state.next_burst else None,
        rtt_ms=round(rtt * 1000, 2) if rtt is not None else None,
        candidates=tuple(
            ProbeCandidate(format_endpoint(ep), rfc3339(answered[ep]) if ep in answered else None)
            for ep in (probe.candidates[:MAX_CANDIDATES] if detailed else ())
        ),
    )


def ready_condition(
    paths: Mapping[str, PathState], previous: PeerStatus, now: float
) -> dict[str, str]:
    """The ``Ready`` condition: every peer has a working path (direct or relay)."""
    unrouted = sorted(n for n, p in paths.items() if not p.routed)
    direct = sum(1 for p in paths.values() if p.routed and p.transport == "direct")
    relayed = sum(1 for p in paths.values() if p.routed and p.transport == "relay")
    if not paths:
        status, reason, message = "True", "NoPeers", "no other peers in the mesh"
    elif unrouted:
        shown = ", ".join(unrouted[:5]) + (" ..." if len(unrouted) > 5 else "")
        status, reason = "False", "PeersUnreachable"
        message = f"{len(unrouted)} of {len(paths)} peers have no working path: {shown}"
    else:
        status = "True"
        reason = "AllPeersDirect" if relayed == 0 else "SomePeersRelayed"
        message = f"{len(paths)} peers: {direct} direct, {relayed} relayed"
    before = next((c for c in previous.conditions if c.get("type") == READY), None)
    since = (
        str(before["lastTransitionTime"])
        if before is not None
        and before.get("status") == status
        and before.get("lastTransitionTime")
        else rfc3339(now)
    )
    return {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def _with_condition(
    conditions: tuple[Mapping[str, object], ...], new: dict[str, str]
) -> tuple[Mapping[str, object], ...]:
    """``conditions`` with ``new`` in place of its type (others kept as they are)."""
    others = [c for c in conditions if c.get("type") != new["type"]]
    return (*others, new)


def significant(status: PeerStatus) -> dict[str, object]:
    """The part of the status whose changes are written at once: everything
    but peerPaths' details (only its ``WHY_KEYS`` count; the rest rides along
    with writes made for other reasons)."""
    d = status.to_dict()
    paths = d.get("peerPaths")
    if paths:
        d["peerPaths"] = {k: tuple(entry.get(f) for f in WHY_KEYS) for k, entry in paths.items()}
    return d


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
    """A changed status, within the budget; peerPaths' details alone never
    cause a write (they ride along: see ``significant``)."""
    if current == new:
        return False
    if budget.available(now) < 1 or now - budget.last < STATUS_SPACING_S:
        return False
    return significant(current) != significant(new)


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


@dataclass(frozen=True)
class StatusWrite:
    """The status patch to write, and what to remember once it is written."""

    patch: dict[str, Any]
    written: Written  # becomes the next pass's ``written`` once made


def publish(
    own: Mapping[str, Any] | None,
    paths: Mapping[str, PathState],
    handshakes: Mapping[str, float],
    local: LocalReport,
    probes: Mapping[str, PeerProbe],
    written: Written | None,
    budget: WriteBudget,
    now: float,
    fresh_after: float = 0.0,
) -> StatusWrite | None:
    """The status write this pass makes, or None. ``own``: our WireKubePeer as
    our watch shows it (nothing to write to before it exists); ``written``,
    ``budget``: what the writes made so far left (``baseline``, ``WriteBudget``)."""
    if own is None:
        return None
    try:
        current = PeerStatus.from_dict(own.get("status") or {})
    except ValueError:
        current = PeerStatus()
    # Our copy of our own object may be stale (see ``baseline``).
    rv = str((own.get("metadata") or {}).get("resourceVersion", ""))
    base = baseline(current, rv, written)
    new = derive(paths, handshakes, local, base, now, probes, fresh_after=fresh_after)
    if not should_write(base, new, budget, now):
        return None
    return StatusWrite(merge_patch(base.to_dict(), new.to_dict()), Written(new, rv))
