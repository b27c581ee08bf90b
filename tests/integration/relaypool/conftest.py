"""Relay pools on loopback: replica processes joined by the replica mesh, and raw clients.

Each replica is a real ``wirekube-relay`` process listening on its own
loopback address (127.0.x.y, one port for the whole pool, as a headless
Service gives every replica the same port), with ``--mesh-secret-file`` and
``--mesh-peers`` naming every replica and ``POD_IP`` its own address.
Clients are raw sockets registered with the real handshake
(``wirekube_agent.relay.register``), so a test sees exactly the frames a
relay writes. Everything is stopped by PID at teardown.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wirekube_agent.relay import register
from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f

SECRET = "loopback-pool-secret-0123456789"
_subnets = itertools.count(random.randrange(1, 200))


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    host: str
    port: int
    peers: list[str]
    secret_file: Path | None
    tmp: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.tmp / f"relay-{self.host}.log"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Replica:
        ready = self.tmp / f"ready-{self.host}-{time.monotonic_ns()}.json"
        argv = [
            sys.executable, "-m", "wirekube_relay",
            f"--listen={self.host}:{self.port}", f"--admin-listen={self.host}:0",
            f"--metrics-listen={self.host}:0", "--allowlist=off", f"--ready-file={ready}",
            f"--relay-id=relay-{self.host}",
        ]  # fmt: skip
        env = dict(os.environ, WIREKUBE_LOG_FORMAT="text", POD_IP=self.host)
        if self.secret_file is not None:
            argv += [
                f"--mesh-secret-file={self.secret_file}",
                f"--mesh-peers={','.join(self.peers)}",
            ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"relay did not start:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        self.metrics_port = json.loads(ready.read_text())["metrics_port"]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        url = f"http://{self.host}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)


@dataclass
class Client:
    """A registered raw client: ``send(dst, packet)``, ``recv()`` -> RECV events."""

    priv: bytes
    sock: socket.socket
    parser: f.FrameParser

    @property
    def pub(self) -> bytes:
        return wgkey.public_key(self.priv)

    def send(self, dst: bytes, packet: bytes) -> None:
        self.sock.sendall(f.encode_send(dst, packet))

    def events(self, timeout: float = 2.0, want: int = 1) -> list[f.Event]:
        """Frames received until ``want`` RECV frames arrived or ``timeout`` passed."""
        out: list[f.Event] = []
        deadline = time.monotonic() + timeout
        while sum(isinstance(e, f.Recv) for e in out) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                out.append(f.Close(255, "eof"))
                break
            self.parser.feed(data)
            for ev in self.parser.events():
                if isinstance(ev, f.Ping):
                    self.sock.sendall(f.encode_pong(ev.data))
                out.append(ev)
        return out

    def received(self, timeout: float = 2.0, want: int = 1) -> list[tuple[bytes, bytes]]:
        return [(e.src, e.packet) for e in self.events(timeout, want) if isinstance(e, f.Recv)]

    def ping(self) -> None:
        self.sock.sendall(f.encode_ping(os.urandom(8)))

    def close(self) -> None:
        self.sock.close()


def connect(address: tuple[str, int], priv: bytes | None = None) -> Client:
    priv = priv or wgkey.generate_private_key()
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _ok, rest = register(sock, priv)
    parser = f.FrameParser()
    parser.feed(rest)
    return Client(priv, sock, parser)


@dataclass
class Pool:
    replicas: list[Replica]

    def wait_mesh(self, timeout: float = 15.0) -> None:
        """Every replica has a link to every other."""
        want = len(self.replicas) - 1
        wait_for(
            lambda: all(
                r.metric("wirekube_relay_mesh_links_up") == want
                for r in self.replicas
                if r.proc is not None and r.proc.poll() is None
            ),
            timeout,
            f"{want} mesh links on every replica",
        )


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


@pytest.fixture
def pool_factory(tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    made: list[Replica] = []

    def make(n: int = 2, secret: str | None = SECRET) -> Pool:
        subnet = next(_subnets) % 250 + 1
        hosts = [f"127.0.{subnet}.{i + 1}" for i in range(n)]
        port = free_port(hosts[0])
        secret_file = None
        if secret is not None:
            secret_file = tmp_path / "mesh-secret"
            secret_file.write_text(secret + "\n")
        peers = [f"{h}:{port}" for h in hosts]
        replicas = [Replica(h, port, peers, secret_file, tmp_path) for h in hosts]
        for r in replicas:
            made.append(r)
            r.start()
        return Pool(replicas)

    yield make
    for r in made:
        r.kill()


@pytest.fixture
def h() -> Any:
    """Helpers for the test modules (conftest is not importable under importlib mode)."""
    return SimpleNamespace(
        connect=connect,
        wait_for=wait_for,
        generate_private_key=wgkey.generate_private_key,
        SECRET=SECRET,
    )
