"""The metrics/probe port handed from an old agent to a new one (surge.py):
a port still held is retried until released, and a released one is taken."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from wirekube_agent.surge import MetricsPort


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:  # 503: not ready, with the reason
        return f"{exc.code} {exc.read().decode()}"
    except OSError as exc:
        return f"error: {exc}"


def test_the_new_agent_gets_the_port_once_the_old_one_lets_go() -> None:
    port = _free_port()
    old = MetricsPort(port, livez=lambda: (True, "old"), readyz=lambda: (True, "old agent"))
    new = MetricsPort(port, livez=lambda: (True, "new"), readyz=lambda: (False, "new agent"))
    old.serve()
    try:
        new.serve()  # held: retried in the background, no error
        assert new.server is None
        assert "old agent" in _readyz(port)
        old.release()
        deadline = time.monotonic() + 5
        while new.server is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert new.server is not None
        assert _readyz(port).startswith("503") and "new agent" in _readyz(port)
        # a released port is not taken back by a pending retry
        new.release()
        assert new.server is None
    finally:
        old.release()
        new.release()
