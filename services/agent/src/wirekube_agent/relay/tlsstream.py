"""TlsStream: the relay link's TLS, over a socket it does not hide, for one reader and many writers.

The relay link reads in its own thread while other threads write (link.py
says why: a writer blocked by the relay's backpressure must not stop the
reads). OpenSSL does not allow one SSL object to be used by two threads at
once, so ``ssl.SSLSocket`` (which releases the GIL inside SSL_read and
SSL_write) is not safe for that. This stream keeps the TLS state in an
``ssl.SSLObject`` over two memory BIOs and does the socket I/O itself:

* the TLS state is touched only under ``_tls`` (held for microseconds: memory
  to memory, never across a socket call);
* the socket's send side is used only under ``_send``; ciphertext is taken
  out of the outgoing BIO while ``_send`` is held and written before it is
  released, so records reach the wire in the order TLS produced them;
* the reader receives ciphertext with ``recv_into`` (no lock), feeds it in
  under ``_tls`` and decrypts straight into the caller's buffer. Should TLS
  have something to say back while reading (a TLS 1.3 KeyUpdate), the reader
  sends it only if no writer holds the send side, else the next write takes it.

The surface is what link.py uses of a socket: ``sendall``, ``sendmsg``,
``recv``, ``recv_into``, ``settimeout``, ``shutdown``, ``close``,
``setsockopt``. TLS 1.2 is the floor; certificates are verified by the
context (egress.py builds it).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Sequence

#: Ciphertext read per recv: a few TLS records (16 KiB each at most).
RAW_READ = 64 * 1024


class TlsStream:
    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_name: str) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_hostname=server_name)
        self._tls = threading.Lock()
        self._send = threading.Lock()
        self._raw = bytearray(RAW_READ)
        self._raw_view = memoryview(self._raw)

    # --- handshake -----------------------------------------------------------------

    def handshake(self, timeout: float, leftover: bytes = b"") -> None:
        """Run the TLS handshake (raises ssl.SSLError, e.g. a certificate that
        does not verify, TimeoutError or OSError)."""
        deadline = time.monotonic() + timeout
        if leftover:
            self._in.write(leftover)
        while True:
            try:
                with self._tls:
                    self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self._flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("TLS handshake with the relay timed out")
            self.sock.settimeout(remaining)
            data = self.sock.recv(RAW_READ)
            if not data:
                raise ConnectionResetError("connection closed during the TLS handshake")
            with self._tls:
                self._in.write(data)
        self._flush()

    @property
    def version(self) -> str | None:
        return self._obj.version()

    # --- writing ---------------------------------------------------------------------

    def _flush(self) -> None:
        with self._send:
            with self._tls:
                out = self._out.read()
            if out:
                self.sock.sendall(out)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._send:
            with self._tls:
                self._obj.write(data)
                out = self._out.read()
            self.sock.sendall(out)

    def sendmsg(self, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        """Gathering write: the buffers are encrypted together (one pass, few records)."""
        data = b"".join(buffers)
        self.sendall(data)
        return len(data)

    # --- reading (one thread) ----------------------------------------------------------

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0) -> int:
        """Plaintext into ``buffer``; 0 at the end of the stream."""
        want = nbytes or len(buffer)
        while True:
            with self._tls:
                try:
                    return self._obj.read(want, buffer)
                except ssl.SSLWantReadError:
                    pending = self._out.pending
                except ssl.SSLZeroReturnError:
                    return 0
            if pending and self._send.acquire(blocking=False):
                try:
                    with self._tls:
                        out = self._out.read()
                    self.sock.sendall(out)
                finally:
                    self._send.release()
            n = self.sock.recv_into(self._raw_view)
            if n == 0:
                return 0
            with self._tls:
                self._in.write(self._raw_view[:n])

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(buf, n)
        return bytes(buf[:got])

    # --- the socket beneath ----------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
