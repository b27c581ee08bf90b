"""The STUN server's sockets: UDP (one per address/port pair) and TCP.

Thin I/O around ``responder.respond`` (pure) and ``ratelimit.SourceLimiter``
(pure, fed a clock). One asyncio loop owns every socket:

* UDP: one socket per ``SocketIndex`` of the address table -- four in
  RFC 5780 mode -- because a CHANGE-REQUEST answer must *leave from* the
  other address; the responder says which socket (``Reply.via``) sends.
  Extra ``--also-listen`` addresses get a plain single-socket table each.
* TCP: a listener on the primary address (and extras); the byte stream is
  split into messages by ``framing.StreamSplitter`` with a small size bound,
  a connection cap, a per-source-IP connection cap and an idle timeout (see
  ``limits``); refused connections are closed at once and counted.

Order of checks per request: rate limits (per source IP, then global) →
responder (spoofed source, decode, method, attributes, amplification
budget). Every outcome is counted in ``Metrics``; nothing is logged per
packet above debug level, so a flood cannot turn into a log flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from wirekube_common.stun.endpoint import Endpoint, IPAddress
from wirekube_common.stun.framing import StreamError, StreamSplitter
from wirekube_stunprobe import limits
from wirekube_stunprobe.metrics import Metrics
from wirekube_stunprobe.ratelimit import SourceLimiter, Verdict
from wirekube_stunprobe.responder import (
    PRIMARY,
    AddressTable,
    Drop,
    DropReason,
    Reply,
    SocketIndex,
    respond,
)
from wirekube_stunprobe.settings import Settings

log = logging.getLogger(__name__)


def _udp_socket(ep: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ep.family == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, limits.UDP_RECV_BUFFER)
        sock.bind(ep.sockaddr())
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Endpoint], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            src = Endpoint.from_sockaddr(addr)
        except ValueError:
            return
        self._on_datagram(data, src)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone): nothing to do.
        log.debug("udp error: %s", exc)


class StunServer:
    def __init__(
        self, settings: Settings, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self.limiter = SourceLimiter(
            rate=settings.rate,
            burst=settings.burst,
            global_rate=settings.global_rate,
            global_burst=settings.global_burst,
            max_sources=limits.MAX_TRACKED_SOURCES,
            idle_seconds=limits.SOURCE_IDLE_SECONDS,
            now=clock(),
        )
        self.tables = [settings.table] + [
            AddressTable(Endpoint(ip, settings.table.primary.port)) for ip in settings.also_listen
        ]
        self._udp: dict[tuple[int, SocketIndex], asyncio.DatagramTransport] = {}
        self._tcp: list[asyncio.Server] = []
        self._tcp_conns = 0
        self._tcp_per_source: dict[IPAddress, int] = {}
        self.started = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for t_i, table in enumerate(self.tables):
                for index in table.indices():
                    sock = _udp_socket(table.address(index))
                    transport, _ = await loop.create_datagram_endpoint(
                        self._udp_factory(t_i, index), sock=sock
                    )
                    self._udp[(t_i, index)] = transport
                if self.settings.tcp:
                    ep = table.primary
                    server = await asyncio.start_server(
                        self._tcp_handler(t_i),
                        host=str(ep.ip),
                        port=ep.port,
                        reuse_address=True,
                    )
                    self._tcp.append(server)
        except BaseException:
            self.close()
            raise
        log.info(
            "stun server listening",
            extra={
                "udp": ",".join(str(self.tables[t].address(i)) for t, i in self._udp),
                "tcp": ",".join(str(t.primary) for t in self.tables) if self.settings.tcp else "",
                "rfc5780": self.settings.table.rfc5780,
            },
        )
        self.started.set()

    def _udp_factory(self, t_i: int, index: SocketIndex) -> Callable[[], _Udp]:
        def on_datagram(data: bytes, src: Endpoint) -> None:
            self._on_udp(data, src, t_i, index)

        return lambda: _Udp(on_datagram)

    def _tcp_handler(
        self, t_i: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._on_tcp(reader, writer, t_i)

        return handler

    async def serve(self) -> None:
        """Run until cancelled (the supervisor's stop), then close every socket."""
        await self.start()
        try:
            while True:
                await asyncio.sleep(limits.PRUNE_INTERVAL_SECONDS)
                self.limiter.prune(self._clock())
                self.metrics.tracked_sources.set(len(self.limiter))
        finally:
            self.close()

    def close(self) -> None:
        for transport in self._udp.values():
            transport.close()
        self._udp.clear()
        for server in self._tcp:
            server.close()
        self._tcp.clear()

    # ------------------------------------------------------------------ request path

    def _admit(self, ip: IPAddress, transport: str) -> bool:
        verdict = self.limiter.allow(ip, self._clock())
        if verdict is Verdict.ALLOW:
            return True
        reason = (
            DropReason.RATE_LIMITED
            if verdict is Verdict.SOURCE_LIMITED
            else DropReason.GLOBAL_LIMIT
        )
        self.metrics.drops.labels(transport, reason.value).inc()
        return False

    def _on_udp(self, data: bytes, src: Endpoint, t_i: int, index: SocketIndex) -> None:
        self.metrics.requests.labels("udp").inc()
        if not self._admit(src.ip, "udp"):
            return
        out = respond(
            data,
            src,
            index,
            self.tables[t_i],
            max_factor=self.settings.max_factor,
            software=self.settings.software,
        )
        if isinstance(out, Drop):
            self.metrics.drops.labels("udp", out.reason.value).inc()
            log.debug("drop", extra={"src": str(src), "reason": out.reason.value})
            return
        transport = self._udp.get((t_i, out.via))
        if transport is None or transport.is_closing():
            self.metrics.drops.labels("udp", DropReason.SEND_FAILED.value).inc()
            return
        transport.sendto(out.datagram, out.to.sockaddr())
        self._count_reply("udp", out)

    def _count_reply(self, transport: str, out: Reply) -> None:
        kind = "error" if out.error is not None else "success"
        self.metrics.responses.labels(transport, kind).inc()

    async def _on_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, t_i: int
    ) -> None:
        peer = writer.get_extra_info("peername")
        if self._tcp_conns >= limits.MAX_TCP_CONNECTIONS or peer is None:
            self.metrics.drops.labels("tcp", DropReason.TCP_CONNECTIONS.value).inc()
            writer.close()
            return
        src = Endpoint.from_sockaddr(peer)
        held = self._tcp_per_source.get(src.ip, 0)
        if held >= limits.MAX_TCP_PER_SOURCE:
            self.metrics.drops.labels("tcp", DropReason.TCP_SOURCE_CONNECTIONS.value).inc()
            writer.close()
            return
        self._tcp_per_source[src.ip] = held + 1
        self._tcp_conns += 1
        self.metrics.tcp_connections.set(self._tcp_conns)
        splitter = StreamSplitter(max_message=limits.MAX_TCP_MESSAGE)
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(4096), limits.TCP_IDLE_SECONDS)
                if not chunk:
                    return
                try:
                    messages = splitter.feed(chunk)
                except StreamError as exc:
                    # the requests whole before the garbage are answered, as
                    # they would be had the garbage come in a later read
                    for message in exc.complete:
                        self._on_tcp_message(message, src, t_i, writer)
                    self.metrics.requests.labels("tcp").inc()
                    self.metrics.drops.labels("tcp", DropReason.TCP_FRAMING.value).inc()
                    await writer.drain()
                    return
                for message in messages:
                    self._on_tcp_message(message, src, t_i, writer)
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            return
        finally:
            self._tcp_conns -= 1
            left = self._tcp_per_source.pop(src.ip) - 1
            if left:
                self._tcp_per_source[src.ip] = left
            self.metrics.tcp_connections.set(self._tcp_conns)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _on_tcp_message(
        self, message: bytes, src: Endpoint, t_i: int, writer: asyncio.StreamWriter
    ) -> None:
        self.metrics.requests.labels("tcp").inc()
        if not self._admit(src.ip, "tcp"):
            return
        out = respond(
            message, src, PRIMARY, self.tables[t_i], tcp=True, software=self.settings.software
        )
        if isinstance(out, Drop):
            self.metrics.drops.labels("tcp", out.reason.value).inc()
            return
        writer.write(out.datagram)
        self._count_reply("tcp", out)
