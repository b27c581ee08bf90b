"""recvmmsg wrapper: datagrams land at offset 2 of their slots; lengths and truncation."""

from __future__ import annotations

import socket
import time

from wirekube_agent.relay import mmsg


def test_multi_receiver_slots_lengths_truncation() -> None:
    assert mmsg.available()  # WireKube nodes are Linux
    rx = mmsg.MultiReceiver(vlen=4, cap=100)
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert rx.recv(r.fileno()) == 0  # nothing waiting: no error, no block
        sent = [b"a" * 10, b"", b"b" * 100, b"c" * 150, b"d" * 5]
        for d in sent:
            s.sendto(d, r.getsockname())
        time.sleep(0.05)
        n = rx.recv(r.fileno())
        assert n == 4  # vlen
        got = [
            bytes(rx.view[i * rx.stride + 2 : i * rx.stride + 2 + rx.length(i)]) for i in range(n)
        ]
        assert got == [b"a" * 10, b"", b"b" * 100, b"c" * 100]
        assert [rx.truncated(i) for i in range(n)] == [False, False, False, True]
        assert rx.recv(r.fileno()) == 1 and bytes(rx.view[2:7]) == b"d" * 5
    finally:
        r.close()
        s.close()
