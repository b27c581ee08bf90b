"""A minimal sans-IO STUN binding codec for the lab's NAT self-test (RFC 5389/5780).

Only what the self-test needs: Binding requests (optionally with
CHANGE-REQUEST) and Binding success responses carrying XOR-MAPPED-ADDRESS,
MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS, IPv4 only. No sockets here:
bytes in, :class:`Message` out, :class:`StunDecodeError` for anything else.
The product's full STUN implementation lives in ``wirekube_common.stun``;
this one exists so the lab can test itself without depending on it.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

CHANGE_IP = 0x04
CHANGE_PORT = 0x02

Address = tuple[str, int]


class StunDecodeError(ValueError):
    """The bytes are not a STUN message this codec understands."""


@dataclass(frozen=True)
class Message:
    type: int
    transaction_id: bytes
    attributes: dict[int, bytes] = field(default_factory=dict, compare=False)

    def address(self, attr: int) -> Address | None:
        raw = self.attributes.get(attr)
        if raw is None:
            return None
        return _decode_address(raw, xor=attr == XOR_MAPPED_ADDRESS)

    @property
    def mapped(self) -> Address | None:
        return self.address(XOR_MAPPED_ADDRESS) or self.address(MAPPED_ADDRESS)

    @property
    def change_flags(self) -> int:
        raw = self.attributes.get(CHANGE_REQUEST)
        if raw is None or len(raw) != 4:
            return 0
        return int(struct.unpack("!I", raw)[0]) & (CHANGE_IP | CHANGE_PORT)


def new_transaction_id() -> bytes:
    return os.urandom(12)


def encode(msg_type: int, transaction_id: bytes, attributes: list[tuple[int, bytes]]) -> bytes:
    body = b""
    for attr, value in attributes:
        pad = (-len(value)) % 4
        body += struct.pack("!HH", attr, len(value)) + value + b"\x00" * pad
    return HEADER.pack(msg_type, len(body), MAGIC_COOKIE, transaction_id) + body


def binding_request(
    transaction_id: bytes, change_ip: bool = False, change_port: bool = False
) -> bytes:
    attrs: list[tuple[int, bytes]] = []
    if change_ip or change_port:
        flags = (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0)
        attrs.append((CHANGE_REQUEST, struct.pack("!I", flags)))
    return encode(BINDING_REQUEST, transaction_id, attrs)


def binding_success(
    transaction_id: bytes,
    mapped: Address,
    origin: Address | None = None,
    other: Address | None = None,
) -> bytes:
    attrs = [
        (XOR_MAPPED_ADDRESS, _encode_address(mapped, xor=True)),
        (MAPPED_ADDRESS, _encode_address(mapped, xor=False)),
    ]
    if origin is not None:
        attrs.append((RESPONSE_ORIGIN, _encode_address(origin, xor=False)))
    if other is not None:
        attrs.append((OTHER_ADDRESS, _encode_address(other, xor=False)))
    return encode(BINDING_SUCCESS, transaction_id, attrs)


def binding_error(transaction_id: bytes, code: int, reason: str) -> bytes:
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()
    return encode(BINDING_ERROR, transaction_id, [(ERROR_CODE, value)])


def decode(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise StunDecodeError("shorter than a STUN header")
    msg_type, length, cookie, txid = HEADER.unpack_from(data)
    if msg_type & 0xC000 or cookie != MAGIC_COOKIE:
        raise StunDecodeError("not a STUN message")
    if length % 4 or HEADER.size + length != len(data):
        raise StunDecodeError("bad length")
    attrs: dict[int, bytes] = {}
    offset = HEADER.size
    while offset < len(data):
        if offset + 4 > len(data):
            raise StunDecodeError("truncated attribute header")
        attr, alen = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + alen > len(data):
            raise StunDecodeError("truncated attribute")
        attrs.setdefault(attr, bytes(data[offset : offset + alen]))
        offset += alen + ((-alen) % 4)
    return Message(type=msg_type, transaction_id=txid, attributes=attrs)


def _encode_address(addr: Address, xor: bool) -> bytes:
    ip = int(ipaddress.IPv4Address(addr[0]))
    port = addr[1]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        ip ^= MAGIC_COOKIE
    return struct.pack("!BBHI", 0, 1, port, ip)


def _decode_address(raw: bytes, xor: bool) -> Address:
    if len(raw) != 8 or raw[1] != 1:
        raise StunDecodeError("only IPv4 addresses are supported")
    _, _, port, ip = struct.unpack("!BBHI", raw)
    if xor:
        port ^= MAGIC_COOKIE >> 16
        ip ^= MAGIC_COOKIE
    return (str(ipaddress.IPv4Address(ip)), port)
