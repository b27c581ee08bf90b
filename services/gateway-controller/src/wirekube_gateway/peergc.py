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

Layout: ``candidates`` / ``plan`` / ``describe`` are pure (unit-tested);
``PeerCollector`` is the thin loop around them (informer caches in, deletes
and Events out).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_common.crd import NODE_LABEL
from wirekube_common.kube.watch import Informer, run_informer
from wirekube_common.supervisor import TaskFactory
from wirekube_gateway.kube import ApiException, ControllerApi
from wirekube_gateway.leader import LeaderElection
from wirekube_gateway.timers import (
    PEER_GC_MAX_DELETES_PER_PASS,
    PEER_GC_TICK_S,
    WRITE_TIMEOUT_S,
)

log = logging.getLogger(__name__)

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


@dataclass
class Stats:
    passes: int = 0
    deleted: int = 0
    delete_errors: int = 0
    departed: int = 0  # peers waiting out their grace, as of the last pass


class PeerCollector:
    """The loop: every tick, judge the caches; the leader deletes what is due."""

    def __init__(
        self,
        api: ControllerApi,
        election: LeaderElection,
        grace_s: float,
        peers: Informer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.election = election
        self.grace_s = grace_s
        self.peers = peers  # shared with the gateway reconciler
        self.clock = clock
        self.nodes = Informer(
            "mesh-nodes", api.new_rest(), NODES_PATH, lambda: None, label_selector=MEMBER_SELECTOR
        )
        self.since: dict[str, float] = {}
        self.stats = Stats()

    def tasks(self, stop: threading.Event) -> dict[str, TaskFactory]:
        """The supervisor tasks: the node watch and the collection loop (none when disabled)."""
        if self.grace_s <= 0:
            log.info("peer garbage collection disabled (--peer-gc-grace 0)")
            return {}
        return {
            f"watch-{self.nodes.name}": functools.partial(run_informer, self.nodes, stop),
            "peer-gc": self.run,
        }

    def stop(self) -> None:
        self.nodes.stop()

    async def run(self) -> None:
        while not (self.nodes.synced.is_set() and self.peers.synced.is_set()):
            await asyncio.sleep(0.2)
        while True:
            try:
                await asyncio.to_thread(self.collect)
            except Exception:
                log.exception("peer GC pass failed; retrying on the next tick")
            await asyncio.sleep(PEER_GC_TICK_S)

    def collect(self) -> None:
        now = self.clock()
        members = frozenset(self.nodes.snapshot())
        before = set(self.since)
        result = plan(candidates(self.peers.snapshot()), members, self.since, now, self.grace_s)
        for name in result.since.keys() - before:
            log.info(
                "peer's node left the mesh; deleting it after the grace period",
                extra={"peer": name, "grace_s": self.grace_s},
            )
        for name in before - result.since.keys():
            log.info("peer's node is back in the mesh; keeping it", extra={"peer": name})
        self.since = result.since
        self.stats.passes += 1
        self.stats.departed = len(result.waiting)
        if not self.election.is_leader():
            return
        for peer in result.due:
            self._delete(peer)

    def _delete(self, peer: Candidate) -> None:
        try:
            node = self.api.get_node(peer.node, WRITE_TIMEOUT_S)
            if (
                node is not None
                and ((node.get("metadata") or {}).get("labels") or {}).get(VPN_LABEL) == "true"
            ):
                return  # back already; the informer will catch up
            self.api.delete_peer(peer.name, peer.uid, peer.resource_version, WRITE_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                self.since.pop(peer.name, None)
                return
            self.stats.delete_errors += 1
            level = logging.DEBUG if exc.status == 409 else logging.WARNING
            log.log(
                level,
                "cannot delete peer",
                extra={"peer": peer.name, "status": exc.status, "error": str(exc.reason)},
            )
            return
        except Exception as exc:
            self.stats.delete_errors += 1
            log.warning(
                "cannot delete peer",
                extra={"peer": peer.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        self.since.pop(peer.name, None)
        self.stats.deleted += 1
        message = describe(peer, node, self.grace_s)
        log.info(message, extra={"peer": peer.name, "node": peer.node})
        try:
            self.api.record_peer_event(peer.name, peer.uid, EVENT_REASON, message, WRITE_TIMEOUT_S)
        except Exception as exc:  # events are best effort
            log.debug("event not recorded", extra={"peer": peer.name, "error": str(exc)})
