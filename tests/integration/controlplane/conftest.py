"""Make the control-plane plugin available to these tests.

The plugin belongs in the root conftest's ``pytest_plugins`` (pytest refuses
``pytest_plugins`` in nested conftests); until it is there - or when this
directory is run on its own with another rootdir - register it here. Either
way there is one plugin instance, so one control plane per session.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab.controlplane import repo_root

PLUGIN = "wirekube_lab.fixtures.controlplane"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


class Objects:
    """Create/read/delete cluster-scoped objects with the real kubectl; deletes at teardown.

    Names get a per-test random suffix so tests sharing the session control
    plane never see each other's objects.
    """

    def __init__(self, control_plane: Any) -> None:
        self.cp = control_plane
        self.suffix = uuid.uuid4().hex[:8]
        self._created: list[tuple[str, str]] = []

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    def create(
        self, obj: dict[str, Any], *, as_user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl create`` the object; returns the result (check it yourself)."""
        args = ["create", "-f", "-", "-o", "json"]
        if as_user:
            args.append(f"--as={as_user}")
        proc = self.cp.kubectl(*args, input=json.dumps(obj), check=False)
        if proc.returncode == 0:
            created = json.loads(proc.stdout)
            self._created.append((RESOURCES[created["kind"]], created["metadata"]["name"]))
        return proc

    def must_create(self, obj: dict[str, Any]) -> dict[str, Any]:
        proc = self.create(obj)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def track(self, kind: str, name: str) -> None:
        """Delete at teardown an object someone else (e.g. a service account) created."""
        self._created.append((RESOURCES.get(kind, kind), name))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """Read an object back; ``kind`` is a Kind (WireKubePeer) or a resource name."""
        resource = RESOURCES.get(kind, kind)
        return json.loads(self.cp.kubectl("get", resource, name, "-o", "json").stdout)

    def cleanup(self) -> None:
        for resource, name in reversed(self._created):
            self.cp.kubectl("delete", resource, name, "--ignore-not-found", "--wait=false")


RESOURCES = {
    "WireKubeMesh": "wirekubemeshes.wirekube.io",
    "WireKubePeer": "wirekubepeers.wirekube.io",
    "WireKubeGateway": "wirekubegateways.wirekube.io",
    "Node": "nodes",
}


@pytest.fixture
def objects(control_plane: Any) -> Iterator[Objects]:
    objs = Objects(control_plane)
    yield objs
    objs.cleanup()


@pytest.fixture(scope="session")
def repo() -> Path:
    return repo_root()
