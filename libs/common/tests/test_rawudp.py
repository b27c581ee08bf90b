"""Pure parts of rawudp: packet building/parsing, checksums, and the BPF program
(executed by a tiny classic-BPF interpreter written here for the test)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_common import rawudp
from wirekube_common.stun.endpoint import Endpoint

SRC = Endpoint.parse("10.0.0.2:51820")
DST = Endpoint.parse("203.0.113.10:3478")


def run_bpf(program: list[tuple[int, int, int, int]], pkt: bytes) -> int:
    """Interpret the subset of classic BPF our programs use."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x28:  # ldh [k]
            a = struct.unpack_from("!H", pkt, k)[0]
        elif code == 0x48:  # ldh [x + k]
            a = struct.unpack_from("!H", pkt, x + k)[0]
        elif code == 0x20:  # ld [k]
            if k + 4 > len(pkt):
                return 0  # out of bounds: the kernel drops the packet
            a = struct.unpack_from("!I", pkt, k)[0]
        elif code == 0x40:  # ld [x + k]
            if x + k + 4 > len(pkt):
                return 0
            a = struct.unpack_from("!I", pkt, x + k)[0]
        elif code == 0xB1:  # ldxb 4*([k]&0xf)
            x = 4 * (pkt[k] & 0x0F)
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x45:  # jset #k
            pc += jt if a & k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_ipv4_packet_fields_and_checksums() -> None:
    pkt = rawudp.build_udp_ipv4(SRC, DST, b"hello", ident=7)
    assert len(pkt) == 20 + 8 + 5
    assert pkt[0] == 0x45 and pkt[9] == 17 and struct.unpack_from("!H", pkt, 2)[0] == len(pkt)
    assert struct.unpack_from("!H", pkt, 6)[0] == 0x4000  # DF
    assert rawudp.internet_checksum(pkt[:20]) == 0  # header checksum verifies
    pseudo = SRC.ip.packed + DST.ip.packed + struct.pack("!BBH", 0, 17, 13)
    assert rawudp.internet_checksum(pseudo + pkt[20:]) == 0  # UDP checksum verifies
    assert struct.unpack_from("!HH", pkt, 20) == (51820, 3478)


def test_parse_round_trip_and_rejects() -> None:
    pkt = rawudp.build_udp_ipv4(SRC, DST, b"payload")
    d = rawudp.parse_udp_ipv4(pkt)
    assert d == rawudp.Datagram(b"payload", SRC, DST)
    assert rawudp.parse_udp_ipv4(pkt[:27]) is None
    frag = bytearray(pkt)
    frag[6:8] = struct.pack("!H", 0x0010)  # non-first fragment
    assert rawudp.parse_udp_ipv4(bytes(frag)) is None
    tcp = bytearray(pkt)
    tcp[9] = 6
    assert rawudp.parse_udp_ipv4(bytes(tcp)) is None
    v6 = rawudp.parse_udp_ipv6(
        rawudp.build_udp_header(1, 2, b"xy"),
        ipaddress.IPv6Address("fd00::1"),
        ipaddress.IPv6Address("fd00::2"),
    )
    assert v6 == rawudp.Datagram(
        b"xy", Endpoint.parse("[fd00::1]:1"), Endpoint.parse("[fd00::2]:2")
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(1, 65535), st.integers(1, 65535))
def test_checksum_property(payload: bytes, sport: int, dport: int) -> None:
    src, dst = Endpoint.parse(f"192.0.2.1:{sport}"), Endpoint.parse(f"198.51.100.2:{dport}")
    pkt = rawudp.build_udp_ipv4(src, dst, payload)
    pseudo = src.ip.packed + dst.ip.packed + struct.pack("!BBH", 0, 17, 8 + len(payload))
    assert rawudp.internet_checksum(pseudo + pkt[20:]) == 0
    assert rawudp.parse_udp_ipv4(pkt) == rawudp.Datagram(payload, src, dst)


def _with_options(pkt: bytes) -> bytes:
    """Same packet with 8 bytes of IP options (IHL 7): the filter must use the IHL."""
    header = bytearray(pkt[:20])
    header[0] = 0x47
    header[2:4] = struct.pack("!H", len(pkt) + 8)
    return bytes(header) + b"\x01" * 8 + pkt[20:]


@pytest.mark.parametrize("port", [51820, 3478])
def test_bpf_ipv4(port: int) -> None:
    prog = rawudp.bpf_dst_port_program(port, ipv6=False)
    to_port = rawudp.build_udp_ipv4(DST, Endpoint(SRC.ip, port), b"x")
    other = rawudp.build_udp_ipv4(DST, Endpoint(SRC.ip, port + 1), b"x")
    assert run_bpf(prog, to_port) > 0
    assert run_bpf(prog, _with_options(to_port)) > 0
    assert run_bpf(prog, other) == 0
    assert run_bpf(prog, _with_options(other)) == 0
    frag = bytearray(to_port)
    frag[6:8] = struct.pack("!H", 0x0020)
    assert run_bpf(prog, bytes(frag)) == 0


def test_bpf_ipv6() -> None:
    prog = rawudp.bpf_dst_port_program(51820, ipv6=True)
    assert run_bpf(prog, rawudp.build_udp_header(3478, 51820, b"x")) > 0
    assert run_bpf(prog, rawudp.build_udp_header(51820, 3478, b"x")) == 0


COOKIE = 0x2112A442
MAGIC = 0x574B4401


def test_bpf_payload_words_keep_only_probes() -> None:
    words = [(4, COOKIE), (0, MAGIC)]
    prog4 = rawudp.bpf_dst_port_program(51820, ipv6=False, payload_words=words)
    prog6 = rawudp.bpf_dst_port_program(51820, ipv6=True, payload_words=words)
    stun = b"\x01\x01\x00\x00" + struct.pack("!I", COOKIE) + b"t" * 12
    disco = struct.pack("!I", MAGIC) + b"ping"
    wireguard = b"\x04\x00\x00\x00" + b"d" * 60
    to = Endpoint(SRC.ip, 51820)
    for payload, keep in ((stun, True), (disco, True), (wireguard, False), (b"", False)):
        pkt = rawudp.build_udp_ipv4(DST, to, payload)
        assert (run_bpf(prog4, pkt) > 0) is keep, payload
        assert (run_bpf(prog4, _with_options(pkt)) > 0) is keep, payload
        assert (run_bpf(prog6, rawudp.build_udp_header(3478, 51820, payload)) > 0) is keep
    other_port = rawudp.build_udp_ipv4(DST, Endpoint(SRC.ip, 51821), stun)
    assert run_bpf(prog4, other_port) == 0
