"""Relay provider ``managed``: agents find the relay through the Service the
gateway controller made from the mesh spec.

Two nodes behind different symmetric NATs (so only the relay can join them),
mesh relay mode ``always`` with provider ``managed``. A real
``wirekube-gateway-controller`` (its own ServiceAccount, the production
Role in wirekube-system) makes the relay's objects. The lab has no kubelet or
kube-proxy, so the relay replica is the lab's relay host and only a Service
address that points there works:

1. ``serviceType: NodePort`` first: no node has an ExternalIP, so each agent
   tries its own node's InternalIP at the NodePort, where nothing listens
   here — no relay, no mesh;
2. the user changes the mesh to ``ClusterIP`` with ``externalIPs: [the relay
   host]`` (the spec extension): the controller updates the Service and the
   mesh status, and the agents follow the Service to the relay
   (ExternalIP -> LoadBalancer ingress -> NodePort, never the ClusterIP).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway.conftest import CRD, GatewayEnv
from wirekube_common.kube.rest import MERGE_PATCH, ApiException
from wirekube_gateway.managedrelay.kube import collection_path
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab

NS = "wirekube-system"
OWNED = [
    ("Deployment", "wirekube-relay"),
    ("Service", "wirekube-relay"),
    ("Service", "wirekube-relay-pool"),
    ("PodDisruptionBudget", "wirekube-relay"),
    ("Secret", "wirekube-relay-mesh"),
]

TOPOLOGY = {
    "name": "managed-relay",
    "networks": {"vpc-x": {"nat": {"kind": "symmetric"}}, "vpc-y": {"nat": {"kind": "symmetric"}}},
    "hosts": {
        "mx": {"network": "vpc-x", "role": "node"},
        "my": {"network": "vpc-y", "role": "node"},
        "relay": {"network": "internet", "role": "relay"},
    },
    "mesh": {
        "relay": {
            "mode": "always",
            "provider": "managed",
            "managed": {"port": 3478, "serviceType": "NodePort"},
        }
    },
}


@pytest.fixture
def mesh(control_plane: ControlPlane, tmp_path: Path) -> Iterator[tuple[MeshLab, GatewayEnv]]:
    env = GatewayEnv(control_plane, tmp_path)
    with Lab(TOPOLOGY, workdir=tmp_path) as lab:
        m = MeshLab(lab, control_plane)
        try:
            env.start_controller("relay-ctl", "--managed-relay", "on", "--mesh-name", "default",
                                 "--relay-namespace", NS)  # fmt: skip
            yield m, env
        finally:
            m.stop()
            for c in env.controllers:  # first: nothing re-creates what follows
                c.stop()
            for kind, name in OWNED:
                with contextlib.suppress(ApiException):
                    env.rest.call("DELETE", f"{collection_path(kind, NS)}/{name}")
            env.close()


def test_agents_follow_the_service_the_controller_made(
    mesh: tuple[MeshLab, GatewayEnv],
) -> None:
    m, env = mesh
    nodes = m.start()
    relay = m.lab.address("relay")

    def service() -> dict[str, object]:
        return env.rest.call("GET", f"{collection_path('Service', NS)}/wirekube-relay")

    m.wait_until("a NodePort Service", lambda: service()["spec"]["type"] == "NodePort", 30)
    node_port = service()["spec"]["ports"][0]["nodePort"]
    # The agent read the Service and the Nodes: no ExternalIP anywhere, so its
    # own InternalIP at the NodePort (nothing listens there in the lab).
    own = f"relay: {m.lab.address('mx')}:{node_port}"
    m.wait_until("mx on its own NodePort", lambda: own in m.agents["mx"].log_path.read_text(), 30)
    assert not m.working_mesh(nodes)

    env.rest.call(
        "PATCH",
        f"{CRD}/wirekubemeshes/default",
        body={"spec": {"relay": {"managed": {"serviceType": "ClusterIP", "externalIPs": [relay]}}}},
        content_type=MERGE_PATCH,
    )
    m.wait_until("relayed mesh", lambda: m.working_mesh(nodes), 60)
    assert service()["spec"]["externalIPs"] == [relay]
    assert m.path_table(nodes) == {"mx": {"my": "relay"}, "my": {"mx": "relay"}}
    assert m.ping_matrix(nodes) == {"mx": {"my": 1.0}, "my": {"mx": 1.0}}
    status = env.rest.call("GET", f"{CRD}/wirekubemeshes/default")["status"]["relay"]
    assert (status["address"], status["source"]) == (f"{relay}:3478", "ExternalIP")
    # The same bridge, moved from the NodePort to the Service's external IP.
    log = m.agents["mx"].log_path.read_text()
    assert f"relay: now {relay}:3478" in log
