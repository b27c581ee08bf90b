"""The managed relay's door to the Kubernetes API (blocking, one request per call).

What it touches (deploy/kustomize/base/rbac/gateway-controller.yaml): in the
relay namespace the relay Deployment, its two Services, its
PodDisruptionBudget (list/watch, server-side apply, delete) and the mesh
Secret (get, create, delete — never list, never read another Secret);
cluster-wide Nodes (list/watch, for the NodePort address), WireKubeMeshes
(list/watch) and their status subresource, and Events.

Writes are server-side apply with the field manager ``FIELD_MANAGER`` and
``force``: the controller takes back any field someone else changed (a
``kubectl scale`` included — see ``plan``), and fields it stops setting are
removed by the API server, not left behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.events import event_body, record_event
from wirekube_common.kube.rest import MERGE_PATCH, ApiException, Rest

FIELD_MANAGER = "wirekube-gateway-controller"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML
COMPONENT = "wirekube-gateway-controller"
MESHES_PATH = f"/apis/{GROUP}/{VERSION}/wirekubemeshes"
NODES_PATH = "/api/v1/nodes"

_COLLECTIONS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
}
WATCHED_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def collection_path(kind: str, namespace: str) -> str:
    return _COLLECTIONS[kind].format(ns=namespace)


class RelayApi:
    def __init__(self, rest: Rest, namespace: str) -> None:
        self.rest = rest
        self.namespace = namespace

    def _path(self, kind: str, name: str) -> str:
        return f"{collection_path(kind, self.namespace)}/{name}"

    def apply(self, obj: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return self.rest.call(
            "PATCH",
            self._path(str(obj["kind"]), str(meta["name"])),
            [("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type=APPLY_PATCH,
            timeout=timeout,
        )

    def delete(self, kind: str, name: str, uid: str, timeout: float) -> None:
        """Delete with the uid as a precondition; gone already is fine."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        # Background: dependents (ReplicaSets, pods) go with a garbage
        # collector; the Deployment itself goes at once.
        body["propagationPolicy"] = "Background"
        try:
            self.rest.call("DELETE", self._path(kind, name), body=body, timeout=timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def get_secret(self, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            return self.rest.call("GET", self._path("Secret", name), timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_secret(self, obj: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Create only: an existing Secret (409) is never overwritten."""
        return self.rest.call(
            "POST",
            collection_path("Secret", self.namespace),
            [("fieldManager", FIELD_MANAGER)],
            body=obj,
            timeout=timeout,
        )

    def patch_mesh_status(
        self, name: str, uid: str, patch: Mapping[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; the uid precondition refuses a
        status computed for a deleted and re-created mesh."""
        body = {"metadata": {"uid": uid}, "status": patch}
        return self.rest.call(
            "PATCH",
            f"{MESHES_PATH}/{name}/status",
            body=body,
            content_type=MERGE_PATCH,
            timeout=timeout,
        )

    def record_event(
        self, mesh: str, uid: str, reason: str, message: str, warning: bool, timeout: float
    ) -> None:
        body = event_body("WireKubeMesh", mesh, uid, reason, message, warning, COMPONENT)
        record_event(self.rest, body, timeout)
