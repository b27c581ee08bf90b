"""Every YAML example of the seeds applies to the real apiserver and reads back as written.

The example files under examples/ are the seeds' YAML (see each file's header);
names get a per-test suffix because the session's control plane is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = sorted((Path(__file__).parent / "examples").glob("*.yaml"))


def _subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every field written is read back with the same value (defaults may add more)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing in {actual!r}"
            _subset(v, actual[k], f"{path}.{k}")
    else:
        assert actual == expected, f"{path}: wrote {expected!r}, read {actual!r}"


def test_examples_were_extracted() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES}
    assert kinds == {"WireKubeMesh", "WireKubePeer", "WireKubeGateway"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_seed_example_applies(objects: Any, path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"]["name"] = objects.name(obj["metadata"]["name"])
    created = objects.must_create(obj)
    stored = objects.get(created["kind"], obj["metadata"]["name"])
    assert stored["apiVersion"] == "wirekube.io/v1alpha1"
    assert "namespace" not in stored["metadata"], "WireKube kinds are cluster-scoped"
    _subset(obj["spec"], stored["spec"])
    _subset(obj["metadata"].get("labels", {}), stored["metadata"].get("labels", {}))
