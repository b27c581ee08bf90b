"""PeerStats: path changes, time-to milestones and byte totals, pass by pass."""

from __future__ import annotations

import pytest

from wirekube_agent.paths.rules import PathState
from wirekube_agent.peerstats import Histogram, PeerStats, Traffic, path_of

RELAY_UP = PathState("relay", "up", 0.0, None)
RELAY_DOWN = PathState("relay", "down", 0.0, None)
DIRECT_UP = PathState("direct", "up", 0.0, ("198.18.1.1", 51820))
DIRECT_PROBING = PathState("direct", "probing", 0.0, ("198.18.1.1", 51820))


def test_path_of_names_where_packets_go() -> None:
    assert path_of(RELAY_UP) == "relay"
    assert path_of(PathState("relay", "probing", 0.0, None)) == "relay"  # routed at once
    assert path_of(RELAY_DOWN) == "down"
    assert path_of(DIRECT_UP) == "direct"
    assert path_of(DIRECT_PROBING) == "down"  # direct-only, unproven: nothing gets through


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    h = Histogram((1.0, 5.0))
    for v in (0.5, 1.0, 3.0, 9.0):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2.0), ("5.0", 3.0), ("+Inf", 4.0)]
    assert h.count == 4 and h.total == 13.5
    with pytest.raises(ValueError):
        Histogram((5.0, 1.0))


def test_changes_count_transitions_between_passes_only() -> None:
    s = PeerStats()
    s.update({}, {"b": RELAY_UP}, {}, {}, 10.0)  # appears: no change counted
    s.update({"b": RELAY_UP}, {"b": RELAY_UP}, {}, {}, 11.0)
    s.update({"b": RELAY_UP}, {"b": DIRECT_UP}, {}, {}, 12.0)
    s.update({"b": DIRECT_UP}, {"b": RELAY_UP}, {}, {}, 13.0)
    s.update({"b": RELAY_UP}, {"b": RELAY_DOWN}, {}, {}, 14.0)
    assert s.snapshot().changes == {
        ("relay", "direct"): 1,
        ("direct", "relay"): 1,
        ("relay", "down"): 1,
    }


def test_milestones_are_observed_once_per_peer_from_its_appearance() -> None:
    s = PeerStats()
    s.update({}, {"b": RELAY_UP, "c": RELAY_UP}, {}, {}, 100.0)
    # b's first handshake at 101.5 (WireGuard's own time), c never.
    s.update({"b": RELAY_UP}, {"b": RELAY_UP, "c": RELAY_UP}, {"b": 101.5}, {}, 102.0)
    s.update({"b": RELAY_UP}, {"b": DIRECT_UP, "c": RELAY_UP}, {"b": 103.0}, {}, 104.0)
    s.update({"b": DIRECT_UP}, {"b": DIRECT_UP, "c": RELAY_UP}, {"b": 105.0}, {}, 106.0)
    snap = s.snapshot()
    assert snap.to_first_handshake.count == 1 and snap.to_first_handshake.total == 1.5
    assert snap.to_direct.count == 1 and snap.to_direct.total == 4.0
    # A handshake older than the peer's appearance (a kernel device that
    # outlived the agent) proves nothing about this start: not observed.
    s.update({}, {"d": RELAY_UP}, {"d": 50.0}, {}, 200.0)
    assert s.snapshot().to_first_handshake.count == 1
    # A peer that vanishes and comes back starts over.
    s.update({}, {}, {}, {}, 300.0)
    s.update({}, {"b": RELAY_UP}, {"b": 301.0}, {}, 301.0)
    assert s.snapshot().to_first_handshake.count == 2


def test_byte_totals_survive_the_wireguard_peer_being_recreated() -> None:
    s = PeerStats()
    paths = {"b": RELAY_UP}
    s.update({}, paths, {}, {"b": Traffic(1.0, 1000, 500)}, 10.0)
    s.update(paths, paths, {}, {"b": Traffic(1.0, 3000, 800)}, 11.0)
    assert s.snapshot().bytes == {"b": (3000, 800)}
    # Re-created (initiate): WireGuard counts from zero again.
    s.update(paths, paths, {}, {"b": Traffic(12.0, 200, 100)}, 12.0)
    assert s.snapshot().bytes == {"b": (3200, 900)}
    # Counters that went backwards without a new creation time: also a restart.
    s.update(paths, paths, {}, {"b": Traffic(12.0, 50, 10)}, 13.0)
    assert s.snapshot().bytes == {"b": (3250, 910)}
    # No traffic reported for a pass: the totals stay.
    s.update(paths, paths, {}, {}, 14.0)
    assert s.snapshot().bytes == {"b": (3250, 910)}


def test_vanished_peers_are_forgotten() -> None:
    s = PeerStats()
    s.update({}, {"b": RELAY_UP, "c": RELAY_UP}, {}, {"b": Traffic(1.0, 1, 1)}, 1.0)
    assert set(s.snapshot().bytes) == {"b"}  # c: WireGuard reported nothing yet
    s.update({"b": RELAY_UP, "c": RELAY_UP}, {"c": RELAY_UP}, {}, {"c": Traffic(1.0, 7, 7)}, 2.0)
    assert s.snapshot().bytes == {"c": (7, 7)}
