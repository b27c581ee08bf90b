"""WireGuard keys: 32-byte Curve25519 keys, base64 in CRDs and configs.

Keys are handled as raw ``bytes`` everywhere inside the services and are
encoded only at the edges (CRD fields, logs). Generation uses ``cryptography``
(X25519) rather than shelling out to ``wg genkey``: the agent image then does
not need wireguard-tools for kernel nodes, and keys never pass through argv.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_LEN = 32


class InvalidKey(ValueError):
    """Raised for anything that is not a 32-byte key in standard base64."""


def generate_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )


def public_key(private: bytes) -> bytes:
    _check_len(private)
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def shared_secret(private: bytes, peer_public: bytes) -> bytes:
    """X25519(private, peer_public); used by the relay's proof of key possession."""
    _check_len(private)
    _check_len(peer_public)
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )


def encode(key: bytes) -> str:
    _check_len(key)
    return base64.b64encode(key).decode("ascii")


def decode(text: str) -> bytes:
    """Strict base64 decode of a 32-byte key (44 characters with one '=' pad)."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        raise InvalidKey(f"not a base64 WireGuard key: {text!r:.60}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"not a base64 WireGuard key: {text!r:.60}") from exc
    _check_len(raw)
    # Reject non-canonical encodings (stray bits in the last character) so that
    # one key has exactly one spelling and can be used as a map key.
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidKey(f"non-canonical base64 WireGuard key: {text!r:.60}")
    return raw


def _check_len(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_LEN:
        raise InvalidKey(f"WireGuard keys are {KEY_LEN} bytes")
