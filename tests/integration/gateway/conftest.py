"""Fixtures for the gateway controller's integration tests.

``gateway_env`` gives a test: unique names, the admin's plain-JSON REST handle
for creating WireKubePeers/WireKubeGateways (deleted at teardown), and
``start_controller()`` which runs real ``wirekube-gateway-controller``
processes with the controller's own ServiceAccount token, on a Lease name of
the test's own, each killed by PID at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.rest import MERGE_PATCH, ApiException, Rest
from wirekube_lab import polling
from wirekube_lab.controlplane import ControlPlane

T = TypeVar("T")
NS = "wirekube-system"
HEALTH_NS = "wirekube-gateway-health"
KEY = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="
CRD = f"/apis/{GROUP}/{VERSION}"


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    return polling.wait_for(cond, timeout, what, every, transient=(ApiException, OSError))


class ControllerProcess:
    def __init__(self, identity: str, argv: list[str], log: Path, port: int) -> None:
        self.identity = identity
        self.port = port
        self.log = log
        self._log_file = log.open("wb")
        env = dict(os.environ, WIREKUBE_LOG_FORMAT="text", WIREKUBE_LOG_LEVEL="info")
        env.pop("KUBECONFIG", None)
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, text = self.http("/metrics")
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def is_leader(self) -> bool:
        try:
            return self.metric("wirekube_gateway_controller_leader") == 1.0
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log_file.close()
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class GatewayEnv:
    def __init__(self, cp: ControlPlane, tmp: Path) -> None:
        self.cp = cp
        self.tmp = tmp
        self.token = uuid.uuid4().hex[:6]
        self.connection = Connection(str(cp.kubeconfig))
        self.rest = Rest(self.connection)
        self.lease = f"gwc-test-{self.token}"
        self.kubeconfig = cp.kubeconfig_for_service_account(
            NS, "wirekube-gateway-controller", path=tmp / "gateway-controller.kubeconfig"
        )
        self.controllers: list[ControllerProcess] = []
        self._created: list[str] = []

    def name(self, base: str) -> str:
        return f"{base}-{self.token}"

    # -- controllers -------------------------------------------------------------
    def start_controller(
        self, identity: str, *extra: str, command: list[str] | None = None
    ) -> ControllerProcess:
        """A controller process, ready; ``command`` instead of ``python -m
        wirekube_gateway`` (a test's hook around it)."""
        port = polling.free_port()
        argv = [
            *(command or [sys.executable, "-m", "wirekube_gateway"]),
            "--kubeconfig", str(self.kubeconfig),
            "--identity", identity,
            "--lease-name", self.lease,
            "--lease-namespace", NS,
            "--metrics-address", "127.0.0.1",
            "--metrics-port", str(port),
            # The managed relay reconciles the cluster's one WireKubeMesh;
            # gateway tests leave it alone (test_managed_relay turns it on).
            "--managed-relay", "off",
            *extra,
        ]  # fmt: skip
        proc = ControllerProcess(identity, argv, self.tmp / f"{identity}.log", port)
        self.controllers.append(proc)
        wait_for(lambda: proc.http("/readyz")[0] == 200 or not proc.alive, 30, "controller up")
        assert proc.alive, proc.log_text()
        return proc

    def leader(self, among: list[ControllerProcess], timeout: float = 30) -> ControllerProcess:
        def one() -> ControllerProcess | None:
            leaders = [c for c in among if c.alive and c.is_leader()]
            return leaders[0] if len(leaders) == 1 else None

        return wait_for(one, timeout, "exactly one leader")

    def lease_spec(self) -> dict[str, Any]:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{self.lease}"
        return dict(self.rest.call("GET", path).get("spec") or {})

    # -- objects -----------------------------------------------------------------
    def create_peer(self, name: str, *allowed: str, passive: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"publicKey": KEY}
        if not passive:
            spec["allowedIPs"] = list(allowed)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WireKubePeer",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
        self._created.append(f"{CRD}/wirekubepeers/{name}")
        return self.rest.call("POST", f"{CRD}/wirekubepeers", body=body)

    def create_gateway(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WireKubeGateway",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
        self._created.append(f"{CRD}/wirekubegateways/{name}")
        return self.rest.call("POST", f"{CRD}/wirekubegateways", body=body)

    def patch_gateway(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.rest.call(
            "PATCH", f"{CRD}/wirekubegateways/{name}", body={"spec": spec}, content_type=MERGE_PATCH
        )

    def gateway(self, name: str) -> dict[str, Any]:
        return self.rest.call("GET", f"{CRD}/wirekubegateways/{name}")

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.gateway(name).get("status") or {})

    def delete(self, path: str) -> None:
        with contextlib.suppress(ApiException):
            self.rest.call("DELETE", path)

    def delete_peer(self, name: str) -> None:
        self.delete(f"{CRD}/wirekubepeers/{name}")

    def events_for(self, gateway: str) -> list[dict[str, Any]]:
        out = self.rest.call(
            "GET",
            "/api/v1/namespaces/default/events",
            [("fieldSelector", f"involvedObject.name={gateway}")],
        )
        return list(out.get("items") or [])

    def close(self) -> None:
        for c in self.controllers:
            c.stop()
        for path in reversed(self._created):
            self.delete(path)
        self.connection.close()


@pytest.fixture
def gateway_env(control_plane: ControlPlane, tmp_path: Path) -> Iterator[GatewayEnv]:
    env = GatewayEnv(control_plane, tmp_path)
    try:
        yield env
    finally:
        env.close()


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
