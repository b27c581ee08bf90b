"""Test tiers are decided by where a test lives, so nobody can forget a marker.

Anything under a ``tests/integration`` directory is ``integration`` (it may need
root, network namespaces, wireguard-go and the real kube-apiserver); everything
else is ``unit`` (pure logic, no root).
"""

from __future__ import annotations

import pytest

# Session-wide fixtures: one real control plane (etcd + kube-apiserver) per run,
# and lab factories that always tear their namespaces down.
pytest_plugins = ["wirekube_lab.fixtures.controlplane", "wirekube_lab.fixtures.lab"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = "integration" if "/integration/" in str(item.path) else "unit"
        item.add_marker(getattr(pytest.mark, tier))
