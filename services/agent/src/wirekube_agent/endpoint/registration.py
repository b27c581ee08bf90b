"""This node's own WireKubePeer: what it should say, as a create body or a patch. Pure.

``register`` is the pass's decision (called from ``decide``): the write to
make this pass, if any, and the token that says it was made. The reconciler
only performs it.

The agent owns ``publicKey`` and ``endpoint``. ``allowedIPs`` defaults to the
node's InternalIP/32 but belongs to the user as soon as they change it: the
agent records the value it last wrote in an annotation, and only rewrites the
field while it still holds exactly that value. ``persistentKeepalive`` is set
once when absent and left alone afterwards.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_agent.model import NodeInfo
from wirekube_agent.timers import DEFAULT_PERSISTENT_KEEPALIVE_S
from wirekube_common.crd import API_VERSION, NODE_LABEL, peer_name_for_node

MANAGED_ALLOWED_IPS = "wirekube.io/agent-allowed-ips"


def default_allowed_ips(node: NodeInfo) -> list[str]:
    ip = node.primary_ip
    if ip is None:
        return []
    return [str(ipaddress.ip_network(ip))]


def create_body(node: NodeInfo, public_key: str, endpoint: str | None) -> dict[str, Any]:
    allowed = default_allowed_ips(node)
    spec: dict[str, Any] = {
        "publicKey": public_key,
        "allowedIPs": allowed,
        "persistentKeepalive": DEFAULT_PERSISTENT_KEEPALIVE_S,
    }
    if endpoint:
        spec["endpoint"] = endpoint
    metadata: dict[str, Any] = {
        "name": peer_name_for_node(node.name),
        "labels": {NODE_LABEL: node.name},
        "annotations": {MANAGED_ALLOWED_IPS: ",".join(allowed)},
    }
    if node.uid:
        # Garbage-collected with its Node: a deleted node leaves no stale peer.
        metadata["ownerReferences"] = [_owner(node)]
    return {"apiVersion": API_VERSION, "kind": "WireKubePeer", "metadata": metadata, "spec": spec}


def _owner(node: NodeInfo) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}


def patch_for(
    existing: Mapping[str, Any], node: NodeInfo, public_key: str, endpoint: str | None
) -> dict[str, Any] | None:
    """A JSON merge patch bringing ``existing`` in line, or None if it already is."""
    meta = existing.get("metadata") or {}
    spec = existing.get("spec") or {}
    spec_patch: dict[str, Any] = {}
    meta_patch: dict[str, Any] = {}
    if spec.get("publicKey") != public_key:
        spec_patch["publicKey"] = public_key
    if endpoint and spec.get("endpoint") != endpoint:
        spec_patch["endpoint"] = endpoint
    if spec.get("persistentKeepalive") is None:
        spec_patch["persistentKeepalive"] = DEFAULT_PERSISTENT_KEEPALIVE_S
    annotations = meta.get("annotations") or {}
    current = spec.get("allowedIPs")
    recorded = annotations.get(MANAGED_ALLOWED_IPS)
    agent_owned = current is None or (recorded is not None and ",".join(current) == recorded)
    wanted = default_allowed_ips(node)
    if agent_owned and wanted and current != wanted:
        spec_patch["allowedIPs"] = wanted
        meta_patch.setdefault("annotations", {})[MANAGED_ALLOWED_IPS] = ",".join(wanted)
    if (meta.get("labels") or {}).get(NODE_LABEL) != node.name:
        meta_patch["labels"] = {NODE_LABEL: node.name}
    if node.uid and not any(
        ref.get("kind") == "Node" and ref.get("uid") == node.uid
        for ref in meta.get("ownerReferences") or []
    ):
        meta_patch["ownerReferences"] = [_owner(node)]
    patch: dict[str, Any] = {}
    if spec_patch:
        patch["spec"] = spec_patch
    if meta_patch:
        patch["metadata"] = meta_patch
    return patch or None


#: (our copy's resourceVersion, the write as JSON): a write already made
#: against that copy of our object.
Token = tuple[str, str]


@dataclass(frozen=True)
class Registration:
    """The write that brings our WireKubePeer in line: a create or a merge patch."""

    create: bool
    body: dict[str, Any]
    token: Token  # recorded once the write is made (``register``'s ``sent``)


def register(
    existing: Mapping[str, Any] | None,
    node: NodeInfo,
    public_key: str,
    endpoint: str | None,
    sent: Token | None,
) -> Registration | None:
    """What to write to our own WireKubePeer this pass, or None.

    ``existing``: our object as our watch shows it; ``endpoint``: the one
    discovered (``endpoint.discovery``), formatted; ``sent``: the token of the
    last write made. Our copy of our own object can lag our writes (a watch
    that went silent behind a NAT that forgot it): the same write against the
    same copy was already made, so wait for the copy instead of repeating it.
    """
    body = (
        create_body(node, public_key, endpoint)
        if existing is None
        else patch_for(existing, node, public_key, endpoint)
    )
    if body is None:
        return None
    rv = str(((existing or {}).get("metadata") or {}).get("resourceVersion", ""))
    token = (rv, json.dumps(body, sort_keys=True))
    if token == sent:
        return None
    return Registration(existing is None, body, token)
