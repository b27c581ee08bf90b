"""/metrics, /livez and /readyz of real service processes.

* The agent, in a lab node against the real API server, becomes ready once its
  WireGuard interface is up; a wedged control loop (tests/.../wedgeable_agent.py
  blocks every pass while a file exists; a test-only hook that ships nowhere)
  makes /livez fail within the bound while /metrics keeps answering, and
  /livez recovers when the loop turns again. A connection flood against its
  metrics port leaves its thread count unchanged and the probe answered.
* The relay and the STUN responder, on loopback: live and ready once their
  sockets are bound, /healthz is gone, a flood grows no thread; their event
  loop blocked (wedgeable_loop.py, the same kind of hook), /livez fails within
  the bound and recovers.
(The gateway controller's endpoints: tests/integration/gateway/test_probes.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wirekube_common.metrics import MAX_CONNECTIONS
from wirekube_lab import polling
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.fixtures.lab import LabFactory
from wirekube_lab.mesh import LAB_ENDPOINT_SOURCES, LOG_ENV, MeshLab

HERE = Path(__file__).resolve().parent
STALL_S = 4.0  # the agent's liveness bound in this test (production: 60 s)
FLOOD = MAX_CONNECTIONS * 4


def http(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def service_pid(root: int, marker: str) -> int:
    """The process among ``root`` and its descendants whose command line holds
    ``marker`` (lab processes start behind `ip netns exec` / `sh -c`)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = ""
        if marker in cmdline and "python" in cmdline:
            return pid
        todo += children.get(pid, [])
    raise LookupError(f"no process with {marker!r} under {root}")


# Run inside a lab node: open FLOOD idle connections to the metrics port, then
# probe /livez while they are held; prints {"held": n, "livez": status}.
FLOOD_SCRIPT = """
import json, socket, sys, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(n)]
status = urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5).status
print(json.dumps({"held": len(held), "livez": status}))
"""


# -- the agent ------------------------------------------------------------------------
@pytest.fixture
def mesh(control_plane: ControlPlane, lab_factory: LabFactory) -> Iterator[MeshLab]:
    lab = lab_factory(
        {
            "name": "health",
            "networks": {"lan": {"nat": {"kind": "port-restricted"}}},
            "hosts": {h: {"network": "lan", "role": "node"} for h in ("hz1", "hz2")},
            "mesh": {"relay": {"mode": "never"}},
        }
    )
    mesh = MeshLab(lab, control_plane)
    mesh.apply_mesh()
    try:
        yield mesh
    finally:
        for host in list(mesh.agents):
            mesh.stop_agent(host)
        for host in ("hz1", "hz2"):
            if host in mesh.registered:
                mesh.delete_node(host)


def node_http(mesh: MeshLab, host: str, path: str) -> tuple[int, str]:
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://127.0.0.1:9090{path}', timeout=5)\n"
        "    print(r.status, r.read().decode().strip())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read().decode().strip())\n"
    )
    out = mesh.lab.exec(host, [sys.executable, "-c", script], check=False).stdout.strip()
    code, _, text = out.partition(" ")
    return (int(code), text) if code.isdigit() else (0, out)


def test_agent_probes_follow_its_control_loop(mesh: MeshLab, tmp_path: Path) -> None:
    for host in ("hz1", "hz2"):
        mesh.register_node(host)
    mesh.start_agent("hz2")
    wedge = tmp_path / "wedge"
    argv = [
        sys.executable, str(HERE / "wedgeable_agent.py"), str(wedge), str(STALL_S),
        "--node-name", "hz1",
        "--kubeconfig", str(mesh.kubeconfig("hz1")),
        "--state-dir", str(mesh.lab.host_dir("hz1") / "state"),
        "--wireguard-backend", "userspace",
        "--metrics-port", "9090",
        "--endpoint-sources", LAB_ENDPOINT_SOURCES,
    ]  # fmt: skip
    proc = mesh.lab.spawn("hz1", argv, env=LOG_ENV, name="agent", private_wireguard_dir=True)
    mesh.agents["hz1"] = proc
    polling.wait_for(lambda: node_http(mesh, "hz1", "/readyz")[0] == 200, 60, "agent ready")
    status, text = node_http(mesh, "hz1", "/readyz")
    assert text == "ok: wire_kube up, peers synced", text
    assert node_http(mesh, "hz1", "/livez")[0] == 200
    assert node_http(mesh, "hz1", "/healthz")[0] == 404
    # The mesh works (the probes are not ready on an empty shell).
    polling.wait_for(lambda: mesh.full_mesh(["hz1", "hz2"]), 60, "hz1 <-> hz2 over WireGuard")

    # A flood of idle connections: no thread per connection, the probe answered.
    pid = service_pid(proc.pid, "wedgeable_agent.py")
    before = threads_of(pid)
    out = mesh.lab.exec("hz1", [sys.executable, "-c", FLOOD_SCRIPT, "9090", str(FLOOD)])
    assert json.loads(out.stdout) == {"held": FLOOD, "livez": 200}
    assert threads_of(pid) <= before, (before, threads_of(pid))

    # Wedge the loop: /livez fails within the bound, /metrics still answers.
    wedge.touch()
    started = time.monotonic()
    polling.wait_for(lambda: node_http(mesh, "hz1", "/livez")[0] == 503, 30, "livez 503")
    took = time.monotonic() - started
    status, text = node_http(mesh, "hz1", "/livez")
    assert status == 503 and text.startswith("control loop stalled:"), text
    # Not before the bound (the last pass may have ended up to ~1 s before the wedge).
    assert took >= STALL_S - 1.5, took
    assert node_http(mesh, "hz1", "/metrics")[0] == 200
    wedge.unlink()
    polling.wait_for(lambda: node_http(mesh, "hz1", "/livez")[0] == 200, 30, "livez back")
    assert proc.alive


# -- relay and STUN responder on loopback --------------------------------------------
class Service:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        env = dict(os.environ, WIREKUBE_LOG_FORMAT="text")
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()


LOOP_STALL_S = 3.0  # the relay's and STUN responder's liveness bound in the wedge tests


def service_argv(module: str, args: list[str], wedge: Path | None) -> list[str]:
    """The service's command line; with ``wedge``, behind wedgeable_loop.py."""
    if wedge is None:
        return [sys.executable, "-m", module, *args]
    hook = str(HERE / "wedgeable_loop.py")
    return [sys.executable, hook, str(wedge), str(LOOP_STALL_S), module, *args]


@contextlib.contextmanager
def running_relay(tmp_path: Path, wedge: Path | None = None) -> Iterator[tuple[Service, int]]:
    ready = tmp_path / "ready.json"
    args = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    args += ["--metrics-listen", "127.0.0.1:0", "--allowlist", "off", "--ready-file", str(ready)]
    svc = Service(service_argv("wirekube_relay", args, wedge), tmp_path / "relay.log")
    try:
        polling.wait_for(lambda: ready.exists() or svc.proc.poll() is not None, 30, "relay up")
        assert svc.proc.poll() is None, svc.log.read_text()
        yield svc, json.loads(ready.read_text())["metrics_port"]
    finally:
        svc.stop()


@contextlib.contextmanager
def running_stun(tmp_path: Path, wedge: Path | None = None) -> Iterator[tuple[Service, int]]:
    port, metrics_port = polling.free_port(), polling.free_port()
    args = ["--address", "127.0.0.1", "--port", str(port), "--health-address", ""]
    args += ["--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)]
    svc = Service(service_argv("wirekube_stunprobe", args, wedge), tmp_path / "stun.log")
    try:
        polling.wait_for(
            lambda: http(metrics_port, "/readyz")[0] == 200 or svc.proc.poll() is not None,
            30,
            "stun-probe ready",
            transient=(OSError,),
        )
        assert svc.proc.poll() is None, svc.log.read_text()
        yield svc, metrics_port
    finally:
        svc.stop()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[Service, int]]:
    with running_relay(tmp_path) as svc:
        yield svc


@pytest.fixture
def stun(tmp_path: Path) -> Iterator[tuple[Service, int]]:
    with running_stun(tmp_path) as svc:
        yield svc


def flood_and_probe(pid: int, port: int) -> None:
    before = threads_of(pid)
    held = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(FLOOD)]
    try:
        assert http(port, "/livez")[0] == 200
        assert threads_of(pid) <= before, (before, threads_of(pid))
    finally:
        for s in held:
            s.close()


def test_relay_endpoints(relay: tuple[Service, int]) -> None:
    svc, port = relay
    polling.wait_for(lambda: http(port, "/readyz")[0] == 200, 10, "relay ready")
    status, text = http(port, "/readyz")
    assert text.startswith("ok: listening on 127.0.0.1:"), text
    status, text = http(port, "/livez")
    assert status == 200 and text.startswith("event loop responsive"), text
    assert http(port, "/healthz")[0] == 404
    assert "wirekube_relay_connections " in http(port, "/metrics")[1]
    flood_and_probe(svc.proc.pid, port)


def test_stun_probe_endpoints(stun: tuple[Service, int]) -> None:
    svc, port = stun
    assert http(port, "/readyz") == (200, "ok: STUN sockets bound\n")
    status, text = http(port, "/livez")
    assert status == 200 and text.startswith("event loop responsive"), text
    assert http(port, "/healthz")[0] == 404
    flood_and_probe(svc.proc.pid, port)


@pytest.mark.parametrize("service", [running_relay, running_stun], ids=["relay", "stun-probe"])
def test_a_blocked_event_loop_fails_livez_and_recovers(service: Any, tmp_path: Path) -> None:
    """The loop blocked (the metrics thread answers on): /livez turns 503 once
    the bound has passed, /readyz and /metrics still answer; unblocked, /livez
    is 200 again and the process never stopped."""
    wedge = tmp_path / "wedge"
    with service(tmp_path, wedge) as (svc, port):
        polling.wait_for(lambda: http(port, "/livez")[0] == 200, 10, "live")
        wedge.write_text("")
        started = time.monotonic()
        polling.wait_for(lambda: http(port, "/livez")[0] == 503, 30, "livez fails")
        took = time.monotonic() - started
        status, text = http(port, "/livez")
        assert status == 503 and text.startswith("event loop unresponsive"), text
        assert took >= LOOP_STALL_S - 1.5, took  # not before the bound
        assert http(port, "/metrics")[0] == 200
        wedge.unlink()
        polling.wait_for(lambda: http(port, "/livez")[0] == 200, 30, "livez back")
        assert svc.proc.poll() is None


@pytest.mark.parametrize("service", [running_relay, running_stun], ids=["relay", "stun-probe"])
def test_a_blocked_event_loop_still_ends_on_sigterm(service: Any, tmp_path: Path) -> None:
    """SIGTERM to a process whose loop is blocked (the loop never runs the
    shutdown): it ends all the same at the shutdown bound, status 1, with
    the blocked place in its log; not killed after the pod's grace."""
    wedge = tmp_path / "wedge"
    with service(tmp_path, wedge) as (svc, port):
        wedge.write_text("")
        polling.wait_for(lambda: http(port, "/livez")[0] == 503, 30, "livez fails")
        started = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        status = svc.proc.wait(LOOP_STALL_S + 10)
        took = time.monotonic() - started
        log = svc.log.read_text()
        assert status == 1, log[-3000:]
        assert took >= LOOP_STALL_S, took
        assert f"not ended {LOOP_STALL_S:.0f}s after SIGTERM" in log, log[-3000:]
        assert "in wedged_here" in log, log[-3000:]
