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
WireGuard's own timers gave up on the dead session. So a silent peer is
re-created only when

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
* at most once per peer for each of the two reasons (the caller remembers).

A second case: crossed initiations. Both sides' first initiations often leave
within a round trip of each other (each agent adds the other when the later
one registers). Each WireGuard then answers the other's initiation, which
replaces its own pending one, and drops the answer to its own: both wait for
a session neither will complete until WireGuard retries after 5 s (seen in
the lab in a third of the start-ups of topology 5). From one side this looks
like: something came in (``rx_bytes`` > 0), no handshake, and nothing more
for ``CROSSED_S``. A session the other side completed would have shown by
then: its first packet on it would have reached us within a round trip. So
the lower key re-creates the peer once; the other side answers the fresh
initiation (it is not initiating again for another 5 s).

Tried and taken out again: a rule letting either side re-create a peer whose
handshake had stalled (messages received, then 1 s of silence). In the lab
the higher key's re-creation landed within 1 ms of the lower key's, the
crossing left one pair dark for 15 s, and a later one dropped the pings
WireGuard had queued for the handshake. Any rule that lets both sides act
must keep them apart by more than a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from wirekube_agent.paths.rules import ProbeView
from wirekube_common.wireguard.types import PeerState

# How long the peer's agent must have been probing us (after we added it)
# before we conclude its own initiation is not coming: an agent may probe
# before its WireGuard has us (same pass; tens of milliseconds apart, more on
# a loaded node). Each 0.1 s here is 0.1 s more to first contact at start-up.
SETTLE_S = 0.5
# How long a handshake that reached us may stay incomplete before we call it
# crossed: many round trips (a relayed one included), well under WireGuard's
# own 5 s retry.
CROSSED_S = 1.0

Reason = Literal["silent", "crossed"]


@dataclass(frozen=True)
class PeerFacts:
    added_at: float  # when we (re)created the WireGuard peer
    last_handshake: float  # 0: never
    rx_bytes: int  # everything WireGuard received from it, handshakes included
    rx_since: float  # when rx_bytes last changed (added_at while nothing came)
    probing_since: float | None  # first probe from its agent after added_at
    we_initiate: bool  # our public key is the lower one


def eligible(last_handshake: float, we_initiate: bool) -> bool:
    """The part of ``due`` that needs no history (the reconcile loop asks this
    of every peer every pass; almost all answer no)."""
    return we_initiate and last_handshake == 0


def due(facts: PeerFacts, now: float) -> Reason | None:
    """Re-create the peer now, and why (the caller acts on each reason once)."""
    if not eligible(facts.last_handshake, facts.we_initiate):
        return None
    if facts.rx_bytes == 0:
        settled = (
            facts.probing_since is not None
            and now - facts.probing_since >= SETTLE_S
            and now - facts.added_at >= SETTLE_S
        )
        return "silent" if settled else None
    return "crossed" if now - facts.rx_since >= CROSSED_S else None


@dataclass(frozen=True)
class Memory:
    """What ``restarts`` carries from one pass to the next, per peer key."""

    acted: Mapping[bytes, frozenset[Reason]] = field(default_factory=dict)  # once per reason
    probing_since: Mapping[bytes, float] = field(default_factory=dict)  # PeerFacts.probing_since
    rx_seen: Mapping[bytes, tuple[int, float]] = field(default_factory=dict)  # rx_bytes, since


def restarts(
    memory: Memory,
    peers: Mapping[str, bytes],
    device: Mapping[bytes, PeerState],
    added_at: Mapping[bytes, float],
    views: Mapping[bytes, ProbeView],
    own_key: bytes,
    now: float,
) -> tuple[frozenset[bytes], list[tuple[str, Reason]], Memory]:
    """The peers (name -> key) to re-create this pass so WireGuard initiates
    at once, why, and the memory for the next pass. ``views``: the prober's,
    for when the peer's agent last probed us."""
    out: set[bytes] = set()
    why: list[tuple[str, Reason]] = []
    keys = set(peers.values())
    acted = {k: v for k, v in memory.acted.items() if k in keys}
    probing_since = {k: t for k, t in memory.probing_since.items() if k in keys}
    rx_seen = {k: v for k, v in memory.rx_seen.items() if k in keys}
    for name, key in peers.items():
        added = added_at.get(key)
        state = device.get(key)
        if added is None or state is None:
            continue
        seen = rx_seen.get(key)
        if seen is None or seen[0] != state.rx_bytes:
            seen = rx_seen[key] = (state.rx_bytes, added if seen is None else now)
        we_initiate = own_key < key
        if not eligible(state.last_handshake, we_initiate):
            continue
        view = views.get(key)
        ping = view.last_ping if view is not None else 0.0
        if ping > added:
            probing_since.setdefault(key, ping)
        facts = PeerFacts(
            added,
            state.last_handshake,
            state.rx_bytes,
            max(seen[1], added),
            probing_since.get(key),
            we_initiate,
        )
        reason = due(facts, now)
        done = acted.get(key, frozenset())
        if reason is not None and reason not in done:
            out.add(key)
            why.append((name, reason))
            done = done | {reason}
        acted[key] = done
    return frozenset(out), why, Memory(acted, probing_since, rx_seen)
