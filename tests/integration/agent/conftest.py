"""Fixtures for the agent's integration tests: a lab plus a mesh on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab


def flat_topology(n: int, name: str) -> dict[str, Any]:
    """``n`` nodes on one LAN behind a home router: a flat network."""
    return {
        "name": name,
        "networks": {"lan": {"nat": {"kind": "port-restricted"}}},
        "hosts": {f"n{i}": {"network": "lan", "role": "node"} for i in range(1, n + 1)},
        "mesh": {"relay": {"mode": "never"}},
    }


@pytest.fixture(scope="module")
def flat_mesh(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshLab]:
    with Lab(flat_topology(5, "agent-flat"), workdir=tmp_path_factory.mktemp("flat")) as lab:
        mesh = MeshLab(lab, control_plane)
        try:
            yield mesh
        finally:
            for host in list(mesh.agents):
                mesh.stop_agent(host)
            for host in lab.hosts("node"):
                mesh.delete_node(host)
