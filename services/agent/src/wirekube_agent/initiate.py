"""When to re-create a WireGuard peer so that it initiates a handshake now. Pure.

WireGuard sends a handshake initiation when a peer is created (we set a
persistent keepalive), then at most one per 5 s (REKEY_TIMEOUT). At start-up
the first initiation often reaches a node that does not know our key yet and
is dropped; the next one would wait out those 5 s. Re-creating the peer (see
``diff.Operations``) makes WireGuard initiate again at once.

Re-creating is only safe while no handshake is under way. Captured in the
lab: a peer re-created 0.1 ms after it had answered the other node's
initiation threw away the session the other node had just completed. That
node kept sending on a session nobody held and did not answer the fresh
initiation that followed; the pair was unreachable for 5 to 15 s, until
WireGuard's own timers gave up on the dead session. So a peer is re-created
only when

* it never completed a handshake, and nothing at all came from it (no
  handshake message either: ``rx_bytes`` is 0);
* its agent has been probing us for ``SETTLE_S``: the probes show it knows
  our key, and by then the initiation its WireGuard sent when it added us
  would have arrived (counted in ``rx_bytes``) had it reached us;
* only by the side with the lower public key. Both sides usually get there
  together (each one's first initiation went to an endpoint that did not work
  yet); two peers re-created at once crossed their initiations, and each
  threw away the session the other had just answered (seen in the lab).
  The other side answers our fresh initiation, or sends its own after
  WireGuard's 5 s;
* at most once per peer (the caller remembers).

Tried and taken out again: a second rule letting either side re-create a peer
whose handshake had stalled (messages received, then 1 s of silence). In the
lab the higher key's re-creation landed within 1 ms of the lower key's,
the crossing left one pair dark for 15 s, and a later one dropped the pings
WireGuard had queued for the handshake. Any rule that lets both sides act
must keep them apart by more than a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

# How long the peer's agent must have been probing us (after we added it)
# before we conclude its own initiation is not coming: an agent may probe
# before its WireGuard has us (same pass; tens of milliseconds apart, more on
# a loaded node). Each 0.1 s here is 0.1 s more to first contact at start-up.
SETTLE_S = 0.5


@dataclass(frozen=True)
class PeerFacts:
    added_at: float  # when we (re)created the WireGuard peer
    last_handshake: float  # 0: never
    rx_bytes: int  # everything WireGuard received from it, handshakes included
    probing_since: float | None  # first probe from its agent after added_at
    we_initiate: bool  # our public key is the lower one


def eligible(last_handshake: float, rx_bytes: int, we_initiate: bool) -> bool:
    """The part of ``due`` that needs no probe history (the reconcile loop asks
    this of every peer every pass; almost all answer no)."""
    return we_initiate and last_handshake == 0 and rx_bytes == 0


def due(facts: PeerFacts, now: float) -> bool:
    """Re-create the peer now?"""
    return (
        eligible(facts.last_handshake, facts.rx_bytes, facts.we_initiate)
        and facts.probing_since is not None
        and now - facts.probing_since >= SETTLE_S
    )
