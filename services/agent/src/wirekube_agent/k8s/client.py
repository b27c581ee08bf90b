"""The agent's door to the Kubernetes API (with ``watch`` and ``rest``).

Thin and blocking: every call is one API request returning plain dicts, so the
rest of the agent never sees kubernetes client models. Callers run these in a
worker thread (``asyncio.to_thread``); retries belong to the callers, which
know whether a failure can wait for the next reconcile.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from typing import Any

from wirekube_agent.model import IPAddress
from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.events import event_body, record_event
from wirekube_common.kube.rest import MERGE_PATCH, ApiException, Rest

log = logging.getLogger(__name__)

PEERS = "wirekubepeers"
MESHES = "wirekubemeshes"
GATEWAYS = "wirekubegateways"
COMPONENT = "wirekube-agent"

__all__ = ["ApiException", "KubeApi", "custom_path", "nodes_path"]


def custom_path(plural: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/{plural}"
    return f"{base}/{name}" if name else base


def nodes_path(name: str | None = None) -> str:
    return f"/api/v1/nodes/{name}" if name else "/api/v1/nodes"


class KubeApi:
    def __init__(self, kubeconfig: str | None, timeout_s: float = 10.0) -> None:
        self.connection = Connection(kubeconfig)
        self.timeout = timeout_s
        self.host = self.connection.host
        self.rest = Rest(self.connection)

    @property
    def requests(self) -> int:
        """Requests made so far (lists, watches, writes): the agent's API load."""
        return self.connection.requests

    def new_rest(self) -> Rest:
        """A separate handle for a watch, so it can be closed on its own."""
        return Rest(self.connection)

    def server_address(self) -> IPAddress | None:
        """The API server's IP when the kubeconfig names it by address."""
        host = urllib.parse.urlsplit(self.host).hostname or ""
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.rest.call("GET", path, timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- reads ---------------------------------------------------------------
    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/api/v1/namespaces/{namespace}/services/{name}")

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every Node, from the API server's watch cache (resourceVersion=0:
        no etcd read, however many agents ask)."""
        result = self.rest.call(
            "GET", nodes_path(), [("resourceVersion", "0")], timeout=self.timeout
        )
        return list(result.get("items") or [])

    # -- writes --------------------------------------------------------------
    def create_peer(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.rest.call("POST", custom_path(PEERS), body=body, timeout=self.timeout)

    def patch_peer(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.rest.call(
            "PATCH",
            custom_path(PEERS, name),
            body=patch,
            content_type=MERGE_PATCH,
            timeout=self.timeout,
        )

    def patch_peer_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.rest.call(
            "PATCH",
            custom_path(PEERS, name) + "/status",
            body={"status": status},
            content_type=MERGE_PATCH,
            timeout=self.timeout,
        )

    def delete_peer(self, name: str) -> None:
        try:
            self.rest.call("DELETE", custom_path(PEERS, name), timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def record_event(
        self, kind: str, name: str, uid: str, reason: str, message: str, warning: bool
    ) -> None:
        body = event_body(kind, name, uid, reason, message, warning, COMPONENT)
        record_event(self.rest, body, self.timeout)
