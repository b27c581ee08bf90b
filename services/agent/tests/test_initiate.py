"""initiate.due: re-create a WireGuard peer only when no handshake can complete."""

from __future__ import annotations

from wirekube_agent.paths import initiate
from wirekube_agent.paths.initiate import CROSSED_S, SETTLE_S, PeerFacts


def facts(**changes: object) -> PeerFacts:
    base: dict[str, object] = dict(
        added_at=100.0,
        last_handshake=0.0,
        rx_bytes=0,
        rx_since=100.0,
        probing_since=100.2,
        we_initiate=True,
    )
    base.update(changes)
    return PeerFacts(**base)  # type: ignore[arg-type]


def test_a_silent_peer_whose_agent_probes_us_is_re_created_after_settling() -> None:
    silent = facts()
    assert initiate.due(silent, 100.2 + SETTLE_S / 2) is None  # its initiation may be on the way
    assert initiate.due(silent, 100.2 + SETTLE_S) == "silent"


def test_a_fresh_re_creation_gets_a_round_trip_before_the_next() -> None:
    # Probes have come for long, but we have just re-created the peer: our
    # fresh initiation's answer is still on its way.
    assert initiate.due(facts(added_at=150.0, rx_since=150.0), 150.1) is None
    assert initiate.due(facts(added_at=150.0, rx_since=150.0), 150.0 + SETTLE_S) == "silent"


def test_a_handshake_message_that_just_came_is_left_to_complete() -> None:
    # The lab's race: our peer had just answered its initiation (148 B in).
    answered = facts(rx_bytes=148, rx_since=101.0)
    assert initiate.due(answered, 101.0 + CROSSED_S / 2) is None


def test_crossed_initiations_are_re_created_once_nothing_more_comes() -> None:
    # Each side answered the other's initiation and dropped the answer to its
    # own: 148 B in, then silence with no handshake.
    crossed = facts(rx_bytes=148, rx_since=101.0)
    assert initiate.due(crossed, 101.0 + CROSSED_S) == "crossed"


def test_never_with_a_handshake_or_a_silent_peer_without_probes() -> None:
    assert initiate.due(facts(last_handshake=101.0), 200.0) is None
    assert initiate.due(facts(last_handshake=101.0, rx_bytes=148), 200.0) is None
    assert initiate.due(facts(probing_since=None), 200.0) is None


def test_only_the_lower_key_re_creates() -> None:
    """Both ends re-creating at once crossed their initiations (lab)."""
    assert initiate.due(facts(we_initiate=False), 200.0) is None
    assert initiate.due(facts(we_initiate=False, rx_bytes=148), 200.0) is None
