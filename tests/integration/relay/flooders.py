"""Hostile relay clients for the abuse tests, run as their own process.

    python flooders.py MODE HOST PORT SECONDS [SOURCE_IP]

Each mode written from docs/relay-protocol.md alone, as a hostile user would,
runs for SECONDS (hard bound) and prints one JSON line of what it did:

* ``nonreader``: registers, never reads, and sends PINGs and frames to
  unknown keys as fast as the relay takes them (every reply it provokes must
  be bounded); reconnects when closed.
* ``ping``: registers and floods PING, reading (and discarding) replies;
  reconnects when closed.
* ``unknown``: registers and floods frames to random unknown keys, reading;
  reconnects when closed.
* ``ping`` and ``unknown`` with two more arguments ON OFF: in bursts of ON
  seconds, OFF seconds apart, each on a fresh registration.
* ``pending``: from SOURCE_IP, keeps as many unauthenticated connections open
  as it can (reopening each as soon as the relay closes it).
* ``expire``: opens COUNT (fifth argument) unauthenticated connections at
  once, spread over SOURCES (sixth) addresses 127.0.1.1.., sends nothing on
  them and waits until the relay has closed every one (its registration
  deadline); reports when the first and the last were closed.
* ``stall``: registers a receiver that never reads and a sender that writes
  bulk frames to it, each followed by a tick to the key given as the fifth
  argument (hex): the ticks' arrival shows how long the sender was held.

A process of its own, so that the flooder's work never shares the test's GIL,
and niced: a real attacker floods from its own host, while here it shares
this machine's two cores with the relay and the honest clients; at normal
priority its own CPU use would be measured as the relay's unfairness.
Loopback only: HOST must be a 127.0.0.0/8 address.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time

from wirekube_agent.relay.link import register
from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f

PENDING_TARGET = 5000

#: Bytes a second of a flood in bursts: ~50,000 frames to unknown keys (25
#: times the relay's budget of 2,000 a second) or ~130,000 PINGs (10 a
#: second allowed), so every burst reaches the relay's limits, while the
#: flooder, sharing this machine's cores with the relay and the honest pair,
#: spends little CPU of its own (a real flooder's CPU is on another host).
BURST_RATE = 2 * 1024 * 1024


def _registered(addr: tuple[str, int], rcvbuf: int | None = None) -> socket.socket:
    s = socket.create_connection(addr, timeout=5)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    register(s, wgkey.generate_private_key())
    return s


def _block(kind: str) -> bytes:
    """~64 KiB of hostile frames of one kind."""
    out = bytearray()
    while len(out) < 64 * 1024:
        if kind in ("ping", "nonreader"):
            out += f.encode_ping(os.urandom(8))
        if kind in ("unknown", "nonreader"):
            out += f.encode_send(os.urandom(31) + b"\x00", b"x" * 32)
    return bytes(out)


def bursts(
    kind: str, addr: tuple[str, int], seconds: float, on: float, off: float
) -> dict[str, object]:
    """``flood`` in bursts: ``on`` seconds flooding on a fresh registration,
    the connection reset (the relay discards what it had not read, so no
    flood work spills over), then ``off`` seconds of nothing; reports each
    burst's (start, end), monotonic, so the test can interleave its baseline
    (the quiet phases) with the flood phases under the same machine load."""
    count = round(seconds / (on + off))
    deadline = time.monotonic() + seconds + on  # a hard bound even on a slow machine
    phases: list[tuple[float, float]] = []
    totals: dict[str, object] = {"bytes_sent": 0, "connects": 0, "refused": 0}
    while len(phases) < count and time.monotonic() < deadline:
        start = time.monotonic()
        one = flood(kind, addr, on, reset=True, rate=BURST_RATE)
        phases.append((start, time.monotonic()))
        for k in ("bytes_sent", "connects", "refused"):
            totals[k] = int(totals[k]) + int(one[k])  # type: ignore[call-overload]
        time.sleep(max(0.0, min(off, deadline - time.monotonic())))
    return {**totals, "bursts": phases}


def flood(
    kind: str,
    addr: tuple[str, int],
    seconds: float,
    reset: bool = False,
    rate: float | None = None,
) -> dict[str, object]:
    """Flood ``kind`` frames for ``seconds``, as fast as the relay takes them
    or at most ``rate`` bytes a second."""
    started = time.monotonic()
    deadline = started + seconds
    blocks = [_block(kind) for _ in range(64)]  # 64k distinct unknown keys
    sent = connects = refused = 0
    codes: dict[int, int] = {}
    reading = kind != "nonreader"
    while time.monotonic() < deadline:
        try:
            s = _registered(addr)
        except Exception:
            refused += 1
            time.sleep(0.05)
            continue
        connects += 1
        s.setblocking(False)
        parser = f.FrameParser()
        b, view, k = 0, memoryview(blocks[0]), 0
        try:
            while time.monotonic() < deadline:
                if rate is not None and sent > rate * (time.monotonic() - started):
                    time.sleep(0.001)
                    continue
                try:
                    n = s.send(view[k:])  # whole frames only: resume where the kernel stopped
                    sent += n
                    k += n
                    if k == len(view):
                        b = (b + 1) % len(blocks)
                        view, k = memoryview(blocks[b]), 0
                except BlockingIOError:
                    time.sleep(0.001)
                if reading:
                    try:
                        data = s.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not data:
                        break
                    parser.feed(data)
                    for ev in parser.events():
                        if isinstance(ev, f.Close):
                            codes[ev.code] = codes.get(ev.code, 0) + 1
        except (ConnectionError, OSError, f.ProtocolError):
            pass
        finally:
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    return {"bytes_sent": sent, "connects": connects, "refused": refused, "close_codes": codes}


def pending(addr: tuple[str, int], seconds: float, source: str) -> dict[str, object]:
    """Hold as many unauthenticated connections from ``source`` as possible."""
    deadline = time.monotonic() + seconds
    sel = selectors.DefaultSelector()
    opened = closed_by_relay = peak = 0
    live: set[socket.socket] = set()

    def open_one() -> None:
        nonlocal opened
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        sel.register(s, selectors.EVENT_READ)
        live.add(s)
        opened += 1

    while time.monotonic() < deadline:
        while len(live) < PENDING_TARGET and time.monotonic() < deadline:
            open_one()
            if len(live) % 200 == 0:
                break
        peak = max(peak, len(live))
        for key, _ in sel.select(timeout=0.01):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                live.discard(s)
                s.close()
                closed_by_relay += 1
    for s in live:
        s.close()
    return {"opened": opened, "closed_by_relay": closed_by_relay, "peak_held": peak}


def expire(addr: tuple[str, int], seconds: float, count: int, sources: int) -> dict[str, object]:
    """Open ``count`` silent connections from ``sources`` addresses together
    and time the relay closing them (monotonic: comparable with the test's)."""
    import resource  # noqa: PLC0415

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    deadline = time.monotonic() + seconds
    sel = selectors.DefaultSelector()
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.1.{1 + i % sources}", 0))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(addr)
        sel.register(s, selectors.EVENT_READ)
    opened_at = time.monotonic()
    closes: list[float] = []
    while len(closes) < count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                closes.append(time.monotonic())
                sel.unregister(s)
                s.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {
        "opened": count,
        "opened_at": opened_at,
        "closed_by_relay": len(closes),
        "first_close": min(closes, default=0.0),
        "last_close": max(closes, default=0.0),
    }


def stall(addr: tuple[str, int], seconds: float, tick_key: bytes) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    receiver_priv = wgkey.generate_private_key()
    receiver = _registered_with(addr, receiver_priv)
    sender = _registered(addr)
    bulk = f.encode_send(wgkey.public_key(receiver_priv), os.urandom(1400)) * 40
    sent = 0
    sender.settimeout(seconds)
    while time.monotonic() < deadline:
        sender.sendall(bulk + f.encode_send(tick_key, b"tick"))
        sent += 1
        time.sleep(0.002)
    receiver.close()
    sender.close()
    return {"rounds": sent}


def _registered_with(addr: tuple[str, int], priv: bytes) -> socket.socket:
    s = socket.create_connection(addr, timeout=5)
    register(s, priv)
    return s


def main() -> None:
    os.nice(10)
    mode, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if not host.startswith("127."):
        raise SystemExit("loopback only")
    addr = (host, port)
    if mode == "pending":
        result = pending(addr, seconds, sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1")
    elif mode == "expire":
        result = expire(addr, seconds, int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "stall":
        result = stall(addr, seconds, bytes.fromhex(sys.argv[5]))
    elif len(sys.argv) > 6:
        result = bursts(mode, addr, seconds, float(sys.argv[5]), float(sys.argv[6]))
    else:
        result = flood(mode, addr, seconds)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
