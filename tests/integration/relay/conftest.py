"""Helpers for relay integration tests: a real ``wirekube-relay`` process on loopback,
bridges with a fake "WireGuard" UDP socket each, and a continuous UDP flow checker."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from wirekube_agent.relay import RelayBridge, RelayPool
from wirekube_common import wgkey


class RelayProcess:
    """One relay replica as a child process; stopped by PID."""

    def __init__(self, tmp: Path, host: str = "127.0.0.1", port: int = 0, *extra: str) -> None:
        self.host = host
        self.want_port = port
        self.extra = extra
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log = tmp / f"relay-{host}-{port}-{time.monotonic_ns()}.log"

    def start(self) -> RelayProcess:
        ready = self.tmp / f"ready-{time.monotonic_ns()}.json"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wirekube_relay",
                    f"--listen={self.host}:{self.want_port}",
                    "--admin-listen=127.0.0.1:0",
                    "--metrics-listen=127.0.0.1:0",
                    "--allowlist=off",
                    f"--ready-file={ready}",
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, WIREKUBE_LOG_FORMAT="text"),
            )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"relay did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        self.ports = json.loads(ready.read_text())
        self.want_port = self.ports["relay_port"]  # a restart reuses the same port
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.ports["relay_port"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[RelayProcess] = []

    def make(*extra: str, host: str = "127.0.0.1", port: int = 0) -> RelayProcess:
        r = RelayProcess(tmp_path, host, port, *extra).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.kill()


@dataclass
class Node:
    """A fake node: a key pair, a UDP socket playing WireGuard, and its bridge."""

    priv: bytes
    pub: bytes
    wg: socket.socket
    bridge: RelayBridge

    def stop(self) -> None:
        self.bridge.stop()
        self.wg.close()


def wireguard_socket() -> socket.socket:
    """A UDP socket playing a node's WireGuard. Its receive buffer is sized as
    WireGuard sizes its own (wireguard-go asks for 7 MiB): with the default
    ~200 KiB, ~90 full-size datagrams, a test's reader thread that a loaded
    host keeps off the CPU for ~45 ms loses a relayed burst that WireGuard
    would have taken."""
    wg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wg.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    wg.bind(("127.0.0.1", 0))
    return wg


@pytest.fixture
def wg() -> Iterator[socket.socket]:
    s = wireguard_socket()
    yield s
    s.close()


def make_node(
    pool_kwargs: dict[str, object], priv: bytes | None = None, use_mmsg: bool = True
) -> Node:
    priv = priv or wgkey.generate_private_key()
    wg = wireguard_socket()
    pool = RelayPool(priv, **pool_kwargs)  # type: ignore[arg-type]
    bridge = RelayBridge(priv, wg.getsockname()[1], pool, use_mmsg=use_mmsg)
    bridge.start()
    return Node(priv, wgkey.public_key(priv), wg, bridge)


@pytest.fixture
def nodes() -> Iterator[callable]:  # type: ignore[valid-type]
    made: list[Node] = []

    def make(priv: bytes | None = None, use_mmsg: bool = True, **pool_kwargs: object) -> Node:
        n = make_node(pool_kwargs, priv, use_mmsg)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


def pair(a: Node, b: Node) -> None:
    a.bridge.set_relayed_peers({b.pub})
    b.bridge.set_relayed_peers({a.pub})


@dataclass
class Flow:
    """A continuous numbered UDP flow a -> b through the bridges (like a ping)."""

    a: Node
    b: Node
    interval: float = 0.01
    sent: int = 0
    received: dict[int, float] = field(default_factory=dict)
    send_times: dict[int, float] = field(default_factory=dict)
    _stop_sending: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Flow:
        self.b.wg.settimeout(0.2)
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop sending, then receive until everything sent has arrived or
        nothing more has for 0.5 s (at most 3 s): a datagram still in flight on
        a loaded host is late, not lost."""
        self._stop_sending.set()
        self._threads[0].join(2)
        deadline = time.monotonic() + 3.0
        seen, quiet_since = len(self.received), time.monotonic()
        while len(self.received) < self.sent and time.monotonic() < deadline:
            time.sleep(0.02)
            if len(self.received) != seen:
                seen, quiet_since = len(self.received), time.monotonic()
            elif time.monotonic() - quiet_since > 0.5:
                break
        self._stop.set()
        self._threads[1].join(2)

    def _send(self) -> None:
        dst = self.a.bridge.endpoint_for(self.b.pub)
        while not self._stop_sending.is_set():
            self.send_times[self.sent] = time.monotonic()
            self.a.wg.sendto(b"seq:%d:" % self.sent + b"w" * 100, dst)
            self.sent += 1
            time.sleep(self.interval)

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.b.wg.recv(2048)
            except TimeoutError:
                continue
            if data.startswith(b"seq:"):
                self.received[int(data.split(b":")[1])] = time.monotonic()

    def longest_gap(self) -> float:
        """Longest time between two consecutive deliveries."""
        times = sorted(self.received.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def loss(self) -> int:
        return self.sent - len(self.received)


def wait_for(cond: callable, timeout: float, what: str) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def h() -> SimpleNamespace:
    """Test helpers (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(pair=pair, Flow=Flow, wait_for=wait_for, RelayProcess=RelayProcess)
