"""The replica-link wire format and join handshake (sans-IO): round trips, refusals, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_relay.mesh import proto as mp

SECRET = b"pool-secret-0123456789abcdef"
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def _join(
    dialer_secret: bytes = SECRET, acceptor_secret: bytes = SECRET
) -> tuple[mp.Dialer, mp.Acceptor, bytes, bytes, bytes]:
    d = mp.Dialer(dialer_secret, b"D" * 16, "relay-0")
    a = mp.Acceptor(acceptor_secret, b"A" * 16, "relay-1")
    hello = d.hello()
    parser = mp.MeshParser()
    parser.feed(hello)
    hello_ev = parser.next_event()
    assert isinstance(hello_ev, mp.Hello)
    challenge = a.on_hello(hello_ev)
    parser.feed(challenge)
    ch = parser.next_event()
    assert isinstance(ch, mp.Challenge)
    proof = d.on_challenge(ch)
    return d, a, hello, challenge, proof


def _event(frame: bytes) -> mp.Event:
    parser = mp.MeshParser()
    parser.feed(frame)
    ev = parser.next_event()
    assert ev is not None
    return ev


def test_a_join_with_the_secret_authenticates_both_sides() -> None:
    d, a, _, _, proof = _join()
    ev = _event(proof)
    assert isinstance(ev, mp.Proof)
    assert a.on_proof(ev) == b"D" * 16
    assert (d.peer_id, d.peer_name) == (b"A" * 16, "relay-1")
    assert a.peer_name == "relay-0"


def test_a_dialer_without_the_secret_is_refused() -> None:
    d = mp.Dialer(b"wrong-secret-0123456789", b"D" * 16, "intruder")
    a = mp.Acceptor(SECRET, b"A" * 16, "relay-1")
    ch = _event(a.on_hello(_event(d.hello())))  # type: ignore[arg-type]
    assert isinstance(ch, mp.Challenge)
    # the intruder cannot check the acceptor's MAC, nor forge its own
    with pytest.raises(mp.MeshAuthError, match="bad-acceptor-proof"):
        d.on_challenge(ch)
    with pytest.raises(mp.MeshAuthError, match="bad-proof"):
        a.on_proof(mp.Proof(mp.mac(b"wrong-secret-0123456789", b"dialer", b"")))


def test_an_acceptor_without_the_secret_is_refused_by_the_dialer() -> None:
    with pytest.raises(mp.MeshAuthError, match="bad-acceptor-proof"):
        _join(acceptor_secret=b"another-secret-0123456789")


def test_a_replayed_handshake_fails_on_a_new_connection() -> None:
    _, _, hello, _, proof = _join()
    fresh = mp.Acceptor(SECRET, b"A" * 16, "relay-1")  # new connection, new nonce
    fresh.on_hello(_event(hello))  # type: ignore[arg-type]
    with pytest.raises(mp.MeshAuthError, match="bad-proof"):
        fresh.on_proof(_event(proof))  # type: ignore[arg-type]


def test_the_acceptor_mac_cannot_be_reflected_as_a_dialer_proof() -> None:
    d = mp.Dialer(SECRET, b"D" * 16, "relay-0")
    a = mp.Acceptor(SECRET, b"A" * 16, "relay-1")
    ch = _event(a.on_hello(_event(d.hello())))  # type: ignore[arg-type]
    assert isinstance(ch, mp.Challenge)
    with pytest.raises(mp.MeshAuthError, match="bad-proof"):
        a.on_proof(mp.Proof(ch.mac))


def test_one_attempt_per_connection() -> None:
    _, a, _, _, proof = _join()
    a.on_proof(_event(proof))  # type: ignore[arg-type]
    with pytest.raises(mp.MeshAuthError, match="unexpected-proof"):
        a.on_proof(_event(proof))  # type: ignore[arg-type]


def test_a_replica_that_reached_itself_notices() -> None:
    d = mp.Dialer(SECRET, b"S" * 16, "relay-0")
    a = mp.Acceptor(SECRET, b"S" * 16, "relay-0")
    ch = _event(a.on_hello(_event(d.hello())))  # type: ignore[arg-type]
    with pytest.raises(mp.MeshAuthError, match="self"):
        d.on_challenge(ch)  # type: ignore[arg-type]


def test_nonces_are_fresh_per_handshake() -> None:
    assert mp.Dialer(SECRET, b"D" * 16, "x").nonce != mp.Dialer(SECRET, b"D" * 16, "x").nonce
    assert mp.Acceptor(SECRET, b"A" * 16, "x").nonce != mp.Acceptor(SECRET, b"A" * 16, "x").nonce


def test_wrong_version_is_refused() -> None:
    a = mp.Acceptor(SECRET, b"A" * 16, "relay-1")
    hello = mp.encode_hello(b"D" * 16, bytes(32), "x", version=9)
    with pytest.raises(mp.MeshAuthError, match="version"):
        a.on_hello(_event(hello))  # type: ignore[arg-type]


def test_secrets_are_at_least_16_bytes() -> None:
    assert mp.load_secret(b"  0123456789abcdef\n") == b"0123456789abcdef"
    with pytest.raises(ValueError):
        mp.load_secret(b"short\n")


def test_frames_round_trip() -> None:
    inner = b"\x11\x00\x22" + KEY_A + b"x"
    frames = [
        mp.encode_data(KEY_B, 1, inner),
        mp.encode_presence_reset(),
        *mp.encode_presence(mp.PRESENCE_ADD, [(KEY_A, 7), (KEY_B, 2**63)]),
        *mp.encode_presence(mp.PRESENCE_DEL, [(KEY_A, 7)]),
        mp.encode_ping(b"12345678"),
        mp.encode_pong(b"12345678"),
        mp.encode_close(mp.CLOSE_DUPLICATE, "duplicate"),
    ]
    parser = mp.MeshParser()
    parser.feed(b"".join(frames))
    assert parser.events() == [
        mp.Data(KEY_B, 1, inner),
        mp.PresenceReset(),
        mp.PresenceAdd(((KEY_A, 7), (KEY_B, 2**63))),
        mp.PresenceDel(((KEY_A, 7),)),
        mp.Ping(b"12345678"),
        mp.Pong(b"12345678"),
        mp.Close(mp.CLOSE_DUPLICATE, "duplicate"),
    ]


def test_fed_a_byte_at_a_time_gives_the_same_events() -> None:
    data = b"".join(
        [mp.encode_data(KEY_B, 3, b"abc"), *mp.encode_presence(mp.PRESENCE_ADD, [(KEY_A, 1)])]
    )
    parser = mp.MeshParser()
    got: list[mp.Event] = []
    for byte in data:
        parser.feed(bytes((byte,)))
        got.extend(parser.events())
    assert got == [mp.Data(KEY_B, 3, b"abc"), mp.PresenceAdd(((KEY_A, 1),))]


def test_large_presence_lists_are_split() -> None:
    entries = [(i.to_bytes(32, "big"), i) for i in range(mp.MAX_PRESENCE_ENTRIES + 5)]
    frames = mp.encode_presence(mp.PRESENCE_ADD, entries)
    assert len(frames) == 2
    parser = mp.MeshParser()
    parser.feed(b"".join(frames))
    got = [e for ev in parser.events() for e in ev.entries]  # type: ignore[union-attr]
    assert got == entries


def test_a_client_frame_is_not_a_mesh_frame() -> None:
    parser = mp.MeshParser()
    parser.feed(b"\x01\x00\x25WKRL")  # a client HELLO
    with pytest.raises(mp.MeshProtocolError, match="unknown frame type"):
        parser.next_event()


def test_oversized_headers_are_refused_before_the_payload_arrives() -> None:
    parser = mp.MeshParser(max_payload=mp.MAX_HANDSHAKE_PAYLOAD)
    parser.feed(mp.header(mp.MESH_HELLO, 10_000))
    with pytest.raises(mp.MeshProtocolError, match="exceeds"):
        parser.next_event()


@pytest.mark.parametrize(
    "frame",
    [
        mp.header(mp.MESH_PROOF, 3) + b"abc",
        mp.header(mp.PRESENCE_ADD, 0),
        mp.header(mp.PRESENCE_ADD, 41) + bytes(41),
        mp.header(mp.PRESENCE_RESET, 1) + b"x",
        mp.header(mp.MESH_DATA, 3) + b"abc",
        mp.header(mp.MESH_PING, 7) + bytes(7),
        mp.header(mp.MESH_CLOSE, 0),
        mp.header(mp.MESH_HELLO, 54) + b"XXXX" + bytes(50),
        mp.header(mp.MESH_CHALLENGE, 81) + bytes(80) + b"\x05",
        mp.header(mp.MESH_CLOSE, 2) + b"\x00\xff",
    ],
)
def test_malformed_frames_raise_the_protocol_error(frame: bytes) -> None:
    parser = mp.MeshParser()
    parser.feed(frame)
    with pytest.raises(mp.MeshProtocolError):
        parser.next_event()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_input_parses_or_raises_the_protocol_error(data: bytes) -> None:
    whole, bytewise = mp.MeshParser(), mp.MeshParser()
    outcome: list[object] = []
    for parser, chunks in ((whole, [data]), (bytewise, [bytes((b,)) for b in data])):
        events: list[mp.Event] = []
        try:
            for chunk in chunks:
                parser.feed(chunk)
                events.extend(parser.events())
            outcome.append(events)
        except mp.MeshProtocolError:
            outcome.append("error")
    assert outcome[0] == outcome[1]
