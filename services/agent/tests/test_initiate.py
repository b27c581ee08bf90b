"""initiate.due: re-create a WireGuard peer only when no handshake is under way."""

from __future__ import annotations

import dataclasses

from wirekube_agent import initiate
from wirekube_agent.initiate import MAX_RECREATES, QUIET_S, SETTLE_S, PeerFacts

# Added at 100.0, its agent probing us from 100.2, nothing received.
SILENT = PeerFacts(
    added_at=100.0,
    last_handshake=0.0,
    rx_bytes=0,
    rx_changed_at=100.0,
    probing_since=100.2,
    we_initiate=True,
    recreated=0,
)


def test_a_silent_peer_whose_agent_probes_us_is_re_created_after_settling() -> None:
    assert not initiate.due(SILENT, 100.2 + SETTLE_S / 2)  # its initiation may be on the way
    assert initiate.due(SILENT, 100.2 + SETTLE_S)


def test_anything_received_recently_means_a_handshake_is_under_way() -> None:
    # The lab's race: our peer had just answered its initiation (148 B in).
    answered = dataclasses.replace(SILENT, rx_bytes=148, rx_changed_at=101.0)
    assert not initiate.due(answered, 101.0001)
    assert not initiate.due(answered, 101.0 + QUIET_S / 2)


def test_a_stalled_handshake_is_restarted_by_either_side() -> None:
    """We answered, and the confirmation never came: a message was lost."""
    for we_initiate in (True, False):
        answered = dataclasses.replace(
            SILENT, rx_bytes=148, rx_changed_at=101.0, we_initiate=we_initiate
        )
        assert initiate.due(answered, 101.0 + QUIET_S)


def test_the_higher_key_waits_for_the_lower_one_first() -> None:
    """Both ends re-creating at once crossed their initiations (lab)."""
    higher = dataclasses.replace(SILENT, we_initiate=False)
    assert not initiate.due(higher, 100.2 + SETTLE_S)
    # ...but not forever: the lower side's fresh initiation did not arrive either.
    assert initiate.due(higher, 100.0 + QUIET_S)


def test_quiet_counts_from_our_own_re_creation() -> None:
    again = dataclasses.replace(SILENT, added_at=100.7, rx_changed_at=100.7, recreated=1)
    assert not initiate.due(again, 100.7 + QUIET_S / 2)  # the first-chance rule is spent
    assert initiate.due(again, 100.7 + QUIET_S)


def test_never_with_a_handshake_without_probes_or_too_often() -> None:
    assert not initiate.due(dataclasses.replace(SILENT, last_handshake=101.0), 200.0)
    assert not initiate.due(dataclasses.replace(SILENT, probing_since=None), 200.0)
    assert not initiate.due(dataclasses.replace(SILENT, recreated=MAX_RECREATES), 200.0)
