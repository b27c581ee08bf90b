"""The agent's part in a surge rollout: take the node over from the agent
before us, and hand it to the one after us (wirekube_agent.handover says
how; this module wires it to the reconciler and the metrics port).

The metrics port is also the kubelet's probe port, and with
``hostNetwork`` both agents' pods probe the node's port 9090: whichever
agent listens answers for both pods. The old agent therefore lets the port
go as it steps back, and the new one binds it as soon as it has the
sockets; from then on both pods' probes see the agent that runs the node.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from typing import TYPE_CHECKING

from wirekube_agent.handover.giver import GiverServer, Steps
from wirekube_agent.handover.taker import Handover
from wirekube_agent.relay.worker import WorkerGone
from wirekube_common.metrics import Check, MetricsServer, serve_metrics

if TYPE_CHECKING:
    from wirekube_agent.reconciler import Reconciler

log = logging.getLogger(__name__)

#: How often the new agent checks whether it may send "done".
DONE_POLL_S = 0.05
#: How often a port still held by another process is tried again.
BIND_RETRY_S = 0.5


class MetricsPort:
    """The metrics/probe server, which can be let go and taken again. A
    port still held (an old agent without handover during an upgrade) is
    retried in the background until free."""

    def __init__(self, port: int, livez: Check, readyz: Check) -> None:
        self.port = port
        self.livez, self.readyz = livez, readyz
        self.server: MetricsServer | None = None
        self._lock = threading.Lock()
        self._released = threading.Event()

    def serve(self) -> None:
        self._released.clear()
        if not self._try_bind():
            log.warning("metrics port %d is held by another process; retrying", self.port)
            threading.Thread(target=self._retry, name="metrics-bind", daemon=True).start()

    def release(self) -> None:
        self._released.set()
        with self._lock:
            server, self.server = self.server, None
        if server is not None:
            server.stop()

    def _try_bind(self) -> bool:
        with self._lock:
            if self.server is not None or self._released.is_set():
                return True
            try:
                self.server = serve_metrics(self.port, livez=self.livez, readyz=self.readyz)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return False
            return True

    def _retry(self) -> None:
        while not self._try_bind():
            time.sleep(BIND_RETRY_S)
        log.info("metrics port %d bound", self.port)


async def run(reconciler: Reconciler, taken: Handover | None, metrics: MetricsPort) -> None:
    """A supervisor task: finish taking over (if we took the node from an
    old agent), then stand ready to hand over to the next one."""
    if taken is not None:
        await _finish(reconciler, taken)
    giver = GiverServer(reconciler.settings.state_dir, _steps(reconciler, metrics)).start()
    try:
        await asyncio.Event().wait()  # until the process stops
    finally:
        giver.stop()


async def _finish(reconciler: Reconciler, taken: Handover) -> None:
    """Send "done" once our first pass ran and our relay links are up. Past
    the deadline: "done" all the same if our first pass ran, else exit (the
    task fails) so that the old agent resumes."""
    while True:
        o = reconciler.observed
        first = o.last_pass_at is not None and o.last_pass_ok
        bridge = reconciler.relays.bridge
        relay_up = False
        if first and bridge is not None:
            try:
                relay_up = bool(await asyncio.to_thread(bridge.live_replicas))
            except (WorkerGone, ValueError):
                relay_up = False
        if taken.machine.ready(first, bridge is not None, relay_up):
            taken.done()
            log.info(
                "handover: done %.2fs after the old agent's offer",
                time.monotonic() - taken.offered_at,
            )
            return
        if taken.machine.overdue(time.monotonic()):
            if first:
                # Our pass runs the node, and the old bridge reads nothing
                # since "quiet": the node is ours even without a relay link.
                log.warning("handover: no relay link up in time; taking the node anyway")
                taken.done()
                return
            taken.abandon()
            raise RuntimeError("handover: no first pass in time; exiting so the old agent resumes")
        await asyncio.sleep(DONE_POLL_S)


def _steps(reconciler: Reconciler, metrics: MetricsPort) -> Steps:
    def offer() -> dict[bytes, int]:
        reconciler.freeze()
        metrics.release()
        try:
            return reconciler.relays.export()
        except (WorkerGone, ValueError) as exc:
            log.warning("handover: no relay sockets to give (%s)", exc)
            return {}

    def quiesce() -> None:
        reconciler.relays.quiesce()

    def retire() -> None:
        reconciler.retired = True
        reconciler.relays.stop()

    def resume() -> None:
        reconciler.relays.resume()
        metrics.serve()
        reconciler.unfreeze()

    return Steps(offer=offer, quiesce=quiesce, retire=retire, resume=resume)
