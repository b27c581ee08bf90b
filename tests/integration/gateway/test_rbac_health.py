"""RBAC for the gateway health reports, against the real apiserver: agents
write report Leases only in their own namespace (never the controller's
leader-election Lease), the gateway controller only reads them."""

from __future__ import annotations

from typing import Any

import pytest

NS = "wirekube-system"
HEALTH_NS = "wirekube-gateway-health"


def sa(service: str) -> str:
    return f"system:serviceaccount:{NS}:wirekube-{service}"


MATRIX = [
    ("agent", "create", HEALTH_NS, True),
    ("agent", "patch", HEALTH_NS, True),
    ("agent", "update", HEALTH_NS, True),
    ("agent", "get", HEALTH_NS, True),
    ("agent", "delete", HEALTH_NS, False),
    ("agent", "create", NS, False),
    ("agent", "update", NS, False),
    ("agent", "patch", "kube-node-lease", False),
    ("gateway-controller", "list", HEALTH_NS, True),
    ("gateway-controller", "watch", HEALTH_NS, True),
    ("gateway-controller", "get", HEALTH_NS, True),
    ("gateway-controller", "create", HEALTH_NS, False),
    ("gateway-controller", "patch", HEALTH_NS, False),
    ("gateway-controller", "delete", HEALTH_NS, False),
    ("relay", "list", HEALTH_NS, False),
]


@pytest.mark.parametrize(("service", "verb", "namespace", "allowed"), MATRIX)
def test_lease_permissions(
    control_plane: Any, service: str, verb: str, namespace: str, allowed: bool
) -> None:
    proc = control_plane.kubectl(
        "auth", "can-i", verb, "leases.coordination.k8s.io",
        f"--as={sa(service)}", f"--namespace={namespace}", check=False,
    )  # fmt: skip
    assert proc.stdout.strip() == ("yes" if allowed else "no"), proc.stdout + proc.stderr
