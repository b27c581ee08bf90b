"""RelayBridge: WireGuard UDP <-> relay frames, one local UDP socket per relayed peer.

Hot path, written for speed on purpose (STYLE.md rule 9).

For every relayed peer the bridge owns a UDP socket bound to 127.0.0.1:<port>
and *connected* to WireGuard's listen port. The agent sets that peer's
WireGuard endpoint to ``endpoint_for(key)``; WireGuard then sends that peer's
packets to the socket, so the socket a datagram arrives on names its
destination key. Connecting the socket also means only WireGuard's own port
can inject datagrams into the relay, and sends skip address parsing.

* **Uplink** (WireGuard -> relay): one dedicated thread waits in epoll over
  all peer sockets and drains each ready socket with ``recvmmsg`` (mmsg.py,
  via ctypes): up to 64 datagrams per system call land in the slots of one
  arena, each slot two bytes (the batch entry's length prefix) before the
  datagram, and one gathering ``sendmsg`` per call writes them to the relay as
  ``SEND_BATCH`` frames (35-byte header, a 2-byte length before each packet),
  so the relay pays its per-frame cost once per batch, not once per packet.
  When every datagram of a call has the slot's size (bulk traffic: full-size
  packets one way, ACKs the other), the arena already *is* the frames' body:
  two strided slice assignments write all the prefixes, and no Python code
  runs per datagram. The slot size follows the traffic's common size.
  Measured (benchmarks/bridge_bench.py): about 1.3x the datagrams per CPU-second
  of one ``recv_into`` per datagram, which ``use_mmsg=False`` (or a libc without
  recvmmsg) still selects: it drains into a per-replica buffer, one ``sendall``
  per 256 KiB or per poll round. Stock asyncio datagram transports are
  deliberately not used.
* **Downlink** (relay -> WireGuard): each relay link's reader thread calls
  ``_on_frame(src, packet)`` for a RECV and ``_on_batch(src, entries)`` for a
  RECV_BATCH, with views into its receive buffer; packets are sent to
  WireGuard from the source peer's socket (so WireGuard sees the same
  endpoint it sends to). Within a batch, a run of packets of one size (bulk
  traffic: full-size packets) leaves in one ``sendmsg`` with UDP GSO
  (``UDP_SEGMENT``): the kernel cuts it back into the original datagrams, so
  a run costs one system call instead of one per packet (where the kernel
  has no GSO, one send per packet). A one-entry cache per link thread avoids
  a dict lookup and a key copy per frame while one peer is sending.

Which replica carries a peer's flow is the pool's decision (rendezvous
hashing); the bridge asks again whenever the pool's set of live replicas
changes.

Handover between agents (wirekube_agent.handover): ``export`` gives the
peers' sockets to a new agent's bridge, which starts with them
(``adopted=``): the same sockets, so WireGuard's endpoints stay valid and
datagrams queued in them wait rather than vanish. The old bridge stops
reading them (``quiesce``) just before the new one registers, since the
relay then closes the old links and a datagram written into one of them
would be lost; the new bridge forwards the relay's frames from the start
and reads the sockets once one of its own links is registered (``hold``).
A retiring bridge also stops reading once the relay has closed all of its
links (``retire``), should ``quiesce`` not have come.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from wirekube_agent.relay import mmsg, timers
from wirekube_agent.relay.link import RelayLink, batch_entries
from wirekube_agent.relay.pool import RelayPool
from wirekube_common.relayproto import frames as f

log = logging.getLogger(__name__)

_HDR = f.DATA_OVERHEAD
# UDP GSO (Linux >= 4.18): one sendmsg carries up to this many datagrams of one
# size; the kernel segments them. Not in Python's socket module.
_UDP_SEGMENT = 103
_GSO_SEGMENTS = 64
_GSO_BYTES = 65000  # the whole run must fit one IP packet before segmentation
_GSO_UNSUPPORTED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_ORDER = sys.byteorder  # the cmsg carries a native-order u16
# a plain int: an IntFlag would be rebuilt by ``|`` on every drain
_DRAIN_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_TRUNC)


@dataclass(frozen=True)
class PeerStats:
    tx_frames: int  # WireGuard -> relay
    tx_bytes: int
    rx_frames: int  # relay -> WireGuard
    rx_bytes: int
    last_tx: float  # time.monotonic() of the last datagram sent to the relay (0: never)
    last_rx: float  # time.monotonic() of the last frame received from the relay (0: never)
    drops: int
    replica: str | None


class _Peer:
    __slots__ = (
        "drops",
        "key",
        "last_rx",
        "last_tx",
        "port",
        "route",
        "rx_bytes",
        "rx_frames",
        "sock",
        "tx_bytes",
        "tx_frames",
    )

    def __init__(self, key: bytes, sock: socket.socket) -> None:
        self.key = key
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.tx_frames = self.tx_bytes = self.rx_frames = self.rx_bytes = self.drops = 0
        self.last_tx = self.last_rx = 0.0
        self.route: tuple[int, RelayLink | None] = (-1, None)


def _bind(sock: socket.socket, host: str, port: int) -> None:
    """Bind to ``port`` if it is free, else to any port."""
    if port:
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            log.info("relay bridge: port %d is taken (%s); a new one", port, exc)
    sock.bind((host, 0))


class _Batch:
    __slots__ = ("buf", "frames", "mv", "pos")

    def __init__(self) -> None:
        self.buf = bytearray(timers.UPLINK_BATCH + _HDR + f.MAX_PAYLOAD + 2)
        self.mv = memoryview(self.buf)
        self.pos = 0
        self.frames = 0


class RelayBridge:
    def __init__(
        self,
        private_key: bytes,
        wg_listen_port: int,
        relay_pool: RelayPool,
        wg_host: str = "127.0.0.1",
        bind_host: str = "127.0.0.1",
        use_mmsg: bool = True,
        ports: dict[bytes, int] | None = None,
        adopted: dict[bytes, socket.socket] | None = None,
        hold: float = 0.0,
    ) -> None:
        self.private_key = private_key
        # The port each peer had in the agent before us (relay/ports.py): bound
        # again when the peer is first relayed, so WireGuard's endpoint for it,
        # which outlived that agent, stays valid. Used once per key.
        self._preferred = dict(ports or {})
        self.wg_addr = (wg_host, wg_listen_port)
        self.bind_host = bind_host
        self.pool = relay_pool
        self._by_key: dict[bytes, _Peer] = {}
        self._by_fd: dict[int, _Peer] = {}
        self._lock = threading.Lock()
        self._ep = select.epoll()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._uplink, name="relay-uplink", daemon=True)
        self._batches: dict[RelayLink, _Batch] = {}
        self._graveyard: list[tuple[float, socket.socket]] = []
        self._cache = threading.local()
        self.unknown_sources: dict[bytes, int] = {}
        self._version = 0  # bumped on every change of the relayed set (frame cache)
        # recvmmsg (Linux); None -> one recv_into per datagram
        self._rx = (
            mmsg.MultiReceiver(timers.MMSG_VLEN, timers.MAX_DATAGRAM, timers.MMSG_SLOT)
            if use_mmsg and mmsg.available()
            else None
        )
        self._hdrs = bytearray(_HDR * (timers.MMSG_VLEN + 1))
        self._hview = memoryview(self._hdrs)
        self._gso = True  # until the kernel says it has no UDP GSO
        self.retiring = False  # handing over: stop reading once no link is live
        self.quiet = False  # handing over: the new bridge registers now; read nothing
        # Adopted sockets are read only once a link of ours is live (or after
        # ``hold`` seconds): until then the old agent reads them.
        self._hold_s = hold if adopted else 0.0
        self._hold_until = 0.0
        for key, sock in (adopted or {}).items():
            sock.setblocking(False)
            p = _Peer(bytes(key), sock)
            self._by_key[p.key] = p
            self._by_fd[sock.fileno()] = p
            self._ep.register(sock.fileno(), select.EPOLLIN)

    # --- public API ---------------------------------------------------------------

    def start(self) -> None:
        if self._hold_s:
            self._hold_until = time.monotonic() + self._hold_s
        self.pool.start(self._on_frame, self._on_batch)
        self._thread.start()

    def export(self) -> dict[bytes, socket.socket]:
        """Every relayed peer's socket, for a new agent's bridge (handover).
        Ours stay open and in use until ``retire`` and the relay say otherwise."""
        with self._lock:
            return {k: p.sock for k, p in self._by_key.items()}

    def retire(self, on: bool) -> None:
        """Handing over: the links do not reconnect once the relay closes them,
        and the sockets are left unread once no link is live (``False``: the
        handover failed; carry on)."""
        self.retiring = on
        if not on:
            self.quiet = False
        self.pool.retire(on)

    def quiesce(self) -> None:
        """Handing over, the new bridge is about to register (and the relay to
        close our links): read no more datagrams; WireGuard's wait in the
        sockets for the new bridge. ``retire(False)`` undoes it."""
        self.quiet = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.pool.stop()
        with self._lock:
            for p in self._by_key.values():
                p.sock.close()
            self._by_key.clear()
            self._by_fd.clear()
            for _, s in self._graveyard:
                s.close()
            self._graveyard.clear()
        self._ep.close()

    def set_relayed_peers(self, keys: Iterable[bytes]) -> None:
        """Make exactly ``keys`` relayed: open sockets for new keys, close removed ones."""
        wanted = {bytes(k) for k in keys}
        now = time.monotonic()
        with self._lock:
            for key in [k for k in self._by_key if k not in wanted]:
                p = self._by_key.pop(key)
                self._by_fd.pop(p.sock.fileno(), None)
                with contextlib.suppress(OSError):
                    self._ep.unregister(p.sock.fileno())
                self._graveyard.append((now + timers.SOCKET_CLOSE_DELAY, p.sock))
            for key in wanted - self._by_key.keys():
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                _bind(sock, self.bind_host, self._preferred.pop(key, 0))
                sock.connect(self.wg_addr)
                sock.setblocking(False)
                p = _Peer(key, sock)
                self._by_key[key] = p
                self._by_fd[sock.fileno()] = p
                self._ep.register(sock.fileno(), select.EPOLLIN)
            self._version += 1
            self._reap(now)

    def endpoint_for(self, peer_public_key: bytes) -> tuple[str, int]:
        """The local endpoint WireGuard must use for this relayed peer (KeyError if not relayed)."""
        p = self._by_key[bytes(peer_public_key)]
        return self.bind_host, p.port

    def stats(self, peer_public_key: bytes) -> PeerStats:
        p = self._by_key[bytes(peer_public_key)]
        link = p.route[1]
        return PeerStats(
            p.tx_frames,
            p.tx_bytes,
            p.rx_frames,
            p.rx_bytes,
            p.last_tx,
            p.last_rx,
            p.drops,
            link.name if link is not None else None,
        )

    def last_rx(self, peer_public_key: bytes) -> float | None:
        """Monotonic time of the last frame from this peer via the relay (None: never/unknown)."""
        p = self._by_key.get(bytes(peer_public_key))
        return p.last_rx if p is not None and p.last_rx else None

    # --- downlink: relay -> WireGuard (link reader threads) --------------------------

    def _source(self, src: memoryview) -> _Peer | None:
        """The relayed peer a frame came from (None: not one of ours; counted)."""
        cache = self._cache
        entry = getattr(cache, "entry", None)
        if entry is not None and entry[0] == src and entry[2] == self._version:
            return entry[1]  # type: ignore[no-any-return]
        key = bytes(src)
        p = self._by_key.get(key)
        if p is None:
            self.unknown_sources[key] = self.unknown_sources.get(key, 0) + 1
            return None
        cache.entry = (key, p, self._version)
        return p

    def _on_frame(self, src: memoryview, packet: memoryview) -> None:
        p = self._source(src)
        if p is None:
            return
        p.rx_frames += 1
        p.rx_bytes += len(packet)
        p.last_rx = time.monotonic()
        try:
            p.sock.send(packet)
        except OSError:  # WireGuard not listening yet, buffer full, socket closed
            p.drops += 1

    def _on_batch(self, src: memoryview, entries: memoryview) -> tuple[int, int]:
        """A RECV_BATCH: runs of same-size packets go to WireGuard in one
        ``sendmsg`` each with UDP GSO (the kernel cuts them into datagrams),
        instead of one system call per packet."""
        p = self._source(src)
        if p is None:
            return 0, 0
        run: list[memoryview] = []
        size = total = delivered = malformed = 0
        for packet in batch_entries(entries):
            if packet is None:
                malformed = 1
                break
            n = len(packet)
            # An empty packet travels alone: as a run's last segment it would vanish.
            if run and (n > size or not n or len(run) == _GSO_SEGMENTS or total + n > _GSO_BYTES):
                self._send_run(p, run, size, total)
                run = []
            if not run:
                size, total = n, 0
            run.append(packet)
            total += n
            delivered += 1
            if n < size:  # a shorter packet can only end a run
                self._send_run(p, run, size, total)
                run = []
        if run:
            self._send_run(p, run, size, total)
        p.last_rx = time.monotonic()
        return delivered, malformed

    def _send_run(self, p: _Peer, run: list[memoryview], size: int, total: int) -> None:
        """Send packets of ``size`` bytes (the last may be shorter; ``total`` in
        all) to WireGuard."""
        p.rx_frames += len(run)
        p.rx_bytes += total
        if len(run) > 1 and size and self._gso:
            try:
                p.sock.sendmsg(run, [(socket.SOL_UDP, _UDP_SEGMENT, size.to_bytes(2, _ORDER))])
                return
            except OSError as exc:
                if exc.errno not in _GSO_UNSUPPORTED:
                    p.drops += len(run)  # WireGuard not listening yet, buffer full, closed
                    return
                log.warning("UDP GSO unavailable (%s); one send per packet", exc)
                self._gso = False
        for packet in run:
            try:
                p.sock.send(packet)
            except OSError:
                p.drops += 1

    # --- uplink: WireGuard -> relay (one thread) ------------------------------------

    def _route(self, p: _Peer) -> RelayLink | None:
        gen = self.pool.generation
        if p.route[0] != gen:
            p.route = (gen, self.pool.pick(p.key))
        return p.route[1]

    def _uplink(self) -> None:
        scratch = bytearray(timers.MAX_DATAGRAM + 1)
        while not self._stop.is_set():
            if self._hold_until:
                if self.pool.live_replicas() or time.monotonic() >= self._hold_until:
                    self._hold_until = 0.0
                else:
                    self._stop.wait(timers.HANDOVER_POLL)
                    continue
            if self.quiet or (self.retiring and not self.pool.live_replicas()):
                # the relay closed our links: the new agent reads the sockets
                self._stop.wait(timers.HANDOVER_POLL)
                continue
            try:
                events = self._ep.poll(0.25)
            except OSError:
                return
            if not events:
                if self._graveyard:
                    with self._lock:
                        self._reap(time.monotonic())
                continue
            with self._lock:
                for fd, _mask in events:
                    p = self._by_fd.get(fd)
                    if p is not None:
                        self._drain(p, scratch)
            for link, batch in self._batches.items():
                if batch.pos:
                    self._flush(link, batch)

    def _drain(self, p: _Peer, scratch: bytearray) -> None:
        link = self._route(p)
        sock = p.sock
        flags = socket.MSG_DONTWAIT
        if link is None:
            for _ in range(timers.DRAIN_BUDGET):
                try:
                    sock.recv_into(scratch, 0, flags)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                p.drops += 1
            return
        if self._rx is not None:
            self._drain_mmsg(p, link)
            return
        batch = self._batches.get(link)
        if batch is None:
            batch = self._batches[link] = _Batch()
        buf, mv = batch.buf, batch.mv
        key = p.key
        entries_limit = min(link.max_payload, f.MAX_PAYLOAD) - f.KEY_LEN
        cap = min(timers.MAX_DATAGRAM, entries_limit - 2)  # one packet always fits a frame
        flags = _DRAIN_FLAGS
        pos = batch.pos  # where this peer's SEND_BATCH frame starts
        k = pos + _HDR  # where the next entry goes
        room = entries_limit - 2 - cap  # a frame is full once its entries pass this
        full_at = k + room
        frames = nbytes = 0
        for _ in range(timers.DRAIN_BUDGET):
            if k > full_at:  # frame full: close it
                pos = self._close_frame(buf, pos, k, key)
                if pos > timers.UPLINK_BATCH:
                    batch.pos = pos
                    self._flush(link, batch)
                    pos = 0
                k = pos + _HDR
                full_at = k + room
            try:
                n = sock.recv_into(mv[k + 2 : k + 2 + cap], cap, flags)
            except BlockingIOError:
                break
            except OSError:  # e.g. ECONNREFUSED surfaced from an ICMP error
                continue
            if n > cap:  # truncated: larger than any WireGuard MTU we support
                p.drops += 1
                continue
            buf[k] = n >> 8
            buf[k + 1] = n & 0xFF
            k += 2 + n
            frames += 1
            nbytes += n
        batch.pos = self._close_frame(buf, pos, k, key)
        batch.frames += frames
        if frames:
            p.tx_frames += frames
            p.tx_bytes += nbytes
            p.last_tx = time.monotonic()

    def _drain_mmsg(self, p: _Peer, link: RelayLink) -> None:
        """recvmmsg path: each call's datagrams leave in SEND_BATCH frames, one
        gathering ``sendmsg`` per call."""
        rx = self._rx
        assert rx is not None
        key = p.key
        fd = p.sock.fileno()
        limit = min(link.max_payload, f.MAX_PAYLOAD) - f.KEY_LEN  # entry bytes per frame
        vlen = rx.vlen
        frames = nbytes = 0
        for _ in range(timers.DRAIN_BUDGET // vlen or 1):
            try:
                n = rx.recv(fd)
            except OSError:  # e.g. ECONNREFUSED surfaced from an ICMP error
                continue
            if n == 0:
                break
            lens, flags = rx.lengths(n), rx.flags(n)
            size = rx.size
            # (a relay whose frames cannot hold one slot gets the checked path)
            if lens.count(size) == n and not any(flags) and rx.stride <= limit:
                vec, total = self._uniform_vectors(rx, n, key, limit)
                got, got_bytes = n, n * size
            else:
                vec, total, got, got_bytes = self._mixed_vectors(rx, lens, flags, key, limit, p)
                rx.follow(lens)
            if total:
                link.send_vectors(vec, total, got)
            frames += got
            nbytes += got_bytes
            if n < vlen:
                break
        if frames:
            p.tx_frames += frames
            p.tx_bytes += nbytes
            p.last_tx = time.monotonic()

    def _uniform_vectors(
        self, rx: mmsg.MultiReceiver, n: int, key: bytes, limit: int
    ) -> tuple[list[memoryview], int]:
        """Every datagram fills its slot exactly: the arena already holds the
        entries back to back; write their prefixes and cut it into frames."""
        hdrs, hview, view = self._hdrs, self._hview, rx.view
        stride = rx.stride
        rx.prefix(n)
        per = limit // stride
        vec: list[memoryview] = []
        total = h = 0
        for a in range(0, n, per):
            b = min(n, a + per)
            used = (b - a) * stride
            self._close_header(hdrs, h, used, key)
            vec.append(hview[h : h + _HDR])
            vec.append(view[a * stride : b * stride])
            h += _HDR
            total += _HDR + used
        return vec, total

    def _mixed_vectors(
        self,
        rx: mmsg.MultiReceiver,
        lens: list[int],
        flags: list[int],
        key: bytes,
        limit: int,
        p: _Peer,
    ) -> tuple[list[memoryview], int, int, int]:
        """Datagrams of different sizes: one entry (one or two views) each."""
        hdrs, hview = self._hdrs, self._hview
        vec = [hview[0:_HDR]]
        h = used = total = got = got_bytes = 0
        for i, ln in enumerate(lens):
            # larger than any WireGuard MTU we support, or than the relay's frames
            if flags[i] & socket.MSG_TRUNC or ln + 2 > limit:
                p.drops += 1
                continue
            if used + 2 + ln > limit:  # this frame is full: close it, open another
                self._close_header(hdrs, h, used, key)
                total += _HDR + used
                h += _HDR
                vec.append(hview[h : h + _HDR])
                used = 0
            vec += rx.entry(i, ln)
            used += 2 + ln
            got += 1
            got_bytes += ln
        if used:
            self._close_header(hdrs, h, used, key)
            total += _HDR + used
        else:
            vec.pop()  # header of an empty frame
        return vec, total, got, got_bytes

    @staticmethod
    def _close_header(hdrs: bytearray, h: int, used: int, key: bytes) -> None:
        ln = f.KEY_LEN + used
        hdrs[h] = f.SEND_BATCH
        hdrs[h + 1] = ln >> 8
        hdrs[h + 2] = ln & 0xFF
        hdrs[h + 3 : h + _HDR] = key

    @staticmethod
    def _close_frame(buf: bytearray, pos: int, k: int, key: bytes) -> int:
        """Write the SEND_BATCH header for entries in buf[pos+35:k]; returns the next frame start."""
        if k == pos + _HDR:
            return pos  # no packet: no frame
        ln = k - pos - 3
        buf[pos] = f.SEND_BATCH
        buf[pos + 1] = ln >> 8
        buf[pos + 2] = ln & 0xFF
        buf[pos + 3 : pos + _HDR] = key
        return k

    def _flush(self, link: RelayLink, batch: _Batch) -> None:
        link.send(batch.mv[: batch.pos], batch.frames)
        batch.pos = 0
        batch.frames = 0

    def _reap(self, now: float) -> None:
        keep = []
        for due, s in self._graveyard:
            if due <= now:
                s.close()
            else:
                keep.append((due, s))
        self._graveyard = keep
