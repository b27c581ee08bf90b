"""pcap reading: segments out of a file as tcpdump writes it (built here byte by byte)."""

from __future__ import annotations

import struct

import pytest

from wirekube_lab.pcap import PcapError, Segment, records, tcp_segments


def _packet(src: str, dst: str, sport: int, dport: int, payload: bytes, proto: int = 6) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0,
        bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))),
    )  # fmt: skip
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def _pcap(packets: list[bytes], endian: str = "<", linktype: int = 1) -> bytes:
    out = struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for p in packets:
        out += struct.pack(endian + "IIII", 0, 0, len(p), len(p)) + p
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
def test_tcp_payloads_in_capture_order(endian: str) -> None:
    data = _pcap(
        [
            _packet("198.18.0.11", "198.18.0.12", 40000, 3478, b"hello"),
            _packet("198.18.0.11", "198.18.0.12", 40000, 3478, b""),  # a bare ACK
            _packet("198.18.0.12", "198.18.0.11", 3478, 40000, b"x", proto=17),  # not TCP
            _packet("198.18.0.12", "198.18.0.11", 3478, 40000, b"challenge"),
        ],
        endian,
    )
    assert tcp_segments(data) == [
        Segment(("198.18.0.11", 40000), ("198.18.0.12", 3478), b"hello"),
        Segment(("198.18.0.12", 3478), ("198.18.0.11", 40000), b"challenge"),
    ]


def test_a_truncated_last_record_is_dropped() -> None:
    data = _pcap(
        [_packet("1.1.1.1", "2.2.2.2", 1, 2, b"a"), _packet("1.1.1.1", "2.2.2.2", 1, 2, b"b")]
    )
    assert len(records(data[:-5])) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"short", "shorter"), (b"\x00" * 24, "not a pcap"), (_pcap([], linktype=113), "Ethernet")],
)
def test_other_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        records(data)
