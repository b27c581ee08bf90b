from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekube_common.gwhealth import icmp


def test_request_round_trip_and_checksum() -> None:
    msg = icmp.encode_echo_request(0x1234, 7, b"hello")
    assert msg[0] == icmp.ECHO_REQUEST_V4
    assert icmp.checksum(msg) == 0  # a correct checksum sums to zero
    echo = icmp.decode(msg)
    assert (echo.type, echo.ident, echo.seq, echo.payload) == (8, 0x1234, 7, b"hello")
    assert not echo.is_reply


def test_known_checksum() -> None:
    # RFC 1071 example words: 0x0001 0xf203 0xf4f5 0xf6f7 -> sum 0xddf2, checksum 0x220d
    assert icmp.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert icmp.checksum(b"\x01") == (~0x0100 & 0xFFFF)  # odd length is zero-padded


def test_reply_is_recognised_and_corruption_rejected() -> None:
    request = icmp.encode_echo_request(1, 2, b"xyz")
    reply = bytearray(request)
    reply[0] = icmp.ECHO_REPLY_V4
    struct.pack_into("!H", reply, 2, 0)
    struct.pack_into("!H", reply, 2, icmp.checksum(bytes(reply)))
    assert icmp.decode(bytes(reply)).is_reply
    reply[-1] ^= 0xFF
    with pytest.raises(icmp.IcmpError, match="checksum"):
        icmp.decode(bytes(reply))


def test_v6_leaves_the_checksum_to_the_kernel() -> None:
    msg = icmp.encode_echo_request(5, 6, b"p", v6=True)
    assert msg[0] == icmp.ECHO_REQUEST_V6 and msg[2:4] == b"\0\0"
    reply = bytes([icmp.ECHO_REPLY_V6]) + msg[1:]
    echo = icmp.decode(reply, v6=True)
    assert echo.is_reply and (echo.ident, echo.seq) == (5, 6)
    with pytest.raises(icmp.IcmpError):
        icmp.decode(msg, v6=False)  # type 128 is not an IPv4 echo


def test_strip_ipv4_header() -> None:
    body = icmp.encode_echo_request(1, 1, b"")
    header = bytes([0x45, 0, 0, 20 + len(body), 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9])
    assert icmp.strip_ipv4_header(header + body) == ("10.1.2.3", body)
    with pytest.raises(icmp.IcmpError, match="not ICMP"):
        icmp.strip_ipv4_header(header[:9] + b"\x06" + header[10:] + body)
    with pytest.raises(icmp.IcmpError, match="header length"):
        icmp.strip_ipv4_header(b"\x4f" + header[1:] + body)  # IHL 60 > 28 bytes
    with pytest.raises(icmp.IcmpError, match="not an IPv4"):
        icmp.strip_ipv4_header(b"\x65" + header[1:] + body)


@given(st.binary(max_size=128), st.booleans())
def test_decode_never_raises_anything_else(data: bytes, v6: bool) -> None:
    with contextlib.suppress(icmp.IcmpError):
        icmp.decode(data, v6=v6)


@given(st.binary(max_size=128))
def test_strip_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(icmp.IcmpError):
        icmp.strip_ipv4_header(data)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_any_request_decodes_to_itself(ident: int, seq: int, payload: bytes) -> None:
    echo = icmp.decode(icmp.encode_echo_request(ident, seq, payload))
    assert (echo.ident, echo.seq, echo.payload) == (ident, seq, payload)
