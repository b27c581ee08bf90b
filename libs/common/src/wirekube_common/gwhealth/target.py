"""``spec.healthCheck.target``: TCP connect when a port is given, ICMP otherwise.

Accepted forms: ``host:port``, ``host``, ``[v6]:port``, ``[v6]``, and a bare
IPv6 address (two or more colons and no brackets: no port). ``host`` may be an
IPv4/IPv6 literal or a DNS name (resolved on the probing node at probe time).
Pure: no resolution here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class InvalidTarget(ValueError):
    pass


@dataclass(frozen=True)
class ProbeTarget:
    host: str
    port: int | None = None

    @property
    def kind(self) -> str:
        return "icmp" if self.port is None else "tcp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidTarget(f"{original!r}: port must be 1-65535")
    return int(text)


def _host(text: str, original: str) -> str:
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise InvalidTarget(f"{original!r}: not a host")
    return text


def parse_target(text: str) -> ProbeTarget:
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise InvalidTarget(f"{text!r}: unterminated '['")
        host, rest = s[1:end], s[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidTarget(f"{text!r}: not an IPv6 address in brackets") from exc
        if not rest:
            return ProbeTarget(host)
        if not rest.startswith(":"):
            raise InvalidTarget(f"{text!r}: junk after ']'")
        return ProbeTarget(host, _port(rest[1:], text))
    if s.count(":") >= 2:
        try:
            return ProbeTarget(str(ipaddress.IPv6Address(s)))
        except ValueError as exc:
            raise InvalidTarget(f"{text!r}: not an IPv6 address (use [addr]:port)") from exc
    if ":" in s:
        host, _, port = s.partition(":")
        return ProbeTarget(_host(host, text), _port(port, text))
    return ProbeTarget(_host(s, text))
