"""An IP endpoint (address + port) as a frozen value, with ``host:port`` parsing.

STUN results, NAT observations and server configuration all speak in
endpoints; keeping them as a hashable value (not ``(str, int)`` tuples from
the socket layer) makes comparisons exact: ``::ffff:1.2.3.4`` is normalised to
``1.2.3.4`` so a dual-stack socket's view and an IPv4 socket's view compare
equal, and the text form is the one the CRDs use (``1.2.3.4:51820``,
``[2001:db8::1]:51820``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalise_ip(value: str | IPAddress) -> IPAddress:
    """Parse an address, strip an IPv6 zone id and unwrap IPv4-mapped IPv6."""
    if isinstance(value, str):
        value = ipaddress.ip_address(value.split("%", 1)[0])
    if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
        return value.ipv4_mapped
    return value


@dataclass(frozen=True, order=True)
class Endpoint:
    """A transport address. ``ip`` is always normalised (see module docstring)."""

    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", normalise_ip(self.ip))
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.ip.version

    def key(self) -> tuple[int, int, int]:
        return (self.ip.version, int(self.ip), self.port)

    def sockaddr(self) -> tuple[str, int]:
        """The form ``socket.sendto`` wants."""
        return (str(self.ip), self.port)

    def __str__(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    @classmethod
    def from_sockaddr(cls, addr: tuple[object, ...]) -> Endpoint:
        """Build from a socket address tuple (IPv4 2-tuple or IPv6 4-tuple)."""
        return cls(normalise_ip(str(addr[0])), int(str(addr[1])))

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``ip:port`` or ``[ipv6]:port`` (literal addresses only)."""
        host, port = split_host_port(text)
        return cls(normalise_ip(host), port)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port``, or a bare host when a default port is given.

    Raises ``ValueError`` for anything else. The host may be a name.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated '[' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            if default_port is None:
                raise ValueError(f"missing port in {text!r}")
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"garbage after ']' in {text!r}")
        return host, _port(rest[1:], text)
    if text.count(":") == 1:
        host, port = text.split(":")
        if not host:
            raise ValueError(f"empty host in {text!r}")
        return host, _port(port, text)
    if default_port is not None and text:
        if text.count(":") > 1:
            return text, default_port  # a bare IPv6 literal
        return text, default_port
    raise ValueError(f"expected host:port, got {text!r}")


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad port in {whole!r}")
    port = int(text)
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"port out of range in {whole!r}")
    return port
