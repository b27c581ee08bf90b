"""A lab with every WireKube service running and a real Prometheus scraping it.

The lab (Node names prefixed ``mt-`` so they never collide with other test
modules sharing the session's control plane)::

    mth   (address-restricted)  mt-home    ─┐
    mtc-a (symmetric)           mt-cloud-a ─┼─ internet ─ mt-relay (wirekube-relay)
    mtc-b (symmetric)           mt-cloud-b ─┘            mt-stun  (wirekube-stun-probe)
                                                          mt-ctl   (wirekube-gateway-controller)

Paths: mt-home ↔ each cloud direct (cone ↔ symmetric), mt-cloud-a ↔ mt-cloud-b
relayed (symmetric ↔ symmetric): four peer ends direct, two relayed.

**Prometheus** (Debian's package) runs in ``mt-home``'s namespace, the way it
runs inside a cluster: it scrapes the other agents at their node addresses
*through the mesh*, and the relay, STUN server and controller on the lab's
internet through mt-home's NAT. Every target is an address inside this lab
(network safety); its storage is a temporary directory, it listens on
127.0.0.1 of mt-home only, and it is stopped by PID with the lab (which also
kills anything left in its namespaces). The test process reaches its HTTP
API, and every service's ``/metrics``, by running a short Python client
inside the right namespace.

Relabelling here matches what ``deploy/monitoring/podmonitor.yaml`` gives a
cluster: ``job`` is the service's ``app.kubernetes.io/name`` and agent
targets carry a ``node`` label, so the dashboard and the alert rules run
unchanged against this lab.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import LOG_ENV, MeshLab
from wirekube_lab.processes import LabProcess

HOME, CLOUD_A, CLOUD_B = "mt-home", "mt-cloud-a", "mt-cloud-b"
NODES = (HOME, CLOUD_A, CLOUD_B)
RELAY, STUN, CONTROLLER = "mt-relay", "mt-stun", "mt-ctl"
PROMETHEUS_HOST = HOME
METRICS_PORT = 9090  # every service's /metrics port (the manifests' "metrics" port)
PROMETHEUS_LISTEN = "127.0.0.1:9099"
# Short enough that a test sees a change within seconds; the lab's targets
# answer a scrape in milliseconds.
SCRAPE_INTERVAL = "1s"
START_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy" / "monitoring" / "prometheusrule.yaml"

TOPOLOGY: dict[str, Any] = {
    "name": "metrics",
    "networks": {
        "mth": {"nat": {"kind": "address-restricted"}},
        "mtc-a": {"nat": {"kind": "symmetric"}},
        "mtc-b": {"nat": {"kind": "symmetric"}},
    },
    "hosts": {
        HOME: {"network": "mth", "role": "node"},
        CLOUD_A: {"network": "mtc-a", "role": "node"},
        CLOUD_B: {"network": "mtc-b", "role": "node"},
        RELAY: {"network": "internet", "role": "relay"},
        STUN: {"network": "internet", "role": "stun"},
        CONTROLLER: {"network": "internet", "role": "plain"},
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
EXPECTED = {
    f"{HOME}/{CLOUD_A}": "direct",
    f"{HOME}/{CLOUD_B}": "direct",
    f"{CLOUD_A}/{CLOUD_B}": "relay",
}

# Fetch a URL inside a namespace; prints the body (exit 1 and the error otherwise).
_FETCH = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=10) as r:\n"
    "    sys.stdout.write(r.read().decode())\n"
)


@dataclass
class MetricsLab:
    lab: Lab
    mesh: MeshLab
    prometheus: LabProcess
    controller: LabProcess

    repo = REPO

    def rule_groups(self) -> dict[str, Any]:
        return rule_groups()

    # -- where things are ------------------------------------------------------------
    def targets(self) -> dict[str, list[tuple[str, str]]]:
        """job -> [(host, address:port)], as Prometheus scrapes them (from mt-home)."""
        agents = [
            (h, f"127.0.0.1:{METRICS_PORT}" if h == PROMETHEUS_HOST else self._at(h)) for h in NODES
        ]
        return {
            "wirekube-agent": agents,
            "wirekube-relay": [(RELAY, self._at(RELAY))],
            "wirekube-stun-probe": [(STUN, self._at(STUN))],
            "wirekube-gateway-controller": [(CONTROLLER, self._at(CONTROLLER))],
        }

    def _at(self, host: str) -> str:
        return f"{self.lab.address(host)}:{METRICS_PORT}"

    # -- reading -----------------------------------------------------------------------
    def fetch(self, host: str, url: str) -> str:
        return self.lab.exec(host, [sys.executable, "-c", _FETCH, url], timeout=30).stdout

    def exposition(self, host: str) -> str:
        """The service's own /metrics, read inside its namespace."""
        return self.fetch(host, f"http://127.0.0.1:{METRICS_PORT}/metrics")

    def prom(self, path: str, **params: str) -> Any:
        """GET one Prometheus API endpoint; the ``data`` of a success, else raises."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = json.loads(self.fetch(PROMETHEUS_HOST, f"http://{PROMETHEUS_LISTEN}{path}{query}"))
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.prom("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def values(self, expr: str, by: str) -> dict[str, float]:
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"{what}: not within {timeout:.0f}s (last: {last!r})\n"
            f"--- prometheus log ---\n{self.prometheus.log_text()[-3000:]}\n{self.mesh.diagnose()}"
        )


def prometheus_config(ml: MetricsLab, rules: Path) -> dict[str, Any]:
    scrape = []
    for job, targets in ml.targets().items():
        static = [
            {"targets": [address], "labels": {"node": host}}
            if job == "wirekube-agent"
            # Only agents run one per node; the others are just their address.
            else {"targets": [address]}
            for host, address in targets
        ]
        scrape.append({"job_name": job, "static_configs": static})
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(rules)],
        "scrape_configs": scrape,
    }


def rule_groups(path: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule's ``spec`` as a plain Prometheus rules file."""
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "PrometheusRule", doc.get("kind")
    return {"groups": doc["spec"]["groups"]}


def start_controller(lab: Lab, cp: ControlPlane, workdir: Path) -> LabProcess:
    kubeconfig = cp.kubeconfig_for_service_account(
        "wirekube-system",
        "wirekube-gateway-controller",
        lab=True,
        path=workdir / "gateway-controller.kubeconfig",
    )
    argv = [
        sys.executable, "-m", "wirekube_gateway",
        "--kubeconfig", str(kubeconfig),
        "--identity", "mt-ctl",
        # A Lease of its own: other modules' controllers never contend for it.
        "--lease-name", f"mt-{uuid.uuid4().hex[:6]}",
        "--metrics-port", str(METRICS_PORT),
    ]  # fmt: skip
    return lab.spawn(CONTROLLER, argv, env=LOG_ENV, name="gateway-controller")


def start_prometheus(lab: Lab, config: dict[str, Any], workdir: Path) -> LabProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        "--storage.tsdb.retention.time=1h",
        f"--web.listen-address={PROMETHEUS_LISTEN}",
    ]
    return lab.spawn(PROMETHEUS_HOST, argv, name="prometheus")


@pytest.fixture(scope="module")
def ml(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsLab]:
    workdir = tmp_path_factory.mktemp("metrics")
    with Lab(TOPOLOGY, workdir=workdir / "lab") as lab:
        mesh = MeshLab(lab, control_plane)
        prometheus: LabProcess | None = None
        controller: LabProcess | None = None
        try:
            mesh.start(NODES)
            controller = start_controller(lab, control_plane, workdir)
            mesh.wait_until(
                "the expected path table",
                lambda: mesh.pair_paths(list(NODES)) == EXPECTED and mesh.all_reachable(NODES),
                START_TIMEOUT_S,
            )
            rules = workdir / "rules.yaml"
            rules.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
            ml = MetricsLab(lab, mesh, None, controller)  # type: ignore[arg-type]
            prometheus = start_prometheus(lab, prometheus_config(ml, rules), workdir / "prom")
            ml.prometheus = prometheus
            yield ml
        finally:
            for proc in (prometheus, controller):
                if proc is not None:
                    proc.stop()
            mesh.stop()
