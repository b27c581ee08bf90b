"""Relay provider ``managed``: agents find the in-cluster relay through its Service.

Two nodes behind different symmetric NATs (so only the relay can join them),
mesh relay mode ``always`` with provider ``managed``. The relay Service carries
the relay host's address as an external IP — the first thing agents look at
(ExternalIP -> LoadBalancer ingress -> NodePort, never the ClusterIP).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab

TOPOLOGY = {
    "name": "managed-relay",
    "networks": {"vpc-x": {"nat": {"kind": "symmetric"}}, "vpc-y": {"nat": {"kind": "symmetric"}}},
    "hosts": {
        "mx": {"network": "vpc-x", "role": "node"},
        "my": {"network": "vpc-y", "role": "node"},
        "relay": {"network": "internet", "role": "relay"},
    },
    "mesh": {"relay": {"mode": "always", "provider": "managed", "managed": {"port": 3478}}},
}


@pytest.fixture
def mesh(control_plane: ControlPlane, tmp_path: Path) -> Iterator[MeshLab]:
    core = k8s.CoreV1Api(control_plane.api_client())
    with Lab(TOPOLOGY, workdir=tmp_path) as lab:
        service = {
            "metadata": {"name": "wirekube-relay", "namespace": "wirekube-system"},
            "spec": {
                "type": "ClusterIP",
                "externalIPs": [lab.address("relay")],
                "ports": [{"name": "relay", "port": 3478, "protocol": "TCP"}],
            },
        }
        core.create_namespaced_service("wirekube-system", service)
        m = MeshLab(lab, control_plane)
        try:
            yield m
        finally:
            m.stop()
            core.delete_namespaced_service("wirekube-relay", "wirekube-system")


def test_agents_find_the_managed_relay_through_its_service(mesh: MeshLab) -> None:
    nodes = mesh.start()
    mesh.wait_until("relayed mesh", lambda: mesh.working_mesh(nodes), 60)
    assert mesh.path_table(nodes) == {"mx": {"my": "relay"}, "my": {"mx": "relay"}}
    assert mesh.ping_matrix(nodes) == {"mx": {"my": 1.0}, "my": {"mx": 1.0}}
    log = mesh.agents["mx"].log_path.read_text()
    assert f"relay: {mesh.lab.address('relay')}:3478" in log
