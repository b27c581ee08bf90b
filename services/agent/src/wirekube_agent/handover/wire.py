"""Bytes and file descriptors over a unix stream socket, for the handover and
the bridge worker: one JSON object per message behind a 4-byte length, and
sockets sent with SCM_RIGHTS in chunks (protocol.fd_chunks), each chunk
riding on one marker byte so that the receiver reads the descriptors exactly
where the sender put them."""

from __future__ import annotations

import json
import socket
from typing import Any

from wirekube_agent.handover.protocol import fd_chunks

_MAX_MESSAGE = 64 * 1024 * 1024  # far above the endpoints of any cluster's peers
_MARK = b"F"


def send_json(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(len(data).to_bytes(4, "big") + data)


def recv_json(sock: socket.socket) -> dict[str, Any] | None:
    """One message; None at EOF. ValueError for one that is not a JSON object."""
    data = recv_bytes(sock)
    if data is None:
        return None
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("a message is a JSON object")
    return obj


def recv_bytes(sock: socket.socket) -> bytes | None:
    """One message's bytes, not parsed; None at EOF (the other side is gone).
    OSError for a length no message of ours has (a broken stream)."""
    head = _read(sock, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > _MAX_MESSAGE:
        raise OSError(f"message of {size} bytes")
    return _read(sock, size)


def _read(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    """Send ``fds`` (the receiver knows how many from the message before)."""
    i = 0
    for n in fd_chunks(len(fds)):
        socket.send_fds(sock, [_MARK], fds[i : i + n])
        i += n


def recv_fds(sock: socket.socket, count: int) -> list[int]:
    """Receive ``count`` descriptors sent by ``send_fds``; the caller owns them.
    OSError when fewer arrive (closed, or truncated by the kernel)."""
    got: list[int] = []
    try:
        for n in fd_chunks(count):
            data, fds, flags, _ = socket.recv_fds(sock, 1, n)
            got += fds
            if data != _MARK or len(fds) != n or flags & socket.MSG_CTRUNC:
                raise OSError(f"expected {n} descriptors, got {len(fds)} (flags {flags:#x})")
    except BaseException:
        for fd in got:
            socket.close(fd)
        raise
    return got
