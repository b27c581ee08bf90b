"""Refusal logs, rate-limited and summarised.

Every refused or failed connection is counted (admin/stats.py, by reason); a log
line for each would let a flood of thousands a second turn into a log flood
(it did: 61,000 lines in 12 s). ``RefusalLog`` writes the first
``per_interval`` lines of each reason in an interval, then nothing for that
reason until the interval ends, when one summary line says how many were not
written. Pure apart from the logger it is handed; ``now`` is an argument.
"""

from __future__ import annotations

import logging
from collections import Counter

from wirekube_relay import timers
from wirekube_relay.limits import bounds as limits


class RefusalLog:
    def __init__(
        self,
        logger: logging.Logger,
        per_interval: int = limits.REFUSAL_LOG_LINES,
        interval: float = timers.REFUSAL_LOG_INTERVAL,
    ) -> None:
        self.log = logger
        self.per_interval = per_interval
        self.interval = interval
        self.window_start = 0.0
        self.written: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()

    def refused(self, now: float, reason: str, remote: str, detail: str) -> None:
        self.roll(now)
        if self.written[reason] < self.per_interval:
            self.written[reason] += 1
            self.log.warning("event=reject remote=%s reason=%s detail=%r", remote, reason, detail)
        else:
            self.suppressed[reason] += 1

    def roll(self, now: float) -> None:
        """End the interval if it is over: one summary line per suppressed reason."""
        if now - self.window_start < self.interval:
            return
        for reason, n in sorted(self.suppressed.items()):
            self.log.warning(
                "event=reject-summary reason=%s not_logged=%d interval_s=%.0f",
                reason,
                n,
                self.interval,
            )
        self.written.clear()
        self.suppressed.clear()
        self.window_start = now
