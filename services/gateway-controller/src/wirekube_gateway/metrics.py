"""Prometheus metrics and health on one HTTP port (:9090 by default).

``/metrics``: a custom collector reads the controller's last pass at scrape
time, so a deleted gateway or peer disappears from the output at once (no
stale label sets) and the reconcile loop does no metric bookkeeping.

``/livez``: 200 while both the reconcile loop and the election loop keep
making progress (each within ``STALL_S``), 503 otherwise. A standby is
healthy; leadership is a metric, not a liveness condition (restarting a
healthy standby would only lose its warm caches). ``/readyz``: alive and every
informer has synced. The server is the shared one (wirekube_common.metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wirekube_common.gwhealth.checker import State
from wirekube_gateway.gateways.reconciler import Controller
from wirekube_gateway.gateways.status import ready_condition
from wirekube_gateway.timers import STALL_S


class ControllerCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        c, election = self.c, self.c.election
        yield GaugeMetricFamily(
            "wirekube_gateway_controller_leader",
            "1 while this replica holds the leader-election Lease and acts",
            value=1.0 if election.is_leader() else 0.0,
        )
        yield CounterMetricFamily(
            "wirekube_gateway_controller_leader_acquisitions",
            "Times this replica became leader",
            value=float(election.became_leader),
        )
        ready = GaugeMetricFamily(
            "wirekube_gateway_ready", "1 when the gateway is ready", labels=["gateway"]
        )
        active = GaugeMetricFamily(
            "wirekube_gateway_active_peer",
            "1 for the peer currently active for the gateway",
            labels=["gateway", "peer"],
        )
        routes = GaugeMetricFamily(
            "wirekube_gateway_routes_injected",
            "Route CIDRs the active peer carries",
            labels=["gateway"],
        )
        health = GaugeMetricFamily(
            "wirekube_gateway_peer_health",
            "1 for each gateway peerRef's current health verdict (healthy, unhealthy, unknown)",
            labels=["gateway", "peer", "state"],
        )
        clients = GaugeMetricFamily(
            "wirekube_gateway_clients",
            "WireKubePeers that route the gateway's CIDRs through its active peer",
            labels=["gateway"],
        )
        changes = CounterMetricFamily(
            "wirekube_gateway_active_peer_changes",
            "Active-peer changes written by this replica",
            labels=["gateway"],
        )
        for name, o in sorted(c.outcomes.items()):
            ready.add_metric([name], 1.0 if ready_condition(o)[0] else 0.0)
            if o.active:
                active.add_metric([name, o.active], 1.0)
            routes.add_metric([name], float(o.routes_injected))
            clients.add_metric([name], float(o.clients))
            for peer, verdict in sorted(o.verdicts.items()):
                for state in State:
                    health.add_metric([name, peer, state.value], float(verdict.state == state))
        for name, count in sorted(c.stats.active_changes.items()):
            if name in c.outcomes:  # a deleted gateway's count goes with it
                changes.add_metric([name], float(count))
        yield from (ready, active, routes, clients, health, changes)
        yield CounterMetricFamily(
            "wirekube_gateway_status_writes",
            "Status patches written",
            value=float(c.stats.status_writes),
        )
        yield CounterMetricFamily(
            "wirekube_gateway_status_write_errors",
            "Status patches that failed",
            value=float(c.stats.write_errors),
        )
        yield CounterMetricFamily(
            "wirekube_gateway_controller_passes",
            "Reconcile passes run",
            value=float(c.stats.passes),
        )
        yield GaugeMetricFamily(
            "wirekube_gateway_controller_pass_duration_seconds",
            "Duration of the last reconcile pass",
            value=c.stats.pass_seconds,
        )
        yield CounterMetricFamily(
            "wirekube_gateway_controller_api_requests",
            "Requests made to the Kubernetes API (lists, watches, writes)",
            value=float(c.api.requests),
        )
        watch = GaugeMetricFamily(
            "wirekube_gateway_controller_watch_healthy",
            "1 while the watch on a resource is healthy",
            labels=["resource"],
        )
        for informer in c.informers:
            watch.add_metric([informer.name], 1.0 if informer.healthy else 0.0)
        yield watch


def liveness(
    controller: Controller, clock: Callable[[], float] = time.monotonic
) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        now = clock()
        stalled = []
        if now - controller.stats.last_pass > STALL_S:
            stalled.append("reconcile")
        if now - controller.election.last_attempt > STALL_S:
            stalled.append("leader-election")
        if stalled:
            return False, f"stalled: {', '.join(stalled)}"
        role = "leader" if controller.election.is_leader() else "standby"
        return True, f"ok ({role})"

    return check


def readiness(
    controller: Controller, clock: Callable[[], float] = time.monotonic
) -> Callable[[], tuple[bool, str]]:
    alive = liveness(controller, clock)

    def check() -> tuple[bool, str]:
        ok, why = alive()
        if not ok:
            return ok, why
        waiting = [i.name for i in controller.informers if not i.synced.is_set()]
        if waiting:
            return False, f"informers not synced: {', '.join(waiting)}"
        return True, why

    return check
