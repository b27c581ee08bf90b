"""Fixtures for the kubelet tests: one real cluster per module, shared by its tests.

``kube_env(topology, overlay)`` builds the lab, turns every node host into a
Kubernetes node (:class:`~wirekube_lab.cluster.KubeCluster`), runs ``kubectl
apply -k`` on the overlay and waits for the agent DaemonSet; teardown stops
every process by PID and removes the lab. Helpers measure what the tests
report: lost pings per pair under a continuous ping, recovery times. Every
figure is printed (``-s`` shows it; the lead copies them into the issue).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab.cluster import KubeCluster
from wirekube_lab.controlplane import WIREKUBE_NAMESPACE
from wirekube_lab.kubedriver import KubeDriver
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab
from wirekube_lab.ping import PingResult, parse_ping
from wirekube_lab.processes import LabProcess

HERE = Path(__file__).resolve().parent
# Mesh steady state after the agents are Ready: first handshakes and the
# relay fallback (handshakeTimeoutSeconds 5) on a loaded 2-core host.
STEADY_TIMEOUT_S = 120.0
# Continuous pings: 5 per second, each waited for 1 s.
PING_INTERVAL_S = 0.2


def report(what: str, value: object) -> None:
    """One figure, on one greppable line."""
    print(f"\nKUBE-FIGURE {what}: {json.dumps(value, sort_keys=True)}", flush=True)


@dataclass
class KubeEnv:
    lab: Lab
    driver: KubeDriver

    @property
    def cluster(self) -> KubeCluster:
        assert self.driver.cluster is not None
        return self.driver.cluster

    @property
    def mesh(self) -> MeshLab:
        assert self.driver.mesh is not None
        return self.driver.mesh

    @property
    def nodes(self) -> list[str]:
        return list(self.driver.nodes)

    def kubectl(self, *args: str, **kwargs: Any) -> Any:
        return self.cluster.kubectl(*args, **kwargs)

    def pods(self, app: str) -> list[dict[str, Any]]:
        return self.cluster.pods(WIREKUBE_NAMESPACE, f"app.kubernetes.io/name={app}")

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s\n{self.diagnose()}")
            time.sleep(0.25)
        return time.monotonic() - start

    def diagnose(self) -> str:
        out = [self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout]
        out.append(json.dumps(self.mesh.pair_paths(self.nodes)))
        return "\n".join(out)

    def start_pings(
        self, pairs: list[tuple[str, str]], seconds: float
    ) -> dict[tuple[str, str], LabProcess]:
        count = int(seconds / PING_INTERVAL_S)
        return {
            (a, b): self.lab.spawn(
                a,
                [
                    "ping",
                    "-n",
                    "-c",
                    str(count),
                    "-i",
                    str(PING_INTERVAL_S),
                    "-W",
                    "1",
                    self.lab.address(b),
                ],
                name=f"ping-{b}",
            )
            for a, b in pairs
        }

    @staticmethod
    def ping_losses(
        procs: dict[tuple[str, str], LabProcess], timeout: float
    ) -> dict[str, PingResult]:
        out: dict[str, PingResult] = {}
        for (a, b), proc in procs.items():
            proc.wait(timeout)
            out[f"{a}->{b}"] = parse_ping(b, proc.log_text())
        return out

    def wg_peers(self, node: str) -> list[str]:
        """Public keys of the peers in a node's WireGuard (read in its mount namespace)."""
        proc = self.cluster.nodes[node].exec(["wg", "show", "wire_kube", "peers"], check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    def pair_paths(self) -> dict[str, str]:
        """``{"a/b": mode}`` keyed like a topology's ``expect.paths`` (names sorted)."""
        return {
            "/".join(sorted(k.split("/"))): v for k, v in self.mesh.pair_paths(self.nodes).items()
        }

    def all_pairs_answer(self, pairs: list[tuple[str, str]]) -> bool:
        def one(pair: tuple[str, str]) -> bool:
            return self.lab.ping(pair[0], pair[1], count=1, wait=1.0).received == 1

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return all(pool.map(one, pairs))


def ordered_pairs(nodes: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in nodes for b in nodes if a != b]


def _env(topology: Path, overlay: str, tmp: Path) -> Iterator[KubeEnv]:
    lab = Lab(topology, workdir=tmp / "lab")
    driver = KubeDriver(overlay)
    with lab:
        try:
            t0 = time.monotonic()
            driver.start(lab)
            env = KubeEnv(lab, driver)
            steady = driver.wait_steady(lab, STEADY_TIMEOUT_S)
            report(
                f"{topology.stem}/{overlay} bring-up",
                {
                    **env.cluster.timings,
                    **driver.timings,
                    "total_s": round(time.monotonic() - t0, 1),
                },
            )
            assert steady, f"the mesh did not settle:\n{env.diagnose()}"
            yield env
        finally:
            driver.stop(lab)


@pytest.fixture(scope="module")
def flat_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    """The dev overlay on three nodes of one flat network."""
    yield from _env(HERE / "flat-3.yaml", "dev", tmp_path_factory.mktemp("kube-flat"))


# The overlay for the NAT cluster, as shipped: three relay replicas behind a
# Service of type LoadBalancer (its address and forwarding from the lab's
# cloud load balancer, kubelb on nat.yaml's `lb` host), the replicas
# forwarding to each other (relay mesh, finding each other through the pool's
# EndpointSlices), production timers.
NAT_OVERLAY = "production"


@pytest.fixture(scope="module")
def nat_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    """An overlay (NAT_OVERLAY) behind symmetric NATs and a TCP-only firewall."""
    yield from _env(HERE / "nat.yaml", NAT_OVERLAY, tmp_path_factory.mktemp("kube-nat"))
