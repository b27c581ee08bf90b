"""Registration handshake: possession proof, replay, impersonation, low-order keys."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import (
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
    transcript,
)

NOW = 1_700_000_000.0


def decode_one(data: bytes) -> f.Event:
    p = f.FrameParser()
    p.feed(data)
    (ev,) = p.events()
    return ev


def run(client: ClientHandshake, server: ServerHandshake) -> bytes:
    hello = decode_one(client.hello())
    assert isinstance(hello, f.Hello)
    ch = decode_one(server.on_hello(hello, NOW))
    assert isinstance(ch, f.Challenge)
    proof = decode_one(client.on_challenge(ch, NOW))
    assert isinstance(proof, f.Proof)
    return server.on_proof(proof)


def test_valid_registration_proves_the_key() -> None:
    priv = wgkey.generate_private_key()
    key = run(ClientHandshake(priv), ServerHandshake("relay-a"))
    assert key == wgkey.public_key(priv)


def test_claiming_someone_elses_key_fails() -> None:
    victim = wgkey.public_key(wgkey.generate_private_key())
    attacker = ClientHandshake(wgkey.generate_private_key())
    server = ServerHandshake("relay-a")
    ch = decode_one(server.on_hello(f.Hello(f.VERSION, victim), NOW))
    assert isinstance(ch, f.Challenge)
    proof = decode_one(attacker.on_challenge(_hello_first(attacker, ch), NOW))
    assert isinstance(proof, f.Proof)
    with pytest.raises(HandshakeError) as err:
        server.on_proof(proof)
    assert err.value.reason == "bad-proof"


def _hello_first(c: ClientHandshake, ch: f.Challenge) -> f.Challenge:
    c.hello()
    return ch


def test_replayed_proof_fails_on_a_new_connection() -> None:
    priv = wgkey.generate_private_key()
    client = ClientHandshake(priv)
    server1 = ServerHandshake("relay-a")
    hello = decode_one(client.hello())
    assert isinstance(hello, f.Hello)
    ch = decode_one(server1.on_hello(hello, NOW))
    assert isinstance(ch, f.Challenge)
    proof = decode_one(client.on_challenge(ch, NOW))
    assert isinstance(proof, f.Proof)
    server1.on_proof(proof)
    # an eavesdropper replays HELLO + PROOF to a second connection
    server2 = ServerHandshake("relay-a")
    ch2 = decode_one(server2.on_hello(hello, NOW))
    assert isinstance(ch2, f.Challenge)
    assert ch2.nonce != ch.nonce and ch2.ephemeral != ch.ephemeral
    with pytest.raises(HandshakeError):
        server2.on_proof(proof)


def test_proof_is_bound_to_relay_identity() -> None:
    """A challenge relayed from another relay id does not verify here."""
    priv = wgkey.generate_private_key()
    client = ClientHandshake(priv)
    server = ServerHandshake("relay-a")
    hello = decode_one(client.hello())
    assert isinstance(hello, f.Hello)
    ch = decode_one(server.on_hello(hello, NOW))
    assert isinstance(ch, f.Challenge)
    forged = f.Challenge(ch.version, ch.ephemeral, ch.nonce, ch.timestamp, "relay-b")
    proof = decode_one(client.on_challenge(forged, NOW))
    assert isinstance(proof, f.Proof)
    with pytest.raises(HandshakeError):
        server.on_proof(proof)


def test_low_order_public_key_cannot_register() -> None:
    """With an all-zero shared secret an attacker could forge the MAC; it must be refused."""
    server = ServerHandshake("relay-a")
    zero_point = bytes(32)
    server.on_hello(f.Hello(f.VERSION, zero_point), NOW)
    ch = server._pending  # the attacker sees the challenge on the wire
    assert ch is not None
    forged = hmac.new(
        bytes(32),
        transcript(f.VERSION, zero_point, ch.ephemeral, ch.nonce, ch.timestamp, "relay-a"),
        hashlib.sha256,
    ).digest()
    with pytest.raises(HandshakeError) as err:
        server.on_proof(f.Proof(forged))
    assert err.value.reason == "bad-key"


def test_one_attempt_per_challenge_and_order_enforced() -> None:
    server = ServerHandshake("relay-a")
    with pytest.raises(HandshakeError):
        server.on_proof(f.Proof(b"x" * 32))
    server2 = ServerHandshake("relay-a")
    server2.on_hello(f.Hello(f.VERSION, wgkey.public_key(wgkey.generate_private_key())), NOW)
    with pytest.raises(HandshakeError):
        server2.on_proof(f.Proof(b"x" * 32))
    with pytest.raises(HandshakeError):
        server2.on_proof(f.Proof(b"x" * 32))  # no second guess


def test_unsupported_version() -> None:
    server = ServerHandshake("relay-a")
    with pytest.raises(HandshakeError) as err:
        server.on_hello(f.Hello(99, bytes(range(32))), NOW)
    assert err.value.code == f.CLOSE_UNSUPPORTED_VERSION


def test_client_rejects_stale_challenge_when_configured() -> None:
    client = ClientHandshake(wgkey.generate_private_key(), max_clock_skew=300)
    client.hello()
    ch = f.Challenge(
        f.VERSION,
        wgkey.public_key(wgkey.generate_private_key()),
        b"n" * 32,
        int(NOW) - 3600,
        "relay-a",
    )
    with pytest.raises(HandshakeError):
        client.on_challenge(ch, NOW)


def test_transcript_bytes_are_exactly_the_spec() -> None:
    c, e, n = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
    got = transcript(1, c, e, n, 0x0102030405060708, "relay-ä")
    rid = "relay-ä".encode()
    assert got == (
        b"wirekube-relay" + b"\x01" + c + e + n + bytes(range(1, 9)) + bytes((len(rid),)) + rid
    )


def test_a_long_relay_id_is_hashed_as_it_was_sent() -> None:
    """The identity is cut to 64 UTF-8 bytes on a character boundary, the same
    way for CHALLENGE and for the transcript (a multi-byte name still registers)."""
    priv = wgkey.generate_private_key()
    server = ServerHandshake("ü" * 40)  # 80 bytes
    assert run(ClientHandshake(priv), server) == wgkey.public_key(priv)
    assert len(server.relay_id.encode()) <= f.MAX_RELAY_ID_LEN


def test_non_canonical_spelling_of_a_key_is_refused() -> None:
    priv = wgkey.generate_private_key()
    alias = bytearray(wgkey.public_key(priv))
    alias[31] |= 0x80
    server = ServerHandshake("r")
    with pytest.raises(HandshakeError) as err:
        server.on_hello(f.Hello(f.VERSION, bytes(alias)), NOW)
    assert err.value.reason == "non-canonical-key" and err.value.code == f.CLOSE_AUTH_FAILED
