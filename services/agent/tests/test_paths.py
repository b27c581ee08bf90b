"""Path selection: predictions from published facts, and the state machine."""

import itertools

import pytest

from wirekube_agent.paths.rules import (
    LocalFacts,
    NatFacts,
    PathPolicy,
    PathState,
    ProbeView,
    candidates,
    predict,
    step,
)

from .helpers import remote

PUBLIC = NatFacts("198.18.0.10", "cone", "none", "endpoint-independent")
FULL_CONE = NatFacts("198.18.1.1", "cone", "endpoint-independent", "endpoint-independent")
ADDR_RESTRICTED = NatFacts("198.18.2.1", "cone", "endpoint-independent", "address-dependent")
PORT_RESTRICTED = NatFacts(
    "198.18.3.1", "cone", "endpoint-independent", "address-and-port-dependent"
)
SYMMETRIC = NatFacts(
    "198.18.4.1", "symmetric", "address-and-port-dependent", "address-and-port-dependent"
)
SYMMETRIC_B = NatFacts(
    "198.18.5.1", "symmetric", "address-and-port-dependent", "address-and-port-dependent"
)
TCP_ONLY = NatFacts("", "", "", "blocked")
UNKNOWN = NatFacts()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (SYMMETRIC, NatFacts(SYMMETRIC.public_ip, "symmetric"), "direct"),  # same NAT: same VPC
        (PUBLIC, SYMMETRIC, "direct"),
        (PUBLIC, TCP_ONLY, "relay"),
        (PORT_RESTRICTED, ADDR_RESTRICTED, "direct"),  # cone <-> cone: simultaneous open
        (ADDR_RESTRICTED, SYMMETRIC, "direct"),  # symmetric initiates to the cone side
        (FULL_CONE, SYMMETRIC, "direct"),
        (PORT_RESTRICTED, SYMMETRIC, "relay"),
        (SYMMETRIC, SYMMETRIC_B, "relay"),
        (UNKNOWN, SYMMETRIC, "unknown"),
    ],
)
def test_predict(a: NatFacts, b: NatFacts, expected: str) -> None:
    assert predict(a, b) == expected
    assert predict(b, a) == expected


def test_candidates_prefer_internal_addresses_behind_the_same_nat() -> None:
    peer = remote(
        "node-b",
        2,
        "10.0.0.2",
        endpoint=("198.18.4.1", 51820),
        internal_endpoint=("10.0.0.2", 51820),
        public_ip="198.18.4.1",
    )
    same = LocalFacts(public_ip="198.18.4.1")
    other = LocalFacts(public_ip="198.18.9.9")
    assert candidates(same, peer) == (("10.0.0.2", 51820), ("198.18.4.1", 51820))
    assert candidates(other, peer, [("198.18.4.1", 40000)]) == (
        ("198.18.4.1", 51820),
        ("198.18.4.1", 40000),
        ("10.0.0.2", 51820),
    )


def test_preferred_answer_wins_over_the_latest() -> None:
    internal, public = ("10.0.0.2", 51820), ("198.18.4.1", 51820)
    view = ProbeView(answered=((internal, 10.0), (public, 10.2)))
    assert view.best((internal, public), since=9.0) == internal
    assert view.best((public, internal), since=9.0) == public
    assert view.best((internal,), since=10.1) == public  # only fresh answers count
    assert view.best((internal,), since=11.0) is None


AUTO = PathPolicy("auto", True, handshake_timeout_s=5, direct_retry_interval_s=15)
PEER = remote("node-b", 2, "10.0.0.2", endpoint=("198.18.3.1", 51820))
LOCAL = LocalFacts(public_ip="198.18.2.1", nat_type="cone", filtering="address-dependent")
PONG = ("198.18.3.1", 51820)
NOTHING = ProbeView()


def run(
    prev: PathState | None,
    now: float,
    probe: ProbeView = NOTHING,
    hs: float = 0.0,
    policy: PathPolicy = AUTO,
) -> PathState:
    return step(prev, PEER, LOCAL, probe, hs, policy, now)


def test_an_answered_internal_address_beats_the_public_one() -> None:
    """Same VPC, different public addresses (one node has its own public IP): where
    the cloud hairpins to that IP both answer; the internal address is the path."""
    internal, public = ("10.0.0.2", 51820), ("198.18.4.1", 51820)
    peer = remote("node-b", 2, "10.0.0.2", endpoint=public, internal_endpoint=internal)
    local = LocalFacts(public_ip="198.18.9.9")
    assert candidates(local, peer)[0] == public  # probed first, the direct-only guess
    both = ProbeView(answered=((public, 100.2), (internal, 100.4)))
    s = step(None, peer, local, NOTHING, 0.0, AUTO, 100.0)
    s = step(s, peer, local, both, 0.0, AUTO, 100.5)
    assert (s.transport, s.endpoint) == ("direct", internal)
    only_public = ProbeView(answered=((public, 100.2),))
    s = step(None, peer, local, NOTHING, 0.0, AUTO, 100.0)
    s = step(s, peer, local, only_public, 0.0, AUTO, 100.5)
    assert (s.transport, s.endpoint) == ("direct", public)


def test_relay_first_then_upgrade_on_an_answered_probe() -> None:
    s = run(None, 100.0)
    assert (s.transport, s.routed) == ("relay", True)  # traffic flows at once
    assert s.burst_until > 100.0  # and direct is probed in parallel
    s = run(s, 100.5)
    assert s.transport == "relay"
    up = run(s, 101.0, ProbeView(answered=((PONG, 100.9),)))
    assert (up.transport, up.phase, up.endpoint, up.routed) == ("direct", "up", PONG, True)


def test_direct_path_falls_back_after_the_handshake_timeout_and_not_before() -> None:
    s = run(None, 100.0)
    s = run(s, 101.0, ProbeView(answered=((PONG, 100.9),)))
    heard = ProbeView(answered=((PONG, 102.0),))
    assert run(s, 106.0, heard).transport == "direct"  # 4 s of silence: still direct
    down = run(s, 107.5, heard)  # 5.5 s of silence > handshakeTimeoutSeconds
    assert (down.transport, down.failures, down.routed) == ("relay", 1, True)
    # hysteresis: no new burst before the retry interval...
    assert run(down, 110.0, heard).burst_until <= 110.0
    again = run(down, 107.5 + 15.1, heard)
    assert again.burst_until > 107.5 + 15.1  # ...then it probes again
    up = run(again, 124.0, ProbeView(answered=((PONG, 123.9),)))
    assert up.transport == "direct"


def test_failed_attempts_never_leave_the_relay() -> None:
    s = run(None, 100.0)
    for t in range(101, 200):
        s = run(s, float(t), ProbeView())  # no probe is ever answered
        assert s.transport == "relay" and s.routed


def test_a_probe_from_the_peer_starts_our_burst() -> None:
    s = run(None, 100.0)
    s = run(s, 111.0)  # the initial burst is over
    assert s.burst_until <= 111.0
    # Right after our own burst the peer's probes answer ours: no new burst...
    assert run(s, 112.0, ProbeView(last_ping=111.9)).burst_until <= 112.0
    # ...but once the cooldown has passed, its probes start our burst at once
    # and restart our retry timer, so both ends stay in step.
    s = run(s, 116.5, ProbeView(last_ping=116.4))
    assert s.burst_until > 116.5
    assert s.next_burst == 116.5 + 15


def _burst_starts(a_first: float, duration: float) -> tuple[list[float], list[float]]:
    """Two agents of a pair no probe ever gets through for (symmetric <->
    symmetric), each reacting to the other's probes (call-me-maybe through the
    relay): when does each start a burst? Probes go every 0.5 s in a burst."""
    a = run(None, a_first)
    b = run(None, a_first + 0.3)
    a_sent = b_sent = 0.0
    starts: tuple[list[float], list[float]] = ([], [])
    t = a_first + 0.3
    while t < a_first + duration:
        t = round(t + 0.1, 1)
        for i, (state, heard) in enumerate(((a, b_sent), (b, a_sent))):
            new = run(state, t, ProbeView(last_ping=heard))
            if new.burst_until > t >= state.burst_until:
                starts[i].append(t)
            if i == 0:
                a = new
                if t < a.burst_until and (t * 10) % 5 == 0:
                    a_sent = t
            else:
                b = new
                if t < b.burst_until and (t * 10) % 5 == 0:
                    b_sent = t
    return starts


def test_hopeless_pair_probes_once_per_retry_interval_not_forever() -> None:
    """Reacting to each other's probes must not keep two agents probing."""
    a_starts, b_starts = _burst_starts(100.0, 90.0)
    for starts in (a_starts, b_starts):
        # after the initial bursts: one attempt per directRetryIntervalSeconds
        later = [t for t in starts if t > 120.0]
        assert 3 <= len(later) <= 70 / 15 + 1, starts
        gaps = [y - x for x, y in itertools.pairwise(later)]
        assert all(g >= 15 - 1 for g in gaps), starts
    # the two ends attempt together (what opens two port-restricted NATs at once)
    for t in [t for t in a_starts if 120.0 < t < 189.0]:
        assert any(abs(t - u) <= 1.0 for u in b_starts), (a_starts, b_starts)


def test_a_new_candidate_is_probed_at_once() -> None:
    """The peer publishes its STUN endpoint after our bursts: no waiting for the retry."""
    bare = remote("node-b", 2, "10.0.0.2", endpoint=None, internal_endpoint=("10.0.0.2", 51820))
    s = step(None, bare, LOCAL, NOTHING, 0.0, AUTO, 100.0)
    s = step(s, bare, LOCAL, ProbeView(last_ping=110.5), 0.0, AUTO, 111.0)  # reacted
    s = step(s, bare, LOCAL, NOTHING, 0.0, AUTO, 114.5)
    assert s.burst_until <= 114.5  # burst over, cooldown on, retry not due
    s = step(s, PEER, LOCAL, NOTHING, 0.0, AUTO, 115.0)  # its endpoint appears
    assert s.burst_until > 115.0 and s.probed == candidates(LOCAL, PEER)
    s = step(s, PEER, LOCAL, NOTHING, 0.0, AUTO, 119.0)
    assert step(s, PEER, LOCAL, NOTHING, 0.0, AUTO, 119.5).burst_until <= 119.5  # once only


def test_an_unproven_direct_path_keeps_its_burst_on_the_relay() -> None:
    """At start-up the relay comes up after the peer was set up direct-only."""
    no_relay = PathPolicy("auto", False, 5, 15)
    s = run(None, 100.0, policy=no_relay)
    assert (s.transport, s.burst_until) == ("direct", 110.0)
    s = run(s, 100.5)  # the relay is up now
    assert (s.transport, s.burst_until) == ("relay", 110.0)


def test_unanswered_heartbeats_probe_every_candidate() -> None:
    """The peer's NAT gave it a new mapping: probe its new address before the fallback."""
    s = run(None, 100.0)
    s = run(s, 101.0, ProbeView(answered=((PONG, 100.9),)))
    assert (s.transport, s.phase) == ("direct", "up")
    s = run(s, 112.0, ProbeView(answered=((PONG, 111.9),)))  # heartbeats answered
    assert s.burst_until <= 112.0
    s = run(s, 113.0, ProbeView(answered=((PONG, 111.9),)))  # one heartbeat missed
    assert s.burst_until <= 113.0
    s = run(s, 114.5, ProbeView(answered=((PONG, 111.9),)))  # two missed: search
    assert s.transport == "direct" and s.burst_until > 114.5


def test_mode_always_pins_the_relay_and_never_never_uses_it() -> None:
    always = PathPolicy("always", True, 5, 15)
    s = run(None, 100.0, policy=always)
    assert (s.transport, s.routed, s.burst_until) == ("relay", True, 0.0)
    assert run(s, 101.0, ProbeView(answered=((PONG, 100.9),)), policy=always).transport == "relay"
    no_relay = PathPolicy("always", False, 5, 15)
    assert not run(None, 100.0, policy=no_relay).routed
    never = PathPolicy("never", True, 5, 15)
    s = run(None, 100.0, policy=never)
    assert (s.transport, s.endpoint, s.routed) == ("direct", ("198.18.3.1", 51820), False)
    s = run(s, 101.0, hs=100.8, policy=never)
    assert (s.phase, s.routed) == ("up", True)
    assert run(s, 101.0 + 181, hs=100.8, policy=never).routed is False  # handshake went stale


def test_leaving_the_relay_needs_new_proof_of_the_direct_path() -> None:
    """Relay -> never (or the relay went away): the handshake WireGuard made
    through the relay says nothing about the direct endpoint."""
    s = run(None, 100.0)
    s = run(s, 101.0, hs=100.5)  # handshake through the relay
    assert (s.transport, s.phase) == ("relay", "up")
    never = PathPolicy("never", False, 5, 15)
    s = run(s, 102.0, hs=100.5, policy=never)
    assert (s.transport, s.phase, s.routed) == ("direct", "probing", False)
    assert s.burst_until > 102.0  # probing the direct path at once
    s = run(s, 110.0, hs=100.5, policy=never)
    assert not s.routed  # still no proof
    assert run(s, 111.0, hs=110.5, policy=never).routed  # a handshake on the direct path
    assert run(s, 111.0, ProbeView(answered=((PONG, 110.9),)), hs=100.5, policy=never).routed


def test_unchanged_state_is_the_same_object() -> None:
    s = run(None, 100.0)
    s = run(s, 100.5)
    assert run(s, 100.6) is s


def test_wireguard_traffic_on_the_direct_path_keeps_it_while_probes_go_unanswered() -> None:
    """The peer's agent restarts (its interface carries on): no probe is
    answered, but WireGuard keeps receiving from the peer on the direct
    endpoint, so the path stays direct; once that stops too, it falls back."""
    s = run(None, 100.0)
    s = run(s, 101.0, ProbeView(answered=((PONG, 100.9),)))
    for t in range(102, 130):
        s = run(s, float(t), ProbeView(answered=((PONG, 100.9),), wireguard_rx=t - 0.5))
        assert (s.transport, s.phase) == ("direct", "up"), t
    quiet = ProbeView(answered=((PONG, 100.9),), wireguard_rx=129.5)
    assert run(s, 134.0, quiet).transport == "direct"
    assert run(s, 135.0, quiet).transport == "relay"
