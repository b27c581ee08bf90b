"""`kubectl get` shows the agreed printer columns and the short names resolve."""

from __future__ import annotations

import json
from typing import Any

API = "wirekube.io/v1alpha1"
KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def _patch_status(cp: Any, resource: str, name: str, status: dict[str, Any]) -> None:
    cp.kubectl(
        "patch",
        resource,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_peer_columns(objects: Any) -> None:
    cp = objects.cp
    name = objects.name("node-cols")
    objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubePeer",
            "metadata": {"name": name},
            "spec": {"publicKey": KEY, "endpoint": "203.0.113.5:51820"},
        }
    )
    _patch_status(
        cp,
        "wirekubepeers",
        name,
        {
            "natType": "symmetric",
            "transportMode": "mixed",
            "connected": True,
            "lastHandshake": "2026-01-01T00:00:00Z",
        },
    )
    header, row = _table(cp.kubectl("get", "wirekubepeers", name).stdout)
    assert header == ["NAME", "ENDPOINT", "NAT", "MODE", "CONNECTED", "AGE"]
    assert row[:5] == [name, "203.0.113.5:51820", "symmetric", "mixed", "true"]
    header, row = _table(cp.kubectl("get", "wkp", name, "-o", "wide").stdout)
    assert header == ["NAME", "ENDPOINT", "NAT", "MODE", "CONNECTED", "HANDSHAKE", "AGE"]
    assert row[:5] == [name, "203.0.113.5:51820", "symmetric", "mixed", "true"]


def test_gateway_columns(objects: Any) -> None:
    cp = objects.cp
    name = objects.name("vpc-b-gateway")
    objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeGateway",
            "metadata": {"name": name},
            "spec": {"peerRefs": ["node-b1", "node-b2"], "routes": [{"cidr": "172.20.0.0/16"}]},
        }
    )
    _patch_status(
        cp, "wirekubegateways", name, {"activePeer": "node-b1", "ready": True, "routesInjected": 1}
    )
    header, row = _table(cp.kubectl("get", "wkgw", name).stdout)
    assert header == ["NAME", "ACTIVE", "READY", "ROUTES", "AGE"]
    assert row[:4] == [name, "node-b1", "true", "1"]


def test_mesh_columns(objects: Any) -> None:
    cp = objects.cp
    name = objects.name("mesh")
    objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeMesh",
            "metadata": {"name": name},
            "spec": {"relay": {"mode": "always", "provider": "managed"}},
        }
    )
    header, row = _table(cp.kubectl("get", "wkm", name).stdout)
    assert header == ["NAME", "MODE", "PROVIDER", "PORT", "AGE"]
    assert row[:4] == [name, "always", "managed", "51820"]
    # The managed relay's address (status extension) only in the wide view.
    cp.kubectl(
        "patch", "wkm", name, "--subresource=status", "--type=merge",
        "-p", '{"status": {"relay": {"address": "203.0.113.7:31478", "source": "NodePort"}}}',
    )  # fmt: skip
    header, row = _table(cp.kubectl("get", "wkm", name, "-o", "wide").stdout)
    assert header == ["NAME", "MODE", "PROVIDER", "PORT", "AGE", "RELAY"]
    assert row[-1] == "203.0.113.7:31478"


def test_short_names_and_category(control_plane: Any) -> None:
    out = control_plane.kubectl("api-resources", "--api-group=wirekube.io", "-o", "wide").stdout
    rows = {r[0]: r for r in _table(out)[1:]}
    assert set(rows) == {"wirekubemeshes", "wirekubepeers", "wirekubegateways"}
    assert rows["wirekubemeshes"][1] == "wkm"
    assert rows["wirekubepeers"][1] == "wkp"
    assert rows["wirekubegateways"][1] == "wkgw"
    for r in rows.values():
        assert "false" in r, "cluster-scoped: NAMESPACED is false"
        assert "wirekube" in r[-1], "all three are in the `wirekube` category"
