"""Any input: the responder returns Reply or Drop, never raises, never amplifies."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_common.stun import codec
from wirekube_common.stun.endpoint import Endpoint
from wirekube_stunprobe.responder import AddressTable, Drop, Reply, respond

TABLE = AddressTable(Endpoint.parse("192.0.2.1:3478"), ipaddress.ip_address("192.0.2.2"), 3479)
CLIENT = Endpoint.parse("198.51.100.20:40000")


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(TABLE.indices()), st.booleans())
def test_any_bytes(data: bytes, index: tuple[int, int], tcp: bool) -> None:
    out = respond(data, CLIENT, index, TABLE, tcp=tcp, software="wirekube-stun-probe")
    assert isinstance(out, Reply | Drop)
    if isinstance(out, Reply) and not tcp:
        assert len(out.datagram) <= 3 * len(data)
        codec.decode(out.datagram)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=60), st.integers(0, 0xFFFF), st.booleans())
def test_header_shaped(body: bytes, mtype: int, cookie: bool) -> None:
    pad = body + bytes(-len(body) % 4)
    wire = (
        (mtype & 0x3FFF).to_bytes(2, "big")
        + len(pad).to_bytes(2, "big")
        + (codec.MAGIC_COOKIE_BYTES if cookie else b"\x01\x02\x03\x04")
        + bytes(12)
        + pad
    )
    out = respond(wire, CLIENT, (0, 0), TABLE)
    if isinstance(out, Reply):
        assert len(out.datagram) <= 3 * len(wire)
