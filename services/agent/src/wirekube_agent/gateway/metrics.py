"""Prometheus metrics of this node's part in WireKubeGateways.

Collected at scrape time, like ``metrics.AgentCollector``, from the state the
reconciler and the health reporter already keep; the only I/O is one
``nft -j list table`` for the forward/SNAT counters, and only on a node that
is an active gateway right now.

* ``wirekube_gateway_active{gateway}`` — 1 for each gateway this node serves;
* ``wirekube_gateway_client_routes{peer}`` — gateway CIDRs this node routes
  through each WireGuard peer (as a client);
* ``wirekube_gateway_packets_total{gateway,rule}`` / ``..._bytes_total`` — the
  nft counters of the active gateway's rules (``rule``: forward, replies,
  snat, masquerade: NAT rules count connections, the others packets);
* ``wirekube_gateway_health{gateway,state}`` — this peer's verdict on each
  gateway it health-checks; ``wirekube_gateway_health_reports_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wirekube_agent.gateway import natrules
from wirekube_agent.netlink import nft
from wirekube_agent.reconciler import Reconciler
from wirekube_common.gwhealth.checker import State

log = logging.getLogger(__name__)


class GatewayCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.r.forwarding
        active = GaugeMetricFamily(
            "wirekube_gateway_active",
            "1 for each WireKubeGateway this node is the active peer of",
            labels=["gateway"],
        )
        for name in node.gateways:
            active.add_metric([name], 1.0)
        yield active

        routes = GaugeMetricFamily(
            "wirekube_gateway_client_routes",
            "Gateway CIDRs this node routes through each WireGuard peer",
            labels=["peer"],
        )
        for peer, cidrs in self.r.gateways.last.routes.items():
            routes.add_metric([peer], float(len(cidrs)))
        yield routes

        packets = CounterMetricFamily(
            "wirekube_gateway_packets",
            "Packets matched by the active gateway's nftables rules",
            labels=["gateway", "rule", "cidr"],
        )
        octets = CounterMetricFamily(
            "wirekube_gateway_bytes",
            "Bytes matched by the active gateway's nftables rules",
            labels=["gateway", "rule", "cidr"],
        )
        if node.applied:
            try:
                counts = nft.rule_counters()
            except nft.NftError as exc:
                log.debug("no gateway counters: %s", exc)
                counts = {}
            for rule in sorted(node.applied, key=natrules.NftRule.key):
                if rule.comment in counts:
                    n, b = counts[rule.comment]
                    labels = [rule.gateway, rule.purpose, rule.cidr]
                    packets.add_metric(labels, float(n))
                    octets.add_metric(labels, float(b))
        yield packets
        yield octets

        health = GaugeMetricFamily(
            "wirekube_gateway_health",
            "This peer's health-check verdict per gateway (1 for the current state)",
            labels=["gateway", "state"],
        )
        for gateway, verdict in sorted(self.r.gateway_health.health().items()):
            for state in State:
                health.add_metric([gateway, state.value], 1.0 if verdict.state == state else 0.0)
        yield health
        yield CounterMetricFamily(
            "wirekube_gateway_health_reports",
            "Health-report Lease writes that succeeded",
            value=float(self.r.gateway_health.writes),
        )
