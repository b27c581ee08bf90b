"""Plain JSON requests and watch streams over the kubernetes client's transport.

The kubernetes package's typed API classes are costly here: instantiating
``CoreV1Api`` builds validators for hundreds of methods (measured: +70 MiB RSS
and 1.6 s of start-up, for the three core calls the agent makes). We keep the
package for what it does well — kubeconfig/in-cluster loading, auth, TLS,
connection pooling, ``ApiException`` — and send requests through its
``ApiClient`` directly, with paths and plain dicts.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

Query = Sequence[tuple[str, str]]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class Rest:
    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self._stream: Any = None

    def _send(
        self,
        method: str,
        path: str,
        query: Query,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float] | None,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*serialized, _request_timeout=timeout)

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
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(
                http_resp=response, body=data.decode("utf-8", "replace"), data=None
            )
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
        response = self._send("GET", path, q, None, JSON, (10.0, read_timeout_s))
        if not 200 <= response.status <= 299:
            data = response.read()
            raise ApiException.from_response(
                http_resp=response, body=data.decode("utf-8", "replace"), data=None
            )
        raw = response.response  # the urllib3 response, read incrementally
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
