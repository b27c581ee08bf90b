"""Pod-bound identities for agents the lab runs as plain processes.

In a cluster the kubelet gives each agent pod a service-account token bound
to that Pod, and such a token names the Pod's node
(``authentication.kubernetes.io/node-name``). The admission policy
``wirekube-agent-own-peer`` (deploy/kustomize/base/admission) relies on that
claim: the agent may write only the WireKubePeer of the node it runs on, and a
token bound to no Pod writes no peer at all.

The lab has no kubelet, so it plays its part: a stand-in Pod object per agent
(``nodeName`` set, never run: nothing schedules or starts it) and a
TokenRequest bound to it. The result is exactly the identity a real agent pod
has; ``revoke`` deletes the Pod, which invalidates the token, as when a pod
goes away.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s

if TYPE_CHECKING:
    from wirekube_lab.controlplane import ControlPlane

NAMESPACE = "wirekube-system"
AGENT_SA = "wirekube-agent"
MANAGED_BY = {"app.kubernetes.io/managed-by": "wirekube-lab"}
# Never pulled: the Pod is never started (no kubelet), the field is required.
STAND_IN_IMAGE = "wirekube/agent:lab-stand-in"


@dataclass(frozen=True)
class PodIdentity:
    node: str
    pod: str
    kubeconfig: Path

    def revoke(self, cp: ControlPlane) -> None:
        """Delete the stand-in Pod (grace 0: no kubelet will confirm); the token dies with it."""
        delete_pod(cp, self.pod)


def stand_in_pod(node: str, service_account: str = AGENT_SA) -> dict[str, Any]:
    """A Pod object bound to ``node`` for ``service_account``, never run."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{service_account}-{node}-{uuid.uuid4().hex[:6]}"[:253],
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": service_account, **MANAGED_BY},
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "containers": [{"name": "stand-in", "image": STAND_IN_IMAGE}],
        },
    }


def issue(
    cp: ControlPlane,
    node: str,
    *,
    service_account: str = AGENT_SA,
    lab: bool = False,
    path: Path | str | None = None,
    duration_seconds: int = 86400,
) -> PodIdentity:
    """Create a stand-in Pod on ``node`` and a kubeconfig whose token is bound to it."""
    body: Any = stand_in_pod(node, service_account)
    with cp.api_client() as api:
        k8s.CoreV1Api(api).create_namespaced_pod(NAMESPACE, body)
    pod = str(body["metadata"]["name"])
    try:
        kubeconfig = cp.kubeconfig_for_service_account(
            NAMESPACE,
            service_account,
            lab=lab,
            path=path or cp.workdir / f"{pod}{'-lab' if lab else ''}.kubeconfig",
            duration_seconds=duration_seconds,
            bound_pod=pod,
        )
    except BaseException:
        delete_pod(cp, pod)
        raise
    return PodIdentity(node=node, pod=pod, kubeconfig=Path(kubeconfig))


def delete_pod(cp: ControlPlane, pod: str) -> None:
    with cp.api_client() as api:
        try:
            k8s.CoreV1Api(api).delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
