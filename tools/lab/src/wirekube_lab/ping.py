"""Ping results: parse iputils ``ping -n`` output into a typed result (pure).

``Lab.ping`` runs iputils ``ping`` inside a namespace; this module only reads
its text. Per-reply round-trip times come from the ``icmp_seq=N ... time=X
ms`` lines (duplicates are ignored), the sent count from the summary line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REPLY = re.compile(r"icmp_seq=(\d+)\b.*?time=([0-9.]+) ms")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass(frozen=True)
class PingResult:
    destination: str
    sent: int
    received: int
    rtts_ms: tuple[float, ...]
    replied_seqs: tuple[int, ...]

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss(self) -> float:
        return 1.0 if self.sent == 0 else self.lost / self.sent

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent

    @property
    def rtt_avg_ms(self) -> float | None:
        return sum(self.rtts_ms) / len(self.rtts_ms) if self.rtts_ms else None

    @property
    def rtt_max_ms(self) -> float | None:
        return max(self.rtts_ms) if self.rtts_ms else None

    @property
    def rtt_min_ms(self) -> float | None:
        return min(self.rtts_ms) if self.rtts_ms else None


def parse_ping(destination: str, output: str) -> PingResult:
    seen: dict[int, float] = {}
    for line in output.splitlines():
        if "DUP!" in line:
            continue
        match = _REPLY.search(line)
        if match:
            seen.setdefault(int(match.group(1)), float(match.group(2)))
    summary = _SUMMARY.search(output)
    sent = int(summary.group(1)) if summary else len(seen)
    received = len(seen)
    seqs = tuple(sorted(seen))
    return PingResult(
        destination=destination,
        sent=sent,
        received=received,
        rtts_ms=tuple(seen[s] for s in seqs),
        replied_seqs=seqs,
    )
