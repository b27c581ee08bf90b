"""Prometheus metrics for the relay, read at scrape time from RelayStats.

A custom collector turns the plain counters of stats.py into metric families
when Prometheus scrapes (default :9090/metrics), so the hot path never pays
for a metrics library call.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wirekube_common.heartbeat import Heartbeat
from wirekube_common.metrics import Check, MetricsServer
from wirekube_relay.server import RelayServer


class RelayCollector(Collector):
    def __init__(self, server: RelayServer) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        st = self.server.stats
        conns, peers = self.server.counts()
        g = GaugeMetricFamily("wirekube_relay_connections", "Open TCP connections.")
        g.add_metric([], conns)
        yield g
        g = GaugeMetricFamily("wirekube_relay_registered_peers", "Connections with a proven key.")
        g.add_metric([], peers)
        yield g
        g = GaugeMetricFamily(
            "wirekube_relay_allowlist_keys", "Keys admitted by the allow-list (0 when disabled)."
        )
        g.add_metric([], len(self.server.auth.allowlist))
        yield g
        c = CounterMetricFamily("wirekube_relay_connections_accepted", "TCP connections accepted.")
        c.add_metric([], st.connections_total)
        yield c
        c = CounterMetricFamily("wirekube_relay_registrations", "Successful registrations.")
        c.add_metric([], st.registrations)
        yield c
        c = CounterMetricFamily("wirekube_relay_frames_forwarded", "Data frames forwarded.")
        c.add_metric([], st.frames_forwarded)
        yield c
        c = CounterMetricFamily("wirekube_relay_bytes_forwarded", "Bytes of data frames forwarded.")
        c.add_metric([], st.bytes_forwarded)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_frames_dropped", "Data frames dropped, by reason.", labels=["reason"]
        )
        for reason, n in sorted(st.drops.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_auth_failures", "Failed registrations, by reason.", labels=["reason"]
        )
        for reason, n in sorted(st.auth_failures.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_connections_closed", "Connections closed, by reason.", labels=["reason"]
        )
        for reason, n in sorted(st.closes.items()):
            c.add_metric([reason], n)
        yield c


def health_checks(server: RelayServer, heartbeat: Heartbeat) -> tuple[Check, Check]:
    """/livez: the event loop turns. /readyz: it turns, the relay port accepts,
    and the allow-list (when enabled) has synced (before that every peer would
    be refused)."""

    def ready() -> tuple[bool, str]:
        alive, why = heartbeat.check()
        if not alive:
            return alive, why
        if not server.listening:
            return False, f"not listening on {server.host}:{server.port}"
        if server.auth.allowlist.enabled and not server.auth.allowlist.ready:
            return False, "allow-list not synced from the API server yet"
        return True, f"ok: listening on {server.host}:{server.port}"

    return heartbeat.check, ready


def serve_metrics(
    server: RelayServer, host: str, port: int, heartbeat: Heartbeat
) -> tuple[CollectorRegistry, int]:
    """Expose /metrics, /livez, /readyz on host:port (port 0 picks one);
    returns the registry and port."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(server))
    livez, readyz = health_checks(server, heartbeat)
    http = MetricsServer(host, port, registry, livez, readyz).start()
    return registry, http.port
