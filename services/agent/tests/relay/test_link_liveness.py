"""A relay link leaves a replica that hangs silently: the liveness verdict and
the short, growing registration bounds (each retried on a new connection)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from wirekube_agent.relay import timers
from wirekube_agent.relay.link import RelayLink, dead_reason


def test_a_link_that_answers_is_alive() -> None:
    # a PING sent 1.9 s ago and answered after it (last_rx later than the PING)
    assert dead_reason(now=100.0, last_rx=99.0, ping_pending=98.1) is None
    # nothing pending, recent bytes
    assert dead_reason(now=100.0, last_rx=99.5, ping_pending=0.0) is None


def test_an_unanswered_ping_declares_the_link_dead_before_the_silence_limit() -> None:
    sent = 100.0
    last_rx = sent - 0.5  # something arrived just before the PING, nothing after
    assert dead_reason(sent + timers.PONG_TIMEOUT - 0.1, last_rx, sent) is None
    assert dead_reason(sent + timers.PONG_TIMEOUT + 0.1, last_rx, sent) == "unanswered"
    assert timers.PING_INTERVAL + timers.PONG_TIMEOUT + timers.WATCHDOG_TICK < 5.0


def test_silence_alone_declares_the_link_dead() -> None:
    assert dead_reason(now=100.0, last_rx=100.0 - timers.DEAD_AFTER - 0.1, ping_pending=0.0) == (
        "silent"
    )


def test_registration_bounds_grow_to_the_handshake_timeout() -> None:
    bounds = timers.REGISTER_BOUNDS
    assert bounds[0] <= 1.0
    assert list(bounds) == sorted(bounds)
    assert bounds[-1] == timers.HANDSHAKE_TIMEOUT


def test_a_silent_replica_is_retried_at_once_on_new_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that accepts (as a stopped process's kernel does) and never
    answers: every bound is tried, each on a new connection, back to back."""
    monkeypatch.setattr(timers, "REGISTER_BOUNDS", (0.2, 0.3, 0.4))
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(5)
        while len(accepted) < 3:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    lk = RelayLink(server.getsockname()[:2], bytes(32), on_frame=lambda _s, _p: None)
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            lk._connect()
        took = time.monotonic() - t0
        t.join(5)
        assert len(accepted) == 3
        assert 0.85 <= took < 2.0, took  # 0.2 + 0.3 + 0.4, no backoff in between
        assert lk.failures == 3
    finally:
        for c in accepted:
            c.close()
        server.close()
