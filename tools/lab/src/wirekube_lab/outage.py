"""Lost pings and gaps under a continuous ping between lab hosts, measured
from outside the agents (``ping -D -O``): what a key rotation or an agent
handover costs each direction."""

from __future__ import annotations

import itertools
import re
import signal
import time
from dataclasses import dataclass

from wirekube_lab.lab import Lab
from wirekube_lab.processes import LabProcess

PING_INTERVAL_S = 0.1

_REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+) .*time=([0-9.]+) ms")
_NO_ANSWER = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


@dataclass(frozen=True)
class Outage:
    sent: int
    lost: int
    longest_gap_s: float  # between the send times of consecutive answered pings
    lost_at: tuple[float, ...] = ()  # send times of the lost pings (estimated)

    def __str__(self) -> str:
        return f"{self.lost} lost of {self.sent}, longest gap {self.longest_gap_s:.2f}s"

    def episodes(self) -> list[int]:
        """Lost pings per outage: runs of losses less than a second apart."""
        runs: list[int] = []
        last = None
        for t in self.lost_at:
            if last is None or t - last > 1.0:
                runs.append(0)
            runs[-1] += 1
            last = t
        return runs

    def lost_since(self, t0: float) -> str:
        return " ".join(f"{t - t0:+.1f}" for t in self.lost_at)


class Ping:
    """``ping -D -O -i 0.1`` from one lab host to another until stopped."""

    def __init__(self, lab: Lab, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        argv = ["ping", "-n", "-D", "-O", "-i", str(PING_INTERVAL_S), "-W", "2"]
        self.proc: LabProcess = lab.spawn(src, [*argv, lab.address(dst)], name=f"ping-{dst}")

    def interrupt(self) -> None:
        self.proc.signal(signal.SIGINT)

    def result(self) -> Outage:
        try:
            self.proc.wait(10)
        finally:
            self.proc.stop()
        return outage(self.proc.log_text())


def stop_all(pings: dict[tuple[str, str], Ping]) -> dict[tuple[str, str], Outage]:
    """Stop every ping at once (after the last requests' replies: -W 2)."""
    time.sleep(2.0)
    for p in pings.values():
        p.interrupt()
    return {pair: p.result() for pair, p in pings.items()}


def outage(text: str) -> Outage:
    """Lost pings and the longest gap between answers, from ``ping -D -O`` output."""
    replied: dict[int, float] = {}  # seq -> send time
    seen: set[int] = set()
    for line in text.splitlines():
        if m := _REPLY.match(line.strip()):
            seq = int(m.group(2))
            replied.setdefault(seq, float(m.group(1)) - float(m.group(3)) / 1000.0)
            seen.add(seq)
        elif m := _NO_ANSWER.match(line.strip()):
            seen.add(int(m.group(2)))
    if not replied:
        return Outage(len(seen), len(seen), float("inf"))
    first, last = min(seen | replied.keys()), max(seen | replied.keys())
    sent = last - first + 1
    base_seq = min(replied)
    base = replied[base_seq]
    lost = [s for s in range(first, last + 1) if s not in replied]
    times = [replied[s] for s in sorted(replied)]
    # A loss after the last answer is a gap too (until the last request).
    times.append(base + (last - base_seq) * PING_INTERVAL_S)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    lost_at = tuple(base + (s - base_seq) * PING_INTERVAL_S for s in lost)
    return Outage(sent, len(lost), max(gaps, default=0.0), lost_at)
