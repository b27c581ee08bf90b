"""The relay's hot path: one ``asyncio.BufferedProtocol`` per TCP connection.

Written for speed on purpose (STYLE.md rule 9); everything else in the relay
is written for clarity.

* **Preallocated receive buffer.** Each registered connection owns one
  ``bytearray`` (``timers.RECV_BUFFER`` + one maximal frame) handed to the
  transport by ``get_buffer``; the kernel copies straight into it
  (``recv_into``). Before registration a 2 KiB buffer suffices (handshake
  frames are small), so idle or hostile connections cost little memory.
* **In-place parsing and rewriting.** Headers are read by indexing the buffer
  (small ints, no objects). A ``SEND`` frame is turned into the ``RECV`` frame
  the receiver gets by overwriting its type byte and its 32-byte key with the
  sender's registered key, in place; frame size and position do not change.
  The source is therefore always the key the sender *proved*; a client cannot
  spoof it. ``SEND_BATCH`` frames (many packets to one key, see the protocol
  spec) become ``RECV_BATCH`` the same way, without the relay looking inside:
  the per-frame cost is then shared by all packets of the batch.
* **Runs rewritten at once.** Within a run, frames of one size to one peer
  (bulk traffic: full-size packets) have identical headers one stride apart;
  ``uniform_run`` checks and rewrites all of them with one extended-slice
  operation per header byte instead of a Python step per frame.
* **Coalesced writes.** Consecutive frames to the same receiver form a run
  (compared in place with ``bytearray.startswith(key, offset)``); a run is one
  contiguous slice of the receive buffer. Large runs are written directly
  from the buffer (asyncio copies only what the kernel did not take); small
  runs are appended to the receiver's staging buffer and each receiver gets
  one write at the end of the read, so interleaved senders cost one syscall
  per receiver per read rather than one per frame.
* **Bounded memory, backpressure.** Transport write marks are raised
  (``WRITE_HIGH_WATER``). When a receiver's transport is above its
  high-water mark, the sender stops being read until the receiver drains
  (``pause_writing``/``resume_writing``). Above ``DROP_LIMIT`` frames are
  dropped and counted. A receiver that stays paused longer than
  ``STALL_LIMIT`` is "stalled": its senders are released and frames to it are
  dropped, so one slow receiver cannot hold a sender's other flows hostage.
* Per-frame work allocates nothing except on a change of destination (one
  32-byte key copy for the dict lookup).

Before registration the same buffer is parsed with a small frame limit and the
handshake is driven through ``relayproto.handshake``; any protocol error or a
failed proof closes the connection with a logged reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import HandshakeError, ServerHandshake
from wirekube_relay import timers
from wirekube_relay.registry import Registry

if TYPE_CHECKING:
    from wirekube_relay.auth import Authenticator
    from wirekube_relay.stats import RelayStats

log = logging.getLogger(__name__)

_SEND = f.SEND
_DATA_MASK = f.DATA_MASK
_KEY = f.KEY_LEN
_DATA_HDR = f.DATA_OVERHEAD
# Runs of identical headers shorter than this go frame by frame: the batch
# rewrite's fixed cost (~70 slice operations) pays off from about here.
_UNIFORM_MIN = 8


@dataclass
class Limits:
    max_payload: int = timers.DEFAULT_MAX_PAYLOAD
    keepalive: float = timers.KEEPALIVE_INTERVAL
    dead_timeout: float = timers.DEAD_TIMEOUT
    registration_deadline: float = timers.REGISTRATION_DEADLINE
    max_pending: int = timers.MAX_PENDING
    max_connections: int = timers.MAX_CONNECTIONS
    stall_limit: float = timers.STALL_LIMIT


@dataclass
class Context:
    """What every connection shares: registry, admission, counters, limits."""

    loop: asyncio.AbstractEventLoop
    auth: Authenticator
    stats: RelayStats
    limits: Limits
    registry: Registry[RelayConnection] = field(default_factory=Registry)
    connections: set[RelayConnection] = field(default_factory=set)
    pending: int = 0
    dirty: list[RelayConnection] = field(default_factory=list)


class RelayConnection(asyncio.BufferedProtocol):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.max_payload = f.MAX_HANDSHAKE_PAYLOAD
        # small until registered: unauthenticated connections cost ~2 KiB each
        self.buf = bytearray(timers.HANDSHAKE_BUFFER)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.transport: asyncio.Transport | None = None
        self.key: bytes | None = None
        self.handshake: ServerHandshake | None = ctx.auth.new_handshake()
        self.remote = "?"
        self.created = ctx.loop.time()
        self.registered_at = 0.0
        self.closing = False
        # activity: bumped per read; the sweeper compares it between sweeps
        self.rx_reads = 0
        self.last_seen_reads = -1
        self.idle_since = self.created
        self.pinged = False
        # per-connection counters (frames/bytes received from / delivered to it)
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        # backpressure
        self.writing_paused = False
        self.write_paused_at = 0.0
        self.stalled = False
        self.reading_paused = False
        self.blocked_on: set[RelayConnection] = set()
        self.waiters: set[RelayConnection] = set()
        # small runs to this connection, written once per sender read
        self.stage = bytearray()
        self.staged = False
        self.peer_gone_at: dict[bytes, float] = {}

    # --- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        ctx.stats.connections_total += 1
        ctx.connections.add(self)
        ctx.pending += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(timers.WRITE_HIGH_WATER, timers.WRITE_LOW_WATER)
        if (
            len(ctx.connections) > ctx.limits.max_connections
            or ctx.pending > ctx.limits.max_pending
        ):
            self.fail("overloaded", f.CLOSE_OVERLOADED, "too many connections")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mv[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.rx_reads += 1
        try:
            if self.key is not None:
                self.forward()
            else:
                self.drive_handshake()
        except f.ProtocolError as exc:
            self.fail("protocol-error", exc.code, str(exc))
            return
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = 0
        elif len(self.buf) - end < f.HEADER_LEN + self.max_payload:
            # move the partial frame to the front (at most one frame, rare)
            n = end - start
            self.buf[0:n] = bytes(self.mv[start:end])
            self.start, self.end = 0, n

    def eof_received(self) -> bool:
        return False  # close the transport

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.write_paused_at = self.ctx.loop.time()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.stalled = False
        self.release_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        self.closing = True
        ctx.connections.discard(self)
        if self.key is None:
            ctx.pending -= 1
        else:
            ctx.registry.unregister(self.key, self)
        self.release_waiters()
        for dst in self.blocked_on:
            dst.waiters.discard(self)
        self.blocked_on.clear()
        self.stage = bytearray()
        self.buf = bytearray()
        self.mv = memoryview(self.buf)

    # --- hot path ------------------------------------------------------------

    def forward(self) -> None:
        buf = self.buf
        i = self.start
        end = self.end
        src = self.key
        maxp = self.max_payload
        table = self.ctx.registry.table
        run_key: bytes | None = None
        run_dst: RelayConnection | None = None
        run_start = i
        run_frames = 0
        no_batch_before = i
        try:
            while end - i >= 3:
                n = (buf[i + 1] << 8) | buf[i + 2]
                if n > maxp:
                    raise f.ProtocolError(
                        f"frame of {n} bytes exceeds limit {maxp}", f.CLOSE_FRAME_TOO_LARGE
                    )
                j = i + 3 + n
                if j > end:
                    break
                t = buf[i]
                if t & _DATA_MASK == _SEND and n >= _KEY:  # SEND or SEND_BATCH
                    if run_key is None or not buf.startswith(run_key, i + 3):
                        if run_frames:
                            self.emit(run_dst, run_key, run_start, i, run_frames)  # type: ignore[arg-type]
                        run_key = bytes(buf[i + 3 : i + 35])
                        run_dst = table.get(run_key)
                        run_start = i
                        run_frames = 0
                    elif (
                        i >= no_batch_before
                        and end - i >= _UNIFORM_MIN * (j - i)
                        and buf[j + 2] == buf[i + 2]
                        and buf[j + 1] == buf[i + 1]
                    ):
                        # The run goes on with frames of one size: rewrite the
                        # frames with this very header all at once.
                        m = self.uniform_run(i, j - i, (end - i) // (j - i))
                        if m >= _UNIFORM_MIN:
                            run_frames += m
                            i += m * (j - i)
                            continue
                        # Too few agree; no later start inside them does better.
                        no_batch_before = i + m * (j - i)
                    buf[i] = t | 1  # -> RECV / RECV_BATCH
                    buf[i + 3 : i + 35] = src  # type: ignore[assignment]
                    run_frames += 1
                else:
                    if run_frames:
                        self.emit(run_dst, run_key, run_start, i, run_frames)  # type: ignore[arg-type]
                        run_frames = 0
                    run_key = None
                    self.start = j
                    self.control(t, i, j)
                    if self.closing:
                        return
                i = j
            if run_frames:
                self.emit(run_dst, run_key, run_start, i, run_frames)  # type: ignore[arg-type]
            self.start = i
        finally:
            dirty = self.ctx.dirty
            if dirty:
                for dst in dirty:
                    dst.flush_stage()
                dirty.clear()

    def uniform_run(self, i: int, stride: int, most: int) -> int:
        """How many of the ``most`` frames from ``i`` on carry exactly the header
        of the first (type, length, destination: one stride apart); those are
        then rewritten as RECV frames from us, all at once. Fewer than
        ``_UNIFORM_MIN`` (at least 1): how many agree, and nothing is rewritten.

        Bulk traffic is mostly runs of full-size packets to one peer. Walking
        them frame by frame costs about a microsecond each in Python; here the
        work per run is a few dozen C-level extended-slice operations, one per
        header byte (``buf[k:stop:stride]`` is that byte of every frame)."""
        buf = self.buf
        stop = i + most * stride
        m = most
        for k in range(_DATA_HDR):
            column = buf[i + k : stop : stride]
            same = m - len(column.lstrip(column[:1]))  # leading frames agreeing at byte k
            if same < m:
                if same < _UNIFORM_MIN:
                    return same
                m = same
                stop = i + m * stride
        buf[i:stop:stride] = bytes((buf[i] | 1,)) * m  # SEND(_BATCH) -> RECV(_BATCH)
        src = self.key
        assert src is not None
        for k in range(_KEY):  # stamp the sender's proved key into every frame
            buf[i + 3 + k : stop : stride] = src[k : k + 1] * m
        return m

    def emit(self, dst: RelayConnection | None, key: bytes, a: int, b: int, frames: int) -> None:
        """Deliver frames ``buf[a:b]`` (already rewritten) to ``dst``, or count a drop."""
        nbytes = b - a
        self.frames_in += frames
        self.bytes_in += nbytes
        stats = self.ctx.stats
        if dst is None:
            stats.drops["no-peer"] += frames
            self.peer_gone(key)
            return
        tr = dst.transport
        if dst.closing or tr is None or tr.is_closing():
            stats.drops["receiver-closed"] += frames
            self.peer_gone(key)
            return
        if tr.get_write_buffer_size() + len(dst.stage) > timers.DROP_LIMIT:
            stats.drops["queue-full"] += frames
            return
        if dst.staged:
            dst.stage += self.mv[a:b]
        elif nbytes >= timers.DIRECT_WRITE_MIN:
            tr.write(self.mv[a:b])
        else:
            dst.stage += self.mv[a:b]
            dst.staged = True
            self.ctx.dirty.append(dst)
        stats.frames_forwarded += frames
        stats.bytes_forwarded += nbytes
        dst.frames_out += frames
        dst.bytes_out += nbytes
        if dst.writing_paused and not dst.stalled and dst not in self.blocked_on:
            self.blocked_on.add(dst)
            dst.waiters.add(self)
            if not self.reading_paused and self.transport is not None:
                self.reading_paused = True
                self.transport.pause_reading()

    def flush_stage(self) -> None:
        self.staged = False
        tr = self.transport
        if not self.closing and tr is not None and not tr.is_closing():
            tr.write(self.stage)  # asyncio copies what the kernel did not take
        del self.stage[:]

    def release_waiters(self) -> None:
        for w in self.waiters:
            w.blocked_on.discard(self)
            if not w.blocked_on and w.reading_paused and not w.closing and w.transport:
                w.reading_paused = False
                w.transport.resume_reading()
        self.waiters.clear()

    def peer_gone(self, key: bytes) -> None:
        now = self.ctx.loop.time()
        last = self.peer_gone_at.get(key)
        if last is not None and now - last < timers.PEER_GONE_INTERVAL:
            return
        if len(self.peer_gone_at) > 1024:
            self.peer_gone_at.clear()
        self.peer_gone_at[key] = now
        self.send_control(f.encode_peer_gone(key))

    # --- control frames ------------------------------------------------------

    def control(self, ftype: int, i: int, j: int) -> None:
        if ftype == f.PING:
            ev = f.decode_payload(ftype, bytes(self.mv[i + 3 : j]))
            assert isinstance(ev, f.Ping)
            self.send_control(f.encode_pong(ev.data))
        elif ftype == f.PONG:
            f.decode_payload(ftype, bytes(self.mv[i + 3 : j]))
        elif ftype == f.CLOSE:
            ev = f.decode_payload(ftype, bytes(self.mv[i + 3 : j]))
            assert isinstance(ev, f.Close)
            self.close("client-close", None, ev.reason or "closed by client")
        else:
            raise f.ProtocolError(f"unexpected frame type 0x{ftype:02x} after registration")

    def send_control(self, data: bytes) -> None:
        tr = self.transport
        if tr is not None and not self.closing and not tr.is_closing():
            if self.staged:  # keep ordering with frames staged in this read
                self.stage += data
            else:
                tr.write(data)

    # --- registration ----------------------------------------------------------

    def drive_handshake(self) -> None:
        ctx = self.ctx
        hs = self.handshake
        assert hs is not None
        while True:
            stop = f.scan(self.buf, self.start, self.end, self.max_payload)
            if stop < 0:
                return
            ftype = self.buf[self.start]
            ev = f.decode_payload(ftype, bytes(self.mv[self.start + 3 : stop]))
            self.start = stop
            try:
                if isinstance(ev, f.Hello):
                    assert self.transport is not None
                    self.transport.write(hs.on_hello(ev, _wall_time()))
                elif isinstance(ev, f.Proof):
                    key = hs.on_proof(ev)
                    ctx.auth.admit(key)
                    self.registered(key)
                    if self.start < self.end:
                        self.forward()
                    return
                elif isinstance(ev, f.Close):
                    self.close("client-close", None, ev.reason)
                    return
                else:
                    raise HandshakeError("unexpected-frame", f.CLOSE_PROTOCOL_ERROR)
            except HandshakeError as exc:
                ctx.stats.auth_failures[exc.reason] += 1
                self.fail(f"auth:{exc.reason}", exc.code, f"registration failed: {exc.reason}")
                return

    def registered(self, key: bytes) -> None:
        ctx = self.ctx
        self.key = key
        self.handshake = None
        self.max_payload = ctx.limits.max_payload
        rest = bytes(self.mv[self.start : self.end])
        self.buf = bytearray(timers.RECV_BUFFER + f.HEADER_LEN + f.MAX_PAYLOAD)
        self.mv = memoryview(self.buf)
        self.buf[: len(rest)] = rest
        self.start, self.end = 0, len(rest)
        ctx.pending -= 1
        ctx.stats.registrations += 1
        self.registered_at = ctx.loop.time()
        self.idle_since = self.registered_at
        old = ctx.registry.register(key, self)
        assert self.transport is not None
        self.transport.write(
            f.encode_ok(int(ctx.limits.keepalive), self.max_payload, ctx.auth.relay_id)
        )
        log.info("event=registered key=%s remote=%s", wgkey.encode(key), self.remote)
        if old is not None:
            old.close("replaced", f.CLOSE_REPLACED, "replaced by a newer registration")

    # --- closing ---------------------------------------------------------------

    def fail(self, reason: str, code: int, message: str) -> None:
        log.warning("event=reject remote=%s reason=%s detail=%r", self.remote, reason, message)
        self.close(reason, code, message)

    def close(self, reason: str, code: int | None, message: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.ctx.stats.closes[reason.split(":", maxsplit=1)[0]] += 1
        if self.key is not None:
            log.info(
                "event=close key=%s remote=%s reason=%s",
                wgkey.encode(self.key),
                self.remote,
                reason,
            )
            self.ctx.registry.unregister(self.key, self)
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        if code is not None:
            if self.staged:
                self.flush_stage_now()
            tr.write(f.encode_close(code, message))
        tr.close()

    def flush_stage_now(self) -> None:
        if self.transport is not None and self.stage:
            self.transport.write(self.stage)
        del self.stage[:]


def _wall_time() -> float:
    """Wall clock for the challenge timestamp (bound into the transcript)."""
    return time.time()
