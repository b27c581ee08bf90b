"""Relay framing: round trips, the in-place scanner, and fuzzing of the parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_common.relayproto import frames as f

K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def parse_all(data: bytes, max_payload: int = f.MAX_PAYLOAD) -> list[f.Event]:
    p = f.FrameParser(max_payload)
    p.feed(data)
    return p.events()


def test_round_trip_every_frame_type() -> None:
    wire = b"".join(
        [
            f.encode_hello(K1),
            f.encode_challenge(K2, b"n" * 32, 1_700_000_000, "relay-0"),
            f.encode_proof(b"m" * 32),
            f.encode_ok(15, 9000, "relay-0"),
            f.encode_send(K2, b"packet"),
            f.encode_recv(K1, b""),
            f.encode_send_batch(K2, [b"a", b"", b"ccc"]),
            f.encode_recv_batch(K1, [b"x" * 1400]),
            f.encode_ping(b"12345678"),
            f.encode_pong(b"12345678"),
            f.encode_peer_gone(K2),
            f.encode_close(f.CLOSE_REPLACED, "replaced by a newer registration"),
        ]
    )
    assert parse_all(wire) == [
        f.Hello(f.VERSION, K1),
        f.Challenge(f.VERSION, K2, b"n" * 32, 1_700_000_000, "relay-0"),
        f.Proof(b"m" * 32),
        f.Ok(15, 9000, "relay-0"),
        f.Send(K2, b"packet"),
        f.Recv(K1, b""),
        f.SendBatch(K2, (b"a", b"", b"ccc")),
        f.RecvBatch(K1, (b"x" * 1400,)),
        f.Ping(b"12345678"),
        f.Pong(b"12345678"),
        f.PeerGone(K2),
        f.Close(f.CLOSE_REPLACED, "replaced by a newer registration"),
    ]


def test_header_layout_is_type_then_big_endian_length() -> None:
    frame = f.encode_send(K2, b"x" * 300)
    assert frame[0] == f.SEND
    assert int.from_bytes(frame[1:3], "big") == 32 + 300
    assert frame[3:35] == K2
    assert len(frame) == f.DATA_OVERHEAD + 300


def test_scan_in_place_and_incomplete() -> None:
    buf = bytearray(b"\xff" * 5 + f.encode_send(K1, b"abc") + f.encode_ping(b"p" * 8))
    end = len(buf)
    first = f.scan(buf, 5, end, 2048)
    assert first == 5 + 3 + 32 + 3
    assert buf[5] == f.SEND
    second = f.scan(buf, first, end, 2048)
    assert second == end
    assert f.scan(buf, first, end - 1, 2048) == -1  # partial
    assert f.scan(buf, end, end, 2048) == -1


def test_scan_rejects_oversize_from_header_alone() -> None:
    header = bytes((f.SEND, 0x10, 0x00))  # declares 4096 bytes
    with pytest.raises(f.ProtocolError) as err:
        f.scan(header, 0, 3, 2048)
    assert err.value.code == f.CLOSE_FRAME_TOO_LARGE


def test_unknown_type_is_a_protocol_error() -> None:
    with pytest.raises(f.ProtocolError):
        parse_all(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "frame",
    [
        bytes((f.HELLO, 0, 3)) + b"abc",
        bytes((f.HELLO, 0, 37)) + b"XXXX" + b"\x01" + K1,  # wrong magic
        bytes((f.PROOF, 0, 31)) + b"m" * 31,
        bytes((f.SEND, 0, 31)) + b"k" * 31,
        bytes((f.PING, 0, 7)) + b"p" * 7,
        bytes((f.SEND_BATCH, 0, 32)) + K1,  # empty batch
        bytes((f.SEND_BATCH, 0, 35)) + K1 + b"\x00\x05x",  # entry overruns the frame
        bytes((f.RECV_BATCH, 0, 33)) + K1 + b"\x00",  # truncated entry header
        bytes((f.CLOSE, 0, 0)),
        bytes((f.CLOSE, 0, 3)) + b"\x00\xff\xfe",  # reason not utf-8
    ],
)
def test_malformed_payloads(frame: bytes) -> None:
    with pytest.raises(f.ProtocolError):
        parse_all(frame)


def test_data_mask_maps_send_types_to_recv_types() -> None:
    assert f.SEND & f.DATA_MASK == f.SEND and f.SEND_BATCH & f.DATA_MASK == f.SEND
    assert f.RECV & f.DATA_MASK == f.RECV and f.RECV_BATCH & f.DATA_MASK == f.RECV
    assert (f.SEND | 1, f.SEND_BATCH | 1) == (f.RECV, f.RECV_BATCH)
    others = f.FRAME_TYPES - {f.SEND, f.SEND_BATCH, f.RECV, f.RECV_BATCH}
    assert all(t & f.DATA_MASK not in (f.SEND, f.RECV) for t in others)


def test_write_data_header_matches_encoder() -> None:
    buf = bytearray(64)
    f.write_data_header(buf, 4, f.SEND, K2, 10)
    buf[39:49] = b"0123456789"
    assert bytes(buf[4:49]) == f.encode_send(K2, b"0123456789")


def test_text_fields_are_truncated_on_character_boundaries() -> None:
    (ev,) = parse_all(f.encode_close(1, "é" * 300))
    assert isinstance(ev, f.Close)
    assert len(ev.reason.encode()) <= f.MAX_REASON_LEN


# --- fuzzing -----------------------------------------------------------------

frame_types = st.sampled_from([*sorted(f.FRAME_TYPES), 0, 127, 255])


@st.composite
def framed_junk(draw: st.DrawFn) -> bytes:
    """Frames with valid headers and random payloads, mixed with raw junk."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            payload = draw(st.binary(max_size=80))
            parts.append(bytes((draw(frame_types), len(payload) >> 8, len(payload) & 0xFF)))
            parts.append(payload)
        else:
            parts.append(draw(st.binary(max_size=20)))
    return b"".join(parts)


def _run(data: bytes, chunk: int) -> list[object]:
    p = f.FrameParser(1024)
    out: list[object] = []
    try:
        for i in range(0, len(data), chunk):
            p.feed(data[i : i + chunk])
            while (ev := p.next_event()) is not None:
                out.append(ev)
    except f.ProtocolError as exc:
        out.append(("error", type(exc)))
    return out


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), framed_junk()))
def test_fuzz_whole_or_bytewise_same_outcome(data: bytes) -> None:
    whole = _run(data, max(1, len(data)))
    bytewise = _run(data, 1)
    assert whole == bytewise


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=200)), max_size=8)
)
def test_fuzz_data_round_trip(items: list[tuple[bytes, bytes]]) -> None:
    wire = b"".join(f.encode_send(k, p) for k, p in items)
    assert parse_all(wire) == [f.Send(k, p) for k, p in items]
    # the scanner walks the same frame boundaries without copying
    pos, count = 0, 0
    while (stop := f.scan(wire, pos, len(wire), f.MAX_PAYLOAD)) > 0:
        pos, count = stop, count + 1
    assert (pos, count) == (len(wire), len(items))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_fuzz_canonical_keys(key: bytes) -> None:
    n = int.from_bytes(key, "little")
    assert f.is_canonical_key(key) == (n < 2**255 - 19)
    if key[31] & 0x80:
        assert not f.is_canonical_key(key)
