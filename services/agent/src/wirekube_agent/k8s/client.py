"""The agent's only door to the Kubernetes API (with ``watch``).

Thin and blocking: every call is one API request returning plain dicts, so the
rest of the agent never sees kubernetes client models. Callers run these in a
worker thread (``asyncio.to_thread``); retries belong to the callers, which
know whether a failure can wait for the next reconcile.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from wirekube_agent.model import IPAddress
from wirekube_common.crd import GROUP, VERSION

ToDict = Callable[[Any], dict[str, Any]]

log = logging.getLogger(__name__)

PEERS = "wirekubepeers"
MESHES = "wirekubemeshes"
GATEWAYS = "wirekubegateways"
EVENT_NAMESPACE = "default"  # where Events about cluster-scoped objects live
COMPONENT = "wirekube-agent"

__all__ = ["ApiException", "KubeApi"]


class KubeApi:
    def __init__(self, kubeconfig: str | None, timeout_s: float = 10.0) -> None:
        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
        # urllib3 retries on its own by default; the agent's loops own retries.
        cfg.retries = False
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.timeout = timeout_s
        self.host = cfg.host
        # Every request (lists, watches, writes) goes through call_api; counting
        # there measures the agent's load on the API server exactly.
        self.requests = 0
        call_api = self.api_client.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            return call_api(*args, **kwargs)

        self.api_client.call_api = counted  # type: ignore[method-assign]

    def server_address(self) -> IPAddress | None:
        """The API server's IP when the kubeconfig names it by address."""
        host = urllib.parse.urlsplit(self.host).hostname or ""
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None

    def _dict(self, obj: Any) -> dict[str, Any]:
        return self.api_client.sanitize_for_serialization(obj)  # type: ignore[no-any-return]

    # -- list/watch sources for informers: (list function, its args, to-dict) --
    def custom_source(self, plural: str) -> tuple[Callable[..., Any], tuple[Any, ...], ToDict]:
        return (self.custom.list_cluster_custom_object, (GROUP, VERSION, plural), dict)

    def node_source(self) -> tuple[Callable[..., Any], tuple[Any, ...], ToDict]:
        return (self.core.list_node, (), self._dict)

    # -- reads ---------------------------------------------------------------
    def get_node(self, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self.core.read_node(name, _request_timeout=self.timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_cluster_object(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_cluster_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, plural, name, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(
                self.core.read_namespaced_service(name, namespace, _request_timeout=self.timeout)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_nodes(self, label_selector: str) -> list[dict[str, Any]]:
        res = self.core.list_node(label_selector=label_selector, _request_timeout=self.timeout)
        return [self._dict(n) for n in res.items]

    # -- writes --------------------------------------------------------------
    def create_peer(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_cluster_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, PEERS, body, _request_timeout=self.timeout
        )

    def patch_peer(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_cluster_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, PEERS, name, patch, _request_timeout=self.timeout
        )

    def patch_peer_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_cluster_custom_object_status(  # type: ignore[no-any-return]
            GROUP, VERSION, PEERS, name, {"status": status}, _request_timeout=self.timeout
        )

    def delete_peer(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(
                GROUP, VERSION, PEERS, name, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def record_event(
        self, plural: str, kind: str, name: str, uid: str, reason: str, message: str, warning: bool
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name}."),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=kind, name=name, uid=uid or None
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
        )
        self.core.create_namespaced_event(EVENT_NAMESPACE, body, _request_timeout=self.timeout)
