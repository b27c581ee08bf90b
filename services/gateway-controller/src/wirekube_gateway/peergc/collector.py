"""Peer garbage collection's loop: every tick, judge the caches
(``peergc.departed``, pure); the leader deletes what is due.

Informer caches in (the WireKubePeers, shared with the gateway reconciler,
and the labelled Nodes), deletes and Events out. docs on why and when are in
``peergc.departed``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wirekube_common.kube.watch import Informer, run_informer
from wirekube_common.supervisor import TaskFactory
from wirekube_gateway.election.leader import LeaderElection
from wirekube_gateway.kube import ApiException, ControllerApi
from wirekube_gateway.peergc.departed import (
    EVENT_REASON,
    MEMBER_SELECTOR,
    NODES_PATH,
    Candidate,
    candidates,
    describe,
    is_member,
    plan,
)
from wirekube_gateway.timers import PEER_GC_TICK_S, WRITE_TIMEOUT_S

log = logging.getLogger(__name__)


@dataclass
class Stats:
    passes: int = 0
    deleted: int = 0


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
        if not self.election.is_leader():
            return
        for peer in result.due:
            self._delete(peer)

    def _delete(self, peer: Candidate) -> None:
        try:
            node = self.api.get_node(peer.node, WRITE_TIMEOUT_S)
            if is_member(node):
                return  # back already; the informer will catch up
            self.api.delete_peer(peer.name, peer.uid, peer.resource_version, WRITE_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                self.since.pop(peer.name, None)
                return
            level = logging.DEBUG if exc.status == 409 else logging.WARNING
            log.log(
                level,
                "cannot delete peer",
                extra={"peer": peer.name, "status": exc.status, "error": str(exc.reason)},
            )
            return
        except Exception as exc:
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
