"""UserspaceBackend._alive: only a daemon that is gone gets replaced, never a slow one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wirekube_agent.wg.userspace import UserspaceBackend
from wirekube_common.wireguard import uapi
from wirekube_common.wireguard.uapi import UapiClient


@pytest.fixture
def backend(tmp_path: Path) -> UserspaceBackend:
    b = UserspaceBackend("wk0")
    b.uapi = UapiClient("wk0", str(tmp_path))
    return b


@pytest.fixture
def listener(backend: UserspaceBackend) -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(backend.uapi.path)
    srv.listen(4)
    yield srv
    srv.close()


def serve_once(srv: socket.socket, answer: bytes | None) -> threading.Thread:
    """Accept one request; answer it (or, with None, hold it unanswered)."""

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            if answer is not None:
                conn.sendall(answer)
            else:
                conn.recv(4096)  # until the client gives up and closes

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_no_socket_means_no_daemon(backend: UserspaceBackend) -> None:
    assert not backend._alive()


def test_a_socket_nobody_listens_on_means_the_daemon_died(backend: UserspaceBackend) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(backend.uapi.path)  # the file stays after close: a crashed daemon's leftover
    srv.close()
    assert not backend._alive()


def test_a_daemon_that_answers_is_alive(backend: UserspaceBackend, listener: socket.socket) -> None:
    t = serve_once(listener, b"listen_port=51820\nerrno=0\n\n")
    assert backend._alive()
    t.join(2)


def test_a_slow_daemon_is_left_running(
    backend: UserspaceBackend, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uapi, "SOCKET_TIMEOUT_S", 0.2)
    t = serve_once(listener, None)
    assert backend._alive()  # timed out, but someone is there: not torn down
    t.join(2)
