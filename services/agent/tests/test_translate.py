import pytest

from wirekube_agent.k8s import translate
from wirekube_agent.k8s.translate import PeerRejected

from .helpers import key, peer_obj


def test_valid_peer() -> None:
    obj = peer_obj("node-b", 2, "10.0.0.2", persistentKeepalive=15)
    obj["status"] = {
        "natType": "cone",
        "internalEndpoint": "10.0.0.2:51820",
        "publicIP": "198.18.0.2",
    }
    peer = translate.peer_from_object(obj)
    assert peer.public_key == key(2)
    assert peer.endpoint == ("10.0.0.2", 51820)
    assert [str(n) for n in peer.allowed_ips] == ["10.0.0.2/32"]
    assert peer.persistent_keepalive == 15
    assert (peer.nat_type, peer.internal_endpoint, peer.public_ip) == (
        "cone",
        ("10.0.0.2", 51820),
        "198.18.0.2",
    )


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"publicKey": "not-a-key"}, "publicKey"),
        ({"publicKey": "A" * 44}, "publicKey"),
        ({"allowedIPs": ["10.0.0.300/32"]}, "allowedIPs"),
        ({"allowedIPs": ["0.0.0.0/0"]}, "capture all traffic"),
        ({"persistentKeepalive": 70000}, "persistentKeepalive"),
        ({"persistentKeepalive": "25"}, "persistentKeepalive"),
    ],
)
def test_malformed_peers_are_rejected_with_a_reason(spec: dict[str, object], reason: str) -> None:
    obj = peer_obj("node-b", 2, "10.0.0.2")
    obj["spec"].update(spec)
    with pytest.raises(PeerRejected, match=reason):
        translate.peer_from_object(obj)


@pytest.mark.parametrize(
    "endpoint", ["relay.example.com:51820", "10.0.0.2", "10.0.0.2:0", "[::1]x"]
)
def test_unusable_endpoint_degrades_to_unknown(endpoint: str) -> None:
    obj = peer_obj("node-b", 2, "10.0.0.2", endpoint=endpoint)
    assert translate.peer_from_object(obj).endpoint is None


def test_allowed_ips_are_normalised_and_deduplicated() -> None:
    obj = peer_obj("node-b", 2, allowedIPs=["10.0.0.2/32", "10.0.0.2", "10.1.0.7/24"])
    peer = translate.peer_from_object(obj)
    assert [str(n) for n in peer.allowed_ips] == ["10.0.0.2/32", "10.1.0.0/24"]
    assert not peer.passive
    assert translate.peer_from_object(peer_obj("node-c", 3, allowedIPs=[])).passive


def test_node_translation_and_participation() -> None:
    node = translate.node_from_object(
        {
            "metadata": {
                "name": "a",
                "uid": "u",
                "labels": {"wirekube.io/vpn-enabled": "true"},
                "annotations": {"wirekube.io/endpoint": "203.0.113.5:51820"},
            },
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "a"},
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "ExternalIP", "address": "203.0.113.5"},
                    {"type": "InternalIP", "address": "garbage"},
                ]
            },
        }
    )
    assert [str(i) for i in node.internal_ips] == ["10.0.0.1"]
    assert [str(i) for i in node.external_ips] == ["203.0.113.5"]
    assert translate.node_participates(node)
    assert translate.endpoint_annotation(node) == ("203.0.113.5", 51820)
