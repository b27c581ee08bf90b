"""Build a kubernetes ``ApiClient`` from a kubeconfig or the in-cluster config.

Only the client, never the typed API classes (see ``rest``). Retries are off
in urllib3: every caller owns its retry policy. Every request is counted, so a
service can export its exact load on the API server as a metric.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config


class CountingClient:
    """An ``ApiClient`` plus the number of requests sent through it."""

    def __init__(self, kubeconfig: str | None) -> None:
        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
        cfg.retries = False
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
