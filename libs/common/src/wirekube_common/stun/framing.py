"""STUN over TCP: split a byte stream into whole messages (RFC 5389 section 7.2.2).

STUN messages are self-delimiting: the 20-byte header carries the body
length, so no extra framing exists on a plain TCP connection. ``StreamSplitter``
is sans-IO: ``feed`` bytes as they arrive, get back the complete message
byte strings. The header is validated as soon as it is complete (first bits,
length multiple of four, magic cookie unless classic messages are allowed),
so a peer sending garbage is detected after 20 bytes, not after buffering an
arbitrary amount. A message bigger than ``max_message`` is rejected too.
"""

from __future__ import annotations

from wirekube_common.stun.codec import (
    HEADER_LEN,
    MAGIC_COOKIE_BYTES,
    MAX_MESSAGE_LEN,
    StunDecodeError,
)


class StreamError(StunDecodeError):
    """The stream lost framing. ``complete`` holds the messages that were
    whole before the fault in the same ``feed`` call, so that the outcome
    does not depend on how the bytes were cut into reads."""

    def __init__(self, message: str, complete: list[bytes]) -> None:
        super().__init__(message)
        self.complete = complete


class StreamSplitter:
    """Incremental splitter; raises ``StreamError`` (a ``StunDecodeError``) on a
    bad header, carrying the messages completed before it in that call.

    After an error the stream has lost framing and must be closed.
    """

    def __init__(self, *, max_message: int = MAX_MESSAGE_LEN, allow_classic: bool = True) -> None:
        self._buf = bytearray()
        self._max = max_message
        self._allow_classic = allow_classic

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= HEADER_LEN:
            try:
                total = HEADER_LEN + check_header(
                    bytes(self._buf[:HEADER_LEN]), self._allow_classic
                )
            except StunDecodeError as exc:
                raise StreamError(str(exc), out) from exc
            if total > self._max:
                raise StreamError(f"message of {total} bytes exceeds {self._max}", out)
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out


def check_header(header: bytes, allow_classic: bool = True) -> int:
    """Validate a 20-byte header and return the body length it announces."""
    if len(header) < HEADER_LEN:
        raise StunDecodeError("short header")
    if header[0] & 0xC0:
        raise StunDecodeError("first two bits are not zero")
    length = (header[2] << 8) | header[3]
    if length & 3:
        raise StunDecodeError(f"length {length} is not a multiple of 4")
    if not allow_classic and header[4:8] != MAGIC_COOKIE_BYTES:
        raise StunDecodeError("missing magic cookie")
    return length
