"""STUN wire format (RFC 5389, RFC 5780 attributes, RFC 3489 read-compat). Sans-IO.

Bytes in, typed values out, and back; this module imports no socket, asyncio
or clock, so it can be fuzzed and reused by the client, the raw-socket prober
and the server alike.

Message layout (RFC 5389 section 6)::

    0                   1                   2                   3
    |0 0|  message type (14 bits)  |        message length         |
    |                  magic cookie 0x2112A442                      |
    |                transaction ID (96 bits)                       |

The 14-bit type interleaves a 12-bit method with a 2-bit class
(``M11..M7 C1 M6..M4 C0 M3..M0``). The length counts the attribute bytes
after the 20-byte header and is always a multiple of four; attributes are
type-length-value with values padded to four bytes.

RFC 3489 ("classic") messages have no magic cookie: those four bytes belong
to a 128-bit transaction ID. We keep them in ``StunMessage.cookie`` so a
classic request can be decoded and answered with the exact ID it carried.

Decoding is strict about structure (lengths, padding room, known attribute
sizes, FINGERPRINT last and correct) and lenient about content it does not
interpret: unknown attributes are kept as ``RawAttribute`` so a server can
list comprehension-required ones in a 420 answer. Every failure is a
``StunDecodeError``; nothing else escapes ``decode`` (fuzzed with hypothesis).
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from wirekube_common.stun.endpoint import Endpoint, IPAddress

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LEN = 20
TRANSACTION_ID_LEN = 12
FINGERPRINT_XOR = 0x5354554E
# A STUN message length field is 16 bits; the largest message is header + 65532.
MAX_MESSAGE_LEN = HEADER_LEN + 0xFFFC

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")


class StunDecodeError(ValueError):
    """The bytes are not a well-formed STUN message. The only error ``decode`` raises."""


class MessageClass(IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(IntEnum):
    BINDING = 0x001


class AttrType(IntEnum):
    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489, deprecated
    CHANGE_REQUEST = 0x0003  # RFC 5780 (was RFC 3489)
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    XOR_MAPPED_ADDRESS = 0x0020
    PADDING = 0x0026  # RFC 5780
    RESPONSE_PORT = 0x0027  # RFC 5780
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B  # RFC 5780
    OTHER_ADDRESS = 0x802C  # RFC 5780


def is_comprehension_required(attr_type: int) -> bool:
    """Types 0x0000-0x7FFF must be understood by the receiver (RFC 5389 section 15)."""
    return attr_type < 0x8000


def message_type(method: int, cls: MessageClass) -> int:
    """Interleave a 12-bit method and a 2-bit class into the 14-bit message type."""
    c = int(cls)
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
    )


def split_message_type(value: int) -> tuple[int, MessageClass]:
    """Inverse of ``message_type``."""
    method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80)
    cls = ((value >> 4) & 0b01) | ((value >> 7) & 0b10)
    return method, MessageClass(cls)


def new_transaction_id() -> bytes:
    """96 random bits (RFC 5389 section 6: uniformly and randomly chosen)."""
    return secrets.token_bytes(TRANSACTION_ID_LEN)


# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class _AddressAttribute:
    """Common shape of every address-carrying attribute (family, port, address)."""

    TYPE: ClassVar[int]
    XOR: ClassVar[bool] = False

    ip: IPAddress
    port: int

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.ip, self.port)

    @classmethod
    def of(cls: type[_A], endpoint: Endpoint) -> _A:
        return cls(endpoint.ip, endpoint.port)


_A = TypeVar("_A", bound=_AddressAttribute)


@dataclass(frozen=True)
class MappedAddress(_AddressAttribute):
    TYPE = AttrType.MAPPED_ADDRESS


@dataclass(frozen=True)
class XorMappedAddress(_AddressAttribute):
    TYPE = AttrType.XOR_MAPPED_ADDRESS
    XOR = True


@dataclass(frozen=True)
class ResponseOrigin(_AddressAttribute):
    TYPE = AttrType.RESPONSE_ORIGIN


@dataclass(frozen=True)
class OtherAddress(_AddressAttribute):
    TYPE = AttrType.OTHER_ADDRESS


@dataclass(frozen=True)
class ChangedAddress(_AddressAttribute):
    """RFC 3489's ancestor of OTHER-ADDRESS (same encoding)."""

    TYPE = AttrType.CHANGED_ADDRESS


@dataclass(frozen=True)
class SourceAddress(_AddressAttribute):
    """RFC 3489's ancestor of RESPONSE-ORIGIN (same encoding)."""

    TYPE = AttrType.SOURCE_ADDRESS


@dataclass(frozen=True)
class AlternateServer(_AddressAttribute):
    TYPE = AttrType.ALTERNATE_SERVER


@dataclass(frozen=True)
class Software:
    text: str
    TYPE: ClassVar[int] = AttrType.SOFTWARE


@dataclass(frozen=True)
class ErrorCode:
    """``code`` is 300-699 (class * 100 + number)."""

    code: int
    reason: str = ""
    TYPE: ClassVar[int] = AttrType.ERROR_CODE


@dataclass(frozen=True)
class UnknownAttributes:
    types: tuple[int, ...]
    TYPE: ClassVar[int] = AttrType.UNKNOWN_ATTRIBUTES


@dataclass(frozen=True)
class ChangeRequest:
    change_ip: bool = False
    change_port: bool = False
    TYPE: ClassVar[int] = AttrType.CHANGE_REQUEST


@dataclass(frozen=True)
class ResponsePort:
    port: int
    TYPE: ClassVar[int] = AttrType.RESPONSE_PORT


@dataclass(frozen=True)
class Padding:
    data: bytes
    TYPE: ClassVar[int] = AttrType.PADDING


@dataclass(frozen=True)
class RawAttribute:
    """Any attribute this codec does not interpret, kept byte for byte."""

    type: int
    value: bytes

    @property
    def TYPE(self) -> int:  # mirrors the ClassVar of typed attributes
        return self.type


Attribute = (
    MappedAddress
    | XorMappedAddress
    | ResponseOrigin
    | OtherAddress
    | ChangedAddress
    | SourceAddress
    | AlternateServer
    | Software
    | ErrorCode
    | UnknownAttributes
    | ChangeRequest
    | ResponsePort
    | Padding
    | RawAttribute
)

_ADDRESS_TYPES: dict[int, type[_AddressAttribute]] = {
    c.TYPE: c
    for c in (
        MappedAddress,
        XorMappedAddress,
        ResponseOrigin,
        OtherAddress,
        ChangedAddress,
        SourceAddress,
        AlternateServer,
    )
}

# Attribute types this codec decodes into typed values.
TYPED_ATTRIBUTES: frozenset[int] = frozenset(
    [
        *_ADDRESS_TYPES,
        AttrType.SOFTWARE,
        AttrType.ERROR_CODE,
        AttrType.UNKNOWN_ATTRIBUTES,
        AttrType.CHANGE_REQUEST,
        AttrType.RESPONSE_PORT,
        AttrType.PADDING,
        AttrType.FINGERPRINT,
    ]
)

_T = TypeVar("_T")


# --------------------------------------------------------------------------- message


@dataclass(frozen=True)
class StunMessage:
    """A decoded (or to-be-encoded) STUN message.

    ``fingerprint`` says whether a (verified) FINGERPRINT closes the message;
    it is not listed among ``attributes``. ``cookie`` is the magic cookie for
    RFC 5389 messages and the first four transaction-ID bytes for RFC 3489.
    """

    method: int
    cls: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    fingerprint: bool = False
    cookie: int = MAGIC_COOKIE

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (no magic cookie)."""
        return self.cookie != MAGIC_COOKIE

    def key(self) -> bytes:
        """The full 128 bits that identify the transaction (cookie + ID)."""
        return self.cookie.to_bytes(4, "big") + self.transaction_id

    def get(self, kind: type[_T]) -> _T | None:
        """The first attribute of that class (RFC 5389: later duplicates are ignored)."""
        for attr in self.attributes:
            if isinstance(attr, kind):
                return attr
        return None

    def mapped(self) -> Endpoint | None:
        """XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (RFC 3489 servers), else None."""
        xor = self.get(XorMappedAddress)
        if xor is not None:
            return xor.endpoint
        plain = self.get(MappedAddress)
        return plain.endpoint if plain is not None else None


def binding_request(
    transaction_id: bytes | None = None,
    *,
    change_ip: bool = False,
    change_port: bool = False,
    software: str | None = None,
    fingerprint: bool = True,
    extra_attributes: Iterable[Attribute] = (),
) -> StunMessage:
    """A Binding request; CHANGE-REQUEST is added only when a flag is set."""
    attrs: list[Attribute] = []
    if change_ip or change_port:
        attrs.append(ChangeRequest(change_ip, change_port))
    if software:
        attrs.append(Software(software))
    attrs.extend(extra_attributes)
    return StunMessage(
        Method.BINDING,
        MessageClass.REQUEST,
        transaction_id if transaction_id is not None else new_transaction_id(),
        tuple(attrs),
        fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------- quick check


def is_stun(datagram: bytes | bytearray | memoryview) -> bool:
    """Cheap demultiplexing test for a port shared with WireGuard.

    True when the first two bits are zero, the length field is a multiple of
    four and matches the datagram size, and the RFC 5389 magic cookie is
    present. WireGuard messages start with a type byte 1-4 followed by three
    zero bytes and carry no cookie, so they never pass. (RFC 3489 messages
    have no cookie and are deliberately not recognised here.)
    """
    n = len(datagram)
    if n < HEADER_LEN or datagram[0] & 0xC0:
        return False
    length = (datagram[2] << 8) | datagram[3]
    return (
        length & 3 == 0 and n == HEADER_LEN + length and bytes(datagram[4:8]) == MAGIC_COOKIE_BYTES
    )


# --------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview) -> StunMessage:
    """Decode one whole STUN message; raises ``StunDecodeError`` on any defect."""
    buf = bytes(data)
    if len(buf) < HEADER_LEN:
        raise StunDecodeError(f"short message: {len(buf)} bytes")
    mtype, length, cookie, txid = _HEADER.unpack_from(buf)
    if mtype & 0xC000:
        raise StunDecodeError("first two bits are not zero")
    if length & 3:
        raise StunDecodeError(f"length {length} is not a multiple of 4")
    if len(buf) != HEADER_LEN + length:
        raise StunDecodeError(f"length field {length} but {len(buf) - HEADER_LEN} body bytes")
    method, cls = split_message_type(mtype)
    attrs: list[Attribute] = []
    fingerprint = False
    offset = HEADER_LEN
    xor_key = buf[4:20]
    while offset < len(buf):
        if fingerprint:
            raise StunDecodeError("attribute after FINGERPRINT")
        if offset + 4 > len(buf):
            raise StunDecodeError("truncated attribute header")
        atype, alen = _ATTR_HEADER.unpack_from(buf, offset)
        start = offset + 4
        end = start + alen
        padded_end = start + ((alen + 3) & ~3)
        if padded_end > len(buf):
            raise StunDecodeError(f"attribute 0x{atype:04x} overruns the message")
        value = buf[start:end]
        if atype == AttrType.FINGERPRINT:
            if alen != 4:
                raise StunDecodeError("FINGERPRINT must be 4 bytes")
            expected = (zlib.crc32(buf[:offset]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(value, "big") != expected:
                raise StunDecodeError("FINGERPRINT mismatch")
            fingerprint = True
        else:
            attrs.append(_decode_attribute(atype, value, xor_key))
        offset = padded_end
    return StunMessage(method, cls, txid, tuple(attrs), fingerprint, cookie)


def _decode_attribute(atype: int, value: bytes, xor_key: bytes) -> Attribute:
    address_cls = _ADDRESS_TYPES.get(atype)
    if address_cls is not None:
        ip, port = _decode_address(value, xor_key if address_cls.XOR else None)
        return address_cls(ip, port)  # type: ignore[return-value]
    if atype == AttrType.SOFTWARE:
        return Software(_utf8(value, "SOFTWARE"))
    if atype == AttrType.ERROR_CODE:
        if len(value) < 4:
            raise StunDecodeError("ERROR-CODE shorter than 4 bytes")
        klass, number = value[2] & 0x07, value[3]
        if not 3 <= klass <= 6 or number > 99:
            raise StunDecodeError(f"ERROR-CODE class {klass} number {number} out of range")
        return ErrorCode(klass * 100 + number, _utf8(value[4:], "ERROR-CODE reason"))
    if atype == AttrType.UNKNOWN_ATTRIBUTES:
        if len(value) % 2:
            raise StunDecodeError("UNKNOWN-ATTRIBUTES has an odd length")
        return UnknownAttributes(struct.unpack(f"!{len(value) // 2}H", value))
    if atype == AttrType.CHANGE_REQUEST:
        if len(value) != 4:
            raise StunDecodeError("CHANGE-REQUEST must be 4 bytes")
        flags = value[3]
        return ChangeRequest(bool(flags & 0x04), bool(flags & 0x02))
    if atype == AttrType.RESPONSE_PORT:
        # RFC 5780 defines a 16-bit port padded to 4 bytes; some encoders say
        # length 2, others 4. Accept both.
        if len(value) not in (2, 4):
            raise StunDecodeError("RESPONSE-PORT must be 2 or 4 bytes")
        return ResponsePort(int.from_bytes(value[:2], "big"))
    if atype == AttrType.PADDING:
        return Padding(value)
    return RawAttribute(atype, value)


def _decode_address(value: bytes, xor_key: bytes | None) -> tuple[IPAddress, int]:
    if len(value) < 4:
        raise StunDecodeError("address attribute shorter than 4 bytes")
    family = value[1]
    port = int.from_bytes(value[2:4], "big")
    raw = value[4:]
    if family == 0x01:
        if len(raw) != 4:
            raise StunDecodeError("IPv4 address attribute must be 8 bytes")
    elif family == 0x02:
        if len(raw) != 16:
            raise StunDecodeError("IPv6 address attribute must be 20 bytes")
    else:
        raise StunDecodeError(f"unknown address family 0x{family:02x}")
    if xor_key is not None:
        port ^= int.from_bytes(xor_key[:2], "big")
        raw = bytes(a ^ b for a, b in zip(raw, xor_key, strict=False))
    ip: IPAddress = ipaddress.IPv4Address(raw) if family == 0x01 else ipaddress.IPv6Address(raw)
    return ip, port


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError(f"{what} is not UTF-8") from exc


# --------------------------------------------------------------------------- encoding


def encode(msg: StunMessage) -> bytes:
    """Encode a message; appends FINGERPRINT when ``msg.fingerprint`` is set.

    Raises ``ValueError`` for values that cannot be represented (an out-of-range
    error code, a transaction ID that is not 12 bytes, ...): encoding our own
    messages wrongly is a programming error, not a peer's fault.
    """
    if len(msg.transaction_id) != TRANSACTION_ID_LEN:
        raise ValueError("transaction ID must be 12 bytes")
    xor_key = msg.cookie.to_bytes(4, "big") + msg.transaction_id
    body = bytearray()
    for attr in msg.attributes:
        value = encode_attribute_value(attr, xor_key)
        body += _ATTR_HEADER.pack(attr.TYPE, len(value))
        body += value
        body += b"\x00" * (-len(value) % 4)
    mtype = message_type(msg.method, msg.cls)
    if not msg.fingerprint:
        if len(body) > MAX_MESSAGE_LEN - HEADER_LEN:
            raise ValueError("message too long")
        return _HEADER.pack(mtype, len(body), msg.cookie, msg.transaction_id) + bytes(body)
    length = len(body) + 8
    if length > MAX_MESSAGE_LEN - HEADER_LEN:
        raise ValueError("message too long")
    head = _HEADER.pack(mtype, length, msg.cookie, msg.transaction_id) + bytes(body)
    crc = (zlib.crc32(head) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return head + _ATTR_HEADER.pack(AttrType.FINGERPRINT, 4) + crc.to_bytes(4, "big")


def encoded_attribute_size(attr: Attribute) -> int:
    """Bytes the attribute adds to a message (header + padded value)."""
    return 4 + ((len(encode_attribute_value(attr, bytes(16))) + 3) & ~3)


def encode_attribute_value(attr: Attribute, xor_key: bytes) -> bytes:
    """The unpadded value bytes of one attribute. ``xor_key`` is cookie + ID."""
    if isinstance(attr, _AddressAttribute):
        return _encode_address(attr.ip, attr.port, xor_key if attr.XOR else None)
    if isinstance(attr, Software):
        return attr.text.encode("utf-8")
    if isinstance(attr, ErrorCode):
        if not 300 <= attr.code <= 699:
            raise ValueError(f"error code {attr.code} out of range 300-699")
        return bytes([0, 0, attr.code // 100, attr.code % 100]) + attr.reason.encode("utf-8")
    if isinstance(attr, UnknownAttributes):
        return struct.pack(f"!{len(attr.types)}H", *attr.types)
    if isinstance(attr, ChangeRequest):
        return bytes([0, 0, 0, (0x04 if attr.change_ip else 0) | (0x02 if attr.change_port else 0)])
    if isinstance(attr, ResponsePort):
        return attr.port.to_bytes(2, "big") + b"\x00\x00"
    if isinstance(attr, Padding):
        return attr.data
    if isinstance(attr, RawAttribute):
        if attr.type == AttrType.FINGERPRINT:
            raise ValueError("set StunMessage.fingerprint instead of a raw FINGERPRINT")
        return attr.value
    raise TypeError(f"not a STUN attribute: {attr!r}")


def _encode_address(ip: IPAddress, port: int, xor_key: bytes | None) -> bytes:
    raw = ip.packed
    family = 0x01 if ip.version == 4 else 0x02
    if xor_key is not None:
        port ^= int.from_bytes(xor_key[:2], "big")
        raw = bytes(a ^ b for a, b in zip(raw, xor_key, strict=False))
    return bytes([0, family]) + port.to_bytes(2, "big") + raw
