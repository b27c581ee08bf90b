"""Replica-link wire format: frames, encoders, an in-place scanner and the join handshake.

Sans-IO (no socket, no event loop), like ``wirekube_common.relayproto``; the
full description is ``docs/relay-mesh.md``. Replicas of one pool talk over one
TCP connection per pair, on the relay's own port. Every frame is::

    +--------+------------------+------------------------+
    | type:1 | length:4 (BE)    | payload: length bytes  |
    +--------+------------------+------------------------+

The first byte of a replica link (``MESH_HELLO``, 0x40) is not a client frame
type, so the listener tells a replica from a client by the first byte alone
and a relay without a mesh secret rejects it as an unknown frame.

Lengths are 32-bit because a ``MESH_DATA`` frame carries a whole run of
already-stamped client frames (up to one receive buffer, ~320 KiB) behind one
header: the receiving replica writes that run to its client as it is.

Join handshake (mutual proof of the pool secret ``S``, fresh nonces both ways)::

    dialer   -> MESH_HELLO      magic, version, dialer id Id, nonce Nd, name
    acceptor -> MESH_CHALLENGE  acceptor id Ia, nonce Na, MACa, name
    dialer   -> MESH_PROOF      MACd

    T    = "wirekube-relay-mesh" | version | Id | Ia | Nd | Na | len|name_d | len|name_a
    MACa = HMAC-SHA256(S, "acceptor" | T)
    MACd = HMAC-SHA256(S, "dialer" | T)

A recorded handshake is useless: the other side's nonce is new on every
connection, so neither MAC verifies again; the role labels keep one side's
MAC from being reflected as the other's. MACs are compared in constant time
and each side gets one attempt per connection.

Ids are random per process (16 bytes): a replica that reaches itself (its own
address in the DNS answer) sees its own id and drops the link; two replicas
that dialled each other at once keep the link dialled by the smaller id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

VERSION = 1
MAGIC = b"WKMH"
HEADER_LEN = 5
KEY_LEN = 32
ID_LEN = 16
NONCE_LEN = 32
MAC_LEN = 32
VERSION_LEN = 8  # presence versions are unsigned 64-bit
ENTRY_LEN = KEY_LEN + VERSION_LEN
MAX_NAME_LEN = 64
PING_LEN = 8
MAX_REASON_LEN = 200
#: ``MESH_DATA`` header after the frame header: destination key, frame count.
DATA_PREFIX = KEY_LEN + 2
#: Largest payload before the handshake completed (handshake frames are small).
MAX_HANDSHAKE_PAYLOAD = 256
#: Largest payload of an authenticated link: one run of stamped client frames
#: (a receive buffer plus one maximal frame) behind its data prefix, or a
#: presence frame of ``MAX_PRESENCE_ENTRIES``.
MAX_PAYLOAD = 512 * 1024
#: Entries per presence frame (the encoder splits larger lists).
MAX_PRESENCE_ENTRIES = 4096
#: The smallest secret accepted (bytes after stripping whitespace).
MIN_SECRET_LEN = 16

LABEL = b"wirekube-relay-mesh"

MESH_HELLO = 0x40
MESH_CHALLENGE = 0x41
MESH_PROOF = 0x42
MESH_DATA = 0x44
PRESENCE_RESET = 0x45
PRESENCE_ADD = 0x46
PRESENCE_DEL = 0x47
MESH_PING = 0x48
MESH_PONG = 0x49
MESH_CLOSE = 0x4F

FRAME_TYPES = frozenset(
    {
        MESH_HELLO,
        MESH_CHALLENGE,
        MESH_PROOF,
        MESH_DATA,
        PRESENCE_RESET,
        PRESENCE_ADD,
        PRESENCE_DEL,
        MESH_PING,
        MESH_PONG,
        MESH_CLOSE,
    }
)

# close codes
CLOSE_NORMAL = 0
CLOSE_PROTOCOL_ERROR = 1
CLOSE_AUTH_FAILED = 2
CLOSE_DUPLICATE = 3
CLOSE_SELF = 4
CLOSE_TIMEOUT = 5
CLOSE_SHUTTING_DOWN = 7
CLOSE_OVERLOADED = 8
CLOSE_UNSUPPORTED_VERSION = 9


class MeshProtocolError(ValueError):
    """Any violation of the replica-link format; the link must be closed."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class MeshAuthError(Exception):
    """The join handshake failed; ``reason`` is a short metric label."""

    def __init__(self, reason: str, code: int = CLOSE_AUTH_FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    node_id: bytes
    nonce: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Challenge:
    node_id: bytes
    nonce: bytes
    mac: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Proof:
    mac: bytes


@dataclass(frozen=True, slots=True)
class Data:
    dst: bytes
    frames: int
    inner: bytes


@dataclass(frozen=True, slots=True)
class PresenceReset:
    pass


@dataclass(frozen=True, slots=True)
class PresenceAdd:
    entries: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class PresenceDel:
    entries: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Event = (
    Hello
    | Challenge
    | Proof
    | Data
    | PresenceReset
    | PresenceAdd
    | PresenceDel
    | Ping
    | Pong
    | Close
)


# --- encoders ------------------------------------------------------------------------


def header(ftype: int, length: int) -> bytes:
    return bytes((ftype,)) + length.to_bytes(4, "big")


def _frame(ftype: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise MeshProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return header(ftype, len(payload)) + payload


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")[:MAX_NAME_LEN].decode("utf-8", "ignore").encode("utf-8")
    return bytes((len(raw),)) + raw


def _check(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise MeshProtocolError(f"{what} must be {size} bytes, got {len(value)}")


def encode_hello(node_id: bytes, nonce: bytes, name: str, version: int = VERSION) -> bytes:
    _check(node_id, ID_LEN, "id")
    _check(nonce, NONCE_LEN, "nonce")
    return _frame(MESH_HELLO, MAGIC + bytes((version,)) + node_id + nonce + _name(name))


def encode_challenge(node_id: bytes, nonce: bytes, mac: bytes, name: str) -> bytes:
    _check(node_id, ID_LEN, "id")
    _check(nonce, NONCE_LEN, "nonce")
    _check(mac, MAC_LEN, "mac")
    return _frame(MESH_CHALLENGE, node_id + nonce + mac + _name(name))


def encode_proof(mac: bytes) -> bytes:
    _check(mac, MAC_LEN, "mac")
    return _frame(MESH_PROOF, mac)


def data_header(dst: bytes, frames: int, inner_len: int) -> bytes:
    """The header of a ``MESH_DATA`` frame whose ``inner_len`` bytes follow."""
    return (
        bytes((MESH_DATA,))
        + (DATA_PREFIX + inner_len).to_bytes(4, "big")
        + dst
        + min(frames, 0xFFFF).to_bytes(2, "big")
    )


def encode_data(dst: bytes, frames: int, inner: bytes) -> bytes:
    _check(dst, KEY_LEN, "key")
    if DATA_PREFIX + len(inner) > MAX_PAYLOAD:
        raise MeshProtocolError("data run too large")
    return data_header(dst, frames, len(inner)) + inner


def encode_presence_reset() -> bytes:
    return _frame(PRESENCE_RESET, b"")


def encode_presence(ftype: int, entries: Iterable[tuple[bytes, int]]) -> list[bytes]:
    """``PRESENCE_ADD``/``PRESENCE_DEL`` frames for ``entries`` (split as needed)."""
    if ftype not in (PRESENCE_ADD, PRESENCE_DEL):
        raise MeshProtocolError("not a presence frame type")
    out: list[bytes] = []
    chunk: list[bytes] = []
    for key, version in entries:
        _check(key, KEY_LEN, "key")
        chunk.append(key + version.to_bytes(VERSION_LEN, "big"))
        if len(chunk) == MAX_PRESENCE_ENTRIES:
            out.append(_frame(ftype, b"".join(chunk)))
            chunk = []
    if chunk:
        out.append(_frame(ftype, b"".join(chunk)))
    return out


def encode_ping(data: bytes) -> bytes:
    _check(data, PING_LEN, "ping data")
    return _frame(MESH_PING, data)


def encode_pong(data: bytes) -> bytes:
    _check(data, PING_LEN, "pong data")
    return _frame(MESH_PONG, data)


def encode_close(code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8")[:MAX_REASON_LEN].decode("utf-8", "ignore").encode("utf-8")
    return _frame(MESH_CLOSE, bytes((code & 0xFF,)) + raw)


# --- scanner and decoder ----------------------------------------------------------------


def scan(buf: bytes | bytearray | memoryview, start: int, end: int, max_payload: int) -> int:
    """End offset of the complete frame at ``buf[start:end]``, or -1 (need more bytes).

    Raises ``MeshProtocolError`` for an unknown type or a declared length above
    ``max_payload`` as soon as the header is visible."""
    if end - start < HEADER_LEN:
        return -1
    ftype = buf[start]
    if ftype not in FRAME_TYPES:
        raise MeshProtocolError(f"unknown frame type 0x{ftype:02x}")
    n = int.from_bytes(buf[start + 1 : start + HEADER_LEN], "big")
    if n > max_payload:
        raise MeshProtocolError(f"frame of {n} bytes exceeds limit {max_payload}")
    stop = start + HEADER_LEN + n
    return stop if stop <= end else -1


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MeshProtocolError("text field is not UTF-8") from exc


def _read_name(p: bytes, at: int) -> str:
    if len(p) <= at:
        raise MeshProtocolError("missing name")
    n = p[at]
    if n > MAX_NAME_LEN or len(p) != at + 1 + n:
        raise MeshProtocolError("malformed name")
    return _text(p[at + 1 :])


def _entries(p: bytes) -> tuple[tuple[bytes, int], ...]:
    if not p or len(p) % ENTRY_LEN:
        raise MeshProtocolError("malformed presence entries")
    if len(p) // ENTRY_LEN > MAX_PRESENCE_ENTRIES:
        raise MeshProtocolError("too many presence entries in one frame")
    return tuple(
        (p[k : k + KEY_LEN], int.from_bytes(p[k + KEY_LEN : k + ENTRY_LEN], "big"))
        for k in range(0, len(p), ENTRY_LEN)
    )


def decode_payload(ftype: int, p: bytes) -> Event:
    """The typed event of one frame's payload (validates every length)."""
    n = len(p)
    if ftype == MESH_DATA:
        if n < DATA_PREFIX:
            raise MeshProtocolError("data frame shorter than its prefix")
        return Data(p[:KEY_LEN], (p[KEY_LEN] << 8) | p[KEY_LEN + 1], p[DATA_PREFIX:])
    if ftype == MESH_HELLO:
        fixed = len(MAGIC) + 1 + ID_LEN + NONCE_LEN
        if n < fixed + 1 or p[: len(MAGIC)] != MAGIC:
            raise MeshProtocolError("malformed mesh hello")
        at = len(MAGIC) + 1
        return Hello(
            p[len(MAGIC)], p[at : at + ID_LEN], p[at + ID_LEN : fixed], _read_name(p, fixed)
        )
    if ftype == MESH_CHALLENGE:
        fixed = ID_LEN + NONCE_LEN + MAC_LEN
        if n < fixed + 1:
            raise MeshProtocolError("malformed mesh challenge")
        return Challenge(
            p[:ID_LEN],
            p[ID_LEN : ID_LEN + NONCE_LEN],
            p[ID_LEN + NONCE_LEN : fixed],
            _read_name(p, fixed),
        )
    if ftype == MESH_PROOF:
        if n != MAC_LEN:
            raise MeshProtocolError("malformed mesh proof")
        return Proof(p)
    if ftype == PRESENCE_RESET:
        if n:
            raise MeshProtocolError("malformed presence reset")
        return PresenceReset()
    if ftype == PRESENCE_ADD:
        return PresenceAdd(_entries(p))
    if ftype == PRESENCE_DEL:
        return PresenceDel(_entries(p))
    if ftype in (MESH_PING, MESH_PONG):
        if n != PING_LEN:
            raise MeshProtocolError("malformed mesh ping/pong")
        return Ping(p) if ftype == MESH_PING else Pong(p)
    if ftype == MESH_CLOSE:
        if n < 1 or n > 1 + MAX_REASON_LEN:
            raise MeshProtocolError("malformed mesh close")
        return Close(p[0], _text(p[1:]))
    raise MeshProtocolError(f"unknown frame type 0x{ftype:02x}")


class MeshParser:
    """Friendly sans-IO parser (tests, tools): ``feed(bytes)`` then ``next_event()``."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_payload = max_payload

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | None:
        stop = scan(self._buf, self._pos, len(self._buf), self.max_payload)
        if stop < 0:
            return None
        ftype = self._buf[self._pos]
        payload = bytes(self._buf[self._pos + HEADER_LEN : stop])
        self._pos = stop
        return decode_payload(ftype, payload)

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (ev := self.next_event()) is not None:
            out.append(ev)
        return out


# --- the join handshake -----------------------------------------------------------------


def load_secret(raw: bytes) -> bytes:
    """The pool secret from a file's bytes (surrounding whitespace ignored)."""
    secret = raw.strip()
    if len(secret) < MIN_SECRET_LEN:
        raise ValueError(f"the mesh secret must be at least {MIN_SECRET_LEN} bytes")
    return secret


def transcript(
    dialer_id: bytes,
    acceptor_id: bytes,
    dialer_nonce: bytes,
    acceptor_nonce: bytes,
    dialer_name: str,
    acceptor_name: str,
) -> bytes:
    return b"".join(
        (
            LABEL,
            bytes((VERSION,)),
            dialer_id,
            acceptor_id,
            dialer_nonce,
            acceptor_nonce,
            _name(dialer_name),
            _name(acceptor_name),
        )
    )


def mac(secret: bytes, role: bytes, data: bytes) -> bytes:
    return hmac.new(secret, role + data, hashlib.sha256).digest()


Random = Callable[[int], bytes]


class Dialer:
    """The connecting side: ``hello()`` -> send; ``on_challenge(ev)`` -> proof to send.

    After ``on_challenge`` returned, the acceptor has proven the secret and
    ``peer_id``/``peer_name`` are set."""

    def __init__(self, secret: bytes, node_id: bytes, name: str, random: Random = os.urandom):
        self.secret = secret
        self.node_id = node_id
        self.name = name
        self.nonce = random(NONCE_LEN)
        self.state = "start"
        self.peer_id = b""
        self.peer_name = ""

    def hello(self) -> bytes:
        if self.state != "start":
            raise MeshAuthError("hello-twice", CLOSE_PROTOCOL_ERROR)
        self.state = "hello-sent"
        return encode_hello(self.node_id, self.nonce, self.name)

    def on_challenge(self, ch: Challenge) -> bytes:
        if self.state != "hello-sent":
            raise MeshAuthError("unexpected-challenge", CLOSE_PROTOCOL_ERROR)
        self.state = "done"
        data = transcript(self.node_id, ch.node_id, self.nonce, ch.nonce, self.name, ch.name)
        if not hmac.compare_digest(mac(self.secret, b"acceptor", data), ch.mac):
            raise MeshAuthError("bad-acceptor-proof")
        if ch.node_id == self.node_id:
            raise MeshAuthError("self", CLOSE_SELF)
        self.peer_id, self.peer_name = ch.node_id, ch.name
        return encode_proof(mac(self.secret, b"dialer", data))


class Acceptor:
    """The listening side: ``on_hello(ev)`` -> challenge; ``on_proof(ev)`` verifies.

    One attempt per connection; after ``on_proof`` returned the dialer has
    proven the secret and ``peer_id``/``peer_name`` are set."""

    def __init__(self, secret: bytes, node_id: bytes, name: str, random: Random = os.urandom):
        self.secret = secret
        self.node_id = node_id
        self.name = name
        self.nonce = random(NONCE_LEN)
        self.state = "start"
        self._transcript = b""
        self.peer_id = b""
        self.peer_name = ""

    def on_hello(self, hello: Hello) -> bytes:
        if self.state != "start":
            raise MeshAuthError("hello-twice", CLOSE_PROTOCOL_ERROR)
        if hello.version != VERSION:
            raise MeshAuthError("version", CLOSE_UNSUPPORTED_VERSION)
        self.state = "challenged"
        self._transcript = transcript(
            hello.node_id, self.node_id, hello.nonce, self.nonce, hello.name, self.name
        )
        self.peer_id, self.peer_name = hello.node_id, hello.name
        return encode_challenge(
            self.node_id, self.nonce, mac(self.secret, b"acceptor", self._transcript), self.name
        )

    def on_proof(self, proof: Proof) -> bytes:
        """Verify; returns the dialer's id."""
        if self.state != "challenged":
            raise MeshAuthError("unexpected-proof", CLOSE_PROTOCOL_ERROR)
        self.state = "done"
        if not hmac.compare_digest(mac(self.secret, b"dialer", self._transcript), proof.mac):
            raise MeshAuthError("bad-proof")
        if self.peer_id == self.node_id:
            raise MeshAuthError("self", CLOSE_SELF)
        return self.peer_id
