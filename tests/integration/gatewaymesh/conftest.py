"""A WireKubeGateway in the real mesh: one lab shared by the module, and helpers.

The lab (names prefixed ``gm-`` so Nodes never collide with other tests that
share the session's control plane)::

    vpc-a 10.232.1.0/24 (port-restricted NAT)   gm-a1   client node
    vpc-b 172.20.1.0/24 (port-restricted NAT)   gm-b1   gateway peer (first)
                                                 gm-b2   gateway peer (standby)
                                                 gm-svc  172.20.1.200, a "private service":
                                                         not a mesh node, TCP :8080 answers
                                                         with the source address it sees
    internet                                     gm-relay (wirekube-relay), gm-stun

Real agents (``MeshLab``), a real ``wirekube-gateway-controller`` (its own
ServiceAccount, in the root namespace like the API server it talks to) and a
WireKubeGateway ``gm-vpc-b``: routes 172.20.1.0/24 via [node-gm-b1,
node-gm-b2], SNAT on, health check = TCP to the service. The controller runs
with ``--failback never`` so that after b1 comes back the active peer stays
where the failover put it (failback has its own tests in tests/integration/gateway).

Helpers are reached through the ``GatewayMesh`` object (test modules cannot
import this file under ``--import-mode=importlib``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from wirekube_common.crd import GROUP, VERSION
from wirekube_lab import polling
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab, peer_name
from wirekube_lab.processes import LabProcess

T = TypeVar("T")
CLIENT, B1, B2, SVC = "gm-a1", "gm-b1", "gm-b2", "gm-svc"
NODES = (CLIENT, B1, B2)
SVC_IP = "172.20.1.200"
SVC_PORT = 8080
CIDR = "172.20.1.0/24"
INTERVAL, TIMEOUT, THRESHOLD = 5, 1, 1
# wirekube_common.gwhealth.report.report_ttl_s: a report older than this is stale.
REPORT_TTL_S = max(INTERVAL, TIMEOUT) * (THRESHOLD + 1) + TIMEOUT
START_TIMEOUT_S = 150.0

TOPOLOGY: dict[str, Any] = {
    "name": "gatewaymesh",
    "networks": {
        "vpc-a": {"nat": {"kind": "port-restricted"}, "cidr": "10.232.1.0/24"},
        "vpc-b": {"nat": {"kind": "port-restricted"}, "cidr": "172.20.1.0/24"},
    },
    "hosts": {
        CLIENT: {"network": "vpc-a", "role": "node"},
        B1: {"network": "vpc-b", "role": "node"},
        B2: {"network": "vpc-b", "role": "node"},
        SVC: {"network": "vpc-b", "role": "plain", "address": SVC_IP},
        "gm-relay": {"network": "internet", "role": "relay"},
        "gm-stun": {"network": "internet", "role": "stun"},
    },
    "mesh": {
        "relay": {
            "mode": "auto",
            "provider": "external",
            "handshakeTimeoutSeconds": 5,
            "directRetryIntervalSeconds": 15,
        }
    },
}

# The private service: answers every connection with the address it came from.
SERVICE = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {SVC_PORT}))
s.listen(128)
print("listening", flush=True)
while True:
    c, addr = s.accept()
    try:
        c.sendall((addr[0] + "\\n").encode())
    except OSError:
        pass
    c.close()
"""

# One connection attempt; prints the source address the service saw.
CONNECT = f"""
import socket, sys
try:
    with socket.create_connection(("{SVC_IP}", {SVC_PORT}), timeout=float(sys.argv[1])) as c:
        c.settimeout(float(sys.argv[1]))
        print(c.recv(64).decode().strip())
except OSError as exc:
    print("error", type(exc).__name__, exc)
    sys.exit(1)
"""

# A connection attempt every 0.2 s, each logged with the wall-clock time:
# "<t> ok <seen-as>" or "<t> fail <error>".
PROBER = f"""
import socket, time
while True:
    t = time.time()
    try:
        with socket.create_connection(("{SVC_IP}", {SVC_PORT}), timeout=0.5) as c:
            c.settimeout(0.5)
            seen = c.recv(64).decode().strip()
        print(f"{{t:.3f}} ok {{seen}}", flush=True)
    except OSError as exc:
        print(f"{{t:.3f}} fail {{type(exc).__name__}}", flush=True)
    time.sleep(max(0.0, t + 0.2 - time.time()))
"""


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    return polling.wait_for(
        cond,
        timeout,
        what,
        every,
        transient=(k8s.ApiException, OSError, subprocess.SubprocessError),
    )


class GatewayMesh:
    CLIENT, B1, B2, SVC = CLIENT, B1, B2, SVC
    NODES, SVC_IP, SVC_PORT, CIDR = NODES, SVC_IP, SVC_PORT, CIDR
    REPORT_TTL_S, START_TIMEOUT_S, PROBER = REPORT_TTL_S, START_TIMEOUT_S, PROBER

    def __init__(self, mesh: MeshLab, cp: ControlPlane, tmp: Path) -> None:
        self.mesh = mesh
        self.lab: Lab = mesh.lab
        self.cp = cp
        self.tmp = tmp
        self.token = uuid.uuid4().hex[:6]
        self.gateway = "gm-vpc-b"
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_log = tmp / "gateway-controller.log"
        self.service: LabProcess | None = None

    # -- processes -------------------------------------------------------------------
    def start_service(self) -> None:
        self.service = self.lab.spawn(SVC, [sys.executable, "-c", SERVICE], name="service")
        self.service.wait_for_log("listening", 20)

    def start_controller(self) -> None:
        kubeconfig = self.cp.kubeconfig_for_service_account(
            "wirekube-system", "wirekube-gateway-controller", path=self.tmp / "gwc.kubeconfig"
        )
        argv = [
            sys.executable, "-m", "wirekube_gateway",
            "--kubeconfig", str(kubeconfig),
            "--identity", f"gm-ctl-{self.token}",
            "--lease-name", f"gm-ctl-{self.token}",
            "--lease-namespace", "wirekube-system",
            "--metrics-address", "127.0.0.1",
            "--metrics-port", str(polling.free_port()),
            "--failback", "never",
        ]  # fmt: skip
        env = dict(os.environ, WIREKUBE_LOG_FORMAT="text", WIREKUBE_LOG_LEVEL="info")
        env.pop("KUBECONFIG", None)
        with self.controller_log.open("wb") as log:
            self.controller = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def stop_controller(self) -> None:
        proc = self.controller
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # -- the gateway object ------------------------------------------------------------
    def create_gateway(self) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WireKubeGateway",
            "metadata": {"name": self.gateway},
            "spec": {
                "peerRefs": [peer_name(B1), peer_name(B2)],
                "routes": [{"cidr": CIDR, "description": "VPC B"}],
                "snat": {"enabled": True},
                "healthCheck": {
                    "enabled": True,
                    "target": f"{SVC_IP}:{SVC_PORT}",
                    "intervalSeconds": INTERVAL,
                    "timeoutSeconds": TIMEOUT,
                    "failureThreshold": THRESHOLD,
                },
            },
        }
        self.mesh.custom.create_cluster_custom_object(GROUP, VERSION, "wirekubegateways", body)

    def patch_gateway(self, spec: dict[str, Any]) -> None:
        self.mesh.custom.patch_cluster_custom_object(
            GROUP, VERSION, "wirekubegateways", self.gateway, {"spec": spec}
        )

    def delete_gateway(self) -> None:
        with contextlib.suppress(k8s.ApiException):
            self.mesh.custom.delete_cluster_custom_object(
                GROUP, VERSION, "wirekubegateways", self.gateway
            )

    def status(self) -> dict[str, Any]:
        obj = self.mesh.custom.get_cluster_custom_object(
            GROUP, VERSION, "wirekubegateways", self.gateway
        )
        return dict(obj.get("status") or {})

    def active_peer(self) -> str | None:
        return self.status().get("activePeer")

    # -- what the nodes did --------------------------------------------------------------
    def connect(self, timeout: float = 2.0) -> str | None:
        """One TCP connection from the client; the source address the service saw."""
        out = self.lab.exec(
            CLIENT, [sys.executable, "-c", CONNECT, str(timeout)], check=False, timeout=30
        )
        return out.stdout.strip() if out.returncode == 0 else None

    def public_key(self, host: str) -> str:
        peer = self.mesh.peer(host)
        assert peer is not None
        return str(peer["spec"]["publicKey"])

    def wg_allowed_ips(self, host: str) -> dict[str, set[str]]:
        """public key -> AllowedIPs on the host's wire_kube."""
        out = self.mesh.agents[host].exec(["wg", "show", "wire_kube", "allowed-ips"]).stdout
        table: dict[str, set[str]] = {}
        for line in out.splitlines():
            key, *nets = line.split()
            table[key] = {n for n in nets if n != "(none)"}
        return table

    def routes(self, host: str) -> set[str]:
        """Destinations in the agent's table 22347."""
        out = self.lab.exec(host, ["ip", "-j", "route", "show", "table", "22347"]).stdout
        return {str(r["dst"]) for r in json.loads(out or "[]")}

    def nft_rules(self, host: str) -> dict[str, int] | None:
        """Comment -> packets of each rule in ``table ip wirekube``; None: no table."""
        out = self.lab.exec(host, ["nft", "-j", "list", "table", "ip", "wirekube"], check=False)
        if out.returncode != 0:
            assert "No such file or directory" in out.stderr, out.stderr
            return None
        rules: dict[str, int] = {}
        for item in json.loads(out.stdout)["nftables"]:
            rule = item.get("rule")
            if rule:
                packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
                rules[rule.get("comment", "")] = int(packets)
        return rules

    def ip_forward(self, host: str) -> str:
        return self.lab.exec(host, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()

    def agent_log(self, host: str) -> str:
        return self.mesh.agents[host].log_text() if host in self.mesh.agents else ""

    def diagnose(self) -> str:
        parts = [self.mesh.diagnose()]
        with contextlib.suppress(OSError):
            parts.append("--- gateway controller ---")
            parts.extend(self.controller_log.read_text(errors="replace").splitlines()[-20:])
        with contextlib.suppress(Exception):
            parts.append(f"--- gateway status: {self.status()}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def gwmesh(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayMesh]:
    tmp = tmp_path_factory.mktemp("gatewaymesh")
    with Lab(TOPOLOGY, workdir=tmp / "lab") as lab:
        mesh = MeshLab(lab, control_plane)
        gm = GatewayMesh(mesh, control_plane, tmp)
        try:
            gm.start_service()
            gm.start_controller()
            mesh.start()
            yield gm
        finally:
            gm.delete_gateway()
            gm.stop_controller()
            mesh.stop()
