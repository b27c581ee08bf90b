"""Relay wire format: frame layout, encoders, an in-place scanner and a sans-IO parser.

This module opens no socket and imports no event loop (it is shared by the
relay and by the agent's bridge, and fuzzed with hypothesis). The full
specification lives in ``docs/relay-protocol.md``; in short, every frame is::

    +--------+----------------+------------------------+
    | type:1 | length:2 (BE)  | payload: length bytes  |
    +--------+----------------+------------------------+

Data frames carry a 32-byte WireGuard public key at the start of their
payload. A client writes ``SEND`` frames naming the destination key; the relay
rewrites the type byte to ``RECV`` and overwrites the key with the sender's
registered key, *in place*, so a forwarded frame has the same size and
position as the frame received and can be written straight from the receive
buffer. This is also why a client cannot spoof its source: the relay never
forwards a key the sender wrote.

Two APIs are offered:

* ``scan(buf, start, end)``: the hot-path primitive. It looks at one header in
  a caller-owned buffer and returns ``(type, frame_end)`` without copying.
* ``FrameParser``: the friendly API. ``feed(data)`` then ``next_event()``
  returns typed, immutable events. Any byte sequence either parses or raises
  ``ProtocolError`` (fed whole or one byte at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

# --- constants -------------------------------------------------------------

VERSION = 1
MAGIC = b"WKRL"
HEADER_LEN = 3
KEY_LEN = 32
NONCE_LEN = 32
MAC_LEN = 32
DATA_OVERHEAD = HEADER_LEN + KEY_LEN
#: The length field is 16 bits: no frame payload can exceed this.
MAX_PAYLOAD = 0xFFFF
#: Largest payload accepted before registration completes (handshake frames
#: are small; a huge pre-auth frame is hostile).
MAX_HANDSHAKE_PAYLOAD = 512
MAX_REASON_LEN = 200
MAX_RELAY_ID_LEN = 64

HELLO = 0x01
CHALLENGE = 0x02
PROOF = 0x03
OK = 0x04
SEND = 0x10
RECV = 0x11
SEND_BATCH = 0x12
RECV_BATCH = 0x13
PING = 0x20
PONG = 0x21
PEER_GONE = 0x30
CLOSE = 0x3F

FRAME_TYPES = frozenset(
    {HELLO, CHALLENGE, PROOF, OK, SEND, RECV, SEND_BATCH, RECV_BATCH, PING, PONG, PEER_GONE, CLOSE}
)
#: ``t & DATA_MASK == SEND`` is true for SEND and SEND_BATCH, ``== RECV`` for
#: RECV and RECV_BATCH; the relay turns a client's type into ``t | 1``.
DATA_MASK = 0xFD
#: Each packet inside a batch is prefixed by its 16-bit big-endian length.
BATCH_ENTRY_OVERHEAD = 2

# Close codes (one byte); the reason text is for humans and logs.
CLOSE_NORMAL = 0
CLOSE_PROTOCOL_ERROR = 1
CLOSE_AUTH_FAILED = 2
CLOSE_NOT_ALLOWED = 3
CLOSE_REPLACED = 4
CLOSE_TIMEOUT = 5
CLOSE_FRAME_TOO_LARGE = 6
CLOSE_SHUTTING_DOWN = 7
CLOSE_OVERLOADED = 8
CLOSE_UNSUPPORTED_VERSION = 9
CLOSE_RATE_LIMITED = 10
CLOSE_TOO_SLOW = 11

#: Every close code by the name logs and metrics use (docs/relay-protocol.md).
CLOSE_NAMES = {
    CLOSE_NORMAL: "normal",
    CLOSE_PROTOCOL_ERROR: "protocol-error",
    CLOSE_AUTH_FAILED: "auth-failed",
    CLOSE_NOT_ALLOWED: "not-allowed",
    CLOSE_REPLACED: "replaced",
    CLOSE_TIMEOUT: "timeout",
    CLOSE_FRAME_TOO_LARGE: "frame-too-large",
    CLOSE_SHUTTING_DOWN: "shutting-down",
    CLOSE_OVERLOADED: "overloaded",
    CLOSE_UNSUPPORTED_VERSION: "unsupported-version",
    CLOSE_RATE_LIMITED: "rate-limited",
    CLOSE_TOO_SLOW: "too-slow",
}


def close_name(code: int) -> str:
    """The name of a close code; unknown codes (a newer peer) as ``code-N``."""
    return CLOSE_NAMES.get(code, f"code-{code}")


#: X25519 public keys are u-coordinates mod p = 2^255 - 19, little-endian. A
#: key with the top bit set, or >= p, names the same point as a canonical one
#: (X25519 ignores the bit and reduces mod p): accepting it would give one
#: private key two identities. Only canonical keys (< p) are valid.
_P25519 = (1 << 255) - 19


def is_canonical_key(key: bytes | bytearray | memoryview) -> bool:
    return len(key) == KEY_LEN and int.from_bytes(key, "little") < _P25519


PING_DATA_LEN = 8


class ProtocolError(ValueError):
    """Any violation of the relay wire format. The connection must be closed."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- events ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    key: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    version: int
    ephemeral: bytes
    nonce: bytes
    timestamp: int
    relay_id: str


@dataclass(frozen=True, slots=True)
class Proof:
    mac: bytes


@dataclass(frozen=True, slots=True)
class Ok:
    keepalive_seconds: int
    max_payload: int
    relay_id: str


@dataclass(frozen=True, slots=True)
class Send:
    dst: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class Recv:
    src: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class SendBatch:
    dst: bytes
    packets: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RecvBatch:
    src: bytes
    packets: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerGone:
    key: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Event = (
    Hello
    | Challenge
    | Proof
    | Ok
    | Send
    | Recv
    | SendBatch
    | RecvBatch
    | Ping
    | Pong
    | PeerGone
    | Close
)


# --- encoders --------------------------------------------------------------


def _frame(ftype: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes((ftype, len(payload) >> 8, len(payload) & 0xFF)) + payload


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ProtocolError(f"keys are {KEY_LEN} bytes, got {len(key)}")


def encode_hello(key: bytes, version: int = VERSION) -> bytes:
    _check_key(key)
    return _frame(HELLO, MAGIC + bytes((version,)) + bytes(key))


def _short_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")[:limit]
    # never cut a multi-byte character in half
    return raw.decode("utf-8", "ignore").encode("utf-8")


def short_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary (as sent)."""
    return _short_text(text, limit).decode("utf-8")


def encode_challenge(ephemeral: bytes, nonce: bytes, timestamp: int, relay_id: str) -> bytes:
    _check_key(ephemeral)
    if len(nonce) != NONCE_LEN:
        raise ProtocolError("nonce must be 32 bytes")
    rid = _short_text(relay_id, MAX_RELAY_ID_LEN)
    return _frame(
        CHALLENGE,
        bytes((VERSION,)) + ephemeral + nonce + timestamp.to_bytes(8, "big") + rid,
    )


def encode_proof(mac: bytes) -> bytes:
    if len(mac) != MAC_LEN:
        raise ProtocolError("mac must be 32 bytes")
    return _frame(PROOF, bytes(mac))


def encode_ok(keepalive_seconds: int, max_payload: int, relay_id: str) -> bytes:
    rid = _short_text(relay_id, MAX_RELAY_ID_LEN)
    return _frame(OK, keepalive_seconds.to_bytes(2, "big") + max_payload.to_bytes(2, "big") + rid)


def encode_send(dst: bytes, packet: bytes) -> bytes:
    _check_key(dst)
    return _frame(SEND, bytes(dst) + bytes(packet))


def encode_recv(src: bytes, packet: bytes) -> bytes:
    _check_key(src)
    return _frame(RECV, bytes(src) + bytes(packet))


def _batch(packets: list[bytes] | tuple[bytes, ...]) -> bytes:
    if not packets:
        raise ProtocolError("a batch carries at least one packet")
    return b"".join(len(p).to_bytes(2, "big") + bytes(p) for p in packets)


def encode_send_batch(dst: bytes, packets: list[bytes] | tuple[bytes, ...]) -> bytes:
    _check_key(dst)
    return _frame(SEND_BATCH, bytes(dst) + _batch(packets))


def encode_recv_batch(src: bytes, packets: list[bytes] | tuple[bytes, ...]) -> bytes:
    _check_key(src)
    return _frame(RECV_BATCH, bytes(src) + _batch(packets))


def split_batch(body: bytes | bytearray | memoryview) -> list[bytes]:
    """The packets of a batch body (the payload after the key); ProtocolError if malformed:
    no entry at all, a truncated entry header, or an entry that overruns the
    frame. (A zero-length entry is a zero-length datagram: valid, as in SEND.)"""
    out: list[bytes] = []
    k, end = 0, len(body)
    if end == 0:
        raise ProtocolError("empty batch")
    while k < end:
        if end - k < 2:
            raise ProtocolError("truncated batch entry header")
        n = (body[k] << 8) | body[k + 1]
        if k + 2 + n > end:
            raise ProtocolError("batch entry overruns its frame")
        out.append(bytes(body[k + 2 : k + 2 + n]))
        k += 2 + n
    return out


def encode_ping(data: bytes) -> bytes:
    if len(data) != PING_DATA_LEN:
        raise ProtocolError("ping data is 8 bytes")
    return _frame(PING, bytes(data))


def encode_pong(data: bytes) -> bytes:
    if len(data) != PING_DATA_LEN:
        raise ProtocolError("pong data is 8 bytes")
    return _frame(PONG, bytes(data))


def encode_peer_gone(key: bytes) -> bytes:
    _check_key(key)
    return _frame(PEER_GONE, bytes(key))


def encode_close(code: int, reason: str) -> bytes:
    return _frame(CLOSE, bytes((code & 0xFF,)) + _short_text(reason, MAX_REASON_LEN))


def write_data_header(buf: bytearray, offset: int, ftype: int, key: bytes, packet_len: int) -> None:
    """Write a SEND/RECV header + key at ``buf[offset:offset+35]`` (hot path, no allocation)."""
    n = KEY_LEN + packet_len
    buf[offset] = ftype
    buf[offset + 1] = n >> 8
    buf[offset + 2] = n & 0xFF
    buf[offset + 3 : offset + DATA_OVERHEAD] = key


# --- the in-place scanner --------------------------------------------------


def scan(buf: bytearray | bytes | memoryview, start: int, end: int, max_payload: int) -> int:
    """Return the end offset of the complete frame at ``buf[start:end]``, or -1.

    -1 means "need more bytes". Raises ``ProtocolError`` for an unknown type or
    a declared length above ``max_payload`` as soon as the 3-byte header is
    visible, so a hostile peer cannot make us buffer a huge frame. The frame
    type is ``buf[start]``. No copy is made.
    """
    if end - start < HEADER_LEN:
        return -1
    ftype = buf[start]
    if ftype not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type 0x{ftype:02x}")
    n = (buf[start + 1] << 8) | buf[start + 2]
    if n > max_payload:
        raise ProtocolError(
            f"frame of {n} bytes exceeds limit {max_payload}", code=CLOSE_FRAME_TOO_LARGE
        )
    stop = start + HEADER_LEN + n
    return stop if stop <= end else -1


def decode_payload(ftype: int, p: bytes) -> Event:
    """Decode one frame's payload into its typed event (validates lengths)."""
    n = len(p)
    if ftype in (SEND, RECV):
        if n < KEY_LEN:
            raise ProtocolError("data frame shorter than a key")
        key, pkt = bytes(p[:KEY_LEN]), bytes(p[KEY_LEN:])
        return Send(key, pkt) if ftype == SEND else Recv(key, pkt)
    if ftype in (SEND_BATCH, RECV_BATCH):
        if n < KEY_LEN:
            raise ProtocolError("data frame shorter than a key")
        key, pkts = bytes(p[:KEY_LEN]), tuple(split_batch(p[KEY_LEN:]))
        return SendBatch(key, pkts) if ftype == SEND_BATCH else RecvBatch(key, pkts)
    if ftype == HELLO:
        if n != len(MAGIC) + 1 + KEY_LEN or p[: len(MAGIC)] != MAGIC:
            raise ProtocolError("malformed hello")
        # a non-canonical key is not a format error: the handshake refuses it
        # (auth-failed), so that the reason is the same whatever the version
        return Hello(p[len(MAGIC)], bytes(p[len(MAGIC) + 1 :]))
    if ftype == CHALLENGE:
        fixed = 1 + KEY_LEN + NONCE_LEN + 8
        if n < fixed or n > fixed + MAX_RELAY_ID_LEN:
            raise ProtocolError("malformed challenge")
        return Challenge(
            p[0],
            bytes(p[1:33]),
            bytes(p[33:65]),
            int.from_bytes(p[65:73], "big"),
            _text(p[73:]),
        )
    if ftype == PROOF:
        if n != MAC_LEN:
            raise ProtocolError("malformed proof")
        return Proof(bytes(p))
    if ftype == OK:
        if n < 4 or n > 4 + MAX_RELAY_ID_LEN:
            raise ProtocolError("malformed ok")
        return Ok(int.from_bytes(p[0:2], "big"), int.from_bytes(p[2:4], "big"), _text(p[4:]))
    if ftype in (PING, PONG):
        if n != PING_DATA_LEN:
            raise ProtocolError("malformed ping/pong")
        return Ping(bytes(p)) if ftype == PING else Pong(bytes(p))
    if ftype == PEER_GONE:
        if n != KEY_LEN:
            raise ProtocolError("malformed peer-gone")
        return PeerGone(bytes(p))
    if ftype == CLOSE:
        if n < 1 or n > 1 + MAX_REASON_LEN:
            raise ProtocolError("malformed close")
        return Close(p[0], _text(p[1:]))
    raise ProtocolError(f"unknown frame type 0x{ftype:02x}")


def _text(raw: bytes) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("text field is not UTF-8") from exc


# --- the friendly parser ---------------------------------------------------


class FrameParser:
    """Sans-IO parser: ``feed(bytes)``, then ``next_event()`` until it returns None.

    ``max_payload`` bounds every frame; ``set_max_payload`` lets a relay raise
    the bound once registration is complete.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_payload = min(max_payload, MAX_PAYLOAD)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | None:
        stop = scan(self._buf, self._pos, len(self._buf), self.max_payload)
        if stop < 0:
            return None
        ftype = self._buf[self._pos]
        payload = bytes(self._buf[self._pos + HEADER_LEN : stop])
        self._pos = stop
        if self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        return decode_payload(ftype, payload)

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (ev := self.next_event()) is not None:
            out.append(ev)
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events."""
        return len(self._buf) - self._pos
