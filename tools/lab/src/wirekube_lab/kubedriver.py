"""``wirekube-lab run --kube OVERLAY``: WireKube installed the way users install it.

:class:`KubeDriver` is a :class:`~wirekube_lab.pipeline.MeshDriver` whose
services step turns every node host into a real Kubernetes node
(:class:`~wirekube_lab.cluster.KubeCluster`) and then runs ``kubectl apply -k``
on a kustomize overlay (``deploy/kustomize/overlays/<name>`` or any path).
The kubelets schedule and run the agent DaemonSet, relay and controller
Deployments and the stun-probe behind the lab's NATs; the lab only watches.
A topology's ``stun`` hosts run the lab's STUN responder (stun-probe as a
process, as in the process mode) and become the mesh's ``stunServers``.

Observation is the same as the process mode's (:class:`~wirekube_lab.mesh.MeshLab`):
paths from each node's ``WireKubePeer.status.peerTransports``, pings over
node addresses.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .cluster import KubeCluster
from .controlplane import WIREKUBE_NAMESPACE, repo_root
from .kubelb import ClientApi, KubeLoadBalancer, node_reach
from .lab import Lab
from .mesh import MeshLab, ping_table

# The agents' DaemonSet on N fresh nodes: images are local, so this is
# container start-up plus the agents' first passes.
AGENT_ROLLOUT_TIMEOUT_S = 180.0
# The path table must hold still this long to count as settled.
STEADY_FOR_S = 3.0


def resolve_overlay(name_or_path: str | Path) -> Path:
    """``dev`` -> deploy/kustomize/overlays/dev; a path is taken as it is."""
    path = Path(name_or_path)
    if path.is_dir():
        return path.resolve()
    candidate = repo_root() / "deploy/kustomize/overlays" / str(name_or_path)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"no kustomize overlay {name_or_path!r} (a name or a directory)")


class KubeDriver:
    """See the module docstring."""

    name = "wirekube-kube"
    note = "kubelet + containerd on every node, `kubectl apply -k` of the overlay"

    def __init__(self, overlay: str | Path = "dev", image_dir: Path | None = None) -> None:
        self.overlay = resolve_overlay(overlay)
        self.image_dir = image_dir
        self.cluster: KubeCluster | None = None
        self.mesh: MeshLab | None = None
        self.nodes: list[str] = []
        self.applied_at = 0.0
        self.timings: dict[str, float] = {}
        self.balancer: KubeLoadBalancer | None = None

    def start(self, lab: Lab) -> None:
        self.cluster = KubeCluster(
            lab, image_dir=self.image_dir, log_fn=lambda m: print(m, file=sys.stderr)
        )
        self.cluster.start()
        assert self.cluster.cp is not None
        self.mesh = MeshLab(lab, self.cluster.cp)
        for host in lab.hosts("stun"):
            self.mesh.start_stun(host)
        stun = lab.mesh_spec().get("stunServers") if lab.hosts("stun") else None
        self.nodes = list(self.cluster.nodes)
        self.balancer = start_balancer(lab, self.cluster)
        t0 = self.applied_at = time.monotonic()
        self.cluster.apply_overlay(self.overlay, stun_servers=stun)
        self.cluster.wait_rollout(
            "daemonset/wirekube-agent", WIREKUBE_NAMESPACE, AGENT_ROLLOUT_TIMEOUT_S
        )
        self.timings["agents_ready_s"] = round(time.monotonic() - t0, 1)

    def wait_steady(self, lab: Lab, timeout: float) -> bool:
        assert self.mesh is not None
        last: dict[str, str] = {}
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            table = self.mesh.pair_paths(self.nodes)
            if table != last:
                last, since = table, time.monotonic()
            elif time.monotonic() - since >= STEADY_FOR_S and all(
                "|" not in v and v != "none" for v in table.values()
            ):
                self.timings["steady_s"] = round(since - self.applied_at, 1)
                assert self.cluster is not None
                self.note = (
                    f"{KubeDriver.note} ({self.overlay.name}); cluster "
                    f"{self.cluster.timings}, agents {self.timings}"
                )
                return True
            time.sleep(0.25)
        return False

    def paths(self, lab: Lab) -> dict[str, str] | None:
        return self.mesh.pair_paths(self.nodes) if self.mesh is not None else None

    def pings(self, lab: Lab) -> dict[str, dict[str, dict[str, Any]]] | None:
        if self.mesh is None:
            return None
        return ping_table(self.mesh.ping_results(self.nodes))

    def stop(self, lab: Lab) -> None:
        try:
            if self.balancer is not None:
                self.balancer.stop()
            if self.mesh is not None:
                self.mesh.stop()
        finally:
            if self.cluster is not None:
                self.cluster.stop()


def start_balancer(lab: Lab, cluster: KubeCluster) -> KubeLoadBalancer | None:
    """The cloud's load-balancer controller (:mod:`~wirekube_lab.kubelb`) on the
    topology's first ``load-balancer`` host without static ``backends``; None
    without one (LoadBalancer Services then stay pending, as on bare metal)."""
    hosts = [h for h in lab.hosts("load-balancer") if not lab.topology.host(h).backends]
    if not hosts:
        return None
    host = hosts[0]
    spec = lab.topology.host(host)
    assert cluster.cp is not None

    def apply(ruleset: str) -> None:
        lab.exec(host, ["nft", "-f", "-"], input=ruleset)

    balancer = KubeLoadBalancer(
        ClientApi(cluster.cp.api_client()),
        apply,
        [str(a) for a in lab.addresses(host)],
        node_reach(lab.plan, cluster.nodes),
        targets=spec.targets,
        balance=spec.balance,
        log_fn=lambda m: print(m, file=sys.stderr),
    )
    balancer.start()
    return balancer
