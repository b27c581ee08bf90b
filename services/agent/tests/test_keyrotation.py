"""Key rotation: when to rotate, what is recorded, and the in-place swap on
the other nodes (desired state -> diff), all pure."""

from __future__ import annotations

import os
import stat
from dataclasses import replace

import pytest

from wirekube_agent.dataplane import desired as topology
from wirekube_agent.dataplane import diff
from wirekube_agent.keys import rotation as keyrotation
from wirekube_agent.keys import store as keys
from wirekube_agent.model import FWMARK
from wirekube_agent.paths import rules as paths
from wirekube_agent.paths.prober import Prober
from wirekube_agent.paths.rules import Target
from wirekube_agent.status import peerstatus as status
from wirekube_common import keyswitch, wgkey
from wirekube_common.crd import MeshSpec, PeerStatus
from wirekube_common.crd.base import InvalidObject
from wirekube_common.kube.times import unix_or_none
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import key, node, remote

T0 = 1_800_000_000.0
HOUR = 3600.0


def own_peer(**annotations: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": "node-a",
            "creationTimestamp": keyrotation.format_time(T0),
            "annotations": annotations,
        }
    }


# -- when ------------------------------------------------------------------------------


def test_no_trigger_no_rotation() -> None:
    f = keyrotation.facts({}, own_peer(), None)
    assert keyrotation.due(f, T0 + 1000 * HOUR) is None


def test_a_new_request_rotates_once() -> None:
    node_ann = {keyrotation.REQUEST_ANNOTATION: "req-1"}
    f = keyrotation.facts(node_ann, own_peer(), None)
    assert keyrotation.due(f, T0) == "requested"
    recorded = keyrotation.record(f, T0 + 5)
    assert recorded[keyrotation.HANDLED_ANNOTATION] == "req-1"
    # what a restarted agent reads back: handled, so nothing to do
    after = keyrotation.facts(node_ann, own_peer(**recorded), None)
    assert keyrotation.due(after, T0 + 10) is None
    # a different value is a new request
    again = keyrotation.facts({keyrotation.REQUEST_ANNOTATION: "req-2"}, own_peer(**recorded), None)
    assert keyrotation.due(again, T0 + 10) == "requested"


@pytest.mark.parametrize("bad", ["", "   ", "x" * (keyrotation.MAX_REQUEST_LEN + 1)])
def test_a_malformed_request_is_ignored(bad: str) -> None:
    f = keyrotation.facts({keyrotation.REQUEST_ANNOTATION: bad}, own_peer(), None)
    assert f.requested is None
    assert keyrotation.due(f, T0) is None


def test_periodic_rotation_counts_from_the_last_rotation() -> None:
    rotated = {keyrotation.ROTATED_AT_ANNOTATION: keyrotation.format_time(T0 + 10 * HOUR)}
    f = keyrotation.facts({}, own_peer(**rotated), 24.0)
    assert keyrotation.due(f, T0 + 33 * HOUR) is None
    assert keyrotation.due(f, T0 + 34 * HOUR) == "periodic"
    assert keyrotation.HANDLED_ANNOTATION not in keyrotation.record(f, T0)


def test_periodic_rotation_without_a_record_counts_from_creation() -> None:
    f = keyrotation.facts({}, own_peer(), 1.0)
    assert keyrotation.due(f, T0 + HOUR - 1) is None
    assert keyrotation.due(f, T0 + HOUR) == "periodic"


@pytest.mark.parametrize("garbage", ["yesterday", "2026-01-01T00:00:00", "9" * 100])
def test_a_malformed_record_falls_back_to_creation(garbage: str) -> None:
    f = keyrotation.facts({}, own_peer(**{keyrotation.ROTATED_AT_ANNOTATION: garbage}), 1.0)
    assert f.key_made_at == T0


def test_the_period_has_a_floor() -> None:
    f = keyrotation.facts({}, own_peer(), 1e-9)
    assert f.interval_s == keyrotation.MIN_INTERVAL_S
    assert keyrotation.facts({}, own_peer(), 0.0).interval_s is None


def test_time_round_trips() -> None:
    assert unix_or_none(keyrotation.format_time(T0 + 0.25)) == T0 + 0.25


# -- the key file -------------------------------------------------------------------------


def test_rotate_replaces_the_stored_key(tmp_path: object) -> None:
    state = str(tmp_path)
    first = keys.load_or_create(state)
    second = keys.rotate(state)
    assert second != first
    assert keys.load_or_create(state) == second  # a restart keeps the new key
    path = os.path.join(state, keys.KEY_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(state)) == [keys.KEY_FILE]  # no temp file left


# -- the other nodes: the same node's claim, swapped in place ------------------------------


def test_a_rotated_key_keeps_the_nodes_claim() -> None:
    """Oldest claim first: the rotated peer keeps its prefix against a newer
    object claiming it, and its new key is not a conflict with anyone."""
    me = node("a", "10.0.0.1")
    b_old = remote("node-b", 2, "10.0.0.2", created="2026-01-01T00:00:00Z")
    intruder = remote("node-x", 9, "10.0.0.2", created="2026-06-01T00:00:00Z")
    b_new = replace(b_old, public_key=key(3))
    for b in (b_old, b_new):
        accepted, warnings = topology.select_peers({"node-b": b, "node-x": intruder}, key(1), me)
        assert accepted["node-b"] == b
        assert accepted["node-x"].allowed_ips == ()
        assert warnings == [("node-x", "allowedIP 10.0.0.2/32 already belongs to node-b")]


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        (paths.PathState("direct", "up", 0.0, ("198.18.0.2", 40000)), ("198.18.0.2", 40000)),
        (paths.PathState("relay", "up", 0.0, None), ("127.0.0.1", 50002)),
    ],
)
def test_a_rotated_peer_is_swapped_in_place(
    path: paths.PathState, endpoint: tuple[str, int]
) -> None:
    """New key in, old key out, in one request: the same allowedIPs, the same
    endpoint (direct stays direct, relay stays relay: the bridge socket of
    the new key); no other peer, route or rule is touched."""
    me = node("a", "10.0.0.1")
    old, new = key(2), key(3)
    b = remote("node-b", 2, "10.0.0.2")
    c = remote("node-c", 4, "10.0.0.3")
    relay_eps = {old: ("127.0.0.1", 50001), new: ("127.0.0.1", 50002), key(4): ("127.0.0.1", 1)}

    def state(b_key: bytes) -> topology.DesiredState:
        relayed = dict(relay_eps)
        if b_key == new:
            del relayed[old]
        return topology.desired_state(
            interface="wire_kube",
            listen_port=51820,
            mtu=1420,
            node=me,
            peers={"node-b": replace(b, public_key=b_key), "node-c": c},
            paths={"node-b": path, "node-c": paths.PathState("direct", "up", 0.0, None)},
            relay_endpoints=relayed,
        )

    before = state(old)
    have = DeviceState(
        key(1),
        51820,
        FWMARK,
        {
            k: PeerState(k, p.endpoint, p.allowed_ips, p.persistent_keepalive)
            for k, p in before.peers.items()
        },
    )
    applied = {k: p.endpoint for k, p in before.peers.items()}
    after = state(new)
    ops = diff.operations(after, have, before.routes, before.rules, applied, key(1), FWMARK)
    assert ops.wireguard is not None
    assert ops.wireguard.private_key is None  # our own interface is untouched
    removed = [p.public_key for p in ops.wireguard.peers if p.remove]
    added = [p for p in ops.wireguard.peers if not p.remove]
    assert removed == [old]
    assert [p.public_key for p in added] == [new]
    # the new entry first: it takes the allowedIPs over, so no packet finds
    # the prefix without a peer while the old one is torn down
    assert [p.public_key for p in ops.wireguard.peers] == [new, old]
    assert added[0].endpoint == endpoint
    assert added[0].allowed_ips == tuple(b.allowed_ips)
    assert added[0].persistent_keepalive is not None  # sends at once: handshakes now
    assert not (ops.routes_delete or ops.routes_replace or ops.rules_add or ops.rules_delete)


def test_our_own_rotation_changes_only_the_private_key() -> None:
    me = node("a", "10.0.0.1")
    b = remote("node-b", 2, "10.0.0.2")
    want = topology.desired_state(
        interface="wire_kube",
        listen_port=51820,
        mtu=1420,
        node=me,
        peers={"node-b": b},
        paths={"node-b": paths.PathState("direct", "up", 0.0, None)},
        relay_endpoints={},
    )
    have = DeviceState(
        key(1),
        51820,
        FWMARK,
        {
            k: PeerState(k, p.endpoint, p.allowed_ips, p.persistent_keepalive)
            for k, p in want.peers.items()
        },
    )
    applied = {k: p.endpoint for k, p in want.peers.items()}
    ops = diff.operations(want, have, want.routes, want.rules, applied, key(7), FWMARK)
    assert ops.wireguard is not None
    assert ops.wireguard.private_key == key(7)
    assert ops.wireguard.peers == ()


# -- the prober ------------------------------------------------------------------------------


def test_probe_history_follows_a_rotated_peer() -> None:
    mine = wgkey.generate_private_key()
    old_priv, new_priv = wgkey.generate_private_key(), wgkey.generate_private_key()
    old, new = wgkey.public_key(old_priv), wgkey.public_key(new_priv)
    prober = Prober(mine, lambda payload, ep: True)
    prober.set_targets({old: Target(candidates=(("198.18.0.2", 51820),))})
    view = paths.ProbeView(((("198.18.0.2", 51820), T0),), T0)
    prober._peers[old].view = view
    prober.peer_rotated(old, new)
    assert prober.view(new) == view
    assert prober.view(old) == paths.ProbeView()
    # probes to and from the new key verify with the new shared secret
    other = Prober(new_priv, lambda payload, ep: True)
    other.set_targets({wgkey.public_key(mine): Target()})
    assert prober._peers[new].mac_key == other._peers[wgkey.public_key(mine)].mac_key


def test_our_rotation_re_derives_every_probe_key() -> None:
    peer_priv = wgkey.generate_private_key()
    peer = wgkey.public_key(peer_priv)
    prober = Prober(wgkey.generate_private_key(), lambda payload, ep: True)
    prober.set_targets({peer: Target()})
    new = wgkey.generate_private_key()
    prober.set_private_key(new)
    assert prober.public_key == wgkey.public_key(new)
    other = Prober(peer_priv, lambda payload, ep: True)
    other.set_targets({wgkey.public_key(new): Target()})
    assert prober._peers[peer].mac_key == other._peers[wgkey.public_key(new)].mac_key


def test_the_mesh_field_parses_and_round_trips() -> None:
    spec = MeshSpec.from_dict({"keyRotationIntervalHours": 720})
    assert spec.key_rotation_interval_hours == 720.0
    assert MeshSpec.from_dict(spec.to_dict()) == spec
    assert MeshSpec.from_dict({}).key_rotation_interval_hours is None
    assert "keyRotationIntervalHours" not in MeshSpec().to_dict()
    for bad in (0, -1, "daily", True):
        with pytest.raises(InvalidObject):
            MeshSpec.from_dict({"keyRotationIntervalHours": bad})


def test_the_first_handshake_under_a_new_key_is_published_at_once() -> None:
    """``rotate-key --wait`` reads it: lastHandshake normally moves only by a
    minute or more; after our key switched, the first handshake goes out."""
    up = {"node-b": paths.PathState("direct", "up", 0.0, None)}
    prev = PeerStatus(last_handshake=status.rfc3339(T0))
    local = status.LocalReport()
    later = T0 + 20.0
    assert (
        status.derive(up, {"node-b": later}, local, prev, later).last_handshake
        == prev.last_handshake
    )
    switched = T0 + 10.0
    new = status.derive(up, {"node-b": later}, local, prev, later, fresh_after=switched)
    assert new.last_handshake == status.rfc3339(later)
    # a handshake from before the switch proves nothing
    old = status.derive(up, {"node-b": T0 + 5.0}, local, prev, later, fresh_after=switched)
    assert old.last_handshake == prev.last_handshake


def test_reinitiate_once_by_the_lower_key_when_no_handshake_came() -> None:
    low, high = key(1), key(9)
    since = T0
    early = since + keyrotation.REINITIATE_AFTER_S / 2
    late = since + keyrotation.REINITIATE_AFTER_S
    # too early: still pending, nothing re-created
    assert keyrotation.reinitiate({high: since}, {}, low, early) == (frozenset(), {high: since})
    # due, and we hold the lower key: re-create, once (nothing left pending)
    assert keyrotation.reinitiate({high: since}, {high: since - 30}, low, late) == (
        frozenset({high}),
        {},
    )
    # due, but the other side holds the lower key: it re-creates, we do not
    assert keyrotation.reinitiate({low: since}, {}, high, late) == (frozenset(), {})
    # a handshake under the new keys came: done
    assert keyrotation.reinitiate({high: since}, {high: since + 0.01}, low, late) == (
        frozenset(),
        {},
    )


def other(name: str, made: float) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": keyrotation.format_time(T0),
            "annotations": {keyrotation.ROTATED_AT_ANNOTATION: keyrotation.format_time(made)},
        }
    }


def test_periodic_rotations_take_turns_lowest_name_first() -> None:
    now = T0 + 2 * HOUR
    lower, higher = other("node-0", T0), other("node-z", T0)
    # we (node-a) are due, node-0 too and first in line: wait
    f = keyrotation.facts({}, own_peer(), 1.0, {"node-0": lower, "node-z": higher})
    assert keyrotation.due(f, now) is None
    # node-0 rotated just now: still wait (every agent swaps it in first)
    just = {"node-0": other("node-0", now - 0.5), "node-z": higher}
    assert keyrotation.due(keyrotation.facts({}, own_peer(), 1.0, just), now) is None
    # once the spacing passed it is our turn (node-z waits for us)
    later = now - 0.5 + keyrotation.ROTATION_SPACING_S
    assert keyrotation.due(keyrotation.facts({}, own_peer(), 1.0, just), later) == "periodic"
    # our own object in the list changes nothing
    f = keyrotation.facts({}, own_peer(), 1.0, {"node-a": own_peer()})
    assert keyrotation.due(f, now) == "periodic"


def test_a_request_does_not_wait_for_its_turn() -> None:
    f = keyrotation.facts(
        {keyrotation.REQUEST_ANNOTATION: "r"},
        own_peer(),
        1.0,
        {"node-0": other("node-0", T0 + 2 * HOUR)},
    )
    assert keyrotation.due(f, T0 + 2 * HOUR) == "requested"


# -- the switch instant (wirekube_common.keyswitch) ------------------------------------

LEAD, DELAY, HOLD = keyswitch.SWITCH_LEAD_S, keyswitch.SWAP_DELAY_S, keyswitch.MAX_HOLD_S


def test_the_instant_is_announced_a_lead_after_the_write_and_reads_back() -> None:
    at, annotations = keyswitch.announce(T0)
    assert at == T0 + LEAD
    peer = {"metadata": {"annotations": annotations}}
    assert keyswitch.switch_at(peer) == at
    assert keyswitch.switch_at({"metadata": {"annotations": {}}}) is None
    bogus = {"metadata": {"annotations": {keyswitch.SWITCH_AT_ANNOTATION: "soon"}}}
    assert keyswitch.switch_at(bogus) is None


@pytest.mark.parametrize(
    ("announced", "first_seen", "until"),
    [
        (T0 + LEAD, T0, T0 + LEAD),  # seen at once: the instant
        (T0 + LEAD, T0 + LEAD + 3, T0 + LEAD),  # seen late: already past (act at once)
        (T0 + 3600, T0, T0 + HOLD),  # an instant an hour ahead (skewed clock): bounded
        (None, T0 + 7, T0 + 7),  # no instant: the new key is in use already
    ],
)
def test_old_key_until(announced: float | None, first_seen: float, until: float) -> None:
    assert keyswitch.old_key_until(announced, first_seen) == until


@pytest.mark.parametrize(
    ("switch_at", "now", "due"),
    [
        (None, T0, False),  # not published yet (or no rotation)
        (T0 + LEAD, T0, False),
        (T0 + LEAD, T0 + LEAD - 0.001, False),
        (T0 + LEAD, T0 + LEAD, True),
        (T0 + LEAD, T0 + LEAD + 10, True),  # the write returned late: at once
    ],
)
def test_our_switch_is_due_at_the_published_instant(
    switch_at: float | None, now: float, due: bool
) -> None:
    assert keyrotation.switch_due(switch_at, now) is due


OLD, NEW, OTHER = 3, 4, 5
SWITCH = T0 + LEAD  # b's announced instant, published at T0


@pytest.mark.parametrize(
    ("announced", "first_seen", "now", "held", "wake_at"),
    [
        # seen at once: the old key until just after the instant, with a wake then
        (SWITCH, None, T0, True, SWITCH + DELAY),
        (SWITCH, T0, SWITCH, True, SWITCH + DELAY),
        (SWITCH, T0, SWITCH + DELAY - 0.001, True, SWITCH + DELAY),
        (SWITCH, T0, SWITCH + DELAY, False, None),
        # seen after the instant (a late watch): at once
        (SWITCH, None, SWITCH + 2, False, None),
        # no instant (an agent that restarted with a new key): at once
        (None, None, T0, False, None),
        # an instant far ahead: no longer than MAX_HOLD_S after first seen
        (T0 + 3600, T0, T0 + HOLD - 0.01, True, T0 + HOLD + DELAY),
        (T0 + 3600, T0, T0 + HOLD + DELAY, False, None),
    ],
)
def test_a_rotated_peer_is_swapped_just_after_its_instant(
    announced: float | None, first_seen: float | None, now: float, held: bool, wake_at: float | None
) -> None:
    published = {
        "node-b": remote("node-b", NEW, "10.0.0.2"),
        "node-c": remote("node-c", OTHER, "10.0.0.3"),
    }
    configured = {"node-b": key(OLD), "node-c": key(OTHER)}
    seen = {} if first_seen is None else {("node-b", key(NEW)): first_seen}
    out = keyrotation.hold_swaps(published, configured, {"node-b": announced}, seen, now)
    assert out.wake_at == wake_at
    assert out.peers["node-c"] == published["node-c"]  # untouched
    if held:
        # the entry keeps the key it has; everything else is as published
        assert out.peers["node-b"] == replace(published["node-b"], public_key=key(OLD))
        assert out.held == {"node-b"}
        assert out.first_seen == {("node-b", key(NEW)): now if first_seen is None else first_seen}
    else:
        assert out.peers["node-b"] == published["node-b"]
        assert out.held == frozenset() and out.first_seen == {}


def test_new_peers_and_unchanged_keys_are_never_held() -> None:
    published = {"node-b": remote("node-b", NEW, "10.0.0.2")}
    for configured in ({}, {"node-b": key(NEW)}):
        out = keyrotation.hold_swaps(published, configured, {"node-b": T0 + 60}, {}, T0)
        assert out.peers == published and out.wake_at is None and not out.held


def test_a_second_rotation_during_the_hold_keeps_the_configured_key() -> None:
    """b rotates again before its first switch: the entry still has the key
    it had, and the newest key's instant counts."""
    published = {"node-b": remote("node-b", OTHER, "10.0.0.2")}
    seen = {("node-b", key(NEW)): T0}
    later = T0 + 0.5
    out = keyrotation.hold_swaps(
        published, {"node-b": key(OLD)}, {"node-b": later + LEAD}, seen, later
    )
    assert out.peers["node-b"].public_key == key(OLD)
    assert out.first_seen == {("node-b", key(OTHER)): later}
    assert out.wake_at == later + LEAD + DELAY
