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

from wirekube_relay.forwarder import RelayConnection

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
        lambda: RelayConnection(ctx),
        sock=sock,
        backlog=4096,
        ssl=context,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
    )
    bound = sock.getsockname()[1]
    log.info("event=listening-tls address=%s:%d", host, bound)
    return listener, bound
