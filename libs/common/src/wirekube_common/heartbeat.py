"""Is an asyncio event loop still turning? A liveness fact for /livez.

A task stamps the monotonic clock every ``HEARTBEAT_INTERVAL_S`` from inside
the loop; the metrics server's thread reads the stamp. A loop blocked by a
stuck call (or a wedged forwarder) stops stamping, and ``check`` fails once the
stamp is older than the bound. Reading a float written by another thread is
safe in CPython; no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# One stamp a second costs nothing and resolves a stall to about a second.
HEARTBEAT_INTERVAL_S = 1.0
# A responsive loop never goes 10 s without running a ready task: every
# service's longest synchronous step (a metrics collection, a batch of
# forwarded frames) is milliseconds. Kubelet probes (period 10 s, 3 failures)
# then restart a wedged process within about 40 s.
LOOP_STALL_S = 10.0


class Heartbeat:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: float | None = None

    async def run(self) -> None:
        """The supervisor task: stamps until cancelled."""
        while True:
            self.last = self.clock()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    def check(self, now: float | None = None, bound: float = LOOP_STALL_S) -> tuple[bool, str]:
        if self.last is None:
            return True, "event loop starting"
        age = (self.clock() if now is None else now) - self.last
        if age > bound:
            return False, f"event loop unresponsive for {age:.0f}s (bound {bound:.0f}s)"
        return True, f"event loop responsive ({age:.1f}s ago)"
