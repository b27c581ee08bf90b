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
* at most ``MAX_RECREATES`` times per peer (the caller counts).

A handshake can also stall half-way: we answered the other node's initiation
(or it answered ours) and nothing followed. An initiator that gets the
response confirms the session at once (WireGuard sends a keepalive when it
has nothing queued), so a peer that sent us handshake messages and then fell
silent for ``QUIET_S`` with no completed handshake lost a message on the way;
its own retry is up to 5 s away. Then either side re-creates: nothing is
thrown away (no session completed on our side, and the other side, silent for
``QUIET_S``, holds none it uses), and a fresh initiation that crosses the
other side's retry is a normal WireGuard exchange.
"""

from __future__ import annotations

from dataclasses import dataclass

# How long the peer's agent must have been probing us (after we added it)
# before we conclude its own initiation is not coming: an agent may probe
# before its WireGuard has us (same pass; tens of milliseconds apart, more on
# a loaded node). Each 0.1 s here is 0.1 s more to first contact at start-up.
SETTLE_S = 0.5
# Silence after the last handshake message that means one was lost: many
# round trips and WireGuard's own processing, still well inside its 5 s retry.
QUIET_S = 1.0
# Re-creations per peer, all rules together: a peer that cannot complete a
# handshake after this many fresh starts is left to WireGuard's own timers.
MAX_RECREATES = 3


@dataclass(frozen=True)
class PeerFacts:
    added_at: float  # when we (re)created the WireGuard peer
    last_handshake: float  # 0: never
    rx_bytes: int  # everything WireGuard received from it, handshakes included
    rx_changed_at: float  # when we saw rx_bytes change last (added_at if never)
    probing_since: float | None  # first probe from its agent after added_at
    we_initiate: bool  # our public key is the lower one
    recreated: int  # re-creations so far


def due(facts: PeerFacts, now: float) -> bool:
    """Re-create the peer now?"""
    if (
        facts.last_handshake != 0
        or facts.recreated >= MAX_RECREATES
        or facts.probing_since is None
        or now - facts.probing_since < SETTLE_S
    ):
        return False
    if facts.rx_bytes == 0 and facts.we_initiate and facts.recreated == 0:
        return True  # its first initiation was dropped: start one now
    return now - max(facts.rx_changed_at, facts.added_at) >= QUIET_S  # stalled
