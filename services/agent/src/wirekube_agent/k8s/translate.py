"""API objects → the agent's model. Pure: no client, no I/O.

This is the only place that decides whether another node's WireKubePeer is
usable. A bad object is rejected with a reason (the caller logs it and records
a Kubernetes Event) and never reaches the data plane; a merely unusable field
(an endpoint that is a DNS name) degrades to "unknown" instead of rejecting the
whole peer, because WireGuard can still accept that peer's handshakes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from wirekube_agent.model import Endpoint, IPAddress, IPNetwork, NodeInfo, RemotePeer
from wirekube_common import wgkey
from wirekube_common.crd import InvalidObject, Peer
from wirekube_common.wireguard.types import parse_endpoint

VPN_LABEL = "wirekube.io/vpn-enabled"
ENDPOINT_ANNOTATION = "wirekube.io/endpoint"


class PeerRejected(ValueError):
    """A WireKubePeer the agent will not configure; the message says why."""


def peer_from_object(obj: Mapping[str, Any]) -> RemotePeer:
    try:
        peer = Peer.from_dict(obj)
    except InvalidObject as exc:
        raise PeerRejected(str(exc)) from exc
    try:
        key = wgkey.decode(peer.spec.public_key)
    except wgkey.InvalidKey as exc:
        raise PeerRejected(f"spec.publicKey: {exc}") from exc
    allowed: list[IPNetwork] = []
    for text in peer.spec.allowed_ips or ():
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise PeerRejected(f"spec.allowedIPs: {text!r} is not a CIDR") from exc
        if net.prefixlen == 0:
            # A default route inside the mesh table would pull all of the node's
            # traffic into one peer; gateways use WireKubeGateway routes instead.
            raise PeerRejected(f"spec.allowedIPs: {text!r} would capture all traffic")
        allowed.append(net)
    keepalive = peer.spec.persistent_keepalive
    if keepalive is not None and not 0 <= keepalive <= 65535:
        raise PeerRejected(f"spec.persistentKeepalive: {keepalive} out of range")
    status = peer.status
    return RemotePeer(
        name=peer.name,
        public_key=key,
        endpoint=_endpoint_or_none(peer.spec.endpoint),
        allowed_ips=tuple(dict.fromkeys(allowed)),
        persistent_keepalive=keepalive,
        created=peer.metadata.creation_timestamp,
        nat_type=status.nat_type or "",
        nat_mapping=status.nat_mapping or "",
        nat_filtering=status.nat_filtering or "",
        internal_endpoint=_endpoint_or_none(status.internal_endpoint),
        public_ip=status.public_ip or "",
    )


def _endpoint_or_none(text: str | None) -> Endpoint | None:
    if not text:
        return None
    try:
        return parse_endpoint(text)
    except ValueError:
        return None


def node_from_object(obj: Mapping[str, Any]) -> NodeInfo:
    meta = obj.get("metadata") or {}
    internal: list[IPAddress] = []
    external: list[IPAddress] = []
    for addr in (obj.get("status") or {}).get("addresses") or []:
        try:
            ip = ipaddress.ip_address(str(addr.get("address", "")))
        except ValueError:
            continue
        if addr.get("type") == "InternalIP":
            internal.append(ip)
        elif addr.get("type") == "ExternalIP":
            external.append(ip)
    return NodeInfo(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        internal_ips=tuple(internal),
        external_ips=tuple(external),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


def node_participates(node: NodeInfo) -> bool:
    return node.labels.get(VPN_LABEL) == "true"


def endpoint_annotation(node: NodeInfo) -> Endpoint | None:
    """The manual endpoint override; raises ValueError when it is malformed."""
    text = node.annotations.get(ENDPOINT_ANNOTATION)
    if text is None:
        return None
    return parse_endpoint(text)
