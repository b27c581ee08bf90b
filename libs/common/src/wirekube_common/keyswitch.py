"""The switch instant of a key rotation, which the agents and the relay share. Pure.

A node that replaces its WireGuard key pair publishes, in the same write as
the new ``spec.publicKey`` of its WireKubePeer, the instant at which it will
switch to it: the annotation ``wirekube.io/key-switch-at`` (RFC 3339, UTC, µs),
``SWITCH_LEAD_S`` after the write. Until then every node keeps using the old
key; at the instant the rotating node switches its private key and, a moment
later (``SWAP_DELAY_S``), every other node swaps the peer entry. Each acts on a
timer at the instant, not at whichever pass comes next, so the two ends of
every pair change a fixed, short time apart whatever their passes are doing
(docs/keyrotation.md).

Why the order matters (both the kernel and wireguard-go behave alike): once the
rotating node has switched, it can still receive on its old sessions but must
handshake to send, so its packets wait in WireGuard's staging queue until the
other end swaps and initiates: a delay, no loss. A peer entry swapped *before*
the switch drops everything the rotating node still sends on the old session:
lost pings. So the swap comes second, by a margin that covers the two passes'
latency and the clock skew of NTP'd nodes.

The instant is the rotating node's wall clock read by other nodes: a node
that sees it only after it has passed acts at once, and an instant further
away than ``MAX_HOLD_S`` after the key was first seen (a skewed clock, a bogus
value) is not waited for beyond that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wirekube_common.kube.times import format_micro_time, from_unix, unix_or_none

SWITCH_AT_ANNOTATION = "wirekube.io/key-switch-at"  # on the WireKubePeer, RFC 3339

# Publish -> switch. Long enough for the write to reach every agent's watch
# and the relay's allow-list (milliseconds; hundreds of them on a loaded API
# server); the old keys keep working meanwhile, so a longer lead costs only
# the rotation's latency, not traffic.
SWITCH_LEAD_S = 1.0
# The rotating node's switch -> the other nodes' swap. Covers the difference
# between two agents' way from their timer to the act (a pass that was
# running at the instant finishes first; the switch comes early in a pass,
# the swap at its end: measured up to 0.13 s apart on a 2-core lab machine
# at load 10-20) and NTP-level clock skew, and lets the rotating node's own
# first initiation (which the other end cannot answer yet) arrive and be
# dropped before the other end initiates: arriving after the swap, it would
# cross that end's initiation and cost the 0.4 s fallback. Packets of the
# pair only wait this long in WireGuard's queue (128 packets per peer), and
# the relay hands frames addressed to the old key to the new registration
# meanwhile (wirekube_relay.auth.retained); without the relay's allow-list
# a relayed pair loses what is sent towards the rotating node in this time.
SWAP_DELAY_S = 0.2
# The longest another node waits for an instant, counted from when it first
# saw the new key: the lead and a generous margin for a slow watch. Beyond it
# the instant is wrong (the rotating node's clock runs far ahead) and waiting
# longer would only keep a key the node no longer uses.
MAX_HOLD_S = SWITCH_LEAD_S + 4.0


def format_time(t: float) -> str:
    """``t`` (seconds since the epoch) as the annotation writes it."""
    return format_micro_time(from_unix(t))


def announce(now: float) -> tuple[float, dict[str, str]]:
    """The instant a key published at ``now`` takes effect, and its annotation."""
    at = now + SWITCH_LEAD_S
    return at, {SWITCH_AT_ANNOTATION: format_time(at)}


def switch_at(peer: Mapping[str, Any]) -> float | None:
    """A WireKubePeer's announced switch instant (None: absent or malformed)."""
    annotations = (peer.get("metadata") or {}).get("annotations") or {}
    return unix_or_none(annotations.get(SWITCH_AT_ANNOTATION))


def old_key_until(announced: float | None, first_seen: float) -> float:
    """Until when a peer's previous key is still the one it uses, for a node
    that first saw its new key at ``first_seen``: the announced instant,
    bounded by ``MAX_HOLD_S``; without one, not at all (a key published
    without an instant, e.g. by an agent that restarted with it, is in use)."""
    if announced is None:
        return first_seen
    return min(announced, first_seen + MAX_HOLD_S)
