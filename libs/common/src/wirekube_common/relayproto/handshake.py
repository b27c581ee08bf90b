"""Registration handshake: proof that a client holds the private key it names.

Sans-IO, used by both ends. The exchange (see docs/relay-protocol.md)::

    client -> HELLO      magic, version, client WireGuard public key  C
    relay  -> CHALLENGE  version, ephemeral X25519 public key E, nonce N (32 random
                         bytes), timestamp T (unix seconds), relay identity R
    client -> PROOF      MAC = HMAC-SHA256(key = X25519(c, E), transcript)
    relay  -> OK         keepalive interval, max payload, R      (or CLOSE)

    transcript = "wirekube-relay" | version | C | E | N | T (8 bytes BE) | len(R) | R

    (version: the byte sent in CHALLENGE, which equals HELLO's; R: the UTF-8
    bytes of the relay identity exactly as sent in CHALLENGE, at most 64)

Why this is sound:

* Only the holder of ``c`` (the private key of ``C``) or of ``e`` can compute
  ``X25519(c, E) == X25519(e, C)``; ``e`` is generated per connection by the
  relay and never leaves it, so a valid MAC proves possession of ``c``.
* ``E`` and ``N`` are fresh for every connection, so a recorded PROOF is
  useless on any other connection (no replay).
* Low-order public keys would make the shared secret predictable (all zero);
  ``cryptography`` refuses such an exchange and we treat it as a failed proof.
* The MAC is compared in constant time.
* Only canonical keys register (``frames.is_canonical_key``): X25519 ignores
  the top bit and reduces mod p, so a second spelling of a key would be a
  second identity for one private key.

The WireGuard static key is used here for a second purpose (authenticating to
the relay). The MAC is keyed by a per-connection DH output and bound to a
domain-separation label, so it cannot be confused with WireGuard's own use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from wirekube_common.relayproto import frames as f

LABEL = b"wirekube-relay"


class HandshakeError(Exception):
    """Registration failed; ``code`` is a CLOSE code and ``reason`` a short metric label."""

    def __init__(self, reason: str, code: int = f.CLOSE_AUTH_FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def transcript(
    version: int, client_key: bytes, ephemeral: bytes, nonce: bytes, timestamp: int, relay_id: str
) -> bytes:
    rid = relay_id.encode("utf-8")
    if len(rid) > f.MAX_RELAY_ID_LEN:
        raise HandshakeError("relay-id-too-long", f.CLOSE_PROTOCOL_ERROR)
    return b"".join(
        (
            LABEL,
            bytes((version,)),
            client_key,
            ephemeral,
            nonce,
            timestamp.to_bytes(8, "big"),
            bytes((len(rid),)),
            rid,
        )
    )


def compute_mac(shared: bytes, data: bytes) -> bytes:
    return hmac.new(shared, data, hashlib.sha256).digest()


def _public(priv: X25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- client side -------------------------------------------------------------


class ClientHandshake:
    """Client state: ``hello()`` -> send; ``on_challenge(ev)`` -> send proof; ``on_ok(ev)``."""

    def __init__(self, private_key: bytes, max_clock_skew: float | None = None) -> None:
        self._priv = X25519PrivateKey.from_private_bytes(private_key)
        self.public_key = _public(self._priv)
        self._max_skew = max_clock_skew
        self.state = "start"

    def hello(self) -> bytes:
        if self.state != "start":
            raise HandshakeError("hello-twice", f.CLOSE_PROTOCOL_ERROR)
        self.state = "hello-sent"
        return f.encode_hello(self.public_key)

    def on_challenge(self, ch: f.Challenge, now: float) -> bytes:
        if self.state != "hello-sent":
            raise HandshakeError("unexpected-challenge", f.CLOSE_PROTOCOL_ERROR)
        if ch.version != f.VERSION:
            raise HandshakeError("version", f.CLOSE_UNSUPPORTED_VERSION)
        if self._max_skew is not None and abs(now - ch.timestamp) > self._max_skew:
            raise HandshakeError("stale-challenge")
        try:
            shared = self._priv.exchange(X25519PublicKey.from_public_bytes(ch.ephemeral))
        except ValueError as exc:
            raise HandshakeError("bad-ephemeral") from exc
        data = transcript(
            ch.version, self.public_key, ch.ephemeral, ch.nonce, ch.timestamp, ch.relay_id
        )
        self.state = "proof-sent"
        return f.encode_proof(compute_mac(shared, data))

    def on_ok(self, ok: f.Ok) -> None:
        if self.state != "proof-sent":
            raise HandshakeError("unexpected-ok", f.CLOSE_PROTOCOL_ERROR)
        self.state = "registered"


# --- relay side --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    client_key: bytes
    ephemeral: bytes
    nonce: bytes
    timestamp: int


class ServerHandshake:
    """Relay state for one connection: ``on_hello`` -> challenge bytes; ``on_proof`` -> key.

    ``random`` is injectable for tests (defaults to ``os.urandom``).
    """

    def __init__(self, relay_id: str, random: object = None) -> None:
        # cut as CHALLENGE cuts it (bytes, on a character boundary): the
        # transcript must hold exactly the identity the client received
        self.relay_id = f.short_text(relay_id, f.MAX_RELAY_ID_LEN)
        self._random = random or os.urandom
        self._eph: X25519PrivateKey | None = None
        self._pending: PendingChallenge | None = None
        self.client_key: bytes | None = None
        self.state = "start"

    def on_hello(self, hello: f.Hello, now: float) -> bytes:
        if self.state != "start":
            raise HandshakeError("hello-twice", f.CLOSE_PROTOCOL_ERROR)
        if hello.version != f.VERSION:
            raise HandshakeError("version", f.CLOSE_UNSUPPORTED_VERSION)
        if not f.is_canonical_key(hello.key):
            raise HandshakeError("non-canonical-key")
        self._eph = X25519PrivateKey.generate()
        nonce = self._random(f.NONCE_LEN)  # type: ignore[operator]
        self._pending = PendingChallenge(hello.key, _public(self._eph), nonce, int(now))
        self.state = "challenged"
        return f.encode_challenge(
            self._pending.ephemeral, nonce, self._pending.timestamp, self.relay_id
        )

    def on_proof(self, proof: f.Proof) -> bytes:
        """Verify the proof; returns the client's now-proven public key."""
        if self.state != "challenged" or self._eph is None or self._pending is None:
            raise HandshakeError("unexpected-proof", f.CLOSE_PROTOCOL_ERROR)
        p = self._pending
        eph, self._eph = self._eph, None  # one attempt per ephemeral key
        self.state = "done"
        try:
            shared = eph.exchange(X25519PublicKey.from_public_bytes(p.client_key))
        except ValueError as exc:  # low-order point: all-zero shared secret
            raise HandshakeError("bad-key") from exc
        data = transcript(f.VERSION, p.client_key, p.ephemeral, p.nonce, p.timestamp, self.relay_id)
        if not hmac.compare_digest(compute_mac(shared, data), proof.mac):
            raise HandshakeError("bad-proof")
        self.client_key = p.client_key
        return p.client_key
