"""One health probe with a deadline: TCP connect, or one ICMP echo.

TCP: a completed three-way handshake within the timeout is a success (the
connection is closed at once, nothing is sent); refused, unreachable or slow
is a failure. Names are resolved here, on the probing node.

ICMP: one echo request, success when the matching reply arrives within the
timeout. Socket choice, most to least preferred:

* an unprivileged "ping" socket (``SOCK_DGRAM``/``IPPROTO_ICMP``): needs the
  process's group inside ``net.ipv4.ping_group_range`` (most distributions
  allow every group); the kernel picks the identifier and routes only our
  replies to us;
* a raw socket: needs CAP_NET_RAW; it sees every ICMP packet of the network
  namespace, so replies are matched on source address, identifier, sequence
  and a random payload;
* neither: the probe fails with a message that says what to grant.

The codec is ``icmp`` (sans-IO); this module owns the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass

from wirekube_common.gwhealth import icmp
from wirekube_common.gwhealth.target import ProbeTarget


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    rtt_s: float | None = None


async def probe(target: ProbeTarget, timeout_s: float) -> ProbeResult:
    if target.port is None:
        return await icmp_probe(target.host, timeout_s)
    return await tcp_probe(target.host, target.port, timeout_s)


async def tcp_probe(host: str, port: int, timeout_s: float) -> ProbeResult:
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"tcp connect to {host}:{port} timed out after {timeout_s:g}s")
    except OSError as exc:
        return ProbeResult(False, f"tcp connect to {host}:{port}: {_why(exc)}")
    rtt = time.monotonic() - started
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, f"tcp connect to {host}:{port} in {rtt * 1000:.1f} ms", rtt)


def _why(exc: OSError) -> str:
    # asyncio wraps connect errors as "Connect call failed (...)"; the errno says more.
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _open_icmp_socket(family: int) -> tuple[socket.socket, bool]:
    """(socket, raw) - a ping socket if allowed, else a raw one; raises OSError."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except OSError as dgram_error:
        try:
            return socket.socket(family, socket.SOCK_RAW, proto), True
        except OSError as raw_error:
            raise OSError(
                f"ICMP unavailable (ping socket: {dgram_error.strerror}; raw socket: "
                f"{raw_error.strerror}): allow gid {os.getgid()} in net.ipv4.ping_group_range "
                "or grant CAP_NET_RAW"
            ) from raw_error


async def _resolve(host: str) -> tuple[int, str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_RAW)
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return family, str(info[4][0])
    raise OSError(f"{host}: no IPv4 or IPv6 address")


async def icmp_probe(host: str, timeout_s: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            family, address = await _resolve(host)
    except (TimeoutError, OSError) as exc:
        return ProbeResult(False, f"icmp {host}: cannot resolve ({exc or 'timeout'})")
    v6 = family == socket.AF_INET6
    try:
        sock, raw = _open_icmp_socket(family)
    except OSError as exc:
        return ProbeResult(False, f"icmp {address}: {exc}")
    kind = "raw socket" if raw else "ping socket"
    with sock:
        sock.setblocking(False)
        ident = int.from_bytes(os.urandom(2), "big")
        seq = int.from_bytes(os.urandom(2), "big")
        payload = b"wirekube-gw" + os.urandom(16)
        request = icmp.encode_echo_request(ident, seq, payload, v6=v6)
        started = time.monotonic()
        try:
            await loop.sock_sendto(sock, request, (address, 0))
            async with asyncio.timeout_at(deadline):
                while True:
                    data, source = await loop.sock_recvfrom(sock, 65535)
                    if _matches(data, source[0], address, ident, seq, payload, raw=raw, v6=v6):
                        rtt = time.monotonic() - started
                        return ProbeResult(
                            True, f"icmp echo {address} in {rtt * 1000:.1f} ms ({kind})", rtt
                        )
        except TimeoutError:
            return ProbeResult(
                False, f"icmp echo {address}: no reply within {timeout_s:g}s ({kind})"
            )
        except OSError as exc:
            return ProbeResult(False, f"icmp echo {address}: {_why(exc)} ({kind})")


def _matches(
    data: bytes,
    source: str,
    address: str,
    ident: int,
    seq: int,
    payload: bytes,
    *,
    raw: bool,
    v6: bool,
) -> bool:
    try:
        if raw and not v6:
            source, data = icmp.strip_ipv4_header(data)
        echo = icmp.decode(data, v6=v6)
    except icmp.IcmpError:
        return False
    if not echo.is_reply or echo.seq != seq or echo.payload != payload:
        return False
    if raw:
        # A raw socket sees everyone's ICMP; ping sockets get only their own
        # replies (the kernel rewrote our identifier to the socket's).
        return echo.ident == ident and source.split("%")[0] == address
    return True
