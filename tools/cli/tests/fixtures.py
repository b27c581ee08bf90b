"""A small mesh as the API would return it: four nodes, one pair of each kind."""

from __future__ import annotations

from typing import Any

NOW = 1_780_000_000.0  # 2026-05-28T...Z


def iso(t: float) -> str:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def peer(node: str, key: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "wirekube.io/v1alpha1",
        "kind": "WireKubePeer",
        "metadata": {
            "name": f"node-{node}",
            "labels": {"wirekube.io/node": node},
            "creationTimestamp": iso(NOW - 3600),
        },
        "spec": {"publicKey": key, "endpoint": status.pop("_endpoint", None)},
        "status": status,
    }


def path(transport: str, rule: str, reason: str, **kw: Any) -> dict[str, Any]:
    return {
        "transport": transport,
        "phase": "up",
        "rule": rule,
        "reason": reason,
        "since": iso(NOW - 300),
        **kw,
    }


KEYS = {n: (n[-1] * 43 + "=") for n in ("home-1", "cloud-2", "cloud-5", "zone-6")}
HOME = {
    "natType": "cone",
    "natMapping": "endpoint-independent",
    "natFiltering": "address-dependent",
    "publicIP": "198.18.1.1",
    "_endpoint": "198.18.1.1:51820",
    "endpointDiscoveryMethod": "stun",
}
CLOUD2 = {
    "natType": "symmetric",
    "natMapping": "address-and-port-dependent",
    "natFiltering": "address-and-port-dependent",
    "publicIP": "198.18.2.1",
    "_endpoint": "198.18.2.1:40000",
    "endpointDiscoveryMethod": "stun",
}
CLOUD5 = {**CLOUD2, "publicIP": "198.18.5.1", "_endpoint": "198.18.5.1:40001"}
ZONE = {
    "natType": "",
    "natMapping": "",
    "natFiltering": "blocked",
    "endpointDiscoveryMethod": "internal",
    "_endpoint": "10.6.0.2:51820",
}


def mesh_objects(
    cut: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """home-1 <-> cloud-2 direct (or, ``cut``, relayed after a failure), cloud-2 <->
    cloud-5 relayed (symmetric both), zone-6 relayed to all (tcp-only)."""
    hc = (
        path("relay", "cone-symmetric", "direct-failed", failures=1, nextAttempt=iso(NOW + 74))
        if cut
        else path(
            "direct",
            "cone-symmetric",
            "probe-answered",
            rttMs=1.5,
            endpoint="198.18.2.1:40000",
            candidates=[{"endpoint": "198.18.2.1:40000", "lastAnswer": iso(NOW - 2)}],
        )
    )
    t = hc["transport"]
    tcp = lambda: path("relay", "tcp-only", "predicted-relay", nextAttempt=iso(NOW + 10))  # noqa: E731
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "SomePeersRelayed",
        "message": "x",
        "lastTransitionTime": iso(NOW - 300),
    }
    peers = [
        peer(
            "home-1",
            KEYS["home-1"],
            {
                **HOME,
                "connected": True,
                "lastHandshake": iso(NOW - 30),
                "peerTransports": {
                    "node-cloud-2": t,
                    "node-cloud-5": "direct",
                    "node-zone-6": "relay",
                },
                "peerPaths": {
                    "node-cloud-2": hc,
                    "node-zone-6": tcp(),
                    "node-cloud-5": path("direct", "cone-symmetric", "probe-answered", rttMs=2.5),
                },
                "conditions": [ready],
            },
        ),
        peer(
            "cloud-2",
            KEYS["cloud-2"],
            {
                **CLOUD2,
                "connected": True,
                "lastHandshake": iso(NOW - 30),
                "peerTransports": {
                    "node-home-1": t,
                    "node-cloud-5": "relay",
                    "node-zone-6": "relay",
                },
                "peerPaths": {
                    "node-home-1": hc,
                    "node-zone-6": tcp(),
                    "node-cloud-5": path(
                        "relay", "symmetric-symmetric", "predicted-relay", nextAttempt=iso(NOW - 5)
                    ),
                },
                "conditions": [ready],
            },
        ),
        peer(
            "cloud-5",
            KEYS["cloud-5"],
            {
                **CLOUD5,
                "connected": True,
                "lastHandshake": iso(NOW - 30),
                "peerTransports": {
                    "node-home-1": "direct",
                    "node-cloud-2": "relay",
                    "node-zone-6": "relay",
                },
                "peerPaths": {
                    "node-zone-6": tcp(),
                    "node-cloud-2": path(
                        "relay", "symmetric-symmetric", "predicted-relay", rttMs=12.0
                    ),
                },
            },
        ),
        peer(
            "zone-6",
            KEYS["zone-6"],
            {
                **ZONE,
                "connected": True,
                "lastHandshake": iso(NOW - 30),
                "peerTransports": {
                    "node-home-1": "relay",
                    "node-cloud-2": "relay",
                    "node-cloud-5": "relay",
                },
                "peerPaths": {n: tcp() for n in ("node-home-1", "node-cloud-2", "node-cloud-5")},
            },
        ),
    ]
    mesh = {
        "apiVersion": "wirekube.io/v1alpha1",
        "kind": "WireKubeMesh",
        "metadata": {"name": "default"},
        "spec": {
            "stunServers": ["198.18.0.3:3478"],
            "relay": {
                "mode": "auto",
                "provider": "external",
                "external": {"endpoint": "198.18.0.2:3478"},
                "directRetryIntervalSeconds": 15,
                "handshakeTimeoutSeconds": 5,
            },
        },
    }
    nodes = [
        {"metadata": {"name": n, "labels": {"wirekube.io/vpn-enabled": "true"}}}
        for n in ("home-1", "cloud-2", "cloud-5", "zone-6", "lonely-7")
    ]
    return peers, mesh, nodes
