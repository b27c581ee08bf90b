"""initiate.due: re-create a WireGuard peer only when no handshake is under way."""

from __future__ import annotations

from wirekube_agent import initiate
from wirekube_agent.initiate import SETTLE_S, PeerFacts


def test_a_silent_peer_whose_agent_probes_us_is_re_created_after_settling() -> None:
    facts = PeerFacts(
        added_at=100.0, last_handshake=0.0, rx_bytes=0, probing_since=100.2, we_initiate=True
    )
    assert not initiate.due(facts, 100.2 + SETTLE_S / 2)  # its initiation may be on the way
    assert initiate.due(facts, 100.2 + SETTLE_S)


def test_anything_received_means_a_handshake_is_under_way() -> None:
    # The lab's race: our peer had just answered its initiation (148 B in).
    facts = PeerFacts(
        added_at=100.0, last_handshake=0.0, rx_bytes=148, probing_since=100.2, we_initiate=True
    )
    assert not initiate.due(facts, 200.0)


def test_never_with_a_handshake_or_without_probes() -> None:
    shook = PeerFacts(
        added_at=100.0, last_handshake=101.0, rx_bytes=0, probing_since=100.2, we_initiate=True
    )
    assert not initiate.due(shook, 200.0)
    silent = PeerFacts(
        added_at=100.0, last_handshake=0.0, rx_bytes=0, probing_since=None, we_initiate=True
    )
    assert not initiate.due(silent, 200.0)


def test_only_the_lower_key_re_creates() -> None:
    """Both ends re-creating at once crossed their initiations (lab)."""
    facts = PeerFacts(
        added_at=100.0, last_handshake=0.0, rx_bytes=0, probing_since=100.2, we_initiate=False
    )
    assert not initiate.due(facts, 200.0)
