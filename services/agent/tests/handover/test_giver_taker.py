"""The handover's socket I/O: a GiverServer and take_over over a real unix
socket, passing real UDP sockets; the agent's steps are recorded."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wirekube_agent.handover import protocol
from wirekube_agent.handover.giver import GiverServer, Steps
from wirekube_agent.handover.taker import take_over

K1, K2 = b"\x01" * 32, b"\x02" * 32


class Recorded:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.changed = threading.Event()
        self.socks = {}
        for k in (K1, K2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self.socks[k] = s

    def steps(self) -> Steps:
        def offer() -> dict[bytes, int]:
            self.note("offer")
            return {k: os.dup(s.fileno()) for k, s in self.socks.items()}

        return Steps(
            offer=offer,
            quiesce=lambda: self.note("quiesce"),
            retire=lambda: self.note("retire"),
            resume=lambda: self.note("resume"),
        )

    def note(self, what: str) -> None:
        self.calls.append(what)
        self.changed.set()

    def wait(self, n: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.calls

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


@pytest.fixture
def rec() -> Iterator[Recorded]:
    r = Recorded()
    yield r
    r.close()


def test_the_new_agent_gets_the_same_sockets_and_the_old_retires(tmp_path: Path, rec) -> None:
    giver = GiverServer(str(tmp_path), rec.steps()).start()
    try:
        taken = take_over(str(tmp_path))
        assert taken is not None
        assert set(taken.sockets) == {K1, K2}
        for k, fd in taken.sockets.items():
            got = socket.socket(fileno=fd)
            try:
                # the very socket: a datagram sent to the old one's port is read here
                assert got.getsockname() == rec.socks[k].getsockname()
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                    tx.sendto(b"queued", rec.socks[k].getsockname())
                got.settimeout(2)
                assert got.recv(100) == b"queued"
            finally:
                got.close()
        assert rec.calls == ["offer"]
        assert taken.quiesce()
        assert rec.calls == ["offer", "quiesce"]
        taken.done()
        assert rec.wait(3) == ["offer", "quiesce", "retire"]
        assert giver.retired
        # retired: it no longer listens, so a later agent starts alone
        time.sleep(0.7)
        assert take_over(str(tmp_path), timeout=1.0) is None
    finally:
        giver.stop()


def test_the_old_agent_resumes_when_the_new_one_goes_away(tmp_path: Path, rec) -> None:
    giver = GiverServer(str(tmp_path), rec.steps()).start()
    try:
        taken = take_over(str(tmp_path))
        assert taken is not None
        for fd in taken.sockets.values():
            os.close(fd)
        taken.abandon()
        assert rec.wait(2) == ["offer", "resume"]
        # and a later new agent can ask again
        again = take_over(str(tmp_path))
        assert again is not None
        again.done()
        assert rec.wait(4) == ["offer", "resume", "offer", "retire"]
        for fd in again.sockets.values():
            os.close(fd)
    finally:
        giver.stop()


def test_the_old_agent_resumes_when_done_does_not_come(tmp_path: Path, rec) -> None:
    giver = GiverServer(str(tmp_path), rec.steps(), timeout=0.5).start()
    try:
        taken = take_over(str(tmp_path))
        assert taken is not None
        assert rec.wait(2) == ["offer", "resume"]
        for fd in taken.sockets.values():
            os.close(fd)
        taken.abandon()
    finally:
        giver.stop()


def test_no_old_agent_means_starting_alone(tmp_path: Path) -> None:
    assert take_over(str(tmp_path)) is None  # no socket file
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / protocol.SOCKET_NAME))
    stale.close()  # a crashed agent's file: nobody listens
    assert take_over(str(tmp_path)) is None


def test_an_old_agent_that_does_not_answer_is_not_waited_for(tmp_path: Path) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(tmp_path / protocol.SOCKET_NAME))
    mute.listen(1)
    try:
        started = time.monotonic()
        assert take_over(str(tmp_path), timeout=0.5) is None
        assert time.monotonic() - started < 2
    finally:
        mute.close()


def test_done_to_an_old_agent_already_gone_is_not_an_error(tmp_path: Path, rec) -> None:
    """The old pod was deleted mid-handover: the new agent carries on."""
    giver = GiverServer(str(tmp_path), rec.steps()).start()
    taken = take_over(str(tmp_path))
    assert taken is not None
    giver.stop()  # the thread waits in recv for done; stop ends it only on the deadline
    taken.conn.shutdown(socket.SHUT_RDWR)  # as if the other end had vanished
    taken.done()
    assert taken.machine.state is protocol.TakerState.DONE
    for fd in taken.sockets.values():
        os.close(fd)
