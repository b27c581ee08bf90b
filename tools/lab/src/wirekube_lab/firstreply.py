"""When did each destination first answer? Echo requests every 0.1 s from agent start.

The lab's time-to-reachable figure. Rounds of ``ping`` processes measure it
coarsely: a round waits a full reply timeout for the slowest pair, spawns a
process per pair on the cores the agents are starting on, and one ICMP error
(a "net unreachable" from the internet before the tunnel exists) ends a
``ping`` for good. One process per node, started with the agents, sending to
every other node on one raw socket and noting each first reply, has none of
these faults.

Run inside a node's namespace:
``python -m wirekube_lab.firstreply SECONDS ADDRESS...``; prints one JSON
line per destination when it first answers (``{"dst": ..., "at": epoch}``)
and exits when all have answered or after SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import time
from pathlib import Path

from wirekube_common.gwhealth.icmp import IcmpError, decode, encode_echo_request, strip_ipv4_header

INTERVAL_S = 0.1


def watch(destinations: list[str], seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    pending = set(destinations)
    deadline = time.monotonic() + seconds
    seq, next_send = 0, 0.0
    while pending and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            seq += 1
            request = encode_echo_request(ident, seq, b"wirekube-lab-first-reply")
            for dst in pending:
                # No route yet (the agent has not set up the tunnel): next round.
                with contextlib.suppress(OSError):
                    sock.sendto(request, (dst, 0))
            next_send = now + INTERVAL_S
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if not ready:
            continue
        packet, _ = sock.recvfrom(65535)
        try:
            source, message = strip_ipv4_header(packet)
            echo = decode(message)
        except IcmpError:
            continue  # errors from routers, other processes' traffic
        if echo.is_reply and echo.ident == ident and source in pending:
            pending.discard(source)
            print(json.dumps({"dst": source, "at": time.time()}), flush=True)


def first_replies(log: Path) -> dict[str, float]:
    """Destination -> epoch time of its first reply, from a watcher's output."""
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            out[str(record["dst"])] = float(record["at"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


if __name__ == "__main__":
    watch(sys.argv[2:], float(sys.argv[1]))
