"""The relay's TLS listener: the same relay protocol inside TLS, on a port of its own.

Sites whose firewall lets only TLS out (often only to port 443, often only
through an HTTP proxy) cannot reach the relay's plain TCP port. With
``--tls-listen`` (and ``--tls-cert-file``/``--tls-key-file``) the relay also
accepts TLS 1.2/1.3 connections there and hands them to the very same
forwarder (``RelayConnection`` on the server's shared ``Context``): peers on
TLS and on TCP register in one registry and reach each other. asyncio's SSL
transport decrypts before ``buffer_updated`` and encrypts every
``transport.write`` at once (before it returns), so the forwarder's reused
buffers are as safe here as on TCP.

A connection counts against its address's pending share (limits/sources.py) and
the relay's pending total from the moment it is accepted, not only once TLS
is up: ``TlsGate`` does that accounting for the TCP connection, refuses over
the limits before any TLS work, and runs the handshake itself
(``loop.start_tls``); the handshake done, it hands the connection to a
``RelayConnection``, which counts it again as any pending connection. So a
source that opens connections and never sends a ClientHello holds at most
its 64 slots for TLS_HANDSHAKE_TIMEOUT, as on TCP.

The certificate and key are read at start (a rotated Secret takes a restart:
the Deployment's rollout). No client certificates: agents prove their key in
the relay handshake, exactly as on TCP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from wirekube_common.relayproto import frames as f
from wirekube_relay.forwarder import Context, RelayConnection
from wirekube_relay.limits import bounds as limits
from wirekube_relay.server import listen

if TYPE_CHECKING:
    from wirekube_relay.server import RelayServer

log = logging.getLogger(__name__)

#: A TLS handshake must finish within this (one or two round trips plus an
#: ECDHE each side); a client that stalls it holds a socket for no longer.
TLS_HANDSHAKE_TIMEOUT = 10.0

#: The close_notify exchange at shutdown, at most.
TLS_SHUTDOWN_TIMEOUT = 2.0


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.2 at least; the certificate chain and key from PEM files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    # No session tickets: agents keep one long connection; a ticket is state
    # the relay would have to rotate keys for, to save one round trip a day.
    ctx.num_tickets = 0
    return ctx


class TlsGate(asyncio.Protocol):
    """One accepted TCP connection on the TLS port until its TLS handshake is
    done: counted per source and in the relay's pending total meanwhile."""

    def __init__(self, ctx: Context, context: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.context = context
        self.ip = "?"
        self.counted = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "?"
        remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        # nothing read until start_tls has put the TLS protocol in place
        transport.pause_reading()
        ctx.pending += 1
        refused = "relay-pending" if ctx.pending > ctx.limits.max_pending else None
        if refused is None:
            refused = ctx.sources.opened(self.ip)
            if refused is not None:
                ctx.sources.forget_if_idle(self.ip)
        if refused is not None:
            ctx.pending -= 1
            reason = f"overloaded:{refused}"
            ctx.stats.closes["overloaded"] += 1
            detail = f"{f.close_name(f.CLOSE_OVERLOADED)}: too many connections (before TLS)"
            ctx.refusals.refused(ctx.loop.time(), reason, remote, detail)
            transport.abort()
            return
        self.counted = True
        self.task = ctx.loop.create_task(self.handshake(transport))

    def release(self) -> None:
        if self.counted:
            self.counted = False
            self.ctx.pending -= 1
            self.ctx.sources.closed(self.ip, pending=True)

    async def handshake(self, transport: asyncio.Transport) -> None:
        conn = RelayConnection(self.ctx)
        try:
            tls_transport = await self.ctx.loop.start_tls(
                transport,
                conn,
                self.context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        except Exception as exc:  # any handshake failure (timeout, bad hello, reset) alike
            self.release()
            self.ctx.stats.closes["tls-handshake"] += 1
            log.debug("event=tls-handshake-failed remote_ip=%s error=%r", self.ip, exc)
            transport.abort()
            return
        self.release()  # the RelayConnection counts it from here
        if tls_transport is None or tls_transport.is_closing():
            return
        conn.connection_made(tls_transport)

    def data_received(self, data: bytes) -> None:  # paused: never called
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        # only before start_tls took the transport over (a refused one)
        self.release()


async def serve_tls(
    server: RelayServer, host: str, port: int, context: ssl.SSLContext
) -> tuple[asyncio.base_events.Server, int]:
    """Listen on ``host:port`` for TLS relay clients of ``server`` (already
    started); returns the listener and the bound port."""
    ctx = server.ctx
    assert ctx is not None, "start the RelayServer first"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    listener = await asyncio.get_running_loop().create_server(
        lambda: TlsGate(ctx, context), sock=sock, backlog=limits.ACCEPT_BATCH
    )
    listen(sock)
    bound = sock.getsockname()[1]
    log.info("event=listening-tls address=%s:%d", host, bound)
    return listener, bound
