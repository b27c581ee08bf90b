"""recvmmsg(2) through ctypes: many UDP datagrams per system call, into fixed slots.

Part of the bridge's hot path (written for speed on purpose). Python's socket
module has no recvmmsg; one ``recv_into`` per datagram costs a method call and
a system call each (~1-2 us here), which caps the bridge well below its
target. ``MultiReceiver.recv(fd)`` fills up to ``vlen`` slots of one
preallocated arena per call. Each slot is ``2 + cap`` bytes and the datagram is
written at offset 2, so the caller can store the batch-entry length prefix in
front of it in place and hand ``arena[slot : slot + 2 + n]`` to ``sendmsg``
(gather) without copying.

Message lengths and flags are read through an integer view of the mmsghdr
array (no ctypes attribute access per datagram).

``available()`` is False where libc has no recvmmsg (non-Linux); the bridge
then falls back to ``recv_into`` per datagram.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
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
    """Receive up to ``vlen`` datagrams per call into ``arena`` slots of ``2 + cap`` bytes."""

    def __init__(self, vlen: int, cap: int) -> None:
        self.vlen = vlen
        self.cap = cap
        self.stride = 2 + cap
        self.arena = bytearray(vlen * self.stride)
        self.view = memoryview(self.arena)
        self._arena_c = (ctypes.c_char * len(self.arena)).from_buffer(self.arena)
        self._iov = (_IOVec * vlen)()
        self._msgs = (_MMsgHdr * vlen)()
        base = ctypes.addressof(self._arena_c)
        for i in range(vlen):
            self._iov[i].iov_base = base + i * self.stride + 2
            self._iov[i].iov_len = cap
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
        self._ints = memoryview(self._msgs).cast("B").cast("I")
        self._msgs_ptr = ctypes.addressof(self._msgs)
        self._flags = socket.MSG_DONTWAIT

    def recv(self, fd: int) -> int:
        """Number of datagrams received (0 when none is waiting). Raises OSError otherwise."""
        n = _recvmmsg(fd, self._msgs_ptr, self.vlen, self._flags, None)  # type: ignore[misc]
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(err, "recvmmsg failed")
        return n

    def length(self, i: int) -> int:
        return self._ints[i * (_SIZE // 4) + _LEN_INDEX]  # type: ignore[no-any-return]

    def truncated(self, i: int) -> bool:
        return bool(self._ints[i * (_SIZE // 4) + _FLAGS_INDEX] & socket.MSG_TRUNC)
