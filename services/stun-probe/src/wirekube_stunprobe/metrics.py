"""Prometheus metrics of the STUN server (its own registry, served on :9090)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "wirekube_stun_requests",
            "Datagrams/messages received, before any check.",
            ["transport"],
            registry=self.registry,
        )
        self.responses = Counter(
            "wirekube_stun_responses",
            "Replies sent, by kind (success, error).",
            ["transport", "kind"],
            registry=self.registry,
        )
        self.drops = Counter(
            "wirekube_stun_drops",
            "Requests not answered, by reason.",
            ["transport", "reason"],
            registry=self.registry,
        )
        self.tcp_connections = Gauge(
            "wirekube_stun_tcp_connections",
            "Open STUN-over-TCP connections.",
            registry=self.registry,
        )
        self.tracked_sources = Gauge(
            "wirekube_stun_tracked_sources",
            "Source IPs in the rate limiter table.",
            registry=self.registry,
        )
