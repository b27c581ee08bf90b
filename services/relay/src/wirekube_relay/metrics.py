"""Prometheus metrics for the relay, read at scrape time from RelayStats.

A custom collector turns the plain counters of stats.py into metric families
when Prometheus scrapes (default :9090/metrics), so the hot path never pays
for a metrics library call.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
        c = CounterMetricFamily(
            "wirekube_relay_control_frames_dropped",
            "Control replies (PONG, PEER_GONE) not sent: rate limit or client not reading.",
            labels=["reason"],
        )
        for reason, n in sorted(st.control_dropped.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_receiver_stalls", "Receivers marked stalled (senders released)."
        )
        c.add_metric([], st.stalls)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_throttles",
            "Connections paused for their own rate limit (frames to unknown keys).",
        )
        c.add_metric([], st.throttles)
        yield c
        ctx = self.server.ctx
        if ctx is not None:
            g = GaugeMetricFamily(
                "wirekube_relay_max_registrations", "Registration cap of this relay."
            )
            g.add_metric([], ctx.limits.max_registrations)
            yield g


def serve_metrics(server: RelayServer, host: str, port: int) -> tuple[CollectorRegistry, int]:
    """Expose /metrics on host:port (port 0 picks one); returns the registry and port."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(server))
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return registry, httpd.server_port
