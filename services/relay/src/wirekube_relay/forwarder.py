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
* **Interleaved blocks sorted out at once.** Frames of one size to changing
  peers (a node sending to many at once) are handled a block at a time by
  ``scatter``: keys sliced out in one comprehension, headers rewritten a
  column at a time, frames grouped per receiver in arrival order. Frame by
  frame this cost 1.5 microseconds each; the block way about a third.
* **Coalesced writes.** Consecutive frames to the same receiver form a run
  (compared in place with ``bytearray.startswith(key, offset)``); a run is one
  contiguous slice of the receive buffer. Large runs are written directly
  from the buffer (asyncio copies only what the kernel did not take); small
  runs go to the receiver's ``Stage``, written once every connection that
  was ready in this loop round has been read (``Context.schedule_flush``),
  so a receiver gets one write (one wake-up) per round however many senders
  and frames fed it. The checks on a receiver (gone, closing, queue full,
  paused) are made once per read (``admit``).
* **Bounded memory, backpressure.** Transport write marks are raised
  (``WRITE_HIGH_WATER``). When a receiver's transport is above its
  high-water mark, the sender stops being read until the receiver drains
  (``pause_writing``/``resume_writing``). Above ``DROP_LIMIT`` frames are
  dropped and counted. A receiver that stays paused longer than
  ``STALL_LIMIT`` is "stalled": its senders are released and frames to it are
  dropped, so one slow receiver cannot hold a sender's other flows hostage.
* Within a run to one peer, per-frame work allocates nothing; a change of
  destination costs one 32-byte key copy for the dict lookup (in a scattered
  block, that and a memoryview per frame).

* **Bounded under abuse, off the hot path** (numbers and reasons in
  limits/bounds.py): per-source accounting at accept and HELLO (limits/sources.py); a
  stall timer per pause releases senders ``stall_limit`` after a receiver
  stopped draining; PINGs and lookups of unknown keys are budgeted per
  connection (token buckets made on first use; the unknown-key charge is one
  check per read that had any), and a connection over budget is not read for
  a while (``throttle``), then closed; control replies are dropped, not
  queued, for a client that does not read. Forwarding to registered keys
  pays none of this.

Before registration the same buffer is parsed with a small frame limit and the
handshake is driven through ``relayproto.handshake``; any protocol error or a
failed proof closes the connection with a reason, logged rate-limited
(limits/refusals.py).
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
from wirekube_relay.client.registry import Registry
from wirekube_relay.limits import bounds as lim
from wirekube_relay.limits.bounds import Limits
from wirekube_relay.limits.refusals import RefusalLog
from wirekube_relay.limits.sources import SourceTable, TokenBucket

if TYPE_CHECKING:
    from wirekube_relay.admin.stats import RelayStats
    from wirekube_relay.client.auth import Authenticator
    from wirekube_relay.mesh.pool import Mesh

log = logging.getLogger(__name__)

_SEND = f.SEND
_DATA_MASK = f.DATA_MASK
_KEY = f.KEY_LEN
_DATA_HDR = f.DATA_OVERHEAD
# First byte of a replica link (mesh.proto.MESH_HELLO); never a client frame type.
_MESH_HELLO = 0x40
#: Free bytes kept before the first frame of every read: a replica link
#: writes its MESH_DATA header (39 bytes) there instead of copying the run.
HEADROOM = 64
# Runs of identical headers shorter than this go frame by frame: the batch
# rewrite's fixed cost (~70 slice operations) pays off from about here.
_UNIFORM_MIN = 8


__all__ = ["Context", "Limits", "RelayConnection", "Stage"]


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
    # connections with staged frames; written once the loop has read every
    # connection that was ready (see ``schedule_flush``)
    dirty: list[RelayConnection] = field(default_factory=list)
    flush_scheduled: bool = False
    sources: SourceTable = field(default_factory=SourceTable)
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog(log))
    # the replica mesh (mesh/pool.py), when the relay has a mesh secret
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        self.sources.max_pending_per_source = self.limits.max_pending_per_source
        self.sources.max_connections_per_source = self.limits.max_connections_per_source

    def schedule_flush(self) -> None:
        """Write the staged frames after this round of reads.

        A callback scheduled now runs once the loop has dispatched every read
        that was ready with this one, so a receiver that several senders
        wrote to gets one write (one wake-up of its reader) per round instead
        of one per sender read."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty = self.dirty
        for dst in dirty:
            dst.flush_stage()
        dirty.clear()


class Stage:
    """Frames waiting for one write to a connection.

    The buffer is kept between writes: emptied with ``del b[:]``, a bytearray
    gives its memory back, and refilling it reallocated and faulted in fresh
    pages on every round (the largest single cost of interleaved forwarding
    in a profile). Capacity above ``STAGE_KEEP`` is let go after a write, and
    all of it once a sweep interval passes without one (``trim``): a relay
    with thousands of peers keeps buffers only for those being written to."""

    __slots__ = ("buf", "size", "writes")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.size = 0
        self.writes = 0  # since the last trim

    def __len__(self) -> int:
        return self.size

    def add(self, data: bytes | bytearray | memoryview) -> None:
        end = self.size + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(max(end, 2 * len(self.buf)) - len(self.buf)))
        self.buf[self.size : end] = data
        self.size = end

    def write_to(self, transport: asyncio.Transport) -> None:
        """Write what is staged and empty the stage (asyncio copies whatever
        the kernel did not take, so the buffer is free for reuse at once)."""
        if self.size:
            transport.write(memoryview(self.buf)[: self.size])
            self.writes += 1
        self.clear()

    def trim(self) -> None:
        """Let the buffer go if nothing was written since the last trim."""
        if not self.writes and not self.size and self.buf:
            self.buf = bytearray()
        self.writes = 0

    def clear(self) -> None:
        self.size = 0
        if len(self.buf) > timers.STAGE_KEEP:
            self.buf = bytearray()


class RelayConnection(asyncio.BufferedProtocol):
    # A replica link (mesh.MeshLink) is a sink too: runs to it are wrapped.
    tunnel = False

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
        self.ip = ""
        self.source_counted = False
        self.created = ctx.loop.time()
        self.registered_at = 0.0
        self.closing = False
        # activity: bumped per read; the sweeper compares it between sweeps
        self.rx_reads = 0
        self.last_seen_reads = -1
        self.idle_since = self.created
        self.pinged = False
        # nothing received for a while (sweep): a newer registration of our
        # key on another replica then takes our frames (mesh.Mesh.route)
        self.quiet = False
        # per-connection counters (frames/bytes received from / delivered to it)
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        # backpressure
        self.writing_paused = False
        self.write_paused_at = 0.0
        self.stall_timer: asyncio.TimerHandle | None = None
        self.stalled = False
        self.reading_paused = False
        # rate limits on what a client can make the relay do (limits/bounds.py),
        # created on first use: most connections never need them
        self.pings: TokenBucket | None = None
        self.gone_notices: TokenBucket | None = None
        self.no_peer: TokenBucket | None = None
        self.no_peer_keys = 0
        self.strikes = 0
        self.strike_at = 0.0
        self.throttled = False
        self.blocked_on: set[RelayConnection] = set()
        self.waiters: set[RelayConnection] = set()
        # small runs to this connection, written once per loop round
        self.stage = Stage()
        self.staged = False
        self.peer_gone_at: dict[bytes, float] = {}
        # per read: destination key -> its connection, or why frames to it drop
        self.sinks: dict[bytes, RelayConnection | str] = {}
        self.dropped_frames = 0
        self.dropped_bytes = 0
        # our key's bytes, each repeated m times: ``stamp``'s columns, by m
        self.key_columns: dict[int, list[bytes]] = {}

    # --- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.ip = str(peer[0]) if peer else "?"
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
            return
        refused = ctx.sources.opened(self.ip)
        if refused is not None:
            ctx.sources.forget_if_idle(self.ip)
            self.fail(f"overloaded:{refused}", f.CLOSE_OVERLOADED, "too many connections")
            return
        self.source_counted = True

    def release_source(self) -> None:
        """Give back this connection's per-source slots (idempotent). Called on
        close, and by whoever takes the transport over from this protocol
        (a replica link adopted by the mesh) so that its address's count
        does not keep a connection that is no longer ours."""
        if self.source_counted:
            self.source_counted = False
            self.ctx.sources.closed(self.ip, pending=self.key is None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mv[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.rx_reads += 1
        self.process()

    def process(self) -> None:
        """Handle the complete frames in the buffer; keep a partial one."""
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
            self.start = self.end = HEADROOM
        elif len(self.buf) - end < f.HEADER_LEN + self.max_payload:
            # move the partial frame to the front (at most one frame, rare)
            n = end - start
            self.buf[HEADROOM : HEADROOM + n] = bytes(self.mv[start:end])
            self.start, self.end = HEADROOM, HEADROOM + n

    def eof_received(self) -> bool:
        return False  # close the transport

    def pause_writing(self) -> None:
        self.writing_paused = True
        loop = self.ctx.loop
        self.write_paused_at = loop.time()
        # its own timer, not the 1 s sweep: senders held by us are released
        # stall_limit after the pause, not up to a sweep interval later
        self.stall_timer = loop.call_later(self.ctx.limits.stall_limit, self.mark_stalled)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.stalled = False
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        self.release_waiters()

    def mark_stalled(self) -> None:
        """Still above the high-water mark ``stall_limit`` after the pause:
        release our senders; frames to us are dropped until we drain."""
        self.stall_timer = None
        if not self.writing_paused or self.closing or self.stalled:
            return
        self.stalled = True
        self.ctx.stats.stalls += 1
        log.info("event=receiver-stalled key=%s remote=%s", _key_text(self.key), self.remote)
        self.release_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        self.closing = True
        ctx.connections.discard(self)
        if self.key is None:
            ctx.pending -= 1
        else:
            ctx.registry.unregister(self.key, self)
        self.release_source()
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        self.release_waiters()
        for dst in self.blocked_on:
            dst.waiters.discard(self)
        self.blocked_on.clear()
        self.stage = Stage()
        self.buf = bytearray()
        self.mv = memoryview(self.buf)

    # --- hot path ------------------------------------------------------------

    def forward(self) -> None:
        buf = self.buf
        i = self.start
        end = self.end
        src = self.key
        maxp = self.max_payload
        run_key: bytes | None = None
        run_start = i
        run_frames = 0
        no_batch_before = i
        no_scatter_before = i
        frames_before, bytes_before = self.frames_in, self.bytes_in
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
                # SEND or SEND_BATCH (a batch with no entry is refused in control)
                if t & _DATA_MASK == _SEND and (n > _KEY or (t == _SEND and n == _KEY)):
                    if run_key is None or not buf.startswith(run_key, i + 3):
                        if run_frames:
                            self.deliver(run_key, self.mv[run_start:i], run_frames, run_start)  # type: ignore[arg-type]
                            run_frames = 0
                        stride = j - i
                        if (
                            i >= no_scatter_before
                            and end - i >= _UNIFORM_MIN * stride
                            and buf[j + 2] == buf[i + 2]
                            and buf[j + 1] == buf[i + 1]
                            and buf[j] == t
                            and not buf.startswith(buf[i + 3 : i + 35], j + 3)
                        ):
                            # Frames of one size to changing destinations:
                            # sort a whole block of them out at once.
                            m = self.agreeing(i, stride, (end - i) // stride, 3)
                            if m >= _UNIFORM_MIN:
                                self.scatter(i, stride, m)
                                i += m * stride
                                run_key = None
                                continue
                            no_scatter_before = i + m * stride
                        run_key = bytes(buf[i + 3 : i + 35])
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
                        self.deliver(run_key, self.mv[run_start:i], run_frames, run_start)  # type: ignore[arg-type]
                        run_frames = 0
                    run_key = None
                    self.start = j
                    self.control(t, i, j)
                    if self.closing or self.throttled:
                        return  # throttled: the rest waits in the buffer
                i = j
            if run_frames:
                self.deliver(run_key, self.mv[run_start:i], run_frames, run_start)  # type: ignore[arg-type]
            self.start = i
        finally:
            self.count(self.frames_in - frames_before, self.bytes_in - bytes_before)
            self.sinks.clear()
            if self.ctx.dirty:
                self.ctx.schedule_flush()
            if self.no_peer_keys:
                self.charge_no_peer()

    def uniform_run(self, i: int, stride: int, most: int) -> int:
        """How many of the ``most`` frames from ``i`` on carry exactly the header
        of the first (type, length, destination: one stride apart); those are
        then rewritten as RECV frames from us, all at once. Fewer than
        ``_UNIFORM_MIN`` (at least 1): how many agree, and nothing is rewritten.

        Bulk traffic is mostly runs of full-size packets to one peer. Walking
        them frame by frame costs about a microsecond each in Python; here the
        work per run is a few dozen C-level extended-slice operations, one per
        header byte (``buf[k:stop:stride]`` is that byte of every frame)."""
        m = self.agreeing(i, stride, most, _DATA_HDR)
        if m >= _UNIFORM_MIN:
            self.stamp(i, stride, m)
        return m

    def stamp(self, i: int, stride: int, m: int) -> None:
        """Rewrite ``m`` data frames one stride apart from ``i`` on as RECV frames
        from us: the type column, then the key one column (byte) at a time."""
        buf = self.buf
        stop = i + m * stride
        buf[i:stop:stride] = bytes((buf[i] | 1,)) * m  # SEND(_BATCH) -> RECV(_BATCH)
        columns = self.key_columns.get(m)
        if columns is None:
            src = self.key
            assert src is not None
            if len(self.key_columns) >= 8:
                self.key_columns.clear()
            columns = self.key_columns[m] = [src[k : k + 1] * m for k in range(_KEY)]
        for k in range(_KEY):
            buf[i + 3 + k : stop : stride] = columns[k]

    def agreeing(self, i: int, stride: int, most: int, width: int) -> int:
        """How many of the ``most`` frames from ``i`` on (one stride apart) share
        the first frame's first ``width`` header bytes; once fewer than
        ``_UNIFORM_MIN`` do, that count (an upper bound) without looking further.
        One extended slice per header byte: ``buf[k:stop:stride]`` is that byte
        of every frame."""
        buf = self.buf
        stop = i + most * stride
        m = most
        for k in range(width):
            column = buf[i + k : stop : stride]
            if column.count(column[0]) == m:  # all agree (a fast count; lstrip is slow)
                continue
            m -= len(column.lstrip(column[:1]))  # keep the leading frames agreeing at k
            if m < _UNIFORM_MIN:
                return m
            stop = i + m * stride
        return m

    def scatter(self, i: int, stride: int, m: int) -> None:
        """Forward ``m`` data frames of one size from ``i`` on, to whatever
        destinations they name, with C-level work per frame.

        Interleaved flows (a node sending to many peers at once) make runs of
        one frame; frame by frame, finding and delivering each costs about
        1.5 microseconds of Python. Here the destination keys are sliced out in
        one comprehension, the headers rewritten a column at a time (as in
        ``uniform_run``), the frames grouped per destination in arrival order,
        and each group delivered as one contiguous copy."""
        mv = self.mv
        stop = i + m * stride
        headers = bytes(mv[i:stop])  # keys are sliced from a copy: bytes, hashable
        self.stamp(i, stride, m)
        groups: dict[bytes, list[memoryview]] = {}
        for p in range(0, stop - i, stride):
            key = headers[p + 3 : p + 35]
            group = groups.get(key)
            if group is None:
                groups[key] = [mv[i + p : i + p + stride]]
            else:
                group.append(mv[i + p : i + p + stride])
        for key, group in groups.items():
            self.deliver(key, b"".join(group), len(group))

    def deliver(self, key: bytes, data: memoryview | bytes, frames: int, at: int = -1) -> None:
        """Deliver ``frames`` frames (already rewritten) to ``key``'s connection.

        ``at``: where ``data`` starts in our receive buffer (-1: elsewhere). A
        replica link writes its header into the bytes just before it, which
        are free once processed (``HEADROOM`` keeps room before a read's first
        frame), and sends header and run from our buffer with one write.

        Interleaved senders make runs of one frame, so this is per frame: the
        checks on a destination (gone, closing, queue full, paused) are made
        once per read by ``admit`` and their answer kept in ``sinks``."""
        dst = self.sinks.get(key)
        if dst is None:
            dst = self.sinks[key] = self.admit(key)
        self.frames_in += frames
        self.bytes_in += len(data)
        if isinstance(dst, str):
            self.drop(dst, frames, len(data))
            return
        if dst.tunnel:
            dst.wrap(key, data, frames, self.buf if at >= 0 else None, at)  # type: ignore[attr-defined]
            if dst.writing_paused:
                self.wait_for(dst)
        elif dst.staged:
            dst.stage.add(data)
        elif len(data) >= timers.DIRECT_WRITE_MIN:
            assert dst.transport is not None  # admitted
            dst.transport.write(data)
            if dst.writing_paused:
                self.wait_for(dst)
        else:
            dst.stage.add(data)
            dst.staged = True
            self.ctx.dirty.append(dst)
        dst.frames_out += frames
        dst.bytes_out += len(data)

    def admit(self, key: bytes) -> RelayConnection | str:
        """The connection frames to ``key`` go to in this read, or why they are dropped.

        With a replica mesh, a key registered on another replica (or whose
        local connection went quiet after a newer registration elsewhere)
        goes to that replica's link; frames that came over a replica link
        are only ever delivered locally (at most one extra hop, no loops).

        A rotated node's old key, until its switch is done, stands for its
        new one (``auth.AllowList.moved``): its peers address it by the old
        key until they swap its entry, just after it re-registered."""
        wanted = key
        dst = self.ctx.registry.table.get(key)
        if dst is None and (moved := self.ctx.auth.allowlist.moved.get(key)) is not None:
            key, dst = moved, self.ctx.registry.table.get(moved)
        mesh = self.ctx.mesh
        if mesh is not None and not self.tunnel and (dst is None or dst.quiet):
            dst = mesh.route(key, dst)
        if dst is None:
            self.peer_gone(wanted)
            self.no_peer_keys += 1
            return "no-peer"
        tr = dst.transport
        if dst.closing or tr is None or tr.is_closing():
            self.peer_gone(wanted)
            return "receiver-closed"
        if tr.get_write_buffer_size() + len(dst.stage) > timers.DROP_LIMIT:
            return "queue-full"
        if dst.writing_paused:
            self.wait_for(dst)
        return dst

    def wait_for(self, dst: RelayConnection) -> None:
        """Stop reading us until ``dst`` drains (unless it has stalled)."""
        if not dst.stalled and dst not in self.blocked_on:
            self.blocked_on.add(dst)
            dst.waiters.add(self)
            if not self.reading_paused and self.transport is not None:
                self.reading_paused = True
                self.transport.pause_reading()

    def drop(self, reason: str, frames: int, nbytes: int) -> None:
        self.ctx.stats.drops[reason] += frames
        self.dropped_frames += frames
        self.dropped_bytes += nbytes

    def charge_no_peer(self) -> None:
        """Unknown keys looked up in this read (one lookup per key and read,
        however many frames went to it), against this connection's budget
        (limits.NO_PEER_*); over it, ``over_budget``."""
        frames, self.no_peer_keys = self.no_peer_keys, 0
        now = self.ctx.loop.time()
        bucket = self.no_peer
        if bucket is None:
            bucket = self.no_peer = TokenBucket.full(lim.NO_PEER_RATE, lim.NO_PEER_BURST, now)
        bucket.take(now, 0.0)  # refill
        bucket.tokens -= frames  # may go into debt: the frames were already read
        if bucket.tokens < 0:
            self.over_budget("no-peer", now, -bucket.tokens / bucket.rate)

    def over_budget(self, what: str, now: float, seconds: float) -> None:
        """This connection exceeded its budget for ``what``: stop reading it for
        ``seconds`` (at least ``THROTTLE_MIN``), so its flood costs only its
        own throughput. The ``RATE_LIMIT_STRIKES``-th time in a row (strikes
        are forgotten after ``STRIKES_FORGOTTEN`` of good behaviour) it is
        closed with CLOSE(rate-limited)."""
        if now - self.strike_at > timers.STRIKES_FORGOTTEN:
            self.strikes = 0
        self.strikes += 1
        self.strike_at = now
        if self.strikes >= lim.RATE_LIMIT_STRIKES:
            self.fail(f"rate-limited:{what}", f.CLOSE_RATE_LIMITED, f"too many {what} frames")
            return
        self.throttle(max(seconds, timers.THROTTLE_MIN))

    def throttle(self, seconds: float) -> None:
        """Stop reading this connection for ``seconds`` (its own rate limit)."""
        tr = self.transport
        if self.closing or tr is None or self.throttled:
            return
        self.throttled = True
        self.ctx.stats.throttles += 1
        if not self.reading_paused:
            self.reading_paused = True
            tr.pause_reading()
        self.ctx.loop.call_later(seconds, self.unthrottle)

    def unthrottle(self) -> None:
        """The penalty is over: handle the frames left in the buffer, read again."""
        self.throttled = False
        if self.closing:
            return
        if self.end - self.start >= f.HEADER_LEN:
            self.process()
        self.maybe_resume_reading()

    def maybe_resume_reading(self) -> None:
        if self.blocked_on or self.throttled or not self.reading_paused or self.closing:
            return
        if self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def count(self, frames: int, nbytes: int) -> None:
        """The relay's counters for one read: what came in (``deliver`` counted
        it) less what was dropped went on."""
        stats = self.ctx.stats
        stats.frames_forwarded += frames - self.dropped_frames
        stats.bytes_forwarded += nbytes - self.dropped_bytes
        self.dropped_frames = self.dropped_bytes = 0

    def flush_stage(self) -> None:
        self.staged = False
        tr = self.transport
        if not self.closing and tr is not None and not tr.is_closing():
            self.stage.write_to(tr)
        else:
            self.stage.clear()

    def release_waiters(self) -> None:
        for w in self.waiters:
            w.blocked_on.discard(self)
            w.maybe_resume_reading()
        self.waiters.clear()

    def peer_gone(self, key: bytes) -> None:
        now = self.ctx.loop.time()
        last = self.peer_gone_at.get(key)
        if last is not None and now - last < timers.PEER_GONE_INTERVAL:
            return
        bucket = self.gone_notices
        if bucket is None:
            bucket = self.gone_notices = TokenBucket.full(
                lim.PEER_GONE_RATE, lim.PEER_GONE_BURST, now
            )
        if not bucket.take(now):
            self.ctx.stats.control_dropped["peer-gone-rate"] += 1
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
            now = self.ctx.loop.time()
            bucket = self.pings
            if bucket is None:
                bucket = self.pings = TokenBucket.full(lim.PING_RATE, lim.PING_BURST, now)
            if not bucket.take(now):
                # unanswered (a PONG it would not read anyway); the rest of
                # its frames wait until the penalty is over
                self.ctx.stats.control_dropped["ping-rate"] += 1
                self.over_budget("ping", now, 1.0 / bucket.rate)
                return
            self.send_control(f.encode_pong(ev.data))
        elif ftype == f.PONG:
            f.decode_payload(ftype, bytes(self.mv[i + 3 : j]))
        elif ftype == f.CLOSE:
            ev = f.decode_payload(ftype, bytes(self.mv[i + 3 : j]))
            assert isinstance(ev, f.Close)
            self.client_closed(ev)
        elif ftype & _DATA_MASK == _SEND:
            raise f.ProtocolError("data frame shorter than its key, or a batch without entries")
        else:
            raise f.ProtocolError(f"unexpected frame type 0x{ftype:02x} after registration")

    def client_closed(self, ev: f.Close) -> None:
        """The client said CLOSE: answered with CLOSE(normal), then closed."""
        log.info(
            "event=client-close key=%s remote=%s code=%s reason=%r",
            _key_text(self.key),
            self.remote,
            f.close_name(ev.code),
            ev.reason,
        )
        self.close("client-close", f.CLOSE_NORMAL, "closed by client")

    def send_control(self, data: bytes) -> None:
        """Queue a control frame to this client, unless its queue is already
        over ``CONTROL_QUEUE_LIMIT`` (it is not reading): then it is dropped
        and counted, so no client can make the relay buffer replies unbounded."""
        tr = self.transport
        if tr is not None and not self.closing and not tr.is_closing():
            if tr.get_write_buffer_size() + self.stage.size > lim.CONTROL_QUEUE_LIMIT:
                self.ctx.stats.control_dropped["queue-full"] += 1
                return
            if self.staged:  # keep ordering with frames staged in this round
                self.stage.add(data)
            else:
                tr.write(data)

    # --- registration ----------------------------------------------------------

    def drive_handshake(self) -> None:
        ctx = self.ctx
        hs = self.handshake
        assert hs is not None
        if ctx.mesh is not None and self.start < self.end and self.buf[self.start] == _MESH_HELLO:
            ctx.mesh.adopt(self)  # another replica joining: the mesh takes the connection
            return
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
                    refused = ctx.sources.hello(self.ip, ctx.loop.time())
                    if refused is not None:
                        ctx.stats.auth_failures[refused] += 1
                        self.fail(
                            f"rate-limited:{refused}",
                            f.CLOSE_RATE_LIMITED,
                            "too many registration attempts from this address",
                        )
                        return
                    self.transport.write(hs.on_hello(ev, _wall_time()))
                elif isinstance(ev, f.Proof):
                    key = hs.on_proof(ev)
                    ctx.auth.admit(key)
                    if (
                        len(ctx.registry) >= ctx.limits.max_registrations
                        and ctx.registry.get(key) is None
                    ):
                        raise HandshakeError("registration-cap", f.CLOSE_OVERLOADED)
                    self.registered(key)
                    if self.start < self.end:
                        self.forward()
                    return
                elif isinstance(ev, f.Close):
                    self.client_closed(ev)
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
        self.buf = bytearray(HEADROOM + timers.RECV_BUFFER + f.HEADER_LEN + f.MAX_PAYLOAD)
        self.mv = memoryview(self.buf)
        self.buf[HEADROOM : HEADROOM + len(rest)] = rest
        self.start, self.end = HEADROOM, HEADROOM + len(rest)
        ctx.pending -= 1
        if self.source_counted:
            ctx.sources.registered(self.ip)
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
        """Close for a refusal or a fault of the client's: counted by reason,
        logged rate-limited and summarised (limits/refusals.py)."""
        self.ctx.refusals.refused(
            self.ctx.loop.time(), reason, self.remote, f"{f.close_name(code)}: {message}"
        )
        self.close(reason, code, message)

    def close(self, reason: str, code: int | None, message: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.ctx.stats.closes[reason.split(":", maxsplit=1)[0]] += 1
        if self.key is not None:
            log.info(
                "event=close key=%s remote=%s reason=%s code=%s",
                wgkey.encode(self.key),
                self.remote,
                reason,
                f.close_name(code) if code is not None else "none",
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
        if self.transport is not None:
            self.stage.write_to(self.transport)
        else:
            self.stage.clear()


def _key_text(key: bytes | None) -> str:
    return wgkey.encode(key) if key is not None else "-"


def _wall_time() -> float:
    """Wall clock for the challenge timestamp (bound into the transcript)."""
    return time.time()
