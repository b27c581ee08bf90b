"""MeshLink: one authenticated TCP link to another replica of the pool.

A ``MeshLink`` *is* a ``forwarder.RelayConnection`` (an
``asyncio.BufferedProtocol``) and reuses the client connections' sink
machinery unchanged: the staging buffer written once per loop round, the
1 MiB high-water backpressure that pauses the senders writing to it, the
8 MiB drop limit and the stall release (a link above its high-water mark for
``STALL_LIMIT`` stops holding its senders; frames to it are dropped). So a
slow or dead replica link can hold up only the senders writing to it, for at
most the stall limit, and never the forwarding between local clients.

Sending half: ``wrap`` queues a run of client frames the forwarder already
stamped (type RECV, key = the sender's proven key) behind one ``MESH_DATA``
header naming the destination key. Receiving half: ``forward`` hands each
run to the local connection of that key with the same ``deliver``/``admit``
as a client's frames (same backpressure on the link's reads); the forwarder
never routes frames read from a link to another replica. Everything about
*which* links exist belongs to ``mesh.Mesh``; the wire format to
``mesh.proto``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from wirekube_relay import timers
from wirekube_relay.forwarder import RelayConnection
from wirekube_relay.mesh import proto as mp

if TYPE_CHECKING:
    from wirekube_relay.forwarder import Context
    from wirekube_relay.mesh.pool import Address, Mesh

log = logging.getLogger(__name__)


class MeshLink(RelayConnection):
    """One replica link (dialled by us when ``dialed`` is set, else accepted)."""

    tunnel = True

    def __init__(self, ctx: Context, mesh: Mesh, dialed: Address | None) -> None:
        super().__init__(ctx)
        self.mesh = mesh
        self.handshake = None  # the client handshake of RelayConnection is unused
        self.dialed = dialed
        self.hs: mp.Dialer | mp.Acceptor = (
            mp.Dialer(mesh.secret, mesh.node_id, mesh.name)
            if dialed is not None
            else mp.Acceptor(mesh.secret, mesh.node_id, mesh.name)
        )
        self.max_payload = mp.MAX_HANDSHAKE_PAYLOAD
        self.up = False
        self.peer = ""  # the other replica's id (hex) once authenticated
        self.peer_name = ""
        self.last_ping = 0.0

    @property
    def dialer_id(self) -> bytes:
        """Id of the replica that dialled this link (duplicates keep the smaller)."""
        return self.mesh.node_id if self.dialed is not None else bytes.fromhex(self.peer)

    # --- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.ip = str(peer[0]) if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(timers.WRITE_HIGH_WATER, timers.WRITE_LOW_WATER)
        self.mesh.pending.add(self)
        if isinstance(self.hs, mp.Dialer):
            transport.write(self.hs.hello())

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.rx_reads += 1
        try:
            if self.up:
                self.forward()
            else:
                self.drive_handshake()
        except mp.MeshProtocolError as exc:
            self.fail("protocol-error", exc.code, str(exc))
            return
        self.compact()

    def feed(self, data: bytes) -> None:
        """Bytes already read for us by the connection that handed us its transport."""
        self.buf[: len(data)] = data
        self.end = len(data)
        self.buffer_updated(0)

    def compact(self) -> None:
        """Move a partial frame to the front only when it would not fit where it is
        (or little room is left to read into): MESH_DATA frames are whole runs of
        up to a few hundred KiB, and copying each partial one to the front after
        every read cost more than the forwarding itself."""
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = 0
            return
        size = len(self.buf)
        if end - start >= mp.HEADER_LEN:
            need = mp.HEADER_LEN + int.from_bytes(self.buf[start + 1 : start + 5], "big")
        else:
            need = mp.HEADER_LEN + self.max_payload
        if start + need > size or size - end < timers.MESH_MIN_READ:
            n = end - start
            self.buf[0:n] = self.mv[start:end]
            self.start, self.end = 0, n

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.mesh.link_closed(self)
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        self.release_waiters()
        for dst in self.blocked_on:
            dst.waiters.discard(self)
        self.blocked_on.clear()
        self.stage.clear()
        self.buf = bytearray()
        self.mv = memoryview(self.buf)

    # --- handshake -----------------------------------------------------------------

    def drive_handshake(self) -> None:
        while not self.up and not self.closing:
            stop = mp.scan(self.buf, self.start, self.end, self.max_payload)
            if stop < 0:
                return
            ev = mp.decode_payload(self.buf[self.start], bytes(self.mv[self.start + 5 : stop]))
            self.start = stop
            try:
                self.handshake_event(ev)
            except mp.MeshAuthError as exc:
                self.ctx.stats.mesh_auth_failures[exc.reason] += 1
                if exc.reason == "self" and self.dialed is not None:
                    self.mesh.found_self(self.dialed)
                self.fail(f"auth:{exc.reason}", exc.code, f"replica link refused: {exc.reason}")
                return
        if self.up and self.start < self.end:
            self.forward()

    def handshake_event(self, ev: mp.Event) -> None:
        assert self.transport is not None
        hs = self.hs
        if isinstance(ev, mp.Close):
            self.close("peer-close", None, ev.reason)
        elif isinstance(hs, mp.Dialer) and isinstance(ev, mp.Challenge):
            self.transport.write(hs.on_challenge(ev))
            self.authenticated(hs.peer_id, hs.peer_name)
        elif isinstance(hs, mp.Acceptor) and isinstance(ev, mp.Hello):
            self.transport.write(hs.on_hello(ev))
        elif isinstance(hs, mp.Acceptor) and isinstance(ev, mp.Proof):
            self.authenticated(hs.on_proof(ev), hs.peer_name)
        else:
            raise mp.MeshAuthError("unexpected-frame", mp.CLOSE_PROTOCOL_ERROR)

    def authenticated(self, peer_id: bytes, name: str) -> None:
        self.up = True
        self.peer = peer_id.hex()
        self.peer_name = name
        self.max_payload = mp.MAX_PAYLOAD
        rest = bytes(self.mv[self.start : self.end])
        self.buf = bytearray(timers.RECV_BUFFER + mp.HEADER_LEN + mp.MAX_PAYLOAD)
        self.mv = memoryview(self.buf)
        self.buf[: len(rest)] = rest
        self.start, self.end = 0, len(rest)
        self.mesh.link_up(self)

    # --- the receiving half: frames from the other replica ----------------------------

    def forward(self) -> None:
        """Deliver MESH_DATA runs to local receivers (never to another replica)."""
        buf = self.buf
        mv = self.mv
        i = self.start
        end = self.end
        maxp = self.max_payload
        frames_before, bytes_before = self.frames_in, self.bytes_in
        try:
            while end - i >= mp.HEADER_LEN:
                n = int.from_bytes(buf[i + 1 : i + 5], "big")
                if n > maxp:
                    raise mp.MeshProtocolError(f"frame of {n} bytes exceeds limit {maxp}")
                j = i + 5 + n
                if j > end:
                    break
                t = buf[i]
                if t == mp.MESH_DATA and n >= mp.DATA_PREFIX:
                    count = (buf[i + 37] << 8) | buf[i + 38]
                    self.deliver(bytes(buf[i + 5 : i + 37]), mv[i + 39 : j], count)
                else:
                    self.start = j
                    self.control_event(mp.decode_payload(t, bytes(mv[i + 5 : j])))
                    if self.closing:
                        return
                i = j
            self.start = i
        finally:
            self.count(self.frames_in - frames_before, self.bytes_in - bytes_before)
            self.sinks.clear()
            if self.ctx.dirty:
                self.ctx.schedule_flush()

    def count(self, frames: int, nbytes: int) -> None:
        stats = self.ctx.stats
        stats.mesh_frames_in += frames - self.dropped_frames
        stats.mesh_bytes_in += nbytes - self.dropped_bytes
        self.dropped_frames = self.dropped_bytes = 0

    def control_event(self, ev: mp.Event) -> None:
        if isinstance(ev, mp.Ping):
            self.send_control(mp.encode_pong(ev.data))
        elif isinstance(ev, mp.Pong):
            pass
        elif isinstance(ev, mp.PresenceReset | mp.PresenceAdd | mp.PresenceDel):
            self.mesh.on_presence(self, ev)
        elif isinstance(ev, mp.Close):
            self.close("peer-close", None, ev.reason or "closed by replica")
        else:
            raise mp.MeshProtocolError(f"unexpected {type(ev).__name__} on an open link")

    def peer_gone(self, key: bytes) -> None:
        """Nothing to tell: the other replica learns where keys are from presence."""

    # --- the sending half: runs of stamped frames for keys registered there ------------

    def wrap(
        self, key: bytes, data: memoryview | bytes, frames: int, buf: bytearray | None, at: int
    ) -> None:
        """Send a run of stamped client frames for ``key`` behind one MESH_DATA header.

        A large run that is a slice of the sender's buffer (``buf[at:]``) gets
        its header written into the free bytes just before it and goes out
        with one write, no copy (as a large run to a client does); anything
        else is staged and written once per loop round."""
        header = mp.data_header(key, frames, len(data))
        if not self.staged and len(data) >= timers.DIRECT_WRITE_MIN and buf is not None:
            h = len(header)
            if at >= h:
                tr = self.transport
                assert tr is not None  # admitted
                buf[at - h : at] = header
                tr.write(memoryview(buf)[at - h : at + len(data)])
                self.count_out(frames, len(data))
                return
        stage = self.stage
        stage.add(header)
        stage.add(data)
        if not self.staged:
            self.staged = True
            self.ctx.dirty.append(self)
        self.count_out(frames, len(data))

    def count_out(self, frames: int, nbytes: int) -> None:
        stats = self.ctx.stats
        stats.mesh_frames_out += frames
        stats.mesh_bytes_out += nbytes

    def send_control(self, data: bytes) -> None:
        """Queue a control frame (presence, ping) behind the data already queued.

        Unlike a client's, a replica link's control frames must never be
        dropped: a lost presence update would misroute a key. A link whose
        queue grew past ``MESH_CONTROL_LIMIT`` is closed instead; it is
        redialled and the other replica resent everything it holds."""
        tr = self.transport
        if tr is None or self.closing or tr.is_closing():
            return
        if tr.get_write_buffer_size() + self.stage.size > timers.MESH_CONTROL_LIMIT:
            self.fail("too-slow", mp.CLOSE_TIMEOUT, "replica link not draining")
            return
        if self.staged:
            self.stage.add(data)
        else:
            tr.write(data)

    # --- closing ---------------------------------------------------------------------

    def fail(self, reason: str, code: int, message: str) -> None:
        self.close(reason, code, message)

    def close(self, reason: str, code: int | None, message: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.ctx.stats.mesh_closes[reason.split(":", maxsplit=1)[0]] += 1
        log.info(
            "event=mesh-link-close peer=%s remote=%s reason=%s detail=%r",
            self.peer_name or "?",
            self.remote,
            reason,
            message,
        )
        self.mesh.link_closed(self)
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        if code is not None:
            if self.staged:
                self.flush_stage_now()
            tr.write(mp.encode_close(code, message))
        tr.close()
