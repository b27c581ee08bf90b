import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_agent.paths import disco
from wirekube_common import wgkey

A_PRIV, B_PRIV = wgkey.generate_private_key(), wgkey.generate_private_key()
A, B = wgkey.public_key(A_PRIV), wgkey.public_key(B_PRIV)
KEY_A = disco.mac_key(wgkey.shared_secret(A_PRIV, B))
KEY_B = disco.mac_key(wgkey.shared_secret(B_PRIV, A))


def test_both_ends_derive_the_same_key_and_round_trip() -> None:
    assert KEY_A == KEY_B
    txid = os.urandom(12)
    ping = disco.encode_ping(A, txid, KEY_A, disco.FLAG_DIRECT)
    assert disco.is_disco(ping) and disco.peek_sender(ping) == A
    assert disco.decode(ping, KEY_B) == disco.Ping(A, txid, disco.FLAG_DIRECT)
    for observed in (("198.18.0.7", 40123), ("2001:db8::7", 51820)):
        pong = disco.encode_pong(B, txid, observed, KEY_B)
        assert disco.decode(pong, KEY_A) == disco.Pong(B, txid, observed)


def test_not_a_wireguard_message() -> None:
    # WireGuard reads a little-endian u32 message type of 1..4 first
    first = int.from_bytes(disco.MAGIC, "little")
    assert first not in (1, 2, 3, 4)
    assert int.from_bytes(disco.MAGIC, "big") == disco.MAGIC_WORD


def test_forgeries_are_rejected() -> None:
    other = disco.mac_key(wgkey.shared_secret(wgkey.generate_private_key(), B))
    ping = disco.encode_ping(A, b"t" * 12, other)
    with pytest.raises(disco.DiscoError, match="MAC"):
        disco.decode(ping, KEY_B)
    good = bytearray(disco.encode_pong(B, b"t" * 12, ("198.18.0.7", 1), KEY_B))
    good[-20] ^= 1  # flip a bit of the observed address
    with pytest.raises(disco.DiscoError):
        disco.decode(bytes(good), KEY_A)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_any_input_decodes_or_raises_disco_error(data: bytes) -> None:
    for candidate in (data, disco.MAGIC + data):
        try:
            disco.peek_sender(candidate)
            disco.decode(candidate, KEY_A)
        except disco.DiscoError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=disco.MAX_LEN))
def test_truncations_raise_disco_error(cut: int) -> None:
    pong = disco.encode_pong(B, b"x" * 12, ("198.18.0.7", 9), KEY_B)
    if cut < len(pong):
        with pytest.raises(disco.DiscoError):
            disco.decode(pong[:cut], KEY_A)
