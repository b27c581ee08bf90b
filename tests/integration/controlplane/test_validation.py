"""Invalid objects are refused by the real apiserver, with its own message.

Each case starts from a valid object, breaks one thing, and expects the
apiserver's error text for exactly that field (OpenAPI enum/pattern/minimum
messages or the CRD's CEL rule message). Valid edge cases are accepted, so the
patterns are not stricter than the contract.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
API = "wirekube.io/v1alpha1"

MESH: dict[str, Any] = {
    "kind": "WireKubeMesh",
    "spec": {"stunServers": ["stun1.example.com:3478", "198.51.100.7:3478"]},
}
PEER: dict[str, Any] = {
    "kind": "WireKubePeer",
    "spec": {"publicKey": KEY, "endpoint": "203.0.113.5:51820", "allowedIPs": ["10.0.0.5/32"]},
}
GATEWAY: dict[str, Any] = {
    "kind": "WireKubeGateway",
    "spec": {"peerRefs": ["node-b1"], "routes": [{"cidr": "172.20.0.0/16"}]},
}
BASES = {"mesh": MESH, "peer": PEER, "gw": GATEWAY}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _object(objects: Any, base: str, spec_patch: dict[str, Any]) -> dict[str, Any]:
    b = BASES[base]
    return {
        "apiVersion": API,
        "kind": b["kind"],
        "metadata": {"name": objects.name(f"invalid-{base}")},
        "spec": _merge(b["spec"], spec_patch),
    }


PATTERN = "in body should match"
IPV6_RULE = "must be host:port with a valid IPv6 address inside the brackets"
CIDR_RULE = "must be a valid IPv4 CIDR such as 172.20.0.0/16"

INVALID_SPECS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    # --- WireKubeMesh
    (
        "mesh-bad-relay-mode",
        "mesh",
        {"relay": {"mode": "sometimes"}},
        [
            'spec.relay.mode: Unsupported value: "sometimes": supported values: '
            '"auto", "always", "never"'
        ],
    ),
    (
        "mesh-bad-provider",
        "mesh",
        {"relay": {"provider": "cloud"}},
        [
            'spec.relay.provider: Unsupported value: "cloud": supported values: '
            '"external", "managed"'
        ],
    ),
    (
        "mesh-external-without-endpoint",
        "mesh",
        {"relay": {"provider": "external"}},
        [
            "spec.relay.external: Required value: spec.relay.external.endpoint is required "
            "when spec.relay.provider is external"
        ],
    ),
    (
        "mesh-external-block-without-endpoint",
        "mesh",
        {"relay": {"provider": "external", "external": {"transport": "tcp"}}},
        ["spec.relay.external.endpoint is required when spec.relay.provider is external"],
    ),
    (
        "mesh-external-bad-transport",
        "mesh",
        {
            "relay": {
                "provider": "external",
                "external": {"endpoint": "relay.example.com:3478", "transport": "udp"},
            }
        },
        ['spec.relay.external.transport: Unsupported value: "udp": supported values: "tcp"'],
    ),
    (
        "mesh-external-endpoint-without-port",
        "mesh",
        {"relay": {"provider": "external", "external": {"endpoint": "relay.example.com"}}},
        [
            f'spec.relay.external.endpoint: Invalid value: "relay.example.com": '
            f"spec.relay.external.endpoint {PATTERN}"
        ],
    ),
    (
        "mesh-one-stun-server",
        "mesh",
        {"stunServers": ["stun1.example.com:3478"]},
        [
            "spec.stunServers: Invalid value: 1: spec.stunServers in body should have at least "
            "2 items"
        ],
    ),
    (
        "mesh-duplicate-stun-servers",
        "mesh",
        {"stunServers": ["stun1.example.com:3478", "stun1.example.com:3478"]},
        ['spec.stunServers[1]: Duplicate value: "stun1.example.com:3478"'],
    ),
    (
        "mesh-stun-server-without-port",
        "mesh",
        {"stunServers": ["stun1.example.com", "198.51.100.7:3478"]},
        [f'spec.stunServers[0]: Invalid value: "stun1.example.com": spec.stunServers[0] {PATTERN}'],
    ),
    (
        "mesh-stun-server-bad-ipv6",
        "mesh",
        {"stunServers": ["[2001:db8::1::2]:3478", "198.51.100.7:3478"]},
        [f'spec.stunServers[0]: Invalid value: "string": {IPV6_RULE}'],
    ),
    (
        "mesh-listen-port-zero",
        "mesh",
        {"listenPort": 0},
        [
            "spec.listenPort: Invalid value: 0: spec.listenPort in body should be greater than or "
            "equal to 1"
        ],
    ),
    (
        "mesh-listen-port-too-big",
        "mesh",
        {"listenPort": 65536},
        ["spec.listenPort in body should be less than or equal to 65535"],
    ),
    (
        "mesh-mtu-too-small",
        "mesh",
        {"mtu": 1279},
        ["spec.mtu: Invalid value: 1279: spec.mtu in body should be greater than or equal to 1280"],
    ),
    (
        "mesh-mtu-too-big",
        "mesh",
        {"mtu": 9001},
        ["spec.mtu in body should be less than or equal to 9000"],
    ),
    (
        "mesh-interface-name-too-long",
        "mesh",
        {"interfaceName": "wire_kube_too_long"},
        [f'spec.interfaceName: Invalid value: "wire_kube_too_long": spec.interfaceName {PATTERN}'],
    ),
    (
        "mesh-handshake-timeout-zero",
        "mesh",
        {"relay": {"handshakeTimeoutSeconds": 0}},
        ["spec.relay.handshakeTimeoutSeconds in body should be greater than or equal to 1"],
    ),
    (
        "mesh-direct-retry-zero",
        "mesh",
        {"relay": {"directRetryIntervalSeconds": 0}},
        ["spec.relay.directRetryIntervalSeconds in body should be greater than or equal to 1"],
    ),
    (
        "mesh-managed-negative-replicas",
        "mesh",
        {"relay": {"managed": {"replicas": -1}}},
        ["spec.relay.managed.replicas in body should be greater than or equal to 0"],
    ),
    (
        "mesh-managed-bad-service-type",
        "mesh",
        {"relay": {"managed": {"serviceType": "ExternalName"}}},
        [
            'spec.relay.managed.serviceType: Unsupported value: "ExternalName": supported values: '
            '"ClusterIP", "NodePort", "LoadBalancer"'
        ],
    ),
    (
        "mesh-managed-port-zero",
        "mesh",
        {"relay": {"managed": {"port": 0}}},
        ["spec.relay.managed.port in body should be greater than or equal to 1"],
    ),
    (
        "mesh-managed-external-ip-not-an-ip",
        "mesh",
        {"relay": {"managed": {"externalIPs": ["relay.example.com"]}}},
        ["spec.relay.managed.externalIPs[0]: Invalid value", "must be an IPv4 or IPv6 address"],
    ),
    # --- WireKubePeer
    ("peer-missing-public-key", "peer", {"publicKey": None}, ["spec.publicKey: Required value"]),
    (
        "peer-malformed-public-key",
        "peer",
        {"publicKey": "not-a-wireguard-key"},
        [f'spec.publicKey: Invalid value: "not-a-wireguard-key": spec.publicKey {PATTERN}'],
    ),
    # 32 bytes need 43 base64 characters; the last one can only be one of 16.
    (
        "peer-public-key-bad-last-char",
        "peer",
        {"publicKey": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh="},
        [f"spec.publicKey {PATTERN}"],
    ),
    (
        "peer-public-key-33-bytes",
        "peer",
        {"publicKey": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8DgA"},
        [f"spec.publicKey {PATTERN}"],
    ),
    (
        "peer-endpoint-without-port",
        "peer",
        {"endpoint": "203.0.113.5"},
        [f'spec.endpoint: Invalid value: "203.0.113.5": spec.endpoint {PATTERN}'],
    ),
    (
        "peer-endpoint-port-zero",
        "peer",
        {"endpoint": "203.0.113.5:0"},
        [f"spec.endpoint {PATTERN}"],
    ),
    (
        "peer-endpoint-port-too-big",
        "peer",
        {"endpoint": "203.0.113.5:65536"},
        [f"spec.endpoint {PATTERN}"],
    ),
    (
        "peer-endpoint-bad-ipv4",
        "peer",
        {"endpoint": "300.0.113.5:51820"},
        [f'spec.endpoint: Invalid value: "300.0.113.5:51820": spec.endpoint {PATTERN}'],
    ),
    (
        "peer-endpoint-unbracketed-ipv6",
        "peer",
        {"endpoint": "2001:db8::1:51820"},
        [f"spec.endpoint {PATTERN}"],
    ),
    (
        "peer-endpoint-bad-ipv6",
        "peer",
        {"endpoint": "[2001:db8::1::2]:51820"},
        [f'spec.endpoint: Invalid value: "string": {IPV6_RULE}'],
    ),
    (
        "peer-allowed-ip-not-cidr",
        "peer",
        {"allowedIPs": ["10.0.0.5"]},
        ['spec.allowedIPs[0]: Invalid value: "string": must be a CIDR such as 10.0.0.5/32'],
    ),
    (
        "peer-allowed-ip-prefix-too-long",
        "peer",
        {"allowedIPs": ["10.0.0.0/8", "10.0.0.5/33"]},
        ['spec.allowedIPs[1]: Invalid value: "string": must be a CIDR'],
    ),
    (
        "peer-keepalive-too-big",
        "peer",
        {"persistentKeepalive": 65536},
        ["spec.persistentKeepalive in body should be less than or equal to 65535"],
    ),
    # --- WireKubeGateway
    (
        "gw-empty-peer-refs",
        "gw",
        {"peerRefs": []},
        ["spec.peerRefs: Invalid value: 0: spec.peerRefs in body should have at least 1 items"],
    ),
    ("gw-missing-peer-refs", "gw", {"peerRefs": None}, ["spec.peerRefs: Required value"]),
    (
        "gw-empty-routes",
        "gw",
        {"routes": []},
        ["spec.routes: Invalid value: 0: spec.routes in body should have at least 1 items"],
    ),
    (
        "gw-route-without-prefix",
        "gw",
        {"routes": [{"cidr": "172.20.0.0"}]},
        [
            'spec.routes[0].cidr: Invalid value: "172.20.0.0": spec.routes[0].cidr in body should '
            "match '^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$'"
        ],
    ),
    (
        "gw-route-bad-octet",
        "gw",
        {"routes": [{"cidr": "300.20.0.0/16"}]},
        [f'spec.routes[0].cidr: Invalid value: "string": {CIDR_RULE}'],
    ),
    (
        "gw-route-prefix-too-long",
        "gw",
        {"routes": [{"cidr": "172.20.0.0/16"}, {"cidr": "172.20.0.0/33"}]},
        [f'spec.routes[1].cidr: Invalid value: "string": {CIDR_RULE}'],
    ),
    (
        "gw-route-missing-cidr",
        "gw",
        {"routes": [{"description": "no cidr"}]},
        ["spec.routes[0].cidr: Required value"],
    ),
    (
        "gw-health-interval-4",
        "gw",
        {"healthCheck": {"enabled": True, "target": "172.20.1.254:443", "intervalSeconds": 4}},
        [
            "spec.healthCheck.intervalSeconds: Invalid value: 4: spec.healthCheck.intervalSeconds "
            "in body should be greater than or equal to 5"
        ],
    ),
    (
        "gw-health-timeout-0",
        "gw",
        {"healthCheck": {"enabled": True, "target": "172.20.1.254", "timeoutSeconds": 0}},
        [
            "spec.healthCheck.timeoutSeconds: Invalid value: 0: spec.healthCheck.timeoutSeconds "
            "in body should be greater than or equal to 1"
        ],
    ),
    (
        "gw-health-failure-threshold-0",
        "gw",
        {"healthCheck": {"enabled": True, "target": "172.20.1.254", "failureThreshold": 0}},
        ["spec.healthCheck.failureThreshold in body should be greater than or equal to 1"],
    ),
    (
        "gw-health-missing-target",
        "gw",
        {"healthCheck": {"enabled": True}},
        ["spec.healthCheck.target: Required value"],
    ),
    (
        "gw-snat-missing-enabled",
        "gw",
        {"snat": {"sourceIP": "10.0.0.1"}},
        ["spec.snat.enabled: Required value"],
    ),
    (
        "gw-snat-bad-source-ip",
        "gw",
        {"snat": {"enabled": True, "sourceIP": "10.0.0"}},
        [f'spec.snat.sourceIP: Invalid value: "10.0.0": spec.snat.sourceIP {PATTERN}'],
    ),
]


@pytest.mark.parametrize(
    ("base", "patch", "messages"),
    [c[1:] for c in INVALID_SPECS],
    ids=[c[0] for c in INVALID_SPECS],
)
def test_invalid_spec_is_rejected(
    objects: Any, base: str, patch: dict[str, Any], messages: list[str]
) -> None:
    obj = _object(objects, base, patch)
    proc = objects.create(obj)
    assert proc.returncode != 0, f"accepted: {json.dumps(obj)}"
    assert f'The {obj["kind"]} "{obj["metadata"]["name"]}" is invalid' in proc.stderr
    for message in messages:
        assert message in proc.stderr, proc.stderr
    missing = objects.cp.kubectl(
        "get", obj["kind"].lower() + (".wirekube.io"), obj["metadata"]["name"], check=False
    )
    assert missing.returncode != 0 and "NotFound" in missing.stderr


VALID_SPECS: list[tuple[str, str, dict[str, Any]]] = [
    ("mesh-ipv6-and-ipv4-stun", "mesh", {"stunServers": ["[2001:db8::7]:3478", "198.51.100.7:1"]}),
    (
        "mesh-external",
        "mesh",
        {"relay": {"provider": "external", "external": {"endpoint": "[2001:db8::9]:443"}}},
    ),
    (
        "mesh-limits",
        "mesh",
        {
            "listenPort": 65535,
            "mtu": 9000,
            "interfaceName": "wk0.mesh-15char",
            "relay": {"mode": "never", "managed": {"replicas": 0, "serviceType": "NodePort"}},
        },
    ),
    (
        "mesh-managed-external-ips",
        "mesh",
        {
            "relay": {
                "managed": {
                    "serviceType": "ClusterIP",
                    "externalIPs": ["198.51.100.4", "2001:db8::4"],
                }
            }
        },
    ),
    ("peer-dns-endpoint", "peer", {"endpoint": "node-1.example.com:51820"}),
    (
        "peer-ipv6",
        "peer",
        {
            "endpoint": "[2001:db8::1]:51820",
            "allowedIPs": ["fd00::5/128", "10.0.0.5/32"],
            "persistentKeepalive": 0,
        },
    ),
    ("peer-passive", "peer", {"endpoint": None, "allowedIPs": []}),
    ("gw-minimal-with-snat", "gw", {"snat": {"enabled": False, "sourceIP": "10.0.0.1"}}),
]


@pytest.mark.parametrize(
    ("base", "patch"), [c[1:] for c in VALID_SPECS], ids=[c[0] for c in VALID_SPECS]
)
def test_valid_edge_cases_are_accepted(objects: Any, base: str, patch: dict[str, Any]) -> None:
    objects.must_create(_object(objects, base, patch))


INVALID_STATUS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "peer-nat-type",
        "peer",
        {"natType": "full-cone"},
        'status.natType: Unsupported value: "full-cone": supported values: "", "cone", "symmetric"',
    ),
    (
        "peer-transport-mode",
        "peer",
        {"transportMode": "p2p"},
        'status.transportMode: Unsupported value: "p2p"',
    ),
    (
        "peer-transports-value",
        "peer",
        {"peerTransports": {"node-x": "udp"}},
        'status.peerTransports.node-x: Unsupported value: "udp": supported values: "direct", "relay"',
    ),
    (
        "peer-discovery-method",
        "peer",
        {"endpointDiscoveryMethod": "dns"},
        'status.endpointDiscoveryMethod: Unsupported value: "dns"',
    ),
    (
        "peer-nat-mapping",
        "peer",
        {"natMapping": "cone"},
        'status.natMapping: Unsupported value: "cone"',
    ),
    (
        "peer-nat-filtering",
        "peer",
        {"natFiltering": "open"},
        'status.natFiltering: Unsupported value: "open"',
    ),
    (
        "peer-last-handshake",
        "peer",
        {"lastHandshake": "yesterday"},
        'status.lastHandshake: Invalid value: "yesterday": lastHandshake in body must be of type date-time',
    ),
    (
        "peer-internal-endpoint",
        "peer",
        {"internalEndpoint": "node-1:51820"},
        'status.internalEndpoint: Invalid value: "node-1:51820": internalEndpoint in body should match',
    ),
    (
        "peer-public-ip",
        "peer",
        {"publicIP": "203.0.113.500"},
        'status.publicIP: Invalid value: "string": must be an IPv4 or IPv6 address',
    ),
    (
        "peer-condition-without-reason",
        "peer",
        {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
        "status.conditions[0].reason: Required value",
    ),
    (
        "gw-peer-health",
        "gw",
        {"peerHealth": {"node-b1": "sick"}},
        'status.peerHealth.node-b1: Unsupported value: "sick": supported values: "healthy", '
        '"unhealthy"',
    ),
    (
        "gw-routes-injected-negative",
        "gw",
        {"routesInjected": -1},
        "status.routesInjected: Invalid value: -1: routesInjected in body should be greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(
    ("base", "status", "message"),
    [c[1:] for c in INVALID_STATUS],
    ids=[c[0] for c in INVALID_STATUS],
)
def test_invalid_status_is_rejected(
    objects: Any, base: str, status: dict[str, Any], message: str
) -> None:
    obj = objects.must_create(_object(objects, base, {}))
    proc = objects.cp.kubectl(
        "patch",
        obj["kind"].lower() + ".wirekube.io",
        obj["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=False,
    )
    assert proc.returncode != 0, "status accepted"
    assert message in proc.stderr, proc.stderr
