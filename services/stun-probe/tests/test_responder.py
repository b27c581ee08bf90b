"""The pure request → reply decision of the STUN server."""

from __future__ import annotations

import ipaddress

import pytest

from wirekube_common.stun import codec
from wirekube_common.stun.codec import (
    ChangedAddress,
    ErrorCode,
    MappedAddress,
    MessageClass,
    OtherAddress,
    RawAttribute,
    ResponseOrigin,
    ResponsePort,
    SourceAddress,
    StunMessage,
    UnknownAttributes,
    XorMappedAddress,
)
from wirekube_common.stun.endpoint import Endpoint
from wirekube_stunprobe.responder import (
    PRIMARY,
    AddressTable,
    Drop,
    DropReason,
    Reply,
    respond,
)

E = Endpoint.parse
CLIENT = E("198.51.100.20:40000")
T5780 = AddressTable(E("192.0.2.1:3478"), ipaddress.ip_address("192.0.2.2"), 3479)
PLAIN = AddressTable(E("192.0.2.1:3478"))
TXID = bytes(range(12))


def req(**kw: object) -> bytes:
    return codec.encode(codec.binding_request(TXID, **kw))  # type: ignore[arg-type]


def reply(out: Reply | Drop) -> StunMessage:
    assert isinstance(out, Reply), out
    return codec.decode(out.datagram)


def test_plain_binding() -> None:
    out = respond(req(fingerprint=True), CLIENT, PRIMARY, PLAIN, software="x")
    msg = reply(out)
    assert isinstance(out, Reply) and out.via == PRIMARY and out.to == CLIENT
    assert msg.cls == MessageClass.SUCCESS and msg.transaction_id == TXID
    assert msg.get(XorMappedAddress) == XorMappedAddress.of(CLIENT)
    assert msg.get(OtherAddress) is None
    assert msg.get(ResponseOrigin) == ResponseOrigin.of(PLAIN.primary)
    assert msg.fingerprint


@pytest.mark.parametrize(
    ("arrived", "change_ip", "change_port", "via", "other"),
    [
        ((0, 0), False, False, (0, 0), (1, 1)),
        ((0, 0), True, True, (1, 1), (1, 1)),
        ((0, 0), False, True, (0, 1), (1, 1)),
        ((0, 0), True, False, (1, 0), (1, 1)),
        ((1, 0), True, False, (0, 0), (0, 1)),
        ((1, 1), True, True, (0, 0), (0, 0)),
    ],
)
def test_rfc5780_change_request(
    arrived: tuple[int, int],
    change_ip: bool,
    change_port: bool,
    via: tuple[int, int],
    other: tuple[int, int],
) -> None:
    out = respond(
        req(change_ip=change_ip, change_port=change_port), CLIENT, arrived, T5780, max_factor=None
    )
    assert isinstance(out, Reply) and out.via == via
    msg = reply(out)
    assert msg.get(ResponseOrigin) == ResponseOrigin.of(T5780.address(via))
    assert msg.get(OtherAddress) == OtherAddress.of(T5780.address(other))


def test_change_request_without_alternate_is_420() -> None:
    msg = reply(respond(req(change_ip=True), CLIENT, PRIMARY, PLAIN))
    assert msg.cls == MessageClass.ERROR
    assert msg.get(ErrorCode).code == 420  # type: ignore[union-attr]
    assert msg.get(UnknownAttributes) == UnknownAttributes((0x0003,))


def test_unknown_comprehension_required_is_420_optional_ignored() -> None:
    wire = req(extra_attributes=[RawAttribute(0x0031, b"abcd"), RawAttribute(0xC0DE, b"")])
    msg = reply(respond(wire, CLIENT, PRIMARY, PLAIN, max_factor=None))
    assert msg.get(UnknownAttributes) == UnknownAttributes((0x0031,))
    ok = req(extra_attributes=[RawAttribute(0xC0DE, b""), RawAttribute(0x0006, b"user")])
    assert reply(respond(ok, CLIENT, PRIMARY, PLAIN)).cls == MessageClass.SUCCESS


def test_rfc3489_response_address_never_honoured() -> None:
    wire = req(extra_attributes=[MappedAddress(ipaddress.ip_address("203.0.113.5"), 53)])
    # MAPPED-ADDRESS in a request is understood (typed) and harmless; RESPONSE-ADDRESS is not.
    assert reply(respond(wire, CLIENT, PRIMARY, PLAIN)).cls == MessageClass.SUCCESS
    evil = req(extra_attributes=[RawAttribute(0x0002, bytes(8))])
    out = respond(evil, CLIENT, PRIMARY, PLAIN, max_factor=None)
    assert isinstance(out, Reply) and out.to == CLIENT and out.error == 420


def test_response_port() -> None:
    wire = req(extra_attributes=[ResponsePort(5555)])
    out = respond(wire, CLIENT, PRIMARY, T5780)
    assert isinstance(out, Reply) and out.to == Endpoint(CLIENT.ip, 5555)
    assert (
        respond(req(extra_attributes=[ResponsePort(5555)]), CLIENT, PRIMARY, T5780, tcp=True).error
        == 400
    )  # type: ignore[union-attr]


def test_tcp_change_request_is_400() -> None:
    out = respond(req(change_port=True), CLIENT, PRIMARY, T5780, tcp=True)
    assert isinstance(out, Reply) and out.error == 400


def test_non_binding_method_is_400() -> None:
    msg = StunMessage(0x003, MessageClass.REQUEST, TXID)
    out = respond(codec.encode(msg), CLIENT, PRIMARY, PLAIN)
    assert isinstance(out, Reply) and out.error == 400
    assert len(out.datagram) <= 3 * 20


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"hello", DropReason.NOT_STUN),
        (b"\x01\x00\x00\x00" + bytes(144), DropReason.NOT_STUN),  # WireGuard initiation
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + TXID, DropReason.MALFORMED),
        (bytes(20), DropReason.MALFORMED),  # a cookie-less method-0 "request"
        (codec.encode(StunMessage(1, MessageClass.INDICATION, TXID)), DropReason.NOT_REQUEST),
        (codec.encode(StunMessage(1, MessageClass.SUCCESS, TXID)), DropReason.NOT_REQUEST),
    ],
)
def test_drops(wire: bytes, reason: DropReason) -> None:
    assert respond(wire, CLIENT, PRIMARY, PLAIN) == Drop(reason)


@pytest.mark.parametrize(
    "src",
    [
        "0.0.0.0:1000",
        "0.1.2.3:1000",
        "224.0.0.1:1000",
        "255.255.255.255:1000",
        "240.0.0.1:1000",
        "198.51.100.20:0",
        "[::]:1000",
        "[ff02::1]:1000",
        "192.0.2.1:3478",
        "192.0.2.2:3479",
    ],
)
def test_spoofed_sources_dropped(src: str) -> None:
    host, _, port = src.rpartition(":")
    ep = Endpoint(ipaddress.ip_address(host.strip("[]")), int(port))
    assert respond(req(), ep, PRIMARY, T5780) == Drop(DropReason.SPOOFED)


@pytest.mark.parametrize("size_extra", [0, 8, 16, 100])
@pytest.mark.parametrize("client", [CLIENT, E("[2001:db8::20]:40000")])
@pytest.mark.parametrize("table", [PLAIN, T5780])
def test_amplification_bounded(size_extra: int, client: Endpoint, table: AddressTable) -> None:
    if client.family == 6:
        table = AddressTable(
            E("[2001:db8::1]:3478"),
            ipaddress.ip_address("2001:db8::2") if table.rfc5780 else None,
            3479 if table.rfc5780 else None,
        )
    extra = [RawAttribute(0xC001, bytes(size_extra))] if size_extra else []
    wire = req(fingerprint=False, extra_attributes=extra)
    out = respond(wire, client, PRIMARY, table, max_factor=3.0, software="wirekube-stun-probe")
    assert isinstance(out, Reply)
    assert len(out.datagram) <= 3 * len(wire)
    assert reply(out).mapped() == client
    with_fp = req(fingerprint=True, extra_attributes=extra)
    out2 = respond(with_fp, client, PRIMARY, table, max_factor=1.0)
    if isinstance(out2, Reply):
        assert len(out2.datagram) <= len(with_fp)
    else:
        assert out2 == Drop(DropReason.AMPLIFICATION)


def test_minimal_request_gets_other_address_over_ipv4() -> None:
    msg = reply(
        respond(req(fingerprint=False), CLIENT, PRIMARY, T5780, max_factor=3.0, software="x" * 40)
    )
    assert msg.get(OtherAddress) is not None and msg.get(ResponseOrigin) is not None


def test_classic_rfc3489_request() -> None:
    tid16 = bytes(range(50, 66))
    body = b"\x00\x03\x00\x04\x00\x00\x00\x00"
    wire = b"\x00\x01" + len(body).to_bytes(2, "big") + tid16 + body
    out = respond(wire, CLIENT, PRIMARY, T5780)
    msg = reply(out)
    assert msg.classic and msg.key() == tid16 and not msg.fingerprint
    assert msg.get(MappedAddress) == MappedAddress.of(CLIENT)
    assert msg.get(XorMappedAddress) is None
    assert msg.get(SourceAddress) == SourceAddress.of(T5780.primary)
    assert msg.get(ChangedAddress) == ChangedAddress.of(E("192.0.2.2:3479"))


def test_wildcard_address_omits_response_origin() -> None:
    table = AddressTable(E("0.0.0.0:3478"))
    msg = reply(respond(req(), CLIENT, PRIMARY, table))
    assert msg.get(ResponseOrigin) is None and msg.mapped() == CLIENT
