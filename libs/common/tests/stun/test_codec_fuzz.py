"""Property tests: decode never raises anything but StunDecodeError; round trips hold."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirekube_common.stun import codec
from wirekube_common.stun.codec import (
    ChangeRequest,
    ErrorCode,
    MappedAddress,
    MessageClass,
    OtherAddress,
    Padding,
    RawAttribute,
    ResponseOrigin,
    ResponsePort,
    Software,
    StunDecodeError,
    StunMessage,
    UnknownAttributes,
    XorMappedAddress,
)
from wirekube_common.stun.framing import StreamError, StreamSplitter

ips = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)
ports = st.integers(0, 65535)
address_attrs = st.one_of(
    *[
        st.builds(cls, ips, ports)
        for cls in (XorMappedAddress, MappedAddress, ResponseOrigin, OtherAddress)
    ]
)
raw_types = st.integers(0, 0xFFFF).filter(lambda t: t not in codec.TYPED_ATTRIBUTES)
attributes = st.one_of(
    address_attrs,
    st.builds(Software, st.text(max_size=40)),
    st.builds(ErrorCode, st.integers(300, 699), st.text(max_size=30)),
    st.builds(UnknownAttributes, st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple)),
    st.builds(ChangeRequest, st.booleans(), st.booleans()),
    st.builds(ResponsePort, ports),
    st.builds(Padding, st.binary(max_size=33)),
    st.builds(RawAttribute, raw_types, st.binary(max_size=33)),
)
messages = st.builds(
    StunMessage,
    method=st.integers(0, 0xFFF),
    cls=st.sampled_from(list(MessageClass)),
    transaction_id=st.binary(min_size=12, max_size=12),
    attributes=st.lists(attributes, max_size=6).map(tuple),
    fingerprint=st.booleans(),
    cookie=st.one_of(st.just(codec.MAGIC_COOKIE), st.integers(0, 2**32 - 1)),
)


def _decode_or_error(data: bytes) -> StunMessage | None:
    try:
        return codec.decode(data)
    except StunDecodeError:
        return None


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_stun_error(data: bytes) -> None:
    _decode_or_error(data)
    codec.is_stun(data)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=120))
def test_header_shaped_garbage(body: bytes) -> None:
    # Valid-looking header so the attribute walker is exercised, not just the header.
    pad = body + b"\x00" * (-len(body) % 4)
    wire = b"\x01\x01" + len(pad).to_bytes(2, "big") + codec.MAGIC_COOKIE_BYTES + bytes(12) + pad
    _decode_or_error(wire)


@settings(max_examples=500, deadline=None)
@given(messages)
def test_round_trip(msg: StunMessage) -> None:
    wire = codec.encode(msg)
    assert len(wire) % 4 == 0
    assert codec.decode(wire) == msg
    assert codec.is_stun(wire) == (msg.cookie == codec.MAGIC_COOKIE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_truncated_at_every_offset(msg: StunMessage) -> None:
    wire = codec.encode(msg)
    for cut in range(len(wire)):
        assert _decode_or_error(wire[:cut]) is None


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_messages(msg: StunMessage, data: st.DataObject) -> None:
    wire = bytearray(codec.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    _decode_or_error(bytes(wire))


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4), st.integers(1, 7))
def test_stream_splitter_any_chunking(msgs: list[StunMessage], chunk: int) -> None:
    stream = b"".join(codec.encode(m) for m in msgs)
    splitter = StreamSplitter()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out.extend(splitter.feed(stream[i : i + chunk]))
    assert [codec.decode(b) for b in out] == msgs
    assert splitter.buffered == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100))
def test_stream_splitter_garbage_only_stun_error(data: bytes) -> None:
    splitter = StreamSplitter(max_message=548)
    try:
        for b in data:
            for whole in splitter.feed(bytes([b])):
                _decode_or_error(whole)
    except StunDecodeError:
        pass


def _split(data: bytes, chunk: int) -> list[object]:
    splitter = StreamSplitter(max_message=548)
    out: list[object] = []
    try:
        for i in range(0, len(data), chunk):
            out.extend(splitter.feed(data[i : i + chunk]))
    except StreamError as exc:
        out.extend(exc.complete)  # whole before the fault, however the bytes came
        out.append("error")
    return out


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.lists(messages, max_size=3), st.data()))
def test_stream_splitter_whole_or_bytewise_same_outcome(data: object) -> None:
    """Any stream splits the same (or fails with StunDecodeError at the same
    point) whether it arrives whole or a byte at a time."""
    if isinstance(data, list):
        stream = b"".join(codec.encode(m) for m in data)
    elif isinstance(data, bytes):
        stream = data
    else:  # a valid message with garbage after it
        msg = data.draw(messages)  # type: ignore[attr-defined]
        stream = codec.encode(msg) + data.draw(st.binary(max_size=40))  # type: ignore[attr-defined]
    assert _split(stream, max(1, len(stream))) == _split(stream, 1)
