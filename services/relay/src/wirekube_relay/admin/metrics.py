"""Prometheus metrics for the relay, read at scrape time from RelayStats.

A custom collector turns the plain counters of admin/stats.py into metric families
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
        yield from self.mesh_metrics()

    def mesh_metrics(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Local vs replica-mesh forwarding, links and presence (docs/relay-mesh.md)."""
        st = self.server.stats
        mesh = self.server.mesh
        frames = CounterMetricFamily(
            "wirekube_relay_routed_frames",
            "Data frames by path: from a local client to a local one, to another replica, "
            "or from another replica to a local client.",
            labels=["path"],
        )
        nbytes = CounterMetricFamily(
            "wirekube_relay_routed_bytes", "Bytes of data frames by path.", labels=["path"]
        )
        frames.add_metric(["local"], st.frames_forwarded - st.mesh_frames_out)
        frames.add_metric(["to-replica"], st.mesh_frames_out)
        frames.add_metric(["from-replica"], st.mesh_frames_in)
        nbytes.add_metric(["local"], st.bytes_forwarded - st.mesh_bytes_out)
        nbytes.add_metric(["to-replica"], st.mesh_bytes_out)
        nbytes.add_metric(["from-replica"], st.mesh_bytes_in)
        yield frames
        yield nbytes
        g = GaugeMetricFamily("wirekube_relay_mesh_links_up", "Authenticated replica links.")
        g.add_metric([], mesh.links_up() if mesh is not None else 0)
        yield g
        g = GaugeMetricFamily(
            "wirekube_relay_mesh_presence_keys",
            "Presence table size: keys registered here plus keys other replicas announced.",
        )
        g.add_metric([], len(mesh.presence) if mesh is not None else 0)
        yield g
        c = CounterMetricFamily(
            "wirekube_relay_mesh_links_established",
            "Replica links that came up to a replica that had none (duplicates swapped: not counted).",
        )
        c.add_metric([], st.mesh_links_established)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_mesh_auth_failures",
            "Refused replica handshakes, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(st.mesh_auth_failures.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily(
            "wirekube_relay_mesh_links_closed",
            "Replica links closed, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(st.mesh_closes.items()):
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
