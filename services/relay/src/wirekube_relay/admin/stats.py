"""Relay-wide counters as plain integers (read by admin/metrics.py and admin/service.py).

The hot path increments ordinary ints on one object: a Prometheus counter per
frame would take a lock per increment. Exporters read these at scrape time.
Reads from other threads are racy only in the benign sense (a scrape may miss
the last few increments).
"""

from __future__ import annotations

import time
from collections import Counter

DROP_REASONS = ("no-peer", "queue-full", "receiver-closed")


class RelayStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.auth_failures: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.registrations = 0
        self.connections_total = 0
        # control frames not sent, by reason (peer-gone-rate, queue-full)
        self.control_dropped: Counter[str] = Counter()
        # receivers marked stalled; connections paused for their own rate limit
        self.stalls = 0
        self.throttles = 0
        # replica mesh: frames/bytes sent to other replicas (a part of
        # frames_forwarded) and received from them for local clients
        self.mesh_frames_out = 0
        self.mesh_bytes_out = 0
        self.mesh_frames_in = 0
        self.mesh_bytes_in = 0
        self.mesh_links_established = 0
        self.mesh_auth_failures: Counter[str] = Counter()
        self.mesh_closes: Counter[str] = Counter()

    def uptime(self) -> float:
        return time.monotonic() - self.started
