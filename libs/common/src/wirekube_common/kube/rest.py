"""Plain JSON requests and watch streams: paths in, dicts out.

Over our own connection (``connect``), not the kubernetes package: its typed
API classes build validators for hundreds of methods (measured from bytecode:
0.6 s of CPU and 22 MiB more RSS for three of them), and importing the
package at all costs 0.3 s of CPU (see ``config``).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from wirekube_common.kube.connect import Connection, Timeout

Query = Sequence[tuple[str, str]]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class ApiException(Exception):
    """The API server answered with an error status (``status``: 404, 409, 410, ...)."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"({status}) {reason}" + (f": {body[:500]}" if body else ""))

    @classmethod
    def from_response(cls, status: int, reason: str | None, data: bytes) -> ApiException:
        body = data.decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            # A metav1.Status says what went wrong better than the HTTP reason.
            reason = json.loads(body).get("message") or reason
        return cls(status, reason or "", body)


class Rest:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._stream: Any = None

    def _send(
        self,
        method: str,
        path: str,
        query: Query,
        body: Any,
        content_type: str,
        timeout: Timeout,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": JSON}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        url = f"{path}?{urlencode(list(query))}" if query else path
        return self.connection.request(method, url, headers, data, timeout, stream=stream)

    def call(
        self,
        method: str,
        path: str,
        query: Query = (),
        body: Any = None,
        content_type: str = JSON,
        timeout: float | None = 10.0,
    ) -> dict[str, Any]:
        response = self._send(method, path, query, body, content_type, timeout)
        data = response.data
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(response.status, response.reason, data)
        return json.loads(data) if data else {}

    def watch(
        self, path: str, query: Query, timeout_s: int, read_timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type": ..., "object": {...}}``) until the server
        ends the watch after ``timeout_s``; ``close()`` ends it from another thread."""
        q = [
            *query,
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        raw = self._send("GET", path, q, None, JSON, (10.0, read_timeout_s), stream=True)
        if not 200 <= raw.status <= 299:
            data = raw.read()
            raw.release_conn()
            raise ApiException.from_response(raw.status, raw.reason, data)
        self._stream = raw
        try:
            buffered = b""
            for chunk in raw.stream(65536, decode_content=True):
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._stream = None
            raw.release_conn()

    def close(self) -> None:
        """End a watch that another thread is blocked reading.

        Closing the response would wait for the reader: the buffered reader's
        lock is held for the whole blocking read, so ``close()`` from here
        deadlocks until the next event or the server-side timeout (minutes).
        Shutting the socket down at the OS level makes the blocked read return
        at once; the reader then fails, sees its stop flag and exits."""
        stream = self._stream
        if stream is None:
            return
        connection = getattr(stream, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is None:
            stream.close()
            return
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, not SSLSocket.shutdown: no TLS
            # state is touched from this thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
