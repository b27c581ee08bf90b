"""Prometheus metrics on :9090/metrics, collected from the reconciler's last pass.

A custom collector reads, at scrape time, what the agent keeps anyway: the
last pass's peers, paths and WireGuard counters (``reconciler.Observed``),
the prober's round trips, the NAT report, the relay links, and the few
things a snapshot cannot show (``peerstats``: path changes, time-to
milestones, byte totals that survive a peer's re-creation). So a removed
peer disappears from the output at once (no stale label sets), counters are
exposed as counters (never ``set()``), and the reconcile loop does no
metric bookkeeping beyond one ``PeerStats.update`` per pass.

Per peer (``peer``: the remote node's WireKubePeer name):

* ``wirekube_peer_connected`` — 1 while packets to the peer have a path;
* ``wirekube_peer_path{path}`` — 1 for the path in use: direct, relay, down;
* ``wirekube_peer_transport{transport}`` — 1 for where WireGuard sends
  (direct or relay), routed or not;
* ``wirekube_peer_rtt_seconds{path}`` — the latest path-probe round trip on
  the path in use, measured since that path began (none before the first);
* ``wirekube_peer_last_handshake_timestamp_seconds`` — Unix time of the last
  WireGuard handshake (absent before the first);
* ``wirekube_peer_receive_bytes_total`` / ``..._transmit_bytes_total``;
* ``wirekube_peer_direct_failures`` — direct paths that died in a row.

Per agent: ``wirekube_path_changes_total{from,to}``, the histograms
``wirekube_peer_time_to_first_handshake_seconds``,
``wirekube_peer_time_to_direct_seconds`` and ``wirekube_probe_rtt_seconds{path}``,
the info metrics ``wirekube_agent_info``, ``wirekube_nat_info`` and
``wirekube_endpoint_info``, the relay links ``wirekube_agent_relay_available``,
``wirekube_agent_relay_link_up{relay}``,
``wirekube_agent_relay_link_connects_total{relay}``,
``wirekube_agent_relay_frames_total{relay,direction}``,
``wirekube_agent_relay_dropped_frames_total{relay,reason}``, and the loop's own
health (passes, API requests and writes, watches).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wirekube_agent.peerstats import PATHS, Histogram, path_of
from wirekube_agent.reconciler import Reconciler
from wirekube_common import wgkey
from wirekube_common.wireguard.types import format_endpoint

TRANSPORTS = ("direct", "relay")
UNKNOWN = "unknown"


def histogram(
    name: str, doc: str, labels: list[str], series: dict[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in series.items():
        family.add_metric(list(values), h.cumulative(), h.total)
    return family


class AgentCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler

    def collect(self) -> Iterator[Metric]:
        yield from self._peers()
        yield from self._agent()
        yield from self._relay()
        yield from self._loop()

    def _peers(self) -> Iterator[Metric]:
        obs, paths, prober = self.r.observed, self.r.paths, self.r.net.prober
        stats = self.r.stats.snapshot()
        labels = ["peer"]
        connected = GaugeMetricFamily(
            "wirekube_peer_connected", "1 while packets to the peer have a path", labels=labels
        )
        path_f = GaugeMetricFamily(
            "wirekube_peer_path",
            "1 for the path to the peer in use: direct, relay or down (no path)",
            labels=["peer", "path"],
        )
        transport = GaugeMetricFamily(
            "wirekube_peer_transport",
            "1 for where WireGuard sends the peer's packets (direct or relay), routed or not",
            labels=["peer", "transport"],
        )
        rtt = GaugeMetricFamily(
            "wirekube_peer_rtt_seconds",
            "Latest path-probe round trip to the peer on the path in use",
            labels=["peer", "path"],
        )
        handshake = GaugeMetricFamily(
            "wirekube_peer_last_handshake_timestamp_seconds",
            "Unix time of the last WireGuard handshake with the peer",
            labels=labels,
        )
        rx = CounterMetricFamily(
            "wirekube_peer_receive_bytes",
            "Bytes received from the peer through WireGuard",
            labels=labels,
        )
        tx = CounterMetricFamily(
            "wirekube_peer_transmit_bytes",
            "Bytes sent to the peer through WireGuard",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "wirekube_peer_direct_failures",
            "Direct paths to the peer that died in a row (0 once one holds)",
            labels=labels,
        )
        for name, peer in sorted(obs.peers.items()):
            state = paths.get(name)
            if state is None:
                continue
            current = path_of(state)
            connected.add_metric([name], 1.0 if state.routed else 0.0)
            for p in PATHS:
                path_f.add_metric([name, p], 1.0 if p == current else 0.0)
            for t in TRANSPORTS:
                transport.add_metric([name, t], 1.0 if t == state.transport else 0.0)
            failures.add_metric([name], float(state.failures))
            if current != "down":
                measured = prober.rtt(peer.public_key, current)
                if measured is not None and measured.at >= state.since:
                    rtt.add_metric([name, current], measured.seconds)
            last = obs.handshakes.get(name, 0.0)
            if last > 0:
                handshake.add_metric([name], last)
            if name in stats.bytes:
                received, sent = stats.bytes[name]
                rx.add_metric([name], float(received))
                tx.add_metric([name], float(sent))
        yield from (connected, path_f, transport, rtt, handshake, rx, tx, failures)

        changes = CounterMetricFamily(
            "wirekube_path_changes",
            "Changes of a peer's path (direct, relay, down) by from and to",
            labels=["from", "to"],
        )
        for (before, after), n in sorted(stats.changes.items()):
            changes.add_metric([before, after], float(n))
        yield changes
        yield histogram(
            "wirekube_peer_time_to_first_handshake_seconds",
            "Seconds from a peer's appearance to its first WireGuard handshake",
            [],
            {(): stats.to_first_handshake},
        )
        yield histogram(
            "wirekube_peer_time_to_direct_seconds",
            "Seconds from a peer's appearance to its first direct path",
            [],
            {(): stats.to_direct},
        )
        yield histogram(
            "wirekube_probe_rtt_seconds",
            "Round trips of answered path probes, by the path they took",
            ["path"],
            {(p,): h for p, h in sorted(prober.rtt_histograms().items())},
        )
        yield GaugeMetricFamily(
            "wirekube_peers", "WireGuard peers configured", value=len(obs.device.peers)
        )

    def _agent(self) -> Iterator[Metric]:
        r = self.r
        yield InfoMetricFamily(
            "wirekube_agent",
            "This agent's node and WireGuard public key",
            value={"node_name": r.settings.node_name, "public_key": wgkey.encode(r.public_key)},
        )
        nat = r.net.netcheck.report
        yield InfoMetricFamily(
            "wirekube_nat",
            "This node's NAT as the last discovery round saw it (RFC 4787 terms)",
            value={
                "nat_type": nat.nat_type.value or UNKNOWN,
                "mapping": nat.mapping.value or UNKNOWN,
                "filtering": nat.filtering.value or UNKNOWN,
            },
        )
        found = r.discovery
        yield InfoMetricFamily(
            "wirekube_endpoint",
            "This node's published WireGuard endpoint and how it was discovered",
            value={
                "method": found.method or UNKNOWN,
                "endpoint": format_endpoint(found.endpoint) if found.endpoint else "",
            },
        )

    def _relay(self) -> Iterator[Metric]:
        relays = self.r.relays
        yield GaugeMetricFamily(
            "wirekube_agent_relay_available",
            "1 while a relay replica is live (or was within the reconnect grace)",
            value=1.0 if relays.last_available else 0.0,
        )
        links = relays.links
        up = GaugeMetricFamily(
            "wirekube_agent_relay_link_up",
            "1 while this agent's link to the relay replica is up",
            labels=["relay"],
        )
        connects = CounterMetricFamily(
            "wirekube_agent_relay_link_connects",
            "Times this agent's link to the relay replica connected",
            labels=["relay"],
        )
        frames = CounterMetricFamily(
            "wirekube_agent_relay_frames",
            "Packets this agent wrote to the relay replica (tx) and the replica delivered (rx)",
            labels=["relay", "direction"],
        )
        dropped = CounterMetricFamily(
            "wirekube_agent_relay_dropped_frames",
            "Relayed packets this agent dropped: link_down, to the replica while the link was "
            "down or its write failed; malformed, batched packets from it that did not parse",
            labels=["relay", "reason"],
        )
        for replica, link in sorted(links.items()):
            up.add_metric([replica], 1.0 if link.up else 0.0)
            connects.add_metric([replica], float(link.connects))
            frames.add_metric([replica, "tx"], float(link.frames_tx))
            frames.add_metric([replica, "rx"], float(link.frames_rx))
            dropped.add_metric([replica, "link_down"], float(link.drops_tx))
            dropped.add_metric([replica, "malformed"], float(link.malformed_rx))
        yield from (up, connects, frames, dropped)

    def _loop(self) -> Iterator[Metric]:
        obs = self.r.observed
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
            "wirekube_key_rotations",
            "Times this node replaced its WireGuard key pair (docs/keyrotation.md)",
            value=float(obs.key_rotations),
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
