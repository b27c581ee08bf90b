"""Per-peer path selection: which transport carries a peer's packets. Pure.

Every function here is a function of (facts, previous state, now); the
reconciler feeds it observations and applies the result.

Relay mode ``auto`` with a relay available works Tailscale-style:

* **relay first** — a new peer is reached through the relay at once (a relay
  path works from the first packet, so it is routed immediately);
* **direct in parallel** — path probes (``disco``) go from our WireGuard port
  to the peer's candidate endpoints; they never touch WireGuard's config,
  so a failed attempt costs the relayed traffic nothing;
* **upgrade** when a probe is answered (both directions proven at the
  WireGuard port, so WireGuard's packets will pass the same NAT mappings);
* **fall back** to the relay when probes on the direct path go unanswered
  for ``handshakeTimeoutSeconds``; re-probe relayed peers every
  ``directRetryIntervalSeconds``.

Hysteresis: a direct path is dropped only after a full handshake timeout of
silence, and after a fallback the next upgrade waits for the retry interval,
so a flaky path cannot flap. Mode ``never`` keeps WireGuard on the direct
endpoint (routed once WireGuard or a probe proves it works); ``always`` pins
the relay.

``predict`` decides from both sides' published NAT facts whether probing is
worth starting at once; probing (not prediction) decides the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from wirekube_agent.model import Endpoint, RemotePeer, Transport
from wirekube_agent.timers import (
    HANDSHAKE_FRESH_S,
    HEARTBEAT_MISSED_S,
    INITIAL_PROBE_BURST_S,
    PONG_FRESH_S,
    PROBE_BURST_S,
    REACT_COOLDOWN_S,
)

Phase = Literal["probing", "up", "down"]
Prediction = Literal["direct", "relay", "unknown"]
# Which rule of ``classify`` applies to a pair (published per peer in
# ``status.peerPaths[].rule``; docs/why-relayed.md explains each one).
Rule = Literal[
    "same-network",
    "tcp-only",
    "public",
    "cone-cone",
    "cone-symmetric",
    "symmetric-port-restricted",
    "symmetric-symmetric",
    "unknown",
]
# Why the path is what it is (``status.peerPaths[].reason``): set by ``step``
# from the same decision that chose the transport.
Reason = Literal[
    "mode-always",  # relay.mode always pins the relay
    "mode-never",  # relay.mode never: direct only
    "no-relay",  # mode auto, but no relay to be had: direct only
    "probe-answered",  # a direct probe was answered at the WireGuard port
    "direct-failed",  # a direct path died (failures counts them); retried later
    "predicted-relay",  # the published NAT facts rule direct out; retried anyway
    "probing",  # relayed while direct probes have not been answered (yet)
]
RULE_PREDICTION: dict[str, Prediction] = {
    "same-network": "direct",
    "tcp-only": "relay",
    "public": "direct",
    "cone-cone": "direct",
    "cone-symmetric": "direct",
    "symmetric-port-restricted": "relay",
    "symmetric-symmetric": "relay",
    "unknown": "unknown",
}

# Filtering kinds that let a symmetric peer's fresh mapping in once we have
# sent anything to its IP (full cone / address-restricted).
_OPEN_FILTERING = ("endpoint-independent", "address-dependent")


@dataclass(frozen=True)
class PathPolicy:
    relay_mode: str  # auto | always | never
    relay_available: bool
    handshake_timeout_s: float
    direct_retry_interval_s: float

    @property
    def relay_first(self) -> bool:
        return self.relay_available and self.relay_mode != "never"


@dataclass(frozen=True)
class NatFacts:
    """What one side publishes about its reachability (WireKubePeer status)."""

    public_ip: str = ""
    nat_type: str = ""  # cone | symmetric | ""
    mapping: str = ""  # none | endpoint-independent | ... | ""
    filtering: str = ""  # endpoint-independent | ... | blocked | ""


@dataclass(frozen=True)
class LocalFacts(NatFacts):
    internal_ip: str = ""


def facts_of(peer: RemotePeer) -> NatFacts:
    return NatFacts(peer.public_ip, peer.nat_type, peer.nat_mapping, peer.nat_filtering)


def predict(a: NatFacts, b: NatFacts) -> Prediction:
    """Can these two sides talk directly? From published facts only."""
    return RULE_PREDICTION[classify(a, b)]


def classify(a: NatFacts, b: NatFacts) -> Rule:
    """The rule that decides ``predict`` for this pair (symmetric in a, b)."""
    if a.public_ip and a.public_ip == b.public_ip:
        return "same-network"  # same NAT: same network, internal addresses
    if "blocked" in (a.filtering, b.filtering):
        return "tcp-only"  # UDP does not get out of one side (tcp-only zone)
    if "none" in (a.mapping, b.mapping):
        return "public"  # a public address is reachable by anyone
    if a.nat_type == b.nat_type == "cone":
        return "cone-cone"  # simultaneous open between stable mappings
    for x, y in ((a, b), (b, a)):
        if x.nat_type == "symmetric" and y.nat_type == "cone":
            # The symmetric side's new mapping gets through only a filter
            # that does not insist on the exact source port.
            if y.filtering in _OPEN_FILTERING:
                return "cone-symmetric"
            if y.filtering == "address-and-port-dependent":
                return "symmetric-port-restricted"
    if a.nat_type == b.nat_type == "symmetric":
        return "symmetric-symmetric"
    return "unknown"


def candidates(
    local: LocalFacts, peer: RemotePeer, learned: Iterable[Endpoint] = ()
) -> tuple[Endpoint, ...]:
    """Direct endpoints worth probing, best first.

    Two nodes behind the same public address are behind the same NAT, so they
    share a network and use internal addresses (hairpinning through a NAT is
    unreliable). ``learned`` are addresses the peer's probes came from — a
    symmetric NAT's per-destination mapping that no STUN server could see.
    """
    out: list[Endpoint] = []
    same_nat = bool(local.public_ip) and peer.public_ip == local.public_ip
    if peer.internal_endpoint is not None and same_nat:
        out.append(peer.internal_endpoint)
    if peer.endpoint is not None:
        out.append(peer.endpoint)
    out.extend(learned)
    # Nodes of one VPC can have different public addresses (one behind the NAT
    # gateway, one with its own public IP); their internal address is still
    # the best path, so it is always tried — last, when nothing says so. A
    # wrong guess costs one probe that nobody can answer (probes are MACed).
    if peer.internal_endpoint is not None and not same_nat:
        out.append(peer.internal_endpoint)
    return tuple(dict.fromkeys(out))


def preferred(cands: tuple[Endpoint, ...], peer: RemotePeer) -> tuple[Endpoint, ...]:
    """``cands`` in order of preference among *answered* addresses: the peer's
    internal address first.

    An answer from it proves a shared network (probes are MACed, so no other
    host with that private address can answer), and it beats the public one:
    where a cloud hairpins traffic to a node's own public IP, the public
    address works too, but through the NAT gateway (latency, and billed).
    Probing order stays ``candidates``' (whose first entry is also the guess
    for a direct-only path before anything answered).
    """
    internal = peer.internal_endpoint
    if internal is None or internal not in cands:
        return cands
    return (internal, *(c for c in cands if c != internal))


@dataclass(frozen=True)
class Target:
    """What the prober should probe for one peer this period (from ``paths.plan``)."""

    candidates: tuple[Endpoint, ...] = ()
    burst: bool = False  # probe every candidate every PROBE_INTERVAL_S
    heartbeat: Endpoint | None = None  # direct path in use: keep proving it
    via_relay: Endpoint | None = None  # the peer's bridge endpoint, for call-me-maybe
    direct: bool = False  # we send WireGuard to this peer directly (FLAG_DIRECT)


@dataclass(frozen=True)
class ProbeView:
    """What the prober has seen from one peer."""

    # Where answers to our direct probes came from, and when (latest per address).
    answered: tuple[tuple[Endpoint, float], ...] = ()
    last_ping: float = 0.0  # last probe received from the peer (any path): it is probing us
    # Last time WireGuard received from the peer while its endpoint was a
    # direct one: the path carries traffic even when nobody answers probes
    # (the peer's agent is restarting; its interface outlives it).
    wireguard_rx: float = 0.0

    @property
    def last_pong(self) -> float:
        return max((t for _, t in self.answered), default=0.0)

    def best(self, preferred: tuple[Endpoint, ...], since: float) -> Endpoint | None:
        """The most preferred address answered after ``since`` (then the latest one).

        Preference keeps a path from hopping between two working addresses
        (internal and public) as their answers arrive in turn.
        """
        fresh = {ep: t for ep, t in self.answered if t > since}
        for ep in preferred:
            if ep in fresh:
                return ep
        return max(fresh, key=lambda ep: fresh[ep]) if fresh else None


@dataclass(frozen=True)
class PathState:
    transport: Transport
    phase: Phase
    since: float  # when this transport began
    endpoint: Endpoint | None  # the direct endpoint in use or to try
    burst_until: float = 0.0  # the prober probes every candidate until then
    next_burst: float = 0.0  # when a relayed/unproven peer is probed again
    failures: int = 0  # consecutive direct paths that died (logged, metrics)
    # Direct-only paths: WireGuard handshakes older than this were made through
    # the relay (before the relay went away or the mode became never) and prove
    # nothing about the direct endpoint.
    relayed_until: float = 0.0
    # The candidates the last burst covered: one that is not among them (the
    # peer published its endpoint, its probes came from a new address) is
    # worth a burst at once instead of at the next retry.
    probed: tuple[Endpoint, ...] = ()
    # Why (see ``Rule``/``Reason``): what the published facts say of the pair,
    # and which branch of ``step`` put the peer on this transport.
    rule: Rule = "unknown"
    reason: Reason = "probing"

    @property
    def routed(self) -> bool:
        if self.phase == "down":
            return False
        return self.transport == "relay" or self.phase == "up"


def step(
    prev: PathState | None,
    peer: RemotePeer,
    local: LocalFacts,
    probe: ProbeView,
    last_handshake: float,
    policy: PathPolicy,
    now: float,
    learned: Iterable[Endpoint] = (),
) -> PathState:
    """Advance one peer's path, with the rule and reason that decided it.
    Returns ``prev`` itself when nothing changed."""
    state = _step(prev, peer, local, probe, last_handshake, policy, now, learned)
    rule = classify(local, facts_of(peer))
    why = replace(state, rule=rule, reason=_reason(state, rule, policy))
    return prev if prev is not None and prev == why else why


def _reason(state: PathState, rule: Rule, policy: PathPolicy) -> Reason:
    """Which branch of ``_step`` holds the peer where it is."""
    if policy.relay_mode == "always":
        return "mode-always"
    if not policy.relay_first:
        return "mode-never" if policy.relay_mode == "never" else "no-relay"
    if state.transport == "direct":
        return "probe-answered"
    if state.failures > 0:
        return "direct-failed"
    if RULE_PREDICTION[rule] == "relay":
        return "predicted-relay"
    return "probing"


def _step(
    prev: PathState | None,
    peer: RemotePeer,
    local: LocalFacts,
    probe: ProbeView,
    last_handshake: float,
    policy: PathPolicy,
    now: float,
    learned: Iterable[Endpoint] = (),
) -> PathState:
    fresh_handshake = last_handshake > 0 and now - last_handshake < HANDSHAKE_FRESH_S
    # Never call an answer fresh for longer than the fallback deadline, or a
    # path that just died could be "upgraded" to again at once.
    fresh_window = min(PONG_FRESH_S, policy.handshake_timeout_s)
    cands = candidates(local, peer, learned)
    best = probe.best(preferred(cands, peer), now - fresh_window)
    last_heard = max(probe.last_pong, probe.wireguard_rx)
    direct_alive = last_heard > 0 and now - last_heard < policy.handshake_timeout_s

    if policy.relay_mode == "always":
        phase: Phase = (
            "down" if not policy.relay_available else ("up" if fresh_handshake else "probing")
        )
        return _same_or(prev, PathState("relay", phase, _since(prev, "relay", now), None))

    if prev is None:
        worth = predict(local, facts_of(peer)) != "relay"
        burst = now + INITIAL_PROBE_BURST_S if worth else 0.0
        retry = now + policy.direct_retry_interval_s
        if policy.relay_first:
            return PathState("relay", "probing", now, None, burst, retry, probed=cands)
        return PathState(
            "direct", "probing", now, cands[0] if cands else None, burst, retry, probed=cands
        )

    state = prev
    direct_up = state.transport == "direct" and state.phase == "up"
    # The peer is probing us: probe back now, so both NATs open at once, and
    # restart our retry timer so both ends' attempts stay in step. Not within
    # REACT_COOLDOWN_S of our own last burst: the peer's probes then are its
    # reaction to *our* burst (which it outlives), and answering those with
    # another burst kept two agents probing each other without pause instead
    # of once per directRetryIntervalSeconds (seen in the lab: a relayed
    # symmetric <-> symmetric pair probed twice a second for as long as it ran).
    if (
        probe.last_ping > 0
        and now - probe.last_ping < PONG_FRESH_S
        and now >= state.burst_until + REACT_COOLDOWN_S
    ):
        state = replace(
            state,
            burst_until=now + PROBE_BURST_S,
            next_burst=now + policy.direct_retry_interval_s,
        )
    # A direct path in use whose heartbeats go unanswered: the peer's NAT may
    # have given it a new mapping. Probe every candidate (the addresses its
    # own probes now come from included) rather than wait for the fallback.
    if (
        direct_up
        and probe.last_pong > 0
        and now - probe.last_pong > HEARTBEAT_MISSED_S
        and state.burst_until < now
    ):
        state = replace(state, burst_until=now + PROBE_BURST_S)
    if state.burst_until < now and state.next_burst <= now and not direct_up:
        state = replace(
            state,
            burst_until=now + PROBE_BURST_S,
            next_burst=now + policy.direct_retry_interval_s,
        )
    # A candidate no burst has covered yet: probe now, not at the next retry
    # (the cooldown above must not delay the first probe of a fresh endpoint,
    # e.g. the STUN endpoint a peer publishes a few seconds after it starts).
    if state.burst_until < now and not direct_up and not set(cands) <= set(state.probed):
        state = replace(state, burst_until=now + PROBE_BURST_S)
    if now < state.burst_until and state.probed != cands:
        state = replace(state, probed=cands)

    if policy.relay_first:
        if state.transport == "relay":
            if best is not None:
                return PathState("direct", "up", now, best, 0.0, 0.0, state.failures)
            phase = "up" if fresh_handshake else "probing"
            return _same_or(prev, replace(state, phase=phase))
        # direct, with the relay to fall back to. An unproven direct path (the
        # relay came up after this peer was set up direct-only) goes to the
        # relay at once; a proven one after a full timeout of silence.
        unproven = state.phase != "up"
        if unproven or (not direct_alive and now - state.since >= policy.handshake_timeout_s):
            return PathState(
                "relay",
                "probing",
                now,
                None,
                # An unproven path keeps its burst (at start-up: the initial
                # one); a path that died waits for the retry (hysteresis).
                state.burst_until if unproven else 0.0,
                now + policy.direct_retry_interval_s,
                # Only a path that worked and died is a failure (what `why`
                # reports as direct-failed); an unproven one never worked.
                state.failures if unproven else state.failures + 1,
                probed=cands,
            )
        kept = best if best is not None else state.endpoint
        return _same_or(prev, replace(state, phase="up", endpoint=kept))

    # Direct only (mode never, or no relay to be had).
    if best is not None:
        endpoint: Endpoint | None = best
    elif state.endpoint in cands:
        endpoint = state.endpoint
    else:
        endpoint = cands[0] if cands else None
    relayed_until = state.relayed_until
    if state.transport == "relay":
        # Leaving the relay (mode never, or no relay left): the session WireGuard
        # made through it is no proof of the direct endpoint. Probe at once, so
        # a working direct path is proven within a probe round trip.
        relayed_until = now
        state = replace(state, burst_until=max(state.burst_until, now + PROBE_BURST_S))
    proven = fresh_handshake and last_handshake > relayed_until
    phase = "up" if proven or direct_alive else "probing"
    since = state.since if state.transport == "direct" else now
    return _same_or(
        prev,
        replace(
            state,
            transport="direct",
            phase=phase,
            endpoint=endpoint,
            since=since,
            relayed_until=relayed_until,
        ),
    )


def _since(prev: PathState | None, transport: Transport, now: float) -> float:
    return prev.since if prev is not None and prev.transport == transport else now


def _same_or(prev: PathState | None, new: PathState) -> PathState:
    return prev if prev == new else new
