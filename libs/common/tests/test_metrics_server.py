"""The shared /metrics, /livez, /readyz server: pure parsing and routing, and
the real server on loopback (bounded connections, one thread, timeouts)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from wirekube_common import metrics
from wirekube_common.metrics import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    MetricsServer,
    Request,
    RequestError,
    Routes,
    parse_request,
    respond,
)


def test_parse_waits_for_the_whole_head() -> None:
    raw = b"GET /livez?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n"
    for cut in range(len(raw) - 1):
        assert parse_request(raw[:cut]) is None
    assert parse_request(raw) == Request("GET", "/livez", {"host": "a", "accept": "text/plain"})


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /livez\r\n\r\n", 400),
        (b"GET /livez SPDY/3\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nno-colon\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES, 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES + b"\r\n\r\n", 431),
    ],
)
def test_parse_refuses(raw: bytes, status: int) -> None:
    with pytest.raises(RequestError) as err:
        parse_request(raw)
    assert err.value.status == status


@given(st.binary(max_size=MAX_REQUEST_BYTES + 64))
def test_any_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    try:
        parsed = parse_request(data)
    except RequestError as exc:
        assert exc.status in (400, 431)
    else:
        assert parsed is None or isinstance(parsed, Request)
        assert parsed is not None or (b"\r\n\r\n" not in data and len(data) <= MAX_REQUEST_BYTES)


def _routes(
    live: tuple[bool, str] = (True, "fine"), ready: tuple[bool, str] = (False, "no\nway")
) -> Routes:
    registry = CollectorRegistry()
    Counter("wirekube_test_things", "Things.", registry=registry).inc(3)
    return Routes(registry, lambda: live, lambda: ready)


def test_routes() -> None:
    routes = _routes()
    status, ctype, body = respond(routes, Request("GET", "/metrics"))
    assert (
        status == 200
        and ctype.startswith("text/plain")
        and b"wirekube_test_things_total 3.0" in body
    )
    assert respond(routes, Request("GET", "/livez")) == (
        200,
        "text/plain; charset=utf-8",
        b"fine\n",
    )
    # One line, whatever the check returned.
    assert respond(routes, Request("GET", "/readyz"))[::2] == (503, b"no way\n")
    assert respond(routes, Request("GET", "/healthz"))[0] == 404
    assert respond(routes, Request("POST", "/livez"))[0] == 405
    om = respond(routes, Request("GET", "/metrics", {"accept": "application/openmetrics-text"}))
    assert om[1].startswith("application/openmetrics-text") and om[2].endswith(b"# EOF\n")


def test_a_check_that_raises_is_a_failure_not_a_crash() -> None:
    def boom() -> tuple[bool, str]:
        raise RuntimeError("kaput")

    routes = Routes(CollectorRegistry(), boom, boom)
    status, _, body = respond(routes, Request("GET", "/livez"))
    assert status == 503 and b"kaput" in body


# -- the real server on loopback ---------------------------------------------------
@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer(
        "127.0.0.1", 0, _routes().registry, lambda: (True, "alive"), lambda: (False, "busy")
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_serves_over_a_socket(server: MetricsServer) -> None:
    assert get(server.port, "/livez") == (200, b"alive\n")
    assert get(server.port, "/readyz") == (503, b"busy\n")
    status, body = get(server.port, "/metrics")
    assert status == 200 and b"wirekube_test_things_total" in body


def test_a_flood_neither_grows_threads_nor_locks_out_a_probe(server: MetricsServer) -> None:
    """Hundreds of idle connections: still one server thread, at most
    MAX_CONNECTIONS held, and a probe that comes last is answered."""
    threads = threading.active_count()
    held = []
    try:
        for _ in range(MAX_CONNECTIONS * 5):
            held.append(socket.create_connection(("127.0.0.1", server.port), 5))
        assert threading.active_count() == threads
        assert get(server.port, "/livez") == (200, b"alive\n")
        assert len(server._conns) <= MAX_CONNECTIONS
        # The oldest ones were closed to make room.
        held[0].settimeout(5)
        assert held[0].recv(1) == b""
    finally:
        for s in held:
            s.close()
    assert threading.active_count() == threads


def test_oversized_and_idle_requests_are_cut_off(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), 5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST_BYTES + 10))
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), 15) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\n")  # never finished
        assert s.recv(1) == b""
    took = time.monotonic() - started
    assert (
        metrics.CONNECTION_TIMEOUT_S - 0.1
        <= took
        <= metrics.CONNECTION_TIMEOUT_S + 2 * metrics.POLL_S + 1
    )


def test_port_zero_disables() -> None:
    assert metrics.serve_metrics(0) is None
