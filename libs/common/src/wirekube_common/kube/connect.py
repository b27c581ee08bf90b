"""Build a kubernetes ``ApiClient`` from a kubeconfig or the in-cluster config.

Only the client, never the typed API classes (see ``rest``). Retries are off
in urllib3: every caller owns its retry policy. Every request is counted, so a
service can export its exact load on the API server as a metric.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.utils.keepalive import tcp_keepalive_socket_options

# TCP keepalive on every API connection: probe an idle connection after 10 s,
# give up after 3 unanswered probes 5 s apart. A node's watch usually crosses a
# NAT; when that NAT forgets the flow (conntrack flushed, gateway rebooted) the
# server's packets vanish and a plain read waits minutes for data that never
# comes. With these values a dead watch is noticed in ~25 s (client-go's
# defaults, which the kubernetes package copies, take ~165 s).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 5, 3


class CountingClient:
    """An ``ApiClient`` plus the number of requests sent through it."""

    def __init__(self, kubeconfig: str | None) -> None:
        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
        cfg.retries = False
        cfg.socket_options = tcp_keepalive_socket_options(
            KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT
        )
        self.host: str = cfg.host
        self.api_client = client.ApiClient(cfg)
        self.requests = 0
        call_api = self.api_client.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            return call_api(*args, **kwargs)

        self.api_client.call_api = counted  # type: ignore[method-assign]

    def close(self) -> None:
        self.api_client.close()
