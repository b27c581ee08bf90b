"""Token buckets: per source IP plus one global cap. Pure (``now`` is an argument).

``SourceLimiter.allow(ip, now)`` spends one token from the source's bucket
and one from the global bucket; either being empty refuses the request, and
the caller records which one (``Verdict``). The per-source table is an LRU
``OrderedDict`` with a hard size bound, and ``prune(now)`` drops buckets that
have been idle long enough to be full again anyway -- forgetting them changes
no decision.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    ALLOW = "allow"
    SOURCE_LIMITED = "rate-limited"
    GLOBAL_LIMITED = "global-limit"


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class SourceLimiter:
    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        global_rate: float,
        global_burst: float,
        max_sources: int,
        idle_seconds: float,
        now: float,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_sources
        self._idle = idle_seconds
        self._sources: OrderedDict[object, TokenBucket] = OrderedDict()
        self._global = TokenBucket.full(global_rate, global_burst, now)

    def __len__(self) -> int:
        return len(self._sources)

    def allow(self, source: object, now: float) -> Verdict:
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = TokenBucket.full(self._rate, self._burst, now)
            self._sources[source] = bucket
            if len(self._sources) > self._max:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        if not bucket.take(now):
            return Verdict.SOURCE_LIMITED
        if not self._global.take(now):
            # Give the source its token back: the refusal was not its fault.
            bucket.tokens += 1
            return Verdict.GLOBAL_LIMITED
        return Verdict.ALLOW

    def prune(self, now: float) -> int:
        """Forget buckets idle for ``idle_seconds``; returns how many were dropped."""
        dropped = 0
        while self._sources:
            key, bucket = next(iter(self._sources.items()))
            if now - bucket.stamp < self._idle:
                break
            del self._sources[key]
            dropped += 1
        return dropped
