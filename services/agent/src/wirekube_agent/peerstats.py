"""What the agent's metrics need beyond one snapshot: transitions, milestones, totals. Pure.

A scrape sees only the state of the moment (``metrics.AgentCollector`` reads
the reconciler's last pass). Three things cannot be read off a snapshot, so
the reconcile pass hands each pass's result to ``PeerStats.update`` once:

* **path changes** — a peer's path (``direct``, ``relay`` or ``down``) that
  differs from the previous pass's counts one ``(from, to)`` transition;
* **milestones** — seconds from the pass that first saw a peer to its first
  WireGuard handshake and to its first direct path, observed once per peer
  into two histograms (a peer that vanishes and comes back starts over);
* **byte totals** — WireGuard's rx/tx restart from zero when the agent
  re-creates a peer (``initiate``): the totals carry the bytes counted
  before, so ``wirekube_peer_*_bytes_total`` only ever grow while the agent
  runs. Bytes between the last pass (at most a tick before) and the
  re-creation are not seen.

Peers absent from a pass are forgotten at once, so their series vanish.
All methods are thread-safe: the reconcile thread updates, scrapes read.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from wirekube_agent.paths.rules import PathState

Path = Literal["direct", "relay", "down"]
PATHS: tuple[Path, ...] = ("direct", "relay", "down")

# Seconds from a peer's appearance to a milestone: the lab reaches both in
# 1-20 s; a relayed pair's direct upgrade can wait several retry intervals
# (default 30 s each), and anything beyond 10 minutes is just "late".
MILESTONE_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def path_of(state: PathState) -> Path:
    """Where the peer's packets go now: an unrouted peer is ``down``."""
    if not state.routed:
        return "down"
    return "direct" if state.transport == "direct" else "relay"


@dataclass
class Histogram:
    """A Prometheus-style histogram: counts per upper bound, sum, count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket; the last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs ending in ``+Inf``, as exposition wants."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


@dataclass
class _Peer:
    seen: float  # the pass that first saw it
    handshake_done: bool = False
    direct_done: bool = False
    added_at: float | None = None  # the WireGuard peer's creation, as last seen
    rx: int = 0  # raw WireGuard counters at the last pass
    tx: int = 0
    rx_base: int = 0  # bytes counted by earlier incarnations of the WireGuard peer
    tx_base: int = 0
    counted: bool = False  # WireGuard has reported counters for it


@dataclass(frozen=True)
class Traffic:
    """One WireGuard peer's counters as a pass saw them."""

    added_at: float | None  # when the agent (re)created the WireGuard peer
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class Snapshot:
    changes: dict[tuple[Path, Path], int]
    to_first_handshake: Histogram
    to_direct: Histogram
    bytes: dict[str, tuple[int, int]]  # peer name -> (rx total, tx total)


class PeerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}
        self._changes: Counter[tuple[Path, Path]] = Counter()
        self._to_handshake = Histogram(MILESTONE_BUCKETS_S)
        self._to_direct = Histogram(MILESTONE_BUCKETS_S)

    def update(
        self,
        before: Mapping[str, PathState],
        after: Mapping[str, PathState],
        handshakes: Mapping[str, float],
        traffic: Mapping[str, Traffic],
        now: float,
    ) -> None:
        """One reconcile pass: ``before``/``after`` are the paths it started
        and ended with, ``handshakes`` the last handshake time per peer (0:
        none), ``traffic`` WireGuard's counters per peer."""
        with self._lock:
            for name, state in after.items():
                peer = self._peers.get(name)
                if peer is None:
                    peer = self._peers[name] = _Peer(seen=now)
                prev = before.get(name)
                path = path_of(state)
                if prev is not None and path_of(prev) != path:
                    self._changes[(path_of(prev), path)] += 1
                last = handshakes.get(name, 0.0)
                if not peer.handshake_done and last > 0:
                    peer.handshake_done = True
                    # A handshake older than the peer's appearance was made
                    # before this agent started (a kernel device outlives
                    # it): not a measurement of this start.
                    if last >= peer.seen:
                        self._to_handshake.observe(last - peer.seen)
                if not peer.direct_done and path == "direct":
                    peer.direct_done = True
                    self._to_direct.observe(now - peer.seen)
                counters = traffic.get(name)
                if counters is not None:
                    self._count(peer, counters)
            for gone in self._peers.keys() - after.keys():
                del self._peers[gone]

    @staticmethod
    def _count(peer: _Peer, t: Traffic) -> None:
        recreated = peer.added_at is not None and t.added_at != peer.added_at
        if recreated or t.rx_bytes < peer.rx or t.tx_bytes < peer.tx:
            peer.rx_base += peer.rx
            peer.tx_base += peer.tx
        peer.added_at, peer.rx, peer.tx = t.added_at, t.rx_bytes, t.tx_bytes
        peer.counted = True

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                dict(self._changes),
                self._to_handshake.copy(),
                self._to_direct.copy(),
                {
                    n: (p.rx_base + p.rx, p.tx_base + p.tx)
                    for n, p in self._peers.items()
                    if p.counted
                },
            )
