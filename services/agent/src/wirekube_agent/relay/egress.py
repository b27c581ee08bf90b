"""How the agent's relay links leave the node: plain TCP or TLS, directly or through an HTTP proxy.

``Egress`` is plain data (it crosses the worker's JSON pipe): the transport
(``tcp`` | ``tls``), the name the relay's certificate must carry (also the
SNI), the CA bundle to verify it with (None: the system store) and the proxy,
if any. ``proxy_for`` is the pure choice of proxy: an explicit one (the mesh
spec's ``spec.relay.external.proxy``) wins; otherwise the standard
``HTTPS_PROXY``/``https_proxy`` variables, unless ``NO_PROXY``/``no_proxy``
exempts the relay (stdlib ``urllib.request`` semantics). The proxy applies
to TLS and to TCP alike (CONNECT carries any byte stream; proxies usually
permit only port 443, which is why TLS on 443 is the pair to use).

``open_stream`` is the I/O: TCP connect (with the agent's fwmark; link.dial),
the CONNECT exchange (connectproto) when proxied, then the TLS handshake
(tlsstream) when the transport is ``tls``. Every failure is an exception
whose message says what refused and why (a 407 status line, a certificate
that does not verify for the relay's name); the link logs it and retries
with backoff.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_agent.relay import timers
from wirekube_agent.relay.connectproto import ConnectResponse, ProxyProtocolError, connect_request
from wirekube_agent.relay.tlsstream import TlsStream

TRANSPORTS = ("tcp", "tls")


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return self.username, self.password or ""

    def describe(self) -> str:
        """For logs: never the password."""
        who = f"{self.username}@" if self.username else ""
        return f"http://{who}{self.host}:{self.port}"


@dataclass(frozen=True)
class Egress:
    transport: str = "tcp"
    server_name: str | None = None  # TLS: name to verify and send as SNI (None: the host dialled)
    ca_file: str | None = None  # TLS: PEM bundle; None: the system store
    proxy: Proxy | None = None
    proxy_credentials_file: str | None = None  # 'user:password', read at each connect

    def to_dict(self) -> dict[str, Any]:
        p = self.proxy
        return {
            "transport": self.transport,
            "server_name": self.server_name,
            "ca_file": self.ca_file,
            "proxy": None if p is None else [p.host, p.port, p.username, p.password],
            "proxy_credentials_file": self.proxy_credentials_file,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Egress:
        if not d:
            return cls()
        transport = str(d.get("transport") or "tcp")
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown relay transport {transport!r}")
        p = d.get("proxy")
        proxy = None if p is None else Proxy(str(p[0]), int(p[1]), p[2], p[3])
        return cls(
            transport,
            d.get("server_name"),
            d.get("ca_file"),
            proxy,
            d.get("proxy_credentials_file"),
        )


def parse_proxy_url(url: str, credentials: tuple[str, str] | None = None) -> Proxy:
    """``http://[user:password@]host[:port]`` -> Proxy. Credentials given
    apart (a Secret-mounted file) win over those in the URL."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"proxy {url!r}: only http:// proxies are supported (CONNECT)")
    if not parts.hostname:
        raise ValueError(f"proxy {url!r}: no host")
    try:
        port = parts.port or 3128
    except ValueError as exc:
        raise ValueError(f"proxy {url!r}: {exc}") from exc
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    if credentials is not None:
        user, password = credentials
    return Proxy(parts.hostname, port, user, password)


def read_credentials(path: str) -> tuple[str, str]:
    """A ``user:password`` file (one line; a Secret key mounted as a file)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read().strip()
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ValueError(f"{path}: expected one line 'user:password'")
    return user, password


def proxy_for(
    host: str,
    explicit: str | None,
    environ: Mapping[str, str],
    credentials: tuple[str, str] | None = None,
) -> Proxy | None:
    """The proxy to reach ``host`` through, or None. Pure (``environ`` given)."""
    if explicit:
        return parse_proxy_url(explicit, credentials)
    # Lower case wins over upper case, as curl and urllib do.
    url = environ.get("https_proxy") or environ.get("HTTPS_PROXY")
    if not url:
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    if no_proxy and _bypassed(host, no_proxy):
        return None
    return parse_proxy_url(url, credentials)


def _bypassed(host: str, no_proxy: str) -> bool:
    if no_proxy.strip() == "*":
        return True
    return bool(urllib.request.proxy_bypass_environment(host, {"no": no_proxy}))


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Client context: TLS 1.2 at least, the certificate and its name verified."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


Dial = Callable[[tuple[str, int], float, "int | None"], socket.socket]


def open_stream(
    address: tuple[str, int],
    egress: Egress,
    dial: Dial,
    connect_timeout: float,
    fwmark: int | None,
    context: ssl.SSLContext | None = None,
) -> socket.socket | TlsStream:
    """A connected stream to the relay at ``address``, per ``egress``."""
    host, port = address
    proxy = egress.proxy
    if proxy is not None and egress.proxy_credentials_file:
        # Read at each connect: a rotated Secret is used without a restart.
        user, password = read_credentials(egress.proxy_credentials_file)
        proxy = Proxy(proxy.host, proxy.port, user, password)
    sock = dial((proxy.host, proxy.port) if proxy else address, connect_timeout, fwmark)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        leftover = b""
        if proxy is not None:
            leftover = _tunnel(sock, proxy, host, port)
        if egress.transport != "tls":
            if leftover:  # the relay never speaks first; bytes here are not ours
                raise ProxyProtocolError("data before the relay handshake")
            return sock
        ctx = context or tls_context(egress.ca_file)
        stream = TlsStream(sock, ctx, egress.server_name or host)
        stream.handshake(timers.TLS_HANDSHAKE_TIMEOUT, leftover)
        return stream
    except BaseException:
        sock.close()
        raise


def _tunnel(sock: socket.socket, proxy: Proxy, host: str, port: int) -> bytes:
    deadline = time.monotonic() + timers.PROXY_TIMEOUT
    sock.sendall(connect_request(host, port, proxy.credentials))
    response = ConnectResponse()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"proxy {proxy.describe()} did not answer CONNECT in time")
        sock.settimeout(remaining)
        data = sock.recv(4096)
        if not data:
            response.eof()
        done = response.feed(data)
        if done is not None:
            return done.rest
