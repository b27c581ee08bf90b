"""The HTTP CONNECT exchange with a forward proxy, sans-IO: bytes in, a result out.

A site that lets only HTTPS out does so through a proxy; the relay link asks
the proxy for a tunnel to the relay (RFC 9110 section 9.3.6) and, once the
proxy answers 2xx, speaks the relay protocol (inside TLS) through it.

``connect_request`` builds the request; ``ConnectResponse`` is fed whatever
the proxy sends and says, once the response head is complete, either
``Established`` (with any bytes that followed the head: they belong to the
tunnel) or raises ``ProxyRefused`` (a non-2xx status; the message carries
the status line, so a 407 from a wrong password reads as such in the log).
Anything that is not an HTTP/1.x response head, or a head longer than
``MAX_HEAD``, raises ``ProxyProtocolError``. No socket here: the link feeds
it (link.py), the unit tests and the fuzz test feed it directly.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

#: Largest response head accepted (status line + headers). Proxies answer a
#: CONNECT with a few hundred bytes; 16 KiB bounds a hostile or broken one.
MAX_HEAD = 16 * 1024

_STATUS_RE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: ([\x20-\x7e\t]*))?$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\-\[\]]+$")


class ProxyError(Exception):
    """The proxy did not open the tunnel."""


class ProxyRefused(ProxyError):
    """The proxy answered with a non-2xx status (``status``, ``status_line``)."""

    def __init__(self, status: int, status_line: str) -> None:
        super().__init__(f"proxy refused the tunnel: {status_line}")
        self.status = status
        self.status_line = status_line


class ProxyProtocolError(ProxyError):
    """What the proxy sent is not an HTTP/1.x response head (or is too long)."""


@dataclass(frozen=True)
class Established:
    """The tunnel is open; ``rest`` arrived after the head and is tunnel data."""

    status: int
    rest: bytes


def basic_auth(username: str, password: str) -> str:
    """The ``Proxy-Authorization`` value for Basic credentials (RFC 7617)."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def authority(host: str, port: int) -> str:
    """``host:port`` as a request target (IPv6 literals in brackets)."""
    if not _HOST_RE.match(host) or not 0 < port < 65536:
        raise ValueError(f"not a CONNECT target: {host!r}:{port}")
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def connect_request(host: str, port: int, credentials: tuple[str, str] | None = None) -> bytes:
    """The CONNECT request for ``host:port``, with Basic credentials if given."""
    target = authority(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if credentials is not None:
        user, password = credentials
        if any(c in user + password for c in "\r\n"):
            raise ValueError("proxy credentials contain a line break")
        lines.append(f"Proxy-Authorization: {basic_auth(user, password)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class ConnectResponse:
    """Feed the proxy's bytes; ``feed`` returns None until the head is complete."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._buf = bytearray()
        self._max = max_head
        self.done = False

    def feed(self, data: bytes) -> Established | None:
        if self.done:
            raise ProxyProtocolError("fed after the response head was complete")
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._max:
                raise ProxyProtocolError(f"response head longer than {self._max} bytes")
            return None
        if end + 4 > self._max:
            raise ProxyProtocolError(f"response head longer than {self._max} bytes")
        self.done = True
        head = bytes(self._buf[:end])
        rest = bytes(self._buf[end + 4 :])
        status_line = head.split(b"\r\n", 1)[0]
        m = _STATUS_RE.match(status_line)
        if m is None:
            shown = status_line[:80].decode("ascii", "replace")
            raise ProxyProtocolError(f"not an HTTP/1.x status line: {shown!r}")
        status = int(m.group(1))
        if not 200 <= status < 300:
            raise ProxyRefused(status, status_line.decode("ascii"))
        return Established(status, rest)

    def eof(self) -> None:
        """The proxy closed the connection before finishing its answer."""
        if not self.done:
            raise ProxyProtocolError(
                f"proxy closed the connection after {len(self._buf)} bytes of its answer"
            )
