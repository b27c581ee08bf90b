"""RelayLink: one registered TCP connection to one relay replica, kept alive.

Threads and ownership (STYLE.md rule 7: one owner per socket):

* The link's own thread connects, registers (relayproto handshake), then
  *reads*: it parses frames in place in a preallocated buffer and hands each
  packet (of a RECV frame or of a RECV_BATCH) to ``on_frame(src_key_view, packet_view)`` (memoryviews valid
  only during the call). It answers PINGs, notes PONGs and PEER_GONEs, and
  on any error or EOF tears the connection down and reconnects with bounded
  exponential backoff (tenacity).
* Writers (the bridge's uplink thread, the pool's watchdog) call ``send()``,
  which serialises ``sendall`` under a lock. Reading and writing in separate
  threads matters: the relay applies backpressure to a sender whose receiver
  is slow, and a single thread blocked in ``sendall`` could then never drain
  its own receive side (a deadlock cycle through the relay).
* ``kill()`` (watchdog: nothing heard for ``DEAD_AFTER``) shuts the socket
  down, which wakes both the reader and any blocked writer.
* ``rekey()`` (key rotation) makes before it breaks: a helper thread
  registers a new connection under the new key, writers move to it, and the
  old one is half-closed; the relay closes its end after the frames it
  already sent there, which the link thread reads to the end before it
  serves the new connection. Nothing sent to us in between is lost.

``register()`` is also usable on its own (tests and benchmarks use it).

How the connection leaves the node (TLS, an HTTP CONNECT proxy) is the
``Egress`` the link is given (egress.py); the link sees a stream with a
socket's surface either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from wirekube_agent.relay import timers
from wirekube_agent.relay.egress import Egress, open_stream
from wirekube_agent.relay.tlsstream import TlsStream
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import ClientHandshake, HandshakeError

log = logging.getLogger(__name__)

# (source key, packet): one packet from a peer, a view valid during the call
FrameHandler = Callable[[memoryview, memoryview], None]
# (source key, entries of a RECV_BATCH): -> (packets delivered, malformed entries)
BatchHandler = Callable[[memoryview, memoryview], tuple[int, int]]


def split_batch(on_frame: FrameHandler) -> BatchHandler:
    """A batch handler that hands the batch's packets to ``on_frame`` one by one."""

    def deliver(src: memoryview, entries: memoryview) -> tuple[int, int]:
        n = 0
        for packet in batch_entries(entries):
            if packet is None:
                return n, 1
            on_frame(src, packet)
            n += 1
        return n, 0

    return deliver


def batch_entries(entries: memoryview) -> Iterator[memoryview | None]:
    """The packets of a RECV_BATCH payload after its key (2-byte length, packet;
    repeated). None marks a malformed batch (docs/relay-protocol.md: no entry
    at all, an entry that overruns the frame, or a truncated length at its
    end): the sender's batch is malformed and nothing after it is trusted."""
    k = 0
    end = len(entries)
    if end == 0:
        yield None
        return
    while k + 2 <= end:
        a = k + 2
        k = a + ((entries[k] << 8) | entries[k + 1])
        if k > end:
            yield None
            return
        yield entries[a:k]
    if k != end:
        yield None


@dataclass(frozen=True)
class LinkStats:
    """A link's state and counters, as the agent's metrics export them. The
    counters are the link's since its bridge started: a new bridge (a new
    relay target, a WireGuard port change) starts them from 0, which
    Prometheus reads as a counter reset."""

    up: bool
    connects: int = 0  # times it connected
    frames_tx: int = 0  # packets written to the replica
    frames_rx: int = 0  # packets it delivered to us
    drops_tx: int = 0  # packets not written: the link was down or the write failed
    malformed_rx: int = 0  # batched packets from the replica that did not parse


class RelayRejected(Exception):
    """The relay closed the connection during registration (reason in the message)."""


Stream = socket.socket | TlsStream


def register(
    sock: Stream, private_key: bytes, timeout: float = timers.HANDSHAKE_TIMEOUT
) -> tuple[f.Ok, bytes]:
    """Run the registration handshake on a connected socket.

    Returns the relay's OK and any bytes received after it (frames already in
    flight). Raises RelayRejected, HandshakeError, ProtocolError or OSError.
    """
    deadline = time.monotonic() + timeout
    hs = ClientHandshake(private_key)
    parser = f.FrameParser(f.MAX_HANDSHAKE_PAYLOAD)
    sock.sendall(hs.hello())
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("relay registration timed out")
        sock.settimeout(remaining)
        data = sock.recv(4096)
        if not data:
            raise RelayRejected("relay closed the connection during registration")
        parser.feed(data)
        while (ev := parser.next_event()) is not None:
            if isinstance(ev, f.Challenge):
                sock.sendall(hs.on_challenge(ev, time.time()))
            elif isinstance(ev, f.Ok):
                hs.on_ok(ev)
                rest = parser._buf[parser._pos :]
                return ev, bytes(rest)
            elif isinstance(ev, f.Close):
                raise RelayRejected(
                    f"relay refused registration: {ev.reason} (code {ev.code}, {f.close_name(ev.code)})"
                )
            else:
                raise HandshakeError("unexpected-frame", f.CLOSE_PROTOCOL_ERROR)


class RelayLink:
    def __init__(
        self,
        address: tuple[str, int],
        private_key: bytes,
        on_frame: FrameHandler,
        on_state: Callable[[RelayLink], None] | None = None,
        fwmark: int | None = None,
        on_batch: BatchHandler | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.address = address
        self.egress = egress or Egress()
        self.fwmark = fwmark
        self.name = f"{address[0]}:{address[1]}"
        self.private_key = private_key
        self.on_frame = on_frame
        self.on_batch = on_batch or split_batch(on_frame)
        self.on_state = on_state
        self.up = False
        self.sock: Stream | None = None
        self.last_error = ""  # why the last connect failed (a proxy's status line, TLS)
        self.last_rx = 0.0
        self.last_ping = 0.0
        self.ping_pending = 0.0  # when the oldest PING not followed by any byte was sent
        self.max_payload = f.MAX_PAYLOAD
        self.connects = 0
        self.failures = 0
        self.peer_gone: dict[bytes, float] = {}
        self.frames_rx = 0  # packets delivered (a batch counts its packets)
        self.malformed_rx = 0
        self.frames_tx = 0
        self.drops_tx = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rekey_until = 0.0  # monotonic; retry fast until then (``rekey``)
        # Handing over to a new agent (wirekube_agent.handover): once the relay
        # closes this connection (the new agent's registration replaced it),
        # do not connect again, or the two agents would take the key from each
        # other in turn. ``retire(False)`` (the handover failed) reconnects.
        self.retiring = False
        self._kick = threading.Event()  # ends a backoff early (``rekey``, ``stop``)
        # A connection registered under a new key, waiting for the link thread
        # to finish reading the one it replaces (``rekey``).
        self._successor: tuple[Stream, bytes] | None = None
        self._buf = bytearray(timers.DOWNLINK_BUFFER + f.HEADER_LEN + f.MAX_PAYLOAD)
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.name}", daemon=True)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self.kill()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def rekey(self, private_key: bytes) -> None:
        """Register under a new key (key rotation), retrying quickly while the
        relay does not admit it yet. A link that is up keeps its connection
        until the new one is registered (``_make_before_break``); one that is
        down reconnects at once with the new key. The old key's registration
        ends with its connection."""
        self.private_key = private_key
        self._rekey_until = time.monotonic() + timers.REKEY_RETRY_FOR
        old = self.sock
        if not self.up or old is None:
            self._kick.set()
            self.kill()
            return
        threading.Thread(
            target=self._make_before_break,
            args=(old,),
            name=f"relay-rekey-{self.name}",
            daemon=True,
        ).start()

    def _make_before_break(self, old: Stream) -> None:
        """Register a connection under the new key, move the writers to it,
        then half-close ``old``: the relay closes its end once it has sent what
        it had for us there, and frames for the old key go to the new
        registration from then on (the relay maps them during a rotation).
        If the new key is not admitted in time, fall back to a reconnect."""
        try:
            got = self._connect()
        except Exception:
            self.kill()  # the link thread reconnects with the new key (and backs off)
            return
        sock = got[0]
        with self._lock:
            if self._stop.is_set() or self.sock is not old:
                # Stopped, or the old connection died meanwhile and the link
                # thread is reconnecting by itself (with the new key).
                sock.close()
                return
            self._successor = got
            self.sock = sock
        with contextlib.suppress(OSError):
            old.shutdown(socket.SHUT_WR)
        # A relay that never closes its end must not keep the link on the old
        # connection: break it after a while.
        timer = threading.Timer(timers.RETIRE_AFTER, _shut, args=(old,))
        timer.daemon = True
        timer.start()

    def retire(self, on: bool) -> None:
        self.retiring = on
        if not on:
            self._kick.set()  # end a backoff: reconnect now

    def kill(self) -> None:
        sock = self.sock
        if sock is not None:
            _shut(sock)

    def _broken(self, sock: Stream | None) -> None:
        """A write to ``sock`` failed: kill the link, unless ``sock`` is a
        connection a rotation already replaced (its writers moved on)."""
        if sock is None or sock is self.sock:
            self.kill()

    def stats(self) -> LinkStats:
        return LinkStats(
            self.up, self.connects, self.frames_tx, self.frames_rx, self.drops_tx, self.malformed_rx
        )

    # --- writing (any thread) -----------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, frames: int = 0) -> bool:
        """Write whole frames; False (and nothing written) when the link is down."""
        if not self.up or self.sock is None:
            self.drops_tx += frames
            return False
        sock = None
        try:
            with self._lock:
                # Read under the lock: ``rekey`` moves writers to a new connection.
                sock = self.sock
                if sock is None:
                    raise OSError("link down")
                sock.sendall(data)
        except OSError:
            self.drops_tx += frames
            self._broken(sock)
            return False
        self.frames_tx += frames
        return True

    def send_vectors(self, bufs: list[memoryview], total: int, frames: int) -> bool:
        """Gathering write of whole frames split over ``bufs`` (``total`` bytes in all)."""
        if not self.up or self.sock is None:
            self.drops_tx += frames
            return False
        sock = None
        try:
            with self._lock:
                sock = self.sock
                if sock is None:
                    raise OSError("link down")
                sent = sock.sendmsg(bufs)
                if sent < total:  # partial write: finish with a copy (rare)
                    sock.sendall(b"".join(bufs)[sent:])
        except OSError:
            self.drops_tx += frames
            self._broken(sock)
            return False
        self.frames_tx += frames
        return True

    def ping(self, now: float) -> None:
        self.last_ping = now
        if not self.up or self.sock is None:
            return
        # Never wait behind a writer blocked on a congested relay: skip this round.
        if self._lock.acquire(timeout=0.05):
            sock = self.sock
            try:
                if sock is not None:
                    sock.sendall(f.encode_ping(os.urandom(8)))
                    if self.ping_pending <= self.last_rx:  # the oldest ping not answered yet
                        self.ping_pending = now
            except OSError:
                self._broken(sock)
            finally:
                self._lock.release()

    def dead_reason(self, now: float) -> str | None:
        """Why the watchdog should declare this link dead now, if it should."""
        return dead_reason(now, self.last_rx, self.ping_pending)

    # --- the link thread ------------------------------------------------------------

    def _run(self) -> None:
        retrying = Retrying(
            wait=wait_exponential(multiplier=timers.BACKOFF_MIN, max=timers.BACKOFF_MAX)
            + wait_random(0, timers.BACKOFF_JITTER),
            stop=stop_when_event_set(self._stop),
            retry=retry_if_exception_type(Exception),
            reraise=False,
            sleep=self._sleep,
        )
        while not self._stop.is_set():
            successor, self._successor = self._successor, None
            if successor is not None:
                sock, leftover = successor  # registered under a new key (``rekey``)
            else:
                try:
                    sock, leftover = retrying(self._connect)
                except Exception:
                    return  # stopped while retrying
            self._serve(sock, leftover)
            if (
                not self._stop.is_set()
                and self._successor is None
                and self._rekey_until <= time.monotonic()
            ):
                self._sleep(timers.BACKOFF_MIN)
        if self._successor is not None:  # stopped during a rotation
            self._successor[0].close()

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once for ``rekey`` or ``stop``."""
        if self._kick.wait(seconds):
            self._kick.clear()

    def _connect(self) -> tuple[Stream, bytes]:
        """Connect and register. Right after ``rekey``, retry every
        ``REKEY_RETRY`` (the relay may admit the new key a moment after us)
        instead of backing off, until ``REKEY_RETRY_FOR`` ran out."""
        while True:
            try:
                got = self._connect_bounded()
            except InterruptedError:
                raise
            except Exception:
                if time.monotonic() >= self._rekey_until:
                    raise
                if self._stop.wait(timers.REKEY_RETRY):
                    raise InterruptedError("stopped") from None
                continue
            self._rekey_until = 0.0
            return got

    def _connect_bounded(self) -> tuple[Stream, bytes]:
        """A registration that does not complete within its bound is retried at
        once on a new connection (timers.REGISTER_BOUNDS): a load balancer
        spreads that one elsewhere than a hung replica."""
        for n, bound in enumerate(timers.REGISTER_BOUNDS, start=1):
            try:
                return self._connect_once(bound)
            except TimeoutError:
                if n == len(timers.REGISTER_BOUNDS) or self._stop.is_set():
                    raise
                log.info(
                    "event=relay-register-retry relay=%s bound=%.1fs attempt=%d",
                    self.name,
                    bound,
                    n,
                )
        raise AssertionError("unreachable")

    def _connect_once(self, register_timeout: float) -> tuple[Stream, bytes]:
        if self._stop.is_set():
            raise InterruptedError("stopped")
        if self.retiring:
            raise ConnectionAbortedError("retiring: a new agent holds the key")
        try:
            sock = open_stream(self.address, self.egress, dial, timers.CONNECT_TIMEOUT, self.fwmark)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "event=relay-connect-failed relay=%s transport=%s via=%s error=%s",
                self.name,
                self.egress.transport,
                self.egress.proxy.describe() if self.egress.proxy else "direct",
                self.last_error,
            )
            raise
        try:
            ok, leftover = register(sock, self.private_key, register_timeout)
        except Exception as exc:
            sock.close()
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("event=relay-register-failed relay=%s error=%s", self.name, exc)
            raise
        sock.settimeout(None)
        self.max_payload = ok.max_payload
        self.last_error = ""
        return sock, leftover

    def _serve(self, sock: Stream, leftover: bytes) -> None:
        with self._lock:
            self.sock = sock  # already, for a successor (writers moved to it first)
        self.last_rx = time.monotonic()
        self.ping_pending = 0.0
        was_up, self.up = self.up, True
        self.connects += 1
        log.info("event=relay-up relay=%s transport=%s", self.name, self.egress.transport)
        if self.on_state and not was_up:
            self.on_state(self)
        handed_over = False
        try:
            self._read_loop(sock, leftover)
        except (OSError, f.ProtocolError) as exc:
            if not self._stop.is_set() and self.sock is sock:
                log.warning("event=relay-down relay=%s error=%s", self.name, exc)
        finally:
            with self._lock:
                # Writers on a successor already: the link stays up across
                # the change of connection (``rekey``).
                handed_over = self.sock is not sock and self._successor is not None
                if not handed_over:
                    self.sock = None
            sock.close()
            if not handed_over:
                self.up = False
                if self.on_state:
                    self.on_state(self)

    def _read_loop(self, sock: Stream, leftover: bytes) -> None:
        buf = self._buf
        mv = memoryview(buf)
        size = len(buf)
        room = f.HEADER_LEN + f.MAX_PAYLOAD
        start = 0
        end = len(leftover)
        buf[:end] = leftover
        on_frame = self.on_frame
        on_batch = self.on_batch
        recv_type = f.RECV
        recv_batch = f.RECV_BATCH
        while True:
            i = start
            while end - i >= 3:
                ln = (buf[i + 1] << 8) | buf[i + 2]
                j = i + 3 + ln
                if j > end:
                    break
                t = buf[i]
                if t == recv_batch and ln >= 32:
                    packets, malformed = on_batch(mv[i + 3 : i + 35], mv[i + 35 : j])
                    self.frames_rx += packets
                    self.malformed_rx += malformed
                elif t == recv_type and ln >= 32:
                    self.frames_rx += 1
                    on_frame(mv[i + 3 : i + 35], mv[i + 35 : j])
                elif t in (recv_type, recv_batch):
                    raise f.ProtocolError("data frame shorter than a key")
                else:
                    self._control(f.decode_payload(t, bytes(mv[i + 3 : j])))
                i = j
            if end - i >= 1 and buf[i] not in f.FRAME_TYPES:
                raise f.ProtocolError(f"unknown frame type 0x{buf[i]:02x}")
            start = i
            if start == end:
                start = end = 0
            elif size - end < room:
                rest = bytes(mv[start:end])
                buf[: len(rest)] = rest
                start, end = 0, len(rest)
            n = sock.recv_into(mv[end:])
            if n == 0:
                raise ConnectionResetError("relay closed the connection")
            end += n
            self.last_rx = time.monotonic()

    def _control(self, ev: f.Event) -> None:
        if isinstance(ev, f.Ping):
            sock = self.sock
            if sock is not None:
                with self._lock:
                    sock.sendall(f.encode_pong(ev.data))
        elif isinstance(ev, f.PeerGone):
            self.peer_gone[ev.key] = time.monotonic()
        elif isinstance(ev, f.Close):
            raise ConnectionResetError(
                f"relay closed: {ev.reason} (code {ev.code}, {f.close_name(ev.code)})"
            )
        elif isinstance(ev, f.Pong):
            pass
        else:
            raise f.ProtocolError(f"unexpected {type(ev).__name__} from relay")


def _shut(sock: Stream) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def dead_reason(now: float, last_rx: float, ping_pending: float) -> str | None:
    """The liveness verdict on a link (pure; times from ``time.monotonic``).

    "silent": nothing at all arrived for ``DEAD_AFTER``. "unanswered": a PING
    went out ``PONG_TIMEOUT`` ago and not one byte (PONG or data) followed;
    a replica that hangs without a RST (stopped, frozen host) is left this way
    within about PING_INTERVAL + PONG_TIMEOUT."""
    if now - last_rx > timers.DEAD_AFTER:
        return "silent"
    if ping_pending > last_rx and now - ping_pending > timers.PONG_TIMEOUT:
        return "unanswered"
    return None


SO_MARK = 36


def dial(address: tuple[str, int], timeout: float, fwmark: int | None) -> socket.socket:
    """TCP connect, with ``fwmark`` set before the SYN.

    The mark sends the relay connection through the main routing table even
    when the relay's address is a mesh node's (a NodePort): without it the
    connection that carries the tunnel could be routed into the tunnel.
    """
    host, port = address
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            if fwmark is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot resolve {host}")
