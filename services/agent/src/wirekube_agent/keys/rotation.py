"""When this node's WireGuard key pair is replaced, and what gets recorded. Pure.

Two triggers (docs/keyrotation.md):

* a request: an admin (or ``wirekubectl rotate-key``) sets the annotation
  ``wirekube.io/rotate-key`` on the Node to any new value (a request id, a
  timestamp). Each distinct value rotates once.
* a period: ``spec.keyRotationIntervalHours`` of the mesh. The key is
  replaced once it is that old.

What was done is recorded on the node's own WireKubePeer, in the same write
that publishes the new public key (one write: the record and the key can never
disagree): the request handled and when the key was made. A restarted agent
reads both back, so it neither rotates again for a request it already handled
nor resets the period. The admission policy lets an agent write its own peer's
annotations, and no one else's.

The switch itself happens at an instant published with the new key
(``wirekube_common.keyswitch`` says why and how long after the write): the
rotating node moves its interface, path prober and relay registration to the
new key at that instant (``switch_due``), and every other node swaps the peer
entry just after it (``hold_swaps``), each on a timer, so the two ends of a
pair change a fixed few milliseconds apart, in the order that loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from wirekube_agent.model import RemotePeer
from wirekube_common import keyswitch
from wirekube_common.kube.times import unix_or_none

REQUEST_ANNOTATION = "wirekube.io/rotate-key"  # on the Node
HANDLED_ANNOTATION = "wirekube.io/key-rotation-handled"  # on the WireKubePeer
ROTATED_AT_ANNOTATION = "wirekube.io/key-rotated-at"  # on the WireKubePeer, RFC 3339

# Annotation values are bounded by the API server (256 KiB for all of them);
# a request id longer than a label value's worst case is not a request id.
MAX_REQUEST_LEN = 253
# The floor of the period, whatever the mesh says (the CRD's minimum, 0.001 h):
# below a few seconds the next rotation could start before every agent has
# swapped in the previous key.
MIN_INTERVAL_S = 3.6

# After a key change (ours, or a peer's), a pair whose first initiation under
# the new keys was dropped (it reached the other end before that end switched
# or swapped, or the relay before the new key was registered there) would wait
# out WireGuard's 5 s REKEY_TIMEOUT. Re-creating the peer makes WireGuard
# initiate again at once (``initiate`` explains why). After this long without
# a handshake under the new keys: a lab handshake takes milliseconds, a relay
# re-registration tens of them, so a session that is coming has come by then.
REINITIATE_AFTER_S = 0.4

# Periodic rotations are taken in turns, mesh-wide: among the nodes whose key
# is due, the lowest name goes first, and only once no node rotated for this
# long. Two ends of a pair rotating in the same moment cross their first
# handshakes (each answers the other's initiation and drops the answer to its
# own) and wait for ``REINITIATE_AFTER_S``: measured in the lab, 4 pings lost
# at 10/s instead of at most 1. Long enough for every agent to have swapped
# in the previous node's key; a round of N nodes takes N times this, which
# stretches the period only for N * 2 s beyond it.
ROTATION_SPACING_S = 2.0

Reason = Literal["requested", "periodic"]


@dataclass(frozen=True)
class Facts:
    requested: str | None  # the Node annotation's value
    handled: str | None  # the last request this node handled
    key_made_at: float | None  # when the published key was made (None: unknown)
    interval_s: float | None  # the mesh's period (None: no periodic rotation)
    # When every other node's published key was made (peer name -> time):
    # periodic rotations take turns (``ROTATION_SPACING_S``).
    others_made_at: Mapping[str, float] = field(default_factory=dict)
    name: str = ""  # our WireKubePeer's name, for the turn order


def facts(
    node_annotations: Mapping[str, str],
    own_peer: Mapping[str, Any],
    interval_hours: float | None,
    other_peers: Mapping[str, Mapping[str, Any]] | None = None,
) -> Facts:
    """Read the triggers and the record. A malformed record counts as absent;
    the key's age then falls back to the peer's creation time."""
    meta = own_peer.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    requested = node_annotations.get(REQUEST_ANNOTATION)
    if requested is not None and (not requested.strip() or len(requested) > MAX_REQUEST_LEN):
        requested = None
    interval = None
    if interval_hours is not None and interval_hours > 0:
        interval = max(interval_hours * 3600.0, MIN_INTERVAL_S)
    handled = annotations.get(HANDLED_ANNOTATION)
    name = str(meta.get("name") or "")
    others: dict[str, float] = {}
    if interval is not None:
        for other, obj in (other_peers or {}).items():
            made = key_made_at(obj)
            if other != name and made is not None:
                others[other] = made
    return Facts(
        requested,
        handled if isinstance(handled, str) else None,
        key_made_at(own_peer),
        interval,
        others,
        name,
    )


def key_made_at(peer: Mapping[str, Any]) -> float | None:
    """When a WireKubePeer's key was made: its rotation record, else its creation."""
    meta = peer.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return unix_or_none(annotations.get(ROTATED_AT_ANNOTATION)) or unix_or_none(
        meta.get("creationTimestamp")
    )


def due(f: Facts, now: float) -> Reason | None:
    """Why the key must be replaced now, or None.

    A request the node never handled rotates, whatever the period. With no
    record at all of a handled request, a request that is already there is
    still new: the annotation was set for this node, and the record is only
    written by a rotation.
    """
    if f.requested is not None and f.requested != f.handled:
        return "requested"
    interval, made = f.interval_s, f.key_made_at
    if interval is None or made is None or now - made < interval:
        return None
    return "periodic" if _our_turn(f, interval, now) else None


def _our_turn(f: Facts, interval: float, now: float) -> bool:
    """Periodic rotations take turns (``ROTATION_SPACING_S``)."""
    for other, made in f.others_made_at.items():
        if 0 <= now - made < ROTATION_SPACING_S:
            return False  # someone just rotated: let every agent swap it in first
        if now - made >= interval and other < f.name:
            return False  # due too, and first in line
    return True


def record(f: Facts, now: float) -> dict[str, str]:
    """The peer annotations a rotation at ``now`` writes with the new key."""
    out = {ROTATED_AT_ANNOTATION: format_time(now)}
    if f.requested is not None:
        out[HANDLED_ANNOTATION] = f.requested
    return out


format_time = keyswitch.format_time


def reinitiate(
    changed_at: Mapping[bytes, float],
    handshakes: Mapping[bytes, float],
    own_key: bytes,
    now: float,
) -> tuple[frozenset[bytes], dict[bytes, float]]:
    """Peers to re-create once after a key change, and the changes still pending.

    ``changed_at``: peer key -> when its entry started to need a handshake
    under new keys (our switch, or the swap to its new key). Done once a
    handshake came after it; otherwise, after ``REINITIATE_AFTER_S``, the side
    with the lower public key re-creates the peer (only one side: two
    re-created peers cross their initiations, see ``initiate``), once.
    """
    restart: set[bytes] = set()
    pending: dict[bytes, float] = {}
    for key, since in changed_at.items():
        if handshakes.get(key, 0.0) >= since:
            continue
        if now - since < REINITIATE_AFTER_S:
            pending[key] = since
        elif own_key < key:
            restart.add(key)
    return frozenset(restart), pending


def switch_due(switch_at: float | None, now: float) -> bool:
    """Whether our published, not yet active key becomes active now: at the
    instant we announced with it (``keyswitch``). None: not published yet."""
    return switch_at is not None and now >= switch_at


@dataclass(frozen=True)
class Held:
    """The peers to configure this pass, with the previous key kept for the
    ones whose swap is not due yet, and what the next pass needs."""

    peers: dict[str, RemotePeer]
    # (peer name, published key) -> when we first saw that key (the hold's bound)
    first_seen: dict[tuple[str, bytes], float]
    wake_at: float | None  # the earliest swap still to come: a pass is due then
    held: frozenset[str] = frozenset()


def hold_swaps(
    peers: Mapping[str, RemotePeer],
    configured: Mapping[str, bytes],
    announced: Mapping[str, float | None],
    first_seen: Mapping[tuple[str, bytes], float],
    now: float,
) -> Held:
    """Swap a rotated peer's entry only ``SWAP_DELAY_S`` after its switch instant.

    ``peers``: as published; ``configured``: the key each peer's entry has now
    (last pass); ``announced``: the switch instant of the peers whose key
    changed (``keyswitch.switch_at``). A peer whose published key differs
    from its entry's keeps its entry's key until
    ``keyswitch.old_key_until(instant, first seen) + SWAP_DELAY_S``: at once
    when there is no instant or that has passed, never longer than
    ``keyswitch.MAX_HOLD_S`` (+ the delay) after we first saw the new key.
    """
    out = dict(peers)
    seen: dict[tuple[str, bytes], float] = {}
    wake: float | None = None
    held: set[str] = set()
    for name, peer in peers.items():
        old, instant = configured.get(name), announced.get(name)
        if old is None or old == peer.public_key or instant is None:
            continue  # a new peer, no rotation, or a key in use already (no instant)
        first = first_seen.get((name, peer.public_key), now)
        swap_at = keyswitch.old_key_until(announced.get(name), first) + keyswitch.SWAP_DELAY_S
        if now >= swap_at:
            continue
        out[name] = replace(peer, public_key=old)
        seen[(name, peer.public_key)] = first
        held.add(name)
        wake = swap_at if wake is None else min(wake, swap_at)
    return Held(out, seen, wake, frozenset(held))
