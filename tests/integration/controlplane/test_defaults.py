"""The apiserver applies every CRD default (structural-schema defaulting)."""

from __future__ import annotations

from typing import Any

API = "wirekube.io/v1alpha1"

MESH_DEFAULTS = {
    "listenPort": 51820,
    "interfaceName": "wire_kube",
    "mtu": 1420,
    "relay": {"mode": "auto", "handshakeTimeoutSeconds": 30, "directRetryIntervalSeconds": 120},
}


def test_minimal_mesh_gets_every_default(objects: Any) -> None:
    name = objects.name("minimal")
    created = objects.must_create(
        {"apiVersion": API, "kind": "WireKubeMesh", "metadata": {"name": name}}
    )
    assert created["spec"] == MESH_DEFAULTS
    # Defaults are persisted, not just shown on the create response.
    assert objects.get("WireKubeMesh", name)["spec"] == MESH_DEFAULTS


def test_mesh_with_empty_spec_gets_every_default(objects: Any) -> None:
    created = objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeMesh",
            "metadata": {"name": objects.name("empty")},
            "spec": {},
        }
    )
    assert created["spec"] == MESH_DEFAULTS


def test_relay_blocks_get_their_defaults_when_present(objects: Any) -> None:
    created = objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeMesh",
            "metadata": {"name": objects.name("blocks")},
            "spec": {
                "relay": {
                    "provider": "external",
                    "mode": "always",
                    "external": {"endpoint": "relay.example.com:3478"},
                    "managed": {},
                }
            },
        }
    )
    relay = created["spec"]["relay"]
    assert relay["external"] == {"endpoint": "relay.example.com:3478", "transport": "tcp"}
    assert relay["managed"] == {"replicas": 1, "serviceType": "LoadBalancer", "port": 3478}
    assert relay["mode"] == "always", "an explicit value is never overwritten by a default"
    assert relay["handshakeTimeoutSeconds"] == 30
    assert relay["directRetryIntervalSeconds"] == 120


def test_relay_blocks_are_not_invented(objects: Any) -> None:
    created = objects.must_create(
        {"apiVersion": API, "kind": "WireKubeMesh", "metadata": {"name": objects.name("noblocks")}}
    )
    assert "external" not in created["spec"]["relay"]
    assert "managed" not in created["spec"]["relay"]
    assert "provider" not in created["spec"]["relay"], "provider has no default"


def test_gateway_health_check_defaults(objects: Any) -> None:
    created = objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeGateway",
            "metadata": {"name": objects.name("gw")},
            "spec": {
                "peerRefs": ["node-b1"],
                "routes": [{"cidr": "172.20.0.0/16"}],
                "healthCheck": {"enabled": True, "target": "172.20.1.254:443"},
            },
        }
    )
    assert created["spec"]["healthCheck"] == {
        "enabled": True,
        "target": "172.20.1.254:443",
        "intervalSeconds": 30,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert "snat" not in created["spec"]


def test_peer_spec_has_no_invented_fields(objects: Any) -> None:
    key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
    created = objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubePeer",
            "metadata": {"name": objects.name("node-p")},
            "spec": {"publicKey": key},
        }
    )
    assert created["spec"] == {"publicKey": key}
