"""Builders for the agent's unit tests."""

from __future__ import annotations

import ipaddress
from typing import Any

from wirekube_agent.model import NodeInfo, RemotePeer
from wirekube_common import wgkey


def key(n: int) -> bytes:
    return bytes([n]) * 32


def b64(n: int) -> str:
    return wgkey.encode(key(n))


def peer_obj(name: str, n: int, ip: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"publicKey": b64(n)}
    if ip is not None:
        body["allowedIPs"] = [f"{ip}/32"]
        body["endpoint"] = f"{ip}:51820"
    body.update(spec)
    return {
        "apiVersion": "wirekube.io/v1alpha1",
        "kind": "WireKubePeer",
        "metadata": {"name": name, "resourceVersion": "1", "uid": f"uid-{name}"},
        "spec": body,
    }


def remote(name: str, n: int, ip: str, **kw: Any) -> RemotePeer:
    return RemotePeer(
        name=name,
        public_key=key(n),
        endpoint=kw.pop("endpoint", (ip, 51820)),
        allowed_ips=kw.pop("allowed_ips", (ipaddress.ip_network(f"{ip}/32"),)),
        persistent_keepalive=kw.pop("persistent_keepalive", None),
        **kw,
    )


def node(name: str = "a", ip: str = "10.0.0.1", **kw: Any) -> NodeInfo:
    return NodeInfo(
        name=name,
        uid=kw.pop("uid", "uid-node"),
        internal_ips=(ipaddress.ip_address(ip),),
        **kw,
    )
