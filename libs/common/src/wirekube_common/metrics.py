"""Prometheus exposition shared by the services (each defines its own metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

DEFAULT_METRICS_PORT = 9090


def serve_metrics(
    port: int = DEFAULT_METRICS_PORT, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> None:
    """Serve /metrics from a daemon thread; port 0 disables it (tests, benchmarks)."""
    if port:
        start_http_server(port, addr=addr, registry=registry)
