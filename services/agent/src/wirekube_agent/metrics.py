"""Prometheus metrics on :9090/metrics, collected from the reconciler's last pass.

A custom collector reads the current snapshot at scrape time instead of
keeping labelled gauges up to date, so a removed peer disappears from the
output at once (no stale label sets) and the reconcile loop does no metric
bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wirekube_agent.reconciler import Reconciler


class AgentCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        obs = self.r.observed
        now = time.time()
        connected = GaugeMetricFamily(
            "wirekube_peer_connected", "1 when the peer's path is up", labels=["peer"]
        )
        transport = GaugeMetricFamily(
            "wirekube_peer_transport",
            "1 for the transport currently carrying the peer's packets",
            labels=["peer", "transport"],
        )
        handshake_age = GaugeMetricFamily(
            "wirekube_peer_last_handshake_seconds",
            "Seconds since the last WireGuard handshake with the peer",
            labels=["peer"],
        )
        rx = CounterMetricFamily(
            "wirekube_peer_receive_bytes", "Bytes received from the peer", labels=["peer"]
        )
        tx = CounterMetricFamily(
            "wirekube_peer_transmit_bytes", "Bytes sent to the peer", labels=["peer"]
        )
        for name, peer in obs.peers.items():
            path = self.r.paths.get(name)
            if path is None:
                continue
            connected.add_metric([name], 1.0 if path.routed else 0.0)
            transport.add_metric([name, path.transport], 1.0)
            state = obs.device.peers.get(peer.public_key)
            if state is not None:
                if state.last_handshake:
                    handshake_age.add_metric([name], now - state.last_handshake)
                rx.add_metric([name], float(state.rx_bytes))
                tx.add_metric([name], float(state.tx_bytes))
        yield from (connected, transport, handshake_age, rx, tx)
        yield GaugeMetricFamily(
            "wirekube_peers", "WireGuard peers configured", value=len(obs.device.peers)
        )
        yield GaugeMetricFamily(
            "wirekube_reconcile_duration_seconds",
            "Duration of the last reconcile pass",
            value=obs.reconcile_seconds,
        )
        yield CounterMetricFamily(
            "wirekube_reconciles", "Reconcile passes run", value=float(obs.reconciles)
        )
        yield CounterMetricFamily(
            "wirekube_api_writes", "Writes made to the Kubernetes API", value=float(obs.api_writes)
        )
        yield CounterMetricFamily(
            "wirekube_api_requests",
            "Requests made to the Kubernetes API (lists, watches, writes)",
            value=float(self.r.api.requests),
        )
        api_up = GaugeMetricFamily(
            "wirekube_watch_healthy",
            "1 while the watch on a resource is healthy",
            labels=["resource"],
        )
        for informer in self.r.informers:
            api_up.add_metric([informer.name], 1.0 if informer.healthy else 0.0)
        yield api_up
