"""ICMP echo, sans-IO: build requests, parse replies; no sockets here.

RFC 792 (IPv4) and RFC 4443 (IPv6) echo messages: type, code, checksum,
identifier, sequence number, payload. IPv4 checksums are computed and checked
here; for ICMPv6 the kernel owns the checksum (it covers a pseudo-header with
addresses only the kernel knows for sure), so we send 0 and do not check.

Raw IPv4 sockets deliver the IP header too (``strip_ipv4_header``); datagram
("ping") sockets and ICMPv6 sockets deliver the ICMP message alone. Every input
either decodes or raises ``IcmpError`` (fuzzed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ECHO_REPLY_V4 = 0
ECHO_REQUEST_V4 = 8
ECHO_REQUEST_V6 = 128
ECHO_REPLY_V6 = 129
HEADER = struct.Struct("!BBHHH")


class IcmpError(ValueError):
    pass


@dataclass(frozen=True)
class Echo:
    type: int
    code: int
    ident: int
    seq: int
    payload: bytes

    @property
    def is_reply(self) -> bool:
        return self.type in (ECHO_REPLY_V4, ECHO_REPLY_V6)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_request(ident: int, seq: int, payload: bytes, *, v6: bool = False) -> bytes:
    kind = ECHO_REQUEST_V6 if v6 else ECHO_REQUEST_V4
    ident &= 0xFFFF
    seq &= 0xFFFF
    header = HEADER.pack(kind, 0, 0, ident, seq)
    if v6:
        return header + payload
    return HEADER.pack(kind, 0, checksum(header + payload), ident, seq) + payload


def decode(message: bytes, *, v6: bool = False) -> Echo:
    """Decode an ICMP echo request or reply (without IP header)."""
    if len(message) < HEADER.size:
        raise IcmpError(f"short ICMP message ({len(message)} bytes)")
    kind, code, _, ident, seq = HEADER.unpack_from(message)
    echo_types = (ECHO_REQUEST_V6, ECHO_REPLY_V6) if v6 else (ECHO_REQUEST_V4, ECHO_REPLY_V4)
    if kind not in echo_types or code != 0:
        raise IcmpError(f"not an echo message (type {kind} code {code})")
    if not v6 and checksum(message) != 0:
        raise IcmpError("bad ICMP checksum")
    return Echo(kind, code, ident, seq, bytes(message[HEADER.size :]))


def strip_ipv4_header(packet: bytes) -> tuple[str, bytes]:
    """Split what a raw IPv4 socket delivers into (source address, ICMP message)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise IcmpError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        raise IcmpError("bad IPv4 header length")
    if packet[9] != 1:
        raise IcmpError(f"not ICMP (protocol {packet[9]})")
    source = ".".join(str(b) for b in packet[12:16])
    return source, bytes(packet[ihl:])
