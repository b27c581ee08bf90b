"""Thin asyncio adapters around the sans-IO ``StunClient``.

``StunDriver`` turns a ``StunClient`` into awaitables: it keeps one
``loop.call_at`` timer armed at the client's next deadline and resolves a
future per transaction. It owns no socket -- it is given a ``send`` and its
``feed`` is called with received datagrams -- so the same driver runs over
an ordinary UDP socket (``UdpStunSocket`` below) or over the raw-socket port
that shares the WireGuard listen port (``wirekube_common.rawudp``).

``UdpStunSocket`` is the simple case: a UDP socket it owns (IPv4 or IPv6,
optionally bound to a fixed local port so that several servers see the same
local endpoint, which NAT typing needs). ``RawStunSocket`` probes from a port
that another socket owns -- WireGuard's -- through ``rawudp``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from wirekube_common.rawudp import AsyncRawUdpPort, Datagram, RawUdpPort
from wirekube_common.stun.client import BindingResult, SendFn, StunClient
from wirekube_common.stun.codec import MAGIC_COOKIE, is_stun
from wirekube_common.stun.endpoint import Endpoint, IPAddress, split_host_port
from wirekube_common.stun.timers import DISCOVERY_POLICY, RetransmitPolicy

DEFAULT_STUN_PORT = 3478


class StunDriver:
    """Timers and futures for a ``StunClient`` on the running loop."""

    def __init__(
        self,
        send: SendFn,
        *,
        policy: RetransmitPolicy = DISCOVERY_POLICY,
        software: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.client = StunClient(send, clock=self._loop.time, policy=policy, software=software)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None

    def feed(self, data: bytes, source: Endpoint) -> bool:
        """Hand a received datagram to the client; True if it was one of our replies."""
        used = self.client.on_datagram(data, source)
        if used:
            self._rearm()
        return used

    async def binding(
        self,
        server: Endpoint,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        policy: RetransmitPolicy | None = None,
    ) -> BindingResult:
        """One Binding transaction; always returns (timeouts are results, not errors)."""
        fut: asyncio.Future[BindingResult] = self._loop.create_future()

        def done(result: BindingResult) -> None:
            if not fut.done():
                fut.set_result(result)

        txn = self.client.start(
            server, change_ip=change_ip, change_port=change_port, policy=policy, on_done=done
        )
        self._rearm()
        try:
            return await fut
        finally:
            if not txn.done:
                self.client.cancel(txn)
                self._rearm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm(self) -> None:
        deadline = self.client.next_deadline()
        if deadline == self._armed_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = None
        self.client.poll()
        self._rearm()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpStunSocket) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            source = Endpoint.from_sockaddr(addr)
        except ValueError:
            return
        self._owner.driver.feed(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) surface here on Linux; retransmission
        # and timeouts already cover them, so they are only counted.
        self._owner.icmp_errors += 1


class UdpStunSocket:
    """A UDP socket owned by this object, with a ``StunDriver`` on top."""

    def __init__(self) -> None:
        self.driver: StunDriver
        self.icmp_errors = 0
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(
        cls,
        local_host: str = "0.0.0.0",
        local_port: int = 0,
        *,
        policy: RetransmitPolicy = DISCOVERY_POLICY,
        software: str | None = None,
    ) -> UdpStunSocket:
        """Bind a socket; the family follows ``local_host`` ("::" for IPv6)."""
        self = cls()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((local_host, local_port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.driver = StunDriver(self._send, policy=policy, software=software)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        return self

    @property
    def local(self) -> Endpoint:
        assert self._transport is not None
        return Endpoint.from_sockaddr(self._transport.get_extra_info("sockname"))

    def _send(self, data: bytes, dest: Endpoint) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, dest.sockaddr())

    async def binding(
        self,
        server: Endpoint,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        policy: RetransmitPolicy | None = None,
    ) -> BindingResult:
        return await self.driver.binding(
            server, change_ip=change_ip, change_port=change_port, policy=policy
        )

    def close(self) -> None:
        self.driver.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> UdpStunSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def resolve(server: str, family: int = 0) -> list[Endpoint]:
    """Resolve ``host[:port]`` (default port 3478) to endpoints, in resolver order."""
    host, port = split_host_port(server, DEFAULT_STUN_PORT)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    seen: dict[tuple[int, int, int], Endpoint] = {}
    for _fam, _type, _proto, _canon, addr in infos:
        ep = Endpoint.from_sockaddr(addr)
        seen.setdefault(ep.key(), ep)
    return list(seen.values())


class RawStunSocket:
    """STUN from a port another socket owns (the WireGuard listen port), via ``rawudp``.

    STUN replies go to the driver; every other datagram addressed to the port
    (WireGuard traffic, path probes) goes to ``on_other`` if given. Send
    errors (no route yet, interface down) are counted, not raised: the
    retransmission timer and the timeout already turn them into results.
    """

    def __init__(
        self,
        port: int,
        *,
        family: int = socket.AF_INET,
        fwmark: int | None = None,
        policy: RetransmitPolicy = DISCOVERY_POLICY,
        software: str | None = None,
        on_other: Callable[[Datagram], None] | None = None,
        other_words: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.send_errors = 0
        self._on_other = on_other
        self.driver = StunDriver(self._send, policy=policy, software=software)
        # With ``other_words`` the kernel passes up only STUN plus datagrams
        # carrying one of those words (e.g. a probe protocol's magic), never
        # the tunnel's own traffic; without it, everything to the port.
        words = None if other_words is None else [(4, MAGIC_COOKIE), *other_words]
        raw = RawUdpPort(port, family=family, fwmark=fwmark, payload_words=words or ())
        self.port = AsyncRawUdpPort(raw, self._on_dgram)

    def _on_dgram(self, dgram: Datagram) -> None:
        if is_stun(dgram.payload) and self.driver.feed(dgram.payload, dgram.src):
            return
        if self._on_other is not None:
            self._on_other(dgram)

    def _send(self, data: bytes, dest: Endpoint) -> None:
        self.send(data, dest)

    def send(self, data: bytes, dest: Endpoint) -> bool:
        """Send any datagram from the shared port; False (and counted) on failure."""
        try:
            self.port.send(data, dest)
        except OSError:
            self.send_errors += 1
            return False
        return True

    async def binding(
        self,
        server: Endpoint,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        policy: RetransmitPolicy | None = None,
    ) -> BindingResult:
        return await self.driver.binding(
            server, change_ip=change_ip, change_port=change_port, policy=policy
        )

    def close(self) -> None:
        self.driver.close()
        self.port.close()


def is_local_address(ip: IPAddress) -> bool:
    """True when ``ip`` is configured on this host (a bind to it succeeds; sends nothing)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return False
    return True
