"""recvmmsg wrapper: slot layout, spill, lengths, truncation, prefixes, retarget."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from wirekube_agent.relay import mmsg


@pytest.fixture
def udp() -> Iterator[tuple[socket.socket, socket.socket]]:
    assert mmsg.available()  # WireKube nodes are Linux
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(r.getsockname())
    yield r, s
    r.close()
    s.close()


def send_all(s: socket.socket, datagrams: list[bytes]) -> None:
    for d in datagrams:
        s.send(d)
    time.sleep(0.05)


def entries(rx: mmsg.MultiReceiver, n: int) -> list[bytes]:
    """Each datagram as the batch entry the bridge sends: u16 length + bytes."""
    return [b"".join(rx.entry(i, ln)) for i, ln in enumerate(rx.lengths(n))]


def test_lengths_spill_and_truncation(udp: tuple[socket.socket, socket.socket]) -> None:
    r, s = udp
    rx = mmsg.MultiReceiver(vlen=4, cap=100, size=10)
    assert rx.recv(r.fileno()) == 0  # nothing waiting: no error, no block
    send_all(s, [b"a" * 10, b"", b"b" * 100, b"c" * 150, b"d" * 5])
    n = rx.recv(r.fileno())
    assert n == 4  # vlen
    assert rx.lengths(n) == [10, 0, 100, 100]
    assert [bool(x & socket.MSG_TRUNC) for x in rx.flags(n)] == [False, False, False, True]
    # b"b" * 100 is longer than the slot: 10 bytes in the arena, 90 in the spill area
    assert entries(rx, 3) == [b"\x00\x0a" + b"a" * 10, b"\x00\x00", b"\x00\x64" + b"b" * 100]
    assert len(rx.entry(2, 100)) == 2
    assert rx.recv(r.fileno()) == 1 and entries(rx, 1) == [b"\x00\x05" + b"d" * 5]


def test_equal_datagrams_are_back_to_back_entries(
    udp: tuple[socket.socket, socket.socket],
) -> None:
    r, s = udp
    rx = mmsg.MultiReceiver(vlen=8, cap=2000, size=300)
    sent = [bytes([i]) * 300 for i in range(5)]
    send_all(s, sent)
    n = rx.recv(r.fileno())
    assert n == 5 and rx.lengths(n) == [300] * 5 and not any(rx.flags(n))
    rx.prefix(n)
    assert bytes(rx.view[: n * rx.stride]) == b"".join(b"\x01\x2c" + d for d in sent)


def test_retarget_moves_the_layout(udp: tuple[socket.socket, socket.socket]) -> None:
    r, s = udp
    rx = mmsg.MultiReceiver(vlen=4, cap=2000, size=1452)
    rx.retarget(64)
    assert (rx.size, rx.stride) == (64, 66)
    sent = [b"x" * 64, b"y" * 64, b"z" * 1400]
    send_all(s, sent)
    n = rx.recv(r.fileno())
    assert rx.lengths(n) == [64, 64, 1400]
    assert entries(rx, n) == [len(d).to_bytes(2, "big") + d for d in sent]
    rx.prefix(2)
    assert bytes(rx.view[: 2 * rx.stride]) == b"\x00\x40" + b"x" * 64 + b"\x00\x40" + b"y" * 64
    rx.retarget(5000)  # clamped to cap: one iovec, nothing spills
    assert rx.size == 2000
    send_all(s, [b"w" * 2000])
    assert rx.recv(r.fileno()) == 1 and entries(rx, 1) == [b"\x07\xd0" + b"w" * 2000]


def test_follow_moves_the_slot_size_once_a_new_size_stays_common() -> None:
    rx = mmsg.MultiReceiver(vlen=16, cap=2000, size=1452)
    acks = [96] * 14 + [1452, 60]
    rx.follow(acks)
    assert rx.size == 1452  # one call is not a trend
    rx.follow(acks)
    assert (rx.size, rx.stride) == (96, 98)  # two in a row: follow
    mixed = [96] * 8 + [1452] * 8  # no size makes 3/4: stay
    rx.follow(mixed)
    rx.follow(mixed)
    assert rx.size == 96
    rx.follow([300] * 4)  # too few datagrams to judge
    rx.follow([300] * 4)
    assert rx.size == 96
    rx.follow([1400] * 16)  # alternating sizes never retarget
    rx.follow([1300] * 16)
    rx.follow([1400] * 16)
    assert rx.size == 96
