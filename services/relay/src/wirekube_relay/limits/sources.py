"""Per-source-address accounting: pending and open connections, registration attempts.

Pure (``now`` is an argument; no sockets). The forwarder asks ``opened`` when a
connection is accepted and ``hello`` when a registration starts, and reports
``registered`` and ``closed``; each answer is None (admitted) or the reason
for refusing, which the caller turns into a CLOSE and a summarised log line.

Why per address: the relay-wide bounds (limits.MAX_PENDING, MAX_CONNECTIONS)
protect the relay, but one address could fill them and lock every other node
out. With a per-address share, an attacker needs many addresses to do what
one could; see limits/bounds.py for the numbers.

An address's counts live while it has connections (bounded by the open
connections); its registration-attempt bucket until it has refilled (bounded
by ``max_tracked``). ``TokenBucket`` is the usual rate/burst pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wirekube_relay.limits import bounds as limits


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if it can."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def deficit_seconds(self, now: float) -> float:
        """How long until the bucket holds a token again (0 if it does now)."""
        self.take(now, 0.0)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class Source:
    pending: int = 0
    connections: int = 0


@dataclass
class SourceTable:
    max_pending_per_source: int = limits.MAX_PENDING_PER_SOURCE
    max_connections_per_source: int = limits.MAX_CONNECTIONS_PER_SOURCE
    hello_rate: float = limits.HELLO_RATE_PER_SOURCE
    hello_burst: float = limits.HELLO_BURST_PER_SOURCE
    max_tracked: int = limits.MAX_CONNECTIONS
    sources: dict[str, Source] = field(default_factory=dict)
    # registration-attempt buckets outlive an address's connections (closing
    # them all must not refill the bucket); pruned once full again anyway
    hellos: dict[str, TokenBucket] = field(default_factory=dict)

    def opened(self, ip: str) -> str | None:
        """A connection from ``ip`` was accepted: None, or why it must be refused
        (then it is not counted: call nothing else for it)."""
        src = self.sources.get(ip)
        if src is None:
            src = self.sources[ip] = Source()
        if src.pending >= self.max_pending_per_source:
            return "source-pending"
        if src.connections >= self.max_connections_per_source:
            return "source-connections"
        src.pending += 1
        src.connections += 1
        return None

    def hello(self, ip: str, now: float) -> str | None:
        """A registration attempt from ``ip``: None, or why it is refused."""
        bucket = self.hellos.get(ip)
        if bucket is None:
            if len(self.hellos) >= self.max_tracked:
                del self.hellos[next(iter(self.hellos))]  # the oldest entry
            bucket = self.hellos[ip] = TokenBucket.full(self.hello_rate, self.hello_burst, now)
        return None if bucket.take(now) else "source-hello-rate"

    def prune(self, now: float) -> None:
        """Forget hello buckets that have refilled: they change no decision."""
        refill = self.hello_burst / self.hello_rate
        for ip in [ip for ip, b in self.hellos.items() if now - b.stamp >= refill]:
            del self.hellos[ip]

    def registered(self, ip: str) -> None:
        src = self.sources.get(ip)
        if src is not None and src.pending > 0:
            src.pending -= 1

    def closed(self, ip: str, pending: bool) -> None:
        src = self.sources.get(ip)
        if src is None:
            return
        if pending and src.pending > 0:
            src.pending -= 1
        src.connections -= 1
        if src.connections <= 0:
            del self.sources[ip]

    def forget_if_idle(self, ip: str) -> None:
        """Drop the entry of an address whose connections were all refused."""
        src = self.sources.get(ip)
        if src is not None and src.connections <= 0:
            del self.sources[ip]

    def __len__(self) -> int:
        return len(self.sources)
