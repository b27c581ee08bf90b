"""The controller's door to the Kubernetes API: plain JSON, blocking, one
request per call (callers run them in worker threads and own the retries).

What it touches, and nothing else (see deploy/kustomize/base/rbac):
WireKubeGateways and WireKubePeers (list/watch), the gateways' status
subresource (merge patch), its leader-election Lease (get/create/update), the
agents' health-report Leases (list/watch), Events about gateways and peers,
and for peer garbage collection: Nodes (get/list/watch) and deleting peers.
"""

from __future__ import annotations

from typing import Any

from wirekube_common.crd import GROUP, VERSION
from wirekube_common.gwhealth.report import leases_path
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.events import event_body, record_event
from wirekube_common.kube.rest import MERGE_PATCH, ApiException, Rest

GATEWAYS_PATH = f"/apis/{GROUP}/{VERSION}/wirekubegateways"
PEERS_PATH = f"/apis/{GROUP}/{VERSION}/wirekubepeers"
# Events about cluster-scoped objects conventionally live in "default".
COMPONENT = "wirekube-gateway-controller"

__all__ = ["GATEWAYS_PATH", "PEERS_PATH", "ApiException", "ControllerApi"]


class ControllerApi:
    def __init__(self, kubeconfig: str | None) -> None:
        self.connection = Connection(kubeconfig)
        self.rest = Rest(self.connection)

    @property
    def requests(self) -> int:
        return self.connection.requests

    def new_rest(self) -> Rest:
        """A separate handle for a watch, so it can be closed on its own."""
        return Rest(self.connection)

    # -- leader election ---------------------------------------------------------
    def get_lease(self, namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            return self.rest.call("GET", leases_path(namespace, name), timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(
        self, namespace: str, name: str, spec: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return self.rest.call("POST", leases_path(namespace), body=body, timeout=timeout)

    def replace_lease(
        self,
        namespace: str,
        name: str,
        resource_version: str,
        spec: dict[str, Any],
        timeout: float,
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": spec,
        }
        return self.rest.call("PUT", leases_path(namespace, name), body=body, timeout=timeout)

    # -- gateways ----------------------------------------------------------------
    def patch_gateway_status(
        self, name: str, uid: str, resource_version: str, patch: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Merge-patch the status subresource. uid and resourceVersion are
        preconditions: a status computed from an older spec, or for a deleted
        and re-created gateway, is refused (409) and recomputed next pass."""
        body = {"metadata": {"uid": uid, "resourceVersion": resource_version}, "status": patch}
        return self.rest.call(
            "PATCH",
            f"{GATEWAYS_PATH}/{name}/status",
            body=body,
            content_type=MERGE_PATCH,
            timeout=timeout,
        )

    def record_event(
        self, gateway: str, uid: str, reason: str, message: str, warning: bool, timeout: float
    ) -> None:
        body = event_body("WireKubeGateway", gateway, uid, reason, message, warning, COMPONENT)
        record_event(self.rest, body, timeout)

    # -- peer garbage collection ---------------------------------------------------
    def get_node(self, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            return self.rest.call("GET", f"/api/v1/nodes/{name}", timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_peer(self, name: str, uid: str, resource_version: str, timeout: float) -> None:
        """Delete with preconditions: a peer re-created (uid) or re-written
        (resourceVersion) since it was judged is refused with 409."""
        preconditions: dict[str, str] = {}
        if uid:
            preconditions["uid"] = uid
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        self.rest.call("DELETE", f"{PEERS_PATH}/{name}", body=body, timeout=timeout)

    def record_peer_event(
        self, peer: str, uid: str, reason: str, message: str, timeout: float
    ) -> None:
        body = event_body("WireKubePeer", peer, uid, reason, message, False, COMPONENT)
        record_event(self.rest, body, timeout)
