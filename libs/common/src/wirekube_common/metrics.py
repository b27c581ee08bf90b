"""The one HTTP port every service serves: /metrics, /livez and /readyz.

Prometheus scrapes ``/metrics``; the kubelet probes ``/livez`` (is the process
making progress? a failure makes it restart the container) and ``/readyz``
(should it get traffic / count as up? a failure only takes it out of
Services). Each service supplies its own checks, as callables returning
``(ok, reason)``; the answer is 200 or 503 with that reason on one line.

Why not ``prometheus_client.start_http_server``: it runs a thread per
connection with no bound, and answers every path with the metrics (so a
liveness probe on it could never fail). This server is a single thread around
a ``selectors`` loop: non-blocking sockets, at most ``MAX_CONNECTIONS`` open
(the oldest is dropped for a new one, so a flood cannot lock the kubelet
out), requests of at most ``MAX_REQUEST_BYTES``, every connection closed
after one response or ``CONNECTION_TIMEOUT_S``. Checks and collectors run in
that thread, so they must be quick and thread-safe (they read timestamps and
counters the service's own loops write).

The request parsing and routing are pure (``parse_request``, ``respond``) and
unit-tested apart from the socket loop.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9090

# A scrape or a probe sends a request of a few hundred bytes; 8 KiB leaves
# room for long headers and refuses anything that is not a health check.
MAX_REQUEST_BYTES = 8192
# Prometheus and the kubelet open one connection per scrape/probe; 64 open at
# once is far above what they need, and bounds what a flood can hold.
MAX_CONNECTIONS = 64
# Kubelet probes time out after 1 s by default and Prometheus after 10 s; a
# connection that has not sent its request and taken its answer in 5 s is idle
# or hostile.
CONNECTION_TIMEOUT_S = 5.0
# How often the loop wakes with nothing to do, to expire idle connections and
# notice stop(): well below CONNECTION_TIMEOUT_S, cheap when idle.
POLL_S = 0.5
# Longest reason text returned by a check (it is one line for humans and logs).
MAX_REASON_CHARS = 200

Check = Callable[[], tuple[bool, str]]


def always_ok() -> tuple[bool, str]:
    return True, "ok"


class RequestError(Exception):
    """A request this server refuses; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


def parse_request(data: bytes) -> Request | None:
    """The request in ``data`` (bytes received so far), or None while its head
    is incomplete. Raises RequestError for anything malformed or too big."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_REQUEST_BYTES:
            raise RequestError(431, "request header too large")
        return None
    if end > MAX_REQUEST_BYTES:
        raise RequestError(431, "request header too large")
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise RequestError(400, "non-ASCII request head") from None
    line, *header_lines = head.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, "malformed request line")
    method, target, _version = parts
    headers = {}
    for h in header_lines:
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip():
            raise RequestError(400, "malformed header")
        headers[name.lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], headers)


def _reason(text: str) -> str:
    line = " ".join(text.split())
    return (line[:MAX_REASON_CHARS] or "-") + "\n"


def _check(check: Check) -> tuple[int, str]:
    try:
        ok, reason = check()
    except Exception as exc:  # a broken check is a failed check, never a crash
        return 503, _reason(f"check failed: {exc!r}")
    return (200 if ok else 503), _reason(reason)


@dataclass(frozen=True)
class Routes:
    registry: CollectorRegistry
    livez: Check = always_ok
    readyz: Check = always_ok


def respond(routes: Routes, request: Request) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    if request.method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"method not allowed\n"
    if request.path == "/metrics":
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        try:
            return 200, content_type, encoder(routes.registry)
        except Exception as exc:
            log.exception("collecting metrics failed")
            return 500, "text/plain; charset=utf-8", _reason(f"collect failed: {exc!r}").encode()
    if request.path in ("/livez", "/readyz"):
        status, text = _check(routes.livez if request.path == "/livez" else routes.readyz)
        return status, "text/plain; charset=utf-8", text.encode()
    return 404, "text/plain; charset=utf-8", b"not found: /metrics, /livez, /readyz\n"


_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def encode_response(status: int, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


class _Conn:
    __slots__ = ("deadline", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbuf = bytearray()
        self.outbuf = b""


class MetricsServer:
    """/metrics, /livez and /readyz on one port, served by one thread."""

    def __init__(
        self,
        addr: str,
        port: int,
        registry: CollectorRegistry = REGISTRY,
        livez: Check = always_ok,
        readyz: Check = always_ok,
    ) -> None:
        self.routes = Routes(registry, livez, readyz)
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((addr, port))
        self._listener.listen(MAX_CONNECTIONS)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._conns: dict[int, _Conn] = {}  # fd -> connection, in accept order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(POLL_S * 4)

    # -- the loop (this thread only) -------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, mask in self._sel.select(POLL_S):
                    if key.data is None:
                        self._accept()
                    else:
                        self._service(key.data, mask)
                self._expire(time.monotonic())
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._sel.close()
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: retry on the next wakeup
                log.warning("metrics server cannot accept: %s", exc)
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                self._close(next(iter(self._conns.values())))  # the oldest
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + CONNECTION_TIMEOUT_S)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _service(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not conn.outbuf:
                data = conn.sock.recv(4096)
                if not data:
                    self._close(conn)
                    return
                conn.inbuf += data
                self._maybe_answer(conn)
            if conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                conn.outbuf = conn.outbuf[sent:]
                if not conn.outbuf:
                    self._close(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)

    def _maybe_answer(self, conn: _Conn) -> None:
        try:
            request = parse_request(bytes(conn.inbuf))
        except RequestError as exc:
            conn.outbuf = encode_response(
                exc.status, "text/plain; charset=utf-8", _reason(str(exc)).encode()
            )
        else:
            if request is None:
                return
            status, ctype, body = respond(self.routes, request)
            conn.outbuf = encode_response(status, ctype, body, request.method == "HEAD")
        self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self._conns.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        conn.sock.close()


def serve_metrics(
    port: int = DEFAULT_METRICS_PORT,
    addr: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
    *,
    livez: Check = always_ok,
    readyz: Check = always_ok,
) -> MetricsServer | None:
    """Serve /metrics, /livez and /readyz from one daemon thread; port 0
    disables it (tests, benchmarks). Returns the running server."""
    if not port:
        return None
    return MetricsServer(addr, port, registry, livez, readyz).start()
