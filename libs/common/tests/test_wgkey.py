import base64

import pytest

from wirekube_common import wgkey


def test_generated_keys_round_trip_and_derive_public() -> None:
    priv = wgkey.generate_private_key()
    pub = wgkey.public_key(priv)
    assert len(priv) == len(pub) == 32
    assert wgkey.decode(wgkey.encode(pub)) == pub
    assert wgkey.public_key(priv) == pub  # deterministic


def test_shared_secret_agrees_on_both_sides() -> None:
    a, b = wgkey.generate_private_key(), wgkey.generate_private_key()
    assert wgkey.shared_secret(a, wgkey.public_key(b)) == wgkey.shared_secret(
        b, wgkey.public_key(a)
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short=",
        base64.b64encode(b"x" * 31).decode() + "AA",  # right length, wrong size
        "!" * 43 + "=",
        base64.b64encode(b"k" * 32).decode()[:-2] + "B=",  # non-canonical last char
        base64.b64encode(b"k" * 32).decode().rstrip("=") + "A",  # no pad
    ],
)
def test_decode_rejects_malformed(text: str) -> None:
    with pytest.raises(wgkey.InvalidKey):
        wgkey.decode(text)
