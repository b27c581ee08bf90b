"""Peer garbage collection: the WireKubePeer of a node that left the mesh goes.

Why the controller does it: the agent may not delete peers (least privilege:
a compromised node could otherwise delete everyone's), and a node that left
cannot clean up after itself - its Node may be gone, or its label removed so
its agent stops taking part. A Node's deletion is covered by the peer's
ownerReference only where kube-controller-manager's garbage collector runs;
a removed ``wirekube.io/vpn-enabled`` label is covered by nothing else. Until
the peer goes, every other agent keeps the departed node's key and routes.

Which peers: only those carrying the ``wirekube.io/node`` label, the agent's
mark "this is node N's peer" (the admission policy keeps agents from forging
it). A peer without it was made by hand for some other purpose and is never
touched.

Departed: no Node named N labelled ``wirekube.io/vpn-enabled=true`` exists
(the Node is gone, or it lost the label). The node informer watches only
labelled Nodes, so both cases look alike; which one it was is read once, for
the Event, when the peer is deleted.

Grace: a peer is deleted only after it has been departed continuously for
the grace period (``--peer-gc-grace``), measured from when this process first
saw it departed. A node that comes back in time (relabelled, re-registered)
keeps its peer, and its timer starts over if it leaves again. Standbys keep
the timers too, so a new leader does not start from zero; only the leader
deletes. A delete carries the uid and resourceVersion it was decided on: a
peer re-created or re-written meanwhile is refused (409) and judged again.

This module is the decision, pure (unit-tested): ``candidates``, ``plan``
(departed since when, due for deletion), ``describe`` (the Event) and
``is_member`` (the re-read before a delete). ``peergc.collector`` is the
thin loop around it (informer caches in, deletes and Events out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_common.crd import NODE_LABEL
from wirekube_gateway.timers import PEER_GC_MAX_DELETES_PER_PASS

VPN_LABEL = "wirekube.io/vpn-enabled"
MEMBER_SELECTOR = f"{VPN_LABEL}=true"
NODES_PATH = "/api/v1/nodes"
EVENT_REASON = "NodeLeftMesh"


@dataclass(frozen=True)
class Candidate:
    """A peer that names its node (``wirekube.io/node``)."""

    name: str
    node: str
    uid: str
    resource_version: str


@dataclass(frozen=True)
class Plan:
    since: dict[str, float]  # peer name -> when first seen departed (this run)
    due: tuple[Candidate, ...]  # departed for the whole grace period: delete now
    waiting: dict[str, float]  # peer name -> seconds of grace left


def candidates(peers: Mapping[str, Mapping[str, Any]]) -> list[Candidate]:
    """Peers carrying a non-empty node label, from raw objects (anything else is skipped)."""
    out = []
    for name, obj in sorted(peers.items()):
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            continue
        labels = meta.get("labels")
        node = labels.get(NODE_LABEL) if isinstance(labels, Mapping) else None
        if not isinstance(node, str) or not node:
            continue
        out.append(
            Candidate(
                name=name,
                node=node,
                uid=str(meta.get("uid") or ""),
                resource_version=str(meta.get("resourceVersion") or ""),
            )
        )
    return out


def plan(
    peers: list[Candidate],
    members: frozenset[str] | set[str],
    since: Mapping[str, float],
    now: float,
    grace_s: float,
    limit: int = PEER_GC_MAX_DELETES_PER_PASS,
) -> Plan:
    """Which peers are departed, since when, and which are due for deletion.

    A peer whose node is a member drops its timer; a departed one keeps the
    earliest time it was seen departed. At most ``limit`` are due per pass,
    oldest first (a mass departure is worked off over a few passes)."""
    new_since: dict[str, float] = {}
    overdue: list[tuple[float, Candidate]] = []
    waiting: dict[str, float] = {}
    for peer in peers:
        if peer.node in members:
            continue
        first = since.get(peer.name, now)
        new_since[peer.name] = first
        left = first + grace_s - now
        if left <= 0:
            overdue.append((first, peer))
        else:
            waiting[peer.name] = left
    overdue.sort(key=lambda item: (item[0], item[1].name))
    return Plan(new_since, tuple(p for _, p in overdue[:limit]), waiting)


def describe(peer: Candidate, node: Mapping[str, Any] | None, grace_s: float) -> str:
    """The Event message: why the peer went (``node`` is the Node read at deletion)."""
    if node is None:
        why = f"Node {peer.node} is gone"
    else:
        labels = (node.get("metadata") or {}).get("labels") or {}
        value = labels.get(VPN_LABEL)
        why = (
            f"Node {peer.node} is not labelled {MEMBER_SELECTOR}"
            if value is None
            else f"Node {peer.node} is labelled {VPN_LABEL}={value}, not true"
        )
    return f"{why} (for {grace_s:g}s): deleted its WireKubePeer {peer.name}"


def is_member(node: Mapping[str, Any] | None) -> bool:
    """A Node (as read just before a delete) that is in the mesh again."""
    if node is None:
        return False
    return ((node.get("metadata") or {}).get("labels") or {}).get(VPN_LABEL) == "true"
