"""Path selection: predictions from published facts, and the state machine."""

import pytest

from wirekube_agent.paths import (
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
    s = run(s, 112.0, ProbeView(last_ping=111.9))
    assert s.burst_until > 112.0


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
