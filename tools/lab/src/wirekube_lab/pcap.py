"""Read TCP payloads out of a classic pcap file (what ``tcpdump -w`` writes in a lab host).

Tests capture a real exchange on a lab link (a relay registration, a replica
joining the mesh) and replay parts of it as an attacker would. Pure: bytes of
a file in, segments out; Ethernet + IPv4 + TCP only (the lab is IPv4-only),
anything else is skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_LE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")  # micro / nanosecond stamps
_BE_MAGICS = (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
_ETHERNET = 1


class PcapError(ValueError):
    """Not a classic pcap file of an Ethernet link."""


@dataclass(frozen=True)
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def records(data: bytes) -> list[bytes]:
    """The captured packets of a pcap file (a truncated last record is dropped)."""
    if len(data) < 24:
        raise PcapError("shorter than a pcap header")
    magic = data[:4]
    if magic in _LE_MAGICS:
        endian = "<"
    elif magic in _BE_MAGICS:
        endian = ">"
    else:
        raise PcapError("not a pcap file")
    if struct.unpack(endian + "I", data[20:24])[0] != _ETHERNET:
        raise PcapError("not an Ethernet capture")
    out, i = [], 24
    while i + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[i + 8 : i + 12])[0]
        if i + 16 + incl > len(data):
            break
        out.append(data[i + 16 : i + 16 + incl])
        i += 16 + incl
    return out


def tcp_segments(data: bytes) -> list[Segment]:
    """TCP/IPv4 segments that carry a payload, in capture order."""
    out = []
    for pkt in records(data):
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6 or len(ip) < ihl + 20:
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            src = ".".join(map(str, ip[12:16]))
            dst = ".".join(map(str, ip[16:20]))
            sport, dport = struct.unpack("!HH", tcp[:4])
            out.append(Segment((src, sport), (dst, dport), bytes(payload)))
    return out
