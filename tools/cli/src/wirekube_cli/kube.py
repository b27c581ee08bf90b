"""The CLI's only door to the Kubernetes API: read-only calls over the
project's own client (``wirekube_common.kube``), errors turned into
``CliError``s that say what to do. The one write is ``annotate_node``
(``rotate-key``: an annotation on a Node, nothing else).

Which kubeconfig: ``--kubeconfig``, else the first existing file of
``$KUBECONFIG`` (a colon-separated list, as kubectl reads it; only the first
existing file is used — merged kubeconfigs are not), else ``~/.kube/config``,
else the in-cluster service account (the CLI run in a pod).
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import urllib3

from wirekube_cli.errors import (
    EXIT_API,
    EXIT_CRDS_MISSING,
    EXIT_NO_CONFIG,
    CliError,
)
from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.config import ConfigError
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.events import EVENT_NAMESPACE
from wirekube_common.kube.rest import MERGE_PATCH, ApiException, Rest

# One request should answer within this; a slower API server is reported as
# unreachable instead of leaving the user at a silent prompt.
REQUEST_TIMEOUT_S = 10.0
MESH_NAME = "default"
PEERS_PATH = f"/apis/{GROUP}/{VERSION}/wirekubepeers"
MESHES_PATH = f"/apis/{GROUP}/{VERSION}/wirekubemeshes"
CRDS = ("wirekubepeers", "wirekubemeshes", "wirekubegateways")


def find_kubeconfig(explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The kubeconfig to use; None means in-cluster (see the module docstring)."""
    env = os.environ if env is None else env
    if explicit:
        if not Path(explicit).is_file():
            raise CliError(f"kubeconfig {explicit} does not exist", EXIT_NO_CONFIG)
        return explicit
    for item in (env.get("KUBECONFIG") or "").split(":"):
        if item and Path(item).is_file():
            return item
    home = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    if home.is_file():
        return str(home)
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise CliError(
        "no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config"
        " (wirekube-lab up prints the lab's)",
        EXIT_NO_CONFIG,
    )


class Cluster:
    def __init__(self, kubeconfig: str | None, context: str | None = None) -> None:
        try:
            self.connection = Connection(kubeconfig, context)
        except ConfigError as exc:
            raise CliError(f"cannot use the kubeconfig: {exc}", EXIT_NO_CONFIG) from exc
        self.rest = Rest(self.connection)
        self.server = self.connection.host

    def _get(self, path: str, query: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        try:
            return self.rest.call("GET", path, query, timeout=REQUEST_TIMEOUT_S)
        except ApiException:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CliError(
                f"cannot reach the API server at {self.server}: {_short(exc)}", EXIT_API
            ) from exc

    def _checked(self, path: str, what: str, query: tuple[tuple[str, str], ...] = ()) -> Any:
        try:
            return self._get(path, query)
        except ApiException as exc:
            if exc.status == 404 and not self.crds_installed():
                raise CliError(
                    "the WireKube CRDs are not installed in this cluster "
                    "(kubectl apply -k deploy/kustomize/base)",
                    EXIT_CRDS_MISSING,
                ) from exc
            if exc.status in (401, 403):
                raise CliError(
                    f"the API server refused to list {what} ({exc.status}): {exc.reason}",
                    EXIT_API,
                ) from exc
            raise CliError(f"reading {what} failed: {exc}", EXIT_API) from exc

    def crds_installed(self) -> bool:
        """Whether the API serves wirekube.io/v1alpha1 with our resources."""
        try:
            found = self._get(f"/apis/{GROUP}/{VERSION}")
        except ApiException:
            return False
        names = {r.get("name") for r in found.get("resources") or []}
        return all(c in names for c in CRDS[:2])

    def missing_crds(self) -> list[str]:
        try:
            found = self._get(f"/apis/{GROUP}/{VERSION}")
        except ApiException:
            return list(CRDS)
        names = {r.get("name") for r in found.get("resources") or []}
        return [c for c in CRDS if c not in names]

    def peers(self) -> list[dict[str, Any]]:
        return list(self._checked(PEERS_PATH, "WireKubePeers").get("items") or [])

    def mesh(self, name: str = MESH_NAME) -> dict[str, Any] | None:
        try:
            return self._get(f"{MESHES_PATH}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                if not self.crds_installed():
                    raise CliError(
                        "the WireKube CRDs are not installed in this cluster "
                        "(kubectl apply -k deploy/kustomize/base)",
                        EXIT_CRDS_MISSING,
                    ) from exc
                return None
            raise CliError(f"reading WireKubeMesh {name} failed: {exc}", EXIT_API) from exc

    def nodes(self) -> list[dict[str, Any]]:
        try:
            return list(self._get("/api/v1/nodes").get("items") or [])
        except ApiException:
            return []  # not allowed to list Nodes: the checks that need them say so

    def events(self, peer: str) -> list[dict[str, Any]]:
        """Events about one WireKubePeer (oldest first); [] when not allowed."""
        query = (("fieldSelector", f"involvedObject.name={peer}"),)
        try:
            items = self._get(f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", query)
        except ApiException:
            return []
        out = list(items.get("items") or [])
        out.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return out

    def server_time(self) -> float | None:
        """The API server's clock (its Date header), for the skew check."""
        try:
            response = self.connection.request("GET", "/version", {}, None, REQUEST_TIMEOUT_S)
        except (urllib3.exceptions.HTTPError, OSError):
            return None
        date = response.headers.get("Date")
        if not date:
            return None
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return None

    def node(self, name: str) -> dict[str, Any] | None:
        try:
            return self._get(f"/api/v1/nodes/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CliError(f"reading Node {name} failed: {exc}", EXIT_API) from exc

    def peer(self, name: str) -> dict[str, Any] | None:
        try:
            return self._get(f"{PEERS_PATH}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CliError(f"reading WireKubePeer {name} failed: {exc}", EXIT_API) from exc

    def annotate_node(self, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch a Node (``rotate-key``'s request annotation)."""
        try:
            self.rest.call(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body=dict(patch),
                content_type=MERGE_PATCH,
                timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status in (401, 403):
                raise CliError(
                    f"the API server refused to annotate Node {name} ({exc.status}): "
                    f"{exc.reason}; rotate-key needs patch on nodes",
                    EXIT_API,
                ) from exc
            raise CliError(f"annotating Node {name} failed: {exc}", EXIT_API) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CliError(
                f"cannot reach the API server at {self.server}: {_short(exc)}", EXIT_API
            ) from exc

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._get(f"/api/v1/namespaces/{namespace}/services/{name}")
        except (ApiException, CliError):
            return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    return text[:300]
