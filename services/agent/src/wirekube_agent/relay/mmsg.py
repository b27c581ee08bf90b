"""recvmmsg(2) through ctypes: many UDP datagrams per system call, laid out
so that a batch of equal-size datagrams is already a run of batch entries.

Part of the bridge's hot path (written for speed on purpose). Python's socket
module has no recvmmsg; one ``recv_into`` per datagram costs a method call and
a system call each (~1 us here), which caps the bridge below its target.

Layout: slot ``i`` of the arena starts at ``i * stride`` with ``stride = 2 +
size``: two bytes for the batch entry's length prefix, then ``size`` bytes of
datagram. A datagram longer than ``size`` (up to ``cap``) continues in slot
``i`` of a separate spill area (a second iovec). So when every datagram of a
call is exactly ``size`` bytes, which is what bulk traffic through WireGuard
looks like, the arena's first ``n * stride`` bytes are ``n`` back-to-back
entries as soon as the prefixes are in, and ``prefix(n)`` writes those with two
strided slice assignments: no Python work per datagram at all. Other calls
fall back to per-datagram handling, and ``follow(lengths)`` moves the layout
to the traffic's new common size once it has stayed common (``retarget``
rewrites every iovec, so it must not run on every call).

Message lengths and flags are read through an integer view of the mmsghdr
array, a strided slice at a time (no ctypes attribute access per datagram).

``available()`` is False where libc has no recvmmsg (non-Linux); the bridge
then falls back to ``recv_into`` per datagram.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
from collections import Counter
from typing import Any


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_INDEX = _MMsgHdr.msg_len.offset // 4
_FLAGS_INDEX = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset) // 4

_recvmmsg: Any
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _recvmmsg = _libc.recvmmsg
    _recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    _recvmmsg.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _recvmmsg = None


def available() -> bool:
    return _recvmmsg is not None and _SIZE % 4 == 0


class MultiReceiver:
    """Receive up to ``vlen`` datagrams of at most ``cap`` bytes per call (see the module doc)."""

    def __init__(self, vlen: int, cap: int, size: int | None = None) -> None:
        self.vlen = vlen
        self.cap = cap
        # Big enough for any ``size`` up to ``cap``; the spill area likewise.
        self.arena = bytearray(vlen * (2 + cap))
        self.view = memoryview(self.arena)
        self.spill = bytearray(vlen * cap)
        self.spill_view = memoryview(self.spill)
        self._arena_c = (ctypes.c_char * len(self.arena)).from_buffer(self.arena)
        self._spill_c = (ctypes.c_char * len(self.spill)).from_buffer(self.spill)
        self._iov = (_IOVec * (2 * vlen))()
        self._msgs = (_MMsgHdr * vlen)()
        iov_base = ctypes.addressof(self._iov)
        for i in range(vlen):
            self._msgs[i].msg_hdr.msg_iov = ctypes.cast(
                iov_base + 2 * i * ctypes.sizeof(_IOVec), ctypes.POINTER(_IOVec)
            )
        self._ints = memoryview(self._msgs).cast("B").cast("I")
        self._words = _SIZE // 4
        self._msgs_ptr = ctypes.addressof(self._msgs)
        self._flags = socket.MSG_DONTWAIT
        self.size = self.stride = 0
        self._hi = self._lo = b""
        self._candidate = 0  # a new common size seen in the last call followed
        self.retarget(size or cap)

    def follow(self, lengths: list[int]) -> None:
        """After a call whose datagrams did not all fit the layout: retarget to
        their common size (3/4 of them or more) once two calls in a row had
        the same one, so traffic that alternates sizes never pays a retarget
        per call."""
        if len(lengths) < 8:
            return
        common, count = Counter(lengths).most_common(1)[0]
        if common == self.size or not common or count * 4 < len(lengths) * 3:
            self._candidate = 0
        elif self._candidate != common:
            self._candidate = common
        else:
            self._candidate = 0
            self.retarget(common)

    def retarget(self, size: int) -> None:
        """Lay slots out for datagrams of ``size`` bytes (1 <= size <= cap)."""
        size = max(1, min(size, self.cap))
        self.size, self.stride = size, 2 + size
        base, spill = ctypes.addressof(self._arena_c), ctypes.addressof(self._spill_c)
        iovlen = 1 if size == self.cap else 2
        for i in range(self.vlen):
            head, tail = self._iov[2 * i], self._iov[2 * i + 1]
            head.iov_base, head.iov_len = base + i * self.stride + 2, size
            tail.iov_base, tail.iov_len = spill + i * self.cap, self.cap - size
            self._msgs[i].msg_hdr.msg_iovlen = iovlen
        self._hi = bytes([size >> 8]) * self.vlen
        self._lo = bytes([size & 0xFF]) * self.vlen

    def recv(self, fd: int) -> int:
        """Number of datagrams received (0 when none is waiting). Raises OSError otherwise."""
        n = _recvmmsg(fd, self._msgs_ptr, self.vlen, self._flags, None)  # type: ignore[misc]
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(err, "recvmmsg failed")
        return n

    def lengths(self, n: int) -> list[int]:
        """Lengths of the first ``n`` datagrams of the last call (at most ``cap``:
        a longer one was cut there and has MSG_TRUNC in its flags)."""
        w = self._words
        return self._ints[_LEN_INDEX : n * w : w].tolist()  # type: ignore[no-any-return]

    def flags(self, n: int) -> list[int]:
        """``msg_flags`` of the first ``n`` datagrams of the last call (MSG_TRUNC: cut at cap)."""
        w = self._words
        return self._ints[_FLAGS_INDEX : n * w : w].tolist()  # type: ignore[no-any-return]

    def prefix(self, n: int) -> None:
        """Write the length prefix of a ``size``-byte datagram into the first ``n`` slots."""
        stride = self.stride
        self.view[0 : n * stride : stride] = self._hi[:n]
        self.view[1 : n * stride : stride] = self._lo[:n]

    def entry(self, i: int, length: int) -> list[memoryview]:
        """Slot ``i`` as a batch entry of ``length`` bytes (its prefix written): one
        view, or two when the datagram continued in the spill area."""
        off = i * self.stride
        self.arena[off] = length >> 8
        self.arena[off + 1] = length & 0xFF
        if length <= self.size:
            return [self.view[off : off + 2 + length]]
        extra = i * self.cap
        return [
            self.view[off : off + self.stride],
            self.spill_view[extra : extra + length - self.size],
        ]
