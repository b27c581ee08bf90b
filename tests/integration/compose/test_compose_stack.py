"""docker-compose.yml brought up by podman-compose (1.x from PyPI) on the images
scripts/images.sh builds: the control plane, the bootstrap, two STUN
responders, the relay, the gateway controller and three agents in their own
containers form a WireGuard mesh (wireguard-go); every agent pair pings over
the tunnel, `kubectl get wirekubepeers` shows them connected, every
healthcheck passes (run by hand: podman without systemd schedules none), the
services run as the manifests run them; then `down -v` leaves no container,
network, volume or network namespace behind.

The stack gets its own project name and a /24 that no network here uses, so
runs never collide; its network is internal (no route off it)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wirekube_lab import polling

REPO = Path(__file__).resolve().parents[3]
AGENTS = ("agent-1", "agent-2", "agent-3")
NODES = {"agent-1": "node-1", "agent-2": "node-2", "agent-3": "node-3"}
HOST_OFFSET = {"agent-1": 11, "agent-2": 12, "agent-3": 13}
NON_ROOT = ("relay", "gateway-controller", "stun-probe", "stun-probe-2")
UP_TIMEOUT_S = 180.0
MESH_TIMEOUT_S = 90.0


def run(
    argv: list[str], timeout: float = 60, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m.group(1)).network)
    for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        dest = line.split()[0]
        if re.fullmatch(r"[\d.]+/\d+", dest):
            nets.append(ipaddress.ip_network(dest, strict=False))
    for name in run(["podman", "network", "ls", "--format", "{{.Name}}"]).stdout.split():
        info = json.loads(run(["podman", "network", "inspect", name]).stdout)[0]
        for sub in info.get("subnets") or []:
            nets.append(ipaddress.ip_network(sub["subnet"]))
    return nets


def free_prefix() -> str:
    used = used_networks()
    for third in range(64, 128):
        candidate = ipaddress.ip_network(f"172.29.{third}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return f"172.29.{third}"
    raise AssertionError("no free /24 in 172.29.64.0/18 for the compose network")


def volumes() -> set[str]:
    return set(run(["podman", "volume", "ls", "-q"]).stdout.split())


def netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


@dataclass
class Stack:
    project: str
    prefix: str
    env: dict[str, str]
    netns_before: set[str]
    volumes_before: set[str]
    up_seconds: float = 0.0

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
        assert exe, "podman-compose is in the workspace's dev group (uv sync)"
        return run([exe, "-p", self.project, *args], timeout=timeout, env=self.env)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def exec(
        self, service: str, *argv: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", "exec", self.container(service), *argv], check=check)

    def kubectl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.exec("apiserver", "kubectl", *argv)

    def address(self, agent: str) -> str:
        return f"{self.prefix}.{HOST_OFFSET[agent]}"

    def resources(self) -> dict[str, list[str]]:
        label = f"label=io.podman.compose.project={self.project}"
        return {
            "containers": run(["podman", "ps", "-a", "-q", "--filter", label]).stdout.split(),
            "networks": [
                n
                for n in run(["podman", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
                if n.startswith(f"{self.project}_")
            ],
            "volumes": [
                v
                for v in run(["podman", "volume", "ls", "--format", "{{.Name}}"]).stdout.split()
                if v.startswith(f"{self.project}_")
            ],
        }


@pytest.fixture(scope="module")
def images() -> None:
    """The images the stack runs, built (or found up to date) by scripts/images.sh."""
    proc = run([str(REPO / "scripts" / "images.sh")], timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def stack(images: None) -> Iterator[Stack]:
    prefix = free_prefix()
    project = f"wkc{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, WIREKUBE_COMPOSE_NET=prefix)
    s = Stack(project, prefix, env, netns(), volumes())
    started = time.monotonic()
    try:
        s.compose(
            "-f", str(REPO / "docker-compose.yml"), "up", "-d", "--no-build", timeout=UP_TIMEOUT_S
        )
        s.up_seconds = time.monotonic() - started
        yield s
    finally:
        s.compose("-f", str(REPO / "docker-compose.yml"), "down", "-v", "-t", "5", timeout=120)


def peers(stack: Stack) -> dict[str, dict[str, object]]:
    out = stack.kubectl("get", "wirekubepeers", "-o", "json").stdout
    return {p["metadata"]["name"]: p.get("status") or {} for p in json.loads(out)["items"]}


def wg_rx(stack: Stack, agent: str) -> dict[str, int]:
    """endpoint address -> bytes received from that peer (wg show dump)."""
    out = stack.exec(agent, "wg", "show", "wire_kube", "dump").stdout.splitlines()[1:]
    rx = {}
    for line in out:
        fields = line.split("\t")
        rx[fields[2].rsplit(":", 1)[0]] = int(fields[5])
    return rx


def test_the_stack_forms_a_mesh_and_leaves_nothing_behind(stack: Stack) -> None:
    names = {f"node-{n}" for n in NODES.values()}

    def connected() -> bool:
        status = peers(stack)
        return set(status) == names and all(
            s.get("connected") is True and s.get("transportMode") == "direct"
            and set((s.get("peerTransports") or {}).values()) == {"direct"}
            for s in status.values()
        )  # fmt: skip

    started = time.monotonic()
    try:
        polling.wait_for(connected, MESH_TIMEOUT_S, "every WireKubePeer connected, direct",
                         transient=(AssertionError,))  # fmt: skip
    except Exception as exc:
        logs = {svc: run(["podman", "logs", "--tail", "20", stack.container(svc)], check=False)
                for svc in ("bootstrap", "relay", *AGENTS)}  # fmt: skip
        detail = "\n".join(
            f"--- {k}\n{v.stdout[-1500:]}{v.stderr[-1500:]}" for k, v in logs.items()
        )
        raise AssertionError(f"{exc}\n{detail}") from exc
    mesh_seconds = time.monotonic() - started
    table = stack.kubectl("get", "wirekubepeers").stdout
    assert table.count(" true ") == 3, table

    # Every ordered pair pings over the tunnel: the route is the WireGuard
    # interface and the receiver's WireGuard counters grow.
    for a in AGENTS:
        for b in AGENTS:
            if a == b:
                continue
            route = stack.exec(a, "ip", "route", "get", stack.address(b)).stdout
            assert "dev wire_kube" in route, (a, b, route)
            before = wg_rx(stack, b)[stack.address(a)]
            ping = stack.exec(
                a, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", stack.address(b), check=False
            )
            assert " 0% packet loss" in ping.stdout, (a, b, ping.stdout)
            assert wg_rx(stack, b)[stack.address(a)] >= before + 3 * 84, (a, b)

    # Healthchecks: the commands in the compose file pass in every service.
    for svc in (
        "etcd",
        "apiserver",
        "stun-probe",
        "stun-probe-2",
        "relay",
        "gateway-controller",
        *AGENTS,
    ):
        hc = run(["podman", "healthcheck", "run", stack.container(svc)], check=False)
        assert hc.returncode == 0, (svc, hc.stdout, hc.stderr)
    assert (
        run(
            ["podman", "inspect", "--format", "{{.State.ExitCode}}", stack.container("bootstrap")]
        ).stdout.strip()
        == "0"
    )

    # The services run as the manifests run them: read-only root everywhere,
    # non-root where the service allows, the agent with only its capabilities.
    for svc in ("relay", "gateway-controller", "stun-probe", *AGENTS):
        info = json.loads(run(["podman", "inspect", stack.container(svc)]).stdout)[0]
        assert info["HostConfig"]["ReadonlyRootfs"] is True, svc
        uid = stack.exec(svc, "id", "-u").stdout.strip()
        assert (uid == "0") == (svc in AGENTS), (svc, uid)
        caps = set(info["EffectiveCaps"] or [])
        assert caps == ({"CAP_NET_ADMIN", "CAP_NET_RAW"} if svc in AGENTS else set()), (svc, caps)
    print(f"compose up {stack.up_seconds:.0f}s, mesh connected {mesh_seconds:.0f}s later")


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    """Runs last (module order): tears the stack down itself and checks."""
    stack.compose("-f", str(REPO / "docker-compose.yml"), "down", "-v", "-t", "5", timeout=120)
    assert stack.resources() == {"containers": [], "networks": [], "volumes": []}
    # No anonymous volume either.
    assert volumes() - stack.volumes_before == set()
    # Network namespaces podman made for the stack are gone (others' may come and go).
    live = {
        Path(p).name
        for p in run(
            ["podman", "ps", "-q", "--format", "{{.Namespaces.NetNS}}"], check=False
        ).stdout.split()
    }
    leftover = netns() - stack.netns_before - live  # type: ignore[attr-defined]
    assert not {n for n in leftover if n.startswith("netns-")}, leftover
