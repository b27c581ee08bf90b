from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_common.crd import (
    Gateway,
    InvalidObject,
    Mesh,
    MeshSpec,
    Peer,
    derive_transport_mode,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("model", "fixture"),
    [(Mesh, "mesh-seed.yaml"), (Peer, "peer-seed.yaml"), (Gateway, "gateway-seed.yaml")],
)
def test_seed_examples_round_trip_exactly(model: Any, fixture: str) -> None:
    obj = load(fixture)
    parsed = model.from_dict(obj)
    assert parsed.to_dict() == obj
    assert model.from_dict(parsed.to_dict()) == parsed


def test_mesh_defaults_match_the_crd() -> None:
    mesh = Mesh.from_dict({"metadata": {"name": "default"}})
    assert mesh.spec == MeshSpec()
    assert (mesh.spec.listen_port, mesh.spec.interface_name, mesh.spec.mtu) == (
        51820,
        "wire_kube",
        1420,
    )
    relay = mesh.spec.relay
    assert (relay.mode, relay.provider) == ("auto", None)
    assert (relay.handshake_timeout_seconds, relay.direct_retry_interval_seconds) == (30, 120)
    partial = Mesh.from_dict(
        {
            "metadata": {"name": "m"},
            "spec": {"relay": {"managed": {}, "external": {"endpoint": "r:1"}}},
        }
    )
    assert partial.spec.relay.managed is not None
    assert (partial.spec.relay.managed.replicas, partial.spec.relay.managed.port) == (1, 3478)
    assert partial.spec.relay.managed.service_type == "LoadBalancer"
    assert partial.spec.relay.external is not None
    assert partial.spec.relay.external.transport == "tcp"


def test_gateway_health_check_defaults() -> None:
    gw = Gateway.from_dict(
        {
            "metadata": {"name": "g"},
            "spec": {
                "peerRefs": ["node-b1"],
                "routes": [{"cidr": "172.20.0.0/16"}],
                "healthCheck": {"enabled": True, "target": "172.20.1.254"},
            },
        }
    )
    hc = gw.spec.health_check
    assert hc is not None
    assert (hc.interval_seconds, hc.timeout_seconds, hc.failure_threshold) == (30, 5, 3)


@pytest.mark.parametrize(
    ("model", "obj", "path"),
    [
        (Mesh, {"metadata": {"name": "m"}, "spec": {"listenPort": "51820"}}, "spec.listenPort"),
        (Mesh, {"metadata": {"name": "m"}, "spec": {"mtu": True}}, "spec.mtu"),
        (
            Mesh,
            {"metadata": {"name": "m"}, "spec": {"relay": {"mode": "sometimes"}}},
            "spec.relay.mode",
        ),
        (
            Mesh,
            {"metadata": {"name": "m"}, "spec": {"relay": {"provider": "external"}}},
            "spec.relay.external.endpoint",
        ),
        (Mesh, {"metadata": {"name": "m"}, "spec": {"relay": []}}, "spec.relay"),
        (Peer, {"metadata": {"name": "p"}, "spec": {}}, "spec.publicKey"),
        (
            Peer,
            {"metadata": {"name": "p"}, "spec": {"publicKey": "k", "allowedIPs": "x"}},
            "spec.allowedIPs",
        ),
        (Peer, {"spec": {"publicKey": "k"}}, "metadata.name"),
        (
            Gateway,
            {"metadata": {"name": "g"}, "spec": {"peerRefs": [], "routes": []}},
            "spec.peerRefs",
        ),
        (
            Gateway,
            {"metadata": {"name": "g"}, "spec": {"peerRefs": ["a"], "routes": [{}]}},
            "spec.routes[0].cidr",
        ),
    ],
)
def test_malformed_objects_name_the_field(model: Any, obj: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidObject) as err:
        model.from_dict(obj)
    assert err.value.path == path


def test_peer_node_from_label_or_name() -> None:
    assert Peer.from_dict(load("peer-seed.yaml")).node == "my-node"
    assert Peer.from_dict({"metadata": {"name": "node-x"}, "spec": {"publicKey": "k"}}).node == "x"
    assert Peer.from_dict({"metadata": {"name": "other"}, "spec": {"publicKey": "k"}}).node is None


@pytest.mark.parametrize(
    ("transports", "mode"),
    [
        ({}, ""),
        ({"a": "direct", "b": "direct"}, "direct"),
        ({"a": "relay"}, "relay"),
        ({"a": "direct", "b": "relay"}, "mixed"),
    ],
)
def test_transport_mode_derivation(transports: dict[str, str], mode: str) -> None:
    assert derive_transport_mode(transports) == mode
