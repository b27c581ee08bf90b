"""Fixtures for the STUN integration tests: free ports, the real stun-probe
process, coturn on loopback high ports with a private config.

All traffic stays on loopback (127.0.0.1 and 127.0.0.2, which Linux answers
on ``lo`` without configuration) or inside namespaces the tests create.
Processes are started here and stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wirekube_common.stun import codec

REPO = Path(__file__).resolve().parents[3]
STUN_PROBE = shutil.which("wirekube-stun-probe") or str(
    Path(sys.executable).parent / "wirekube-stun-probe"
)


def free_port(*hosts: str, tcp_too: bool = True) -> int:
    """A port free for UDP (and TCP) on every host given, and the next one too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        if all(_is_free(h, p, tcp_too) for h in hosts for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair")


def _is_free(host: str, port: int, tcp: bool) -> bool:
    kinds = [socket.SOCK_DGRAM] + ([socket.SOCK_STREAM] if tcp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def wait_udp_stun(host: str, port: int, timeout: float = 15.0) -> None:
    """Wait until something answers a STUN Binding request on host:port."""
    deadline = time.monotonic() + timeout
    req = codec.binding_request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(codec.encode(req), (host, port))
            with contextlib.suppress(OSError):
                data = s.recv(2048)
                if codec.decode(data).key() == req.key():
                    return
    raise TimeoutError(f"no STUN answer from {host}:{port}")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                return self.popen.wait(5)
        return self.popen.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class StunProbe:
    proc: Proc
    port: int
    alt_port: int
    health_port: int
    metrics_port: int

    def metrics(self) -> dict[str, float]:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line.startswith("wirekube_stun") and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def start_stun_probe(tmp: Path, *extra: str, rfc5780: bool = True) -> StunProbe:
    port = free_port("127.0.0.1", "127.0.0.2")
    health, metrics = free_port("127.0.0.1"), free_port("127.0.0.1")
    while (
        metrics in (health, health + 1) or health in (port, port + 1) or metrics in (port, port + 1)
    ):
        metrics = free_port("127.0.0.1")
    args = [
        STUN_PROBE,
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--health-address",
        f"127.0.0.1:{health}",
        "--metrics-port",
        str(metrics),
        "--metrics-address",
        "127.0.0.1",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ]
    if rfc5780:
        args += ["--alternate-address", "127.0.0.2", "--alternate-port", str(port + 1)]
    args += list(extra)
    log = tmp / f"stun-probe-{port}.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)
    proc = Proc(popen, log)
    try:
        wait_udp_stun("127.0.0.1", port)
    except TimeoutError:
        proc.stop()
        raise AssertionError(f"stun-probe did not start:\n{proc.text()}") from None
    return StunProbe(proc, port, port + 1, health, metrics)


@pytest.fixture
def stun_probe(tmp_path: Path) -> Iterator[StunProbe]:
    probe = start_stun_probe(tmp_path)
    yield probe
    probe.proc.stop()


@dataclass
class Coturn:
    proc: Proc
    port: int
    alt_port: int


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """coturn as a STUN-only RFC 5780 server on 127.0.0.1/127.0.0.2 (no config file)."""
    port = free_port("127.0.0.1", "127.0.0.2")
    log = tmp_path / "coturn.log"
    args = [
        "turnserver",
        "-n",
        "--stun-only",
        "-L",
        "127.0.0.1",
        "-L",
        "127.0.0.2",
        "-p",
        str(port),
        "--alt-listening-port",
        str(port + 1),
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--simple-log",
        "-l",
        "stdout",
        "--pidfile",
        str(tmp_path / "turn.pid"),
        "--userdb",
        str(tmp_path / "turndb"),
        "--log-binding",
    ]
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "HOME": str(tmp_path)},
        )
    proc = Proc(popen, log)
    try:
        wait_udp_stun("127.0.0.1", port)
    except TimeoutError:
        proc.stop()
        raise AssertionError(f"coturn did not start:\n{proc.text()}") from None
    yield Coturn(proc, port, port + 1)
    proc.stop()


def run_probe_cli(*args: str, netns: str | None = None, timeout: float = 60) -> dict[str, object]:
    """Run ``python -m wirekube_common.stun probe`` (optionally inside a namespace)."""
    cmd = [sys.executable, "-m", "wirekube_common.stun", "probe", "--compact", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    assert out.stdout, f"probe printed nothing: {out.stderr.decode()}"
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def probe_cli() -> object:
    return run_probe_cli


@pytest.fixture
def stun_probe_factory(tmp_path: Path) -> Iterator[object]:
    started: list[StunProbe] = []

    def make(*extra: str, rfc5780: bool = True) -> StunProbe:
        p = start_stun_probe(tmp_path, *extra, rfc5780=rfc5780)
        started.append(p)
        return p

    yield make
    for p in started:
        p.proc.stop()
