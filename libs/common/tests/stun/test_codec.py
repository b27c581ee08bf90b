"""Hand-computed vectors and structural rules of the STUN codec."""

from __future__ import annotations

import ipaddress
import struct
import zlib

import pytest

from wirekube_common.stun import codec
from wirekube_common.stun.codec import (
    MAGIC_COOKIE,
    ChangedAddress,
    ChangeRequest,
    ErrorCode,
    MappedAddress,
    MessageClass,
    Method,
    OtherAddress,
    Padding,
    RawAttribute,
    ResponseOrigin,
    ResponsePort,
    Software,
    SourceAddress,
    StunDecodeError,
    StunMessage,
    UnknownAttributes,
    XorMappedAddress,
)
from wirekube_common.stun.endpoint import Endpoint

TXID = bytes(range(1, 13))


@pytest.mark.parametrize(
    ("method", "cls", "wire"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.INDICATION, 0x0011),
        (Method.BINDING, MessageClass.SUCCESS, 0x0101),
        (Method.BINDING, MessageClass.ERROR, 0x0111),
        (0x003, MessageClass.REQUEST, 0x0003),  # TURN Allocate
        (0xFFF, MessageClass.ERROR, 0x3FFF),
        (0x080, MessageClass.REQUEST, 0x0200),
    ],
)
def test_message_type_interleaving(method: int, cls: MessageClass, wire: int) -> None:
    assert codec.message_type(method, cls) == wire
    assert codec.split_message_type(wire) == (method, cls)


def test_plain_binding_request_bytes() -> None:
    msg = StunMessage(Method.BINDING, MessageClass.REQUEST, TXID)
    assert codec.encode(msg) == b"\x00\x01\x00\x00\x21\x12\xa4\x42" + TXID
    assert codec.decode(codec.encode(msg)) == msg


def test_xor_mapped_ipv4_vector() -> None:
    # 192.0.2.1:32853 -> port 0x8055 ^ 0x2112 = 0xa147, address c0000201 ^ 2112a442.
    attr = XorMappedAddress(ipaddress.IPv4Address("192.0.2.1"), 32853)
    msg = StunMessage(Method.BINDING, MessageClass.SUCCESS, TXID, (attr,))
    wire = codec.encode(msg)
    assert wire[20:] == bytes.fromhex("0020 0008 0001 a147 e112a643".replace(" ", ""))
    assert codec.decode(wire).mapped() == Endpoint.parse("192.0.2.1:32853")


def test_xor_mapped_ipv6_uses_transaction_id() -> None:
    ip = ipaddress.IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")
    msg = StunMessage(Method.BINDING, MessageClass.SUCCESS, TXID, (XorMappedAddress(ip, 32853),))
    wire = codec.encode(msg)
    key = struct.pack("!I", MAGIC_COOKIE) + TXID
    expected_addr = bytes(a ^ b for a, b in zip(ip.packed, key, strict=True))
    assert wire[20:24] == b"\x00\x20\x00\x14"
    assert wire[24:28] == b"\x00\x02\xa1\x47"
    assert wire[28:44] == expected_addr
    decoded = codec.decode(wire)
    assert decoded.mapped() == Endpoint(ip, 32853)
    # Another transaction ID decodes to another address: the ID really is used.
    other = bytearray(wire)
    other[8:20] = bytes(12)
    assert codec.decode(bytes(other)).mapped() != Endpoint(ip, 32853)


def test_fingerprint_is_crc32_xor_stun() -> None:
    msg = StunMessage(
        Method.BINDING, MessageClass.REQUEST, TXID, (Software("wk"),), fingerprint=True
    )
    wire = codec.encode(msg)
    # Header length covers the FINGERPRINT attribute (8 bytes) itself.
    assert struct.unpack("!H", wire[2:4])[0] == len(wire) - 20
    assert wire[-8:-4] == b"\x80\x28\x00\x04"
    crc = (zlib.crc32(wire[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert wire[-4:] == crc.to_bytes(4, "big")
    assert codec.decode(wire) == msg


def test_bad_fingerprint_rejected() -> None:
    wire = bytearray(codec.encode(codec.binding_request(TXID, fingerprint=True)))
    wire[-1] ^= 1
    with pytest.raises(StunDecodeError, match="FINGERPRINT"):
        codec.decode(bytes(wire))


def test_attribute_after_fingerprint_rejected() -> None:
    wire = codec.encode(codec.binding_request(TXID, fingerprint=True))
    extra = b"\x80\x22\x00\x00"
    body = wire[20:] + extra
    head = wire[:2] + struct.pack("!H", len(body)) + wire[4:20] + body[:-12]
    crc = (zlib.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
    tampered = head + b"\x80\x28\x00\x04" + crc.to_bytes(4, "big") + extra
    with pytest.raises(StunDecodeError, match="after FINGERPRINT"):
        codec.decode(tampered)


def test_all_attributes_round_trip() -> None:
    v4 = ipaddress.IPv4Address("198.51.100.7")
    v6 = ipaddress.IPv6Address("2001:db8::7")
    attrs = (
        XorMappedAddress(v4, 1),
        XorMappedAddress(v6, 65535),
        MappedAddress(v6, 3478),
        ResponseOrigin(v4, 3478),
        OtherAddress(v4, 3479),
        ChangedAddress(v4, 3479),
        SourceAddress(v4, 3478),
        Software("wirekube-stun-probe ✓"),
        ErrorCode(420, "Unknown Attribute"),
        UnknownAttributes((0x0031, 0x7FFF, 0x0001)),
        ChangeRequest(change_ip=True, change_port=False),
        ResponsePort(40000),
        Padding(b"\xaa" * 7),
        RawAttribute(0x0006, b"user"),
        RawAttribute(0xC001, b""),
    )
    msg = StunMessage(Method.BINDING, MessageClass.ERROR, TXID, attrs, fingerprint=True)
    assert codec.decode(codec.encode(msg)) == msg


def test_change_request_flag_bits() -> None:
    for ip, port, flags in [(False, False, 0), (True, False, 4), (False, True, 2), (True, True, 6)]:
        wire = codec.encode(
            codec.binding_request(TXID, change_ip=ip, change_port=port, fingerprint=False)
        )
        if flags:
            assert wire[20:28] == b"\x00\x03\x00\x04\x00\x00\x00" + bytes([flags])
        else:
            assert len(wire) == 20


def test_error_code_layout() -> None:
    value = codec.encode_attribute_value(ErrorCode(438, "Stale Nonce"), bytes(16))
    assert value[:4] == b"\x00\x00\x04\x26"
    with pytest.raises(ValueError):
        codec.encode_attribute_value(ErrorCode(200, "x"), bytes(16))


def test_response_port_length_two_accepted() -> None:
    body = b"\x00\x27\x00\x02\x9c\x40\x00\x00"
    wire = b"\x00\x01" + struct.pack("!H", len(body)) + b"\x21\x12\xa4\x42" + TXID + body
    assert codec.decode(wire).get(ResponsePort) == ResponsePort(40000)


def test_classic_rfc3489_response_decodes() -> None:
    # No magic cookie: 16-byte transaction ID, MAPPED/SOURCE/CHANGED-ADDRESS.
    tid16 = bytes(range(100, 116))
    body = (
        b"\x00\x01\x00\x08\x00\x01\x13\x88\x0a\x00\x00\x01"
        + b"\x00\x04\x00\x08\x00\x01\x0d\x96\xc0\x00\x02\x01"
        + b"\x00\x05\x00\x08\x00\x01\x0d\x97\xc0\x00\x02\x02"
    )
    wire = b"\x01\x01" + struct.pack("!H", len(body)) + tid16 + body
    msg = codec.decode(wire)
    assert msg.classic
    assert msg.key() == tid16
    assert msg.mapped() == Endpoint.parse("10.0.0.1:5000")
    assert msg.get(SourceAddress) == SourceAddress(ipaddress.IPv4Address("192.0.2.1"), 3478)
    assert msg.get(ChangedAddress) == ChangedAddress(ipaddress.IPv4Address("192.0.2.2"), 3479)
    assert codec.encode(msg) == wire


def test_first_duplicate_wins() -> None:
    a = Software("first")
    msg = StunMessage(Method.BINDING, MessageClass.REQUEST, TXID, (a, Software("second")))
    assert codec.decode(codec.encode(msg)).get(Software) == a


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "short"),
        (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + TXID[:11], "short"),
        (b"\x40\x01\x00\x00\x21\x12\xa4\x42" + TXID, "first two bits"),
        (b"\x00\x01\x00\x02\x21\x12\xa4\x42" + TXID + b"\x00\x00", "multiple of 4"),
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + TXID, "length field"),
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + TXID + b"\x80\x22\x00\x05", "overruns"),
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TXID + b"\x00\x01\x00\x04\x00\x03\x00\x01",
            "family",
        ),
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TXID + b"\x00\x09\x00\x04\x00\x00\x02\x00",
            "ERROR-CODE",
        ),
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TXID + b"\x80\x22\x00\x02\xff\xfe\x00\x00", "UTF-8"),
    ],
)
def test_malformed(wire: bytes, why: str) -> None:
    with pytest.raises(StunDecodeError, match=why):
        codec.decode(wire)


def test_is_stun_demultiplexes_wireguard() -> None:
    stun = codec.encode(codec.binding_request(TXID))
    assert codec.is_stun(stun)
    assert codec.is_stun(memoryview(stun))
    # WireGuard: type byte 1..4, three reserved zero bytes, fixed sizes.
    for wg_type, size in [(1, 148), (2, 92), (3, 64), (4, 32), (4, 48)]:
        wg = bytes([wg_type, 0, 0, 0]) + bytes(range(size - 4))
        assert not codec.is_stun(wg)
    assert not codec.is_stun(stun[:-1])
    assert not codec.is_stun(b"\x00\x01\x00\x00" + b"\x00" * 16)
    # Classic (cookie-less) messages are not claimed by the quick check.
    assert not codec.is_stun(b"\x00\x01\x00\x00" + bytes(range(16)))


def test_encode_rejects_bad_transaction_id() -> None:
    with pytest.raises(ValueError):
        codec.encode(StunMessage(Method.BINDING, MessageClass.REQUEST, b"short"))
