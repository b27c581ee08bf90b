"""The Python models (wirekube_common.crd) and the CRDs agree, checked against the
real apiserver: the models apply exactly the defaults the apiserver applies,
what the apiserver stores round-trips through the models unchanged, and a
status written from a model is accepted and stored as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_common.crd import Gateway, Mesh, Peer

API = "wirekube.io/v1alpha1"
KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
MODELS: dict[str, Any] = {"WireKubeMesh": Mesh, "WireKubePeer": Peer, "WireKubeGateway": Gateway}
EXAMPLES = sorted((Path(__file__).parent / "examples").glob("*.yaml"))

SPECS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("mesh-no-spec", "WireKubeMesh", None),
    (
        "mesh-blocks",
        "WireKubeMesh",
        {
            "relay": {
                "provider": "external",
                "external": {"endpoint": "relay.example.com:3478"},
                "managed": {},
            },
            "stunServers": ["a.example.com:3478", "b.example.com:3478"],
        },
    ),
    (
        "gateway-health",
        "WireKubeGateway",
        {
            "peerRefs": ["node-b1"],
            "routes": [{"cidr": "172.20.0.0/16"}],
            "healthCheck": {"enabled": True, "target": "172.20.1.254"},
            "snat": {"enabled": False},
        },
    ),
    ("peer-minimal", "WireKubePeer", {"publicKey": KEY}),
    (
        "mesh-managed-external-ips",
        "WireKubeMesh",
        {"relay": {"provider": "managed", "managed": {"externalIPs": ["198.51.100.4"]}}},
    ),
]
CASES = SPECS + [
    (p.stem, (d := yaml.safe_load(p.read_text()))["kind"], d["spec"]) for p in EXAMPLES
]


@pytest.mark.parametrize(("kind", "spec"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_model_defaults_and_round_trip_match_the_apiserver(
    objects: Any, kind: str, spec: dict[str, Any] | None
) -> None:
    obj: dict[str, Any] = {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": objects.name("models")},
    }
    if spec is not None:
        obj["spec"] = spec
    stored = objects.must_create(obj)
    model = MODELS[kind]
    assert model.from_dict(obj).to_dict()["spec"] == stored["spec"], "defaults differ"
    assert model.from_dict(stored).to_dict()["spec"] == stored["spec"], "round trip differs"


STATUSES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "peer",
        "WireKubePeer",
        {"publicKey": KEY},
        {
            "connected": True,
            "natType": "cone",
            "natMapping": "endpoint-independent",
            "natFiltering": "address-dependent",
            "transportMode": "mixed",
            "peerTransports": {"node-a": "direct", "node-b": "relay"},
            "peerPaths": {
                "node-a": {
                    "transport": "direct",
                    "phase": "up",
                    "rule": "cone-symmetric",
                    "reason": "probe-answered",
                    "since": "2026-01-01T00:00:00Z",
                    "endpoint": "198.51.100.7:51820",
                    "rttMs": 1.25,
                    "candidates": [
                        {"endpoint": "198.51.100.7:51820", "lastAnswer": "2026-01-01T00:00:05Z"},
                        {"endpoint": "10.0.0.7:51820"},
                    ],
                },
                "node-b": {
                    "transport": "relay",
                    "phase": "up",
                    "rule": "symmetric-symmetric",
                    "reason": "direct-failed",
                    "since": "2026-01-01T00:00:00Z",
                    "failures": 2,
                    "nextAttempt": "2026-01-01T00:00:15Z",
                },
            },
            "endpointDiscoveryMethod": "external-ip",
            "lastHandshake": "2026-01-01T00:00:00Z",
            "internalEndpoint": "10.0.0.5:51820",
            "publicIP": "203.0.113.5",
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "HandshakeSeen",
                    "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        },
    ),
    (
        "gateway",
        "WireKubeGateway",
        {"peerRefs": ["node-b1"], "routes": [{"cidr": "10.1.0.0/16"}]},
        {
            "activePeer": "node-b1",
            "ready": True,
            "routesInjected": 1,
            "peerHealth": {"node-b1": "healthy"},
            "lastHealthCheck": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ActivePeerHealthy",
                    "message": "node-b1 is active",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "status"), [c[1:] for c in STATUSES], ids=[c[0] for c in STATUSES]
)
def test_model_status_is_accepted_and_stored_as_written(
    objects: Any, kind: str, spec: dict[str, Any], status: dict[str, Any]
) -> None:
    name = objects.name("status")
    objects.must_create({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
    model = MODELS[kind].from_dict(
        {
            "apiVersion": API,
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
            "status": status,
        }
    )
    written = model.to_dict()["status"]
    proc = objects.cp.kubectl(
        "patch",
        kind.lower() + ".wirekube.io",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": written}),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stored = objects.get(kind, name)
    assert stored["status"] == written
    assert MODELS[kind].from_dict(stored).to_dict()["status"] == stored["status"]
