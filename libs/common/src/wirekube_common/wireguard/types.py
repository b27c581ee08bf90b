"""Backend-neutral WireGuard device state and configuration changes.

Observed state (``DeviceState``/``PeerState``) is what a device reports;
``DeviceConfig``/``PeerConfig`` describe a change, with ``None`` meaning "leave
as it is". Keys are raw 32-byte values; allowed IPs are normalised
``ipaddress`` networks so desired and observed sets compare equal without
string games (``10.0.0.5/32`` and ``10.0.0.5`` are the same route).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The one endpoint type of the repo: (ip text, port), as WireGuard, the CRDs
# and the agent's path rules spell it. (``wirekube_common.stun.endpoint.Endpoint``
# is the STUN codec's parsed address value; the agent converts at that edge.)
Endpoint = tuple[str, int]


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``ip:port`` or ``[ipv6]:port`` into (ip, port); raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad endpoint {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad endpoint {text!r}")
    ip = ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in endpoint {text!r}")
    return (str(ip), int(port))


def format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PeerState:
    public_key: bytes
    endpoint: Endpoint | None = None
    allowed_ips: frozenset[IPNetwork] = frozenset()
    persistent_keepalive: int = 0
    last_handshake: float = 0.0  # unix seconds; 0 = never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class DeviceState:
    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: dict[bytes, PeerState] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerConfig:
    public_key: bytes
    remove: bool = False
    endpoint: Endpoint | None = None
    # None leaves the peer's allowed IPs alone; a tuple replaces them wholesale.
    allowed_ips: tuple[IPNetwork, ...] | None = None
    persistent_keepalive: int | None = None
    update_only: bool = False


@dataclass(frozen=True)
class DeviceConfig:
    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: tuple[PeerConfig, ...] = ()
