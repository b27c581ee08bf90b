"""Least privilege, proven against the real apiserver's RBAC authorizer.

Two views of the same roles (deploy/kustomize/base/rbac):
* a permission matrix asked with ``kubectl auth can-i --as=<service account>``
  (impersonation by the admin), covering what each service may and may not do;
* real requests made with each service account's own token (TokenRequest API),
  so the bindings are exercised exactly as a pod would use them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab import podidentity

NS = "wirekube-system"
API = "wirekube.io/v1alpha1"
KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
SERVICES = ("agent", "relay", "gateway-controller", "stun-probe")


def sa_user(service: str) -> str:
    return f"system:serviceaccount:{NS}:wirekube-{service}"


# (service, verb, resource, namespace or "" for cluster scope, allowed)
MATRIX: list[tuple[str, str, str, str, bool]] = [
    # agent: its peers (spec + status), reads the rest, writes events; no deletes.
    ("agent", "create", "wirekubepeers.wirekube.io", "", True),
    ("agent", "patch", "wirekubepeers.wirekube.io", "", True),
    ("agent", "update", "wirekubepeers.wirekube.io", "", True),
    ("agent", "watch", "wirekubepeers.wirekube.io", "", True),
    ("agent", "patch", "wirekubepeers.wirekube.io/status", "", True),
    ("agent", "delete", "wirekubepeers.wirekube.io", "", False),
    ("agent", "deletecollection", "wirekubepeers.wirekube.io", "", False),
    ("agent", "list", "wirekubemeshes.wirekube.io", "", True),
    ("agent", "watch", "wirekubemeshes.wirekube.io", "", True),
    ("agent", "patch", "wirekubemeshes.wirekube.io", "", False),
    ("agent", "watch", "wirekubegateways.wirekube.io", "", True),
    ("agent", "patch", "wirekubegateways.wirekube.io", "", False),
    ("agent", "update", "wirekubegateways.wirekube.io", "", False),
    ("agent", "patch", "wirekubegateways.wirekube.io/status", "", False),
    ("agent", "create", "wirekubegateways.wirekube.io", "", False),
    ("agent", "get", "nodes", "", True),
    ("agent", "watch", "nodes", "", True),
    ("agent", "delete", "nodes", "", False),
    ("agent", "patch", "nodes", "", False),
    ("agent", "patch", "nodes/status", "", False),
    ("agent", "list", "services", NS, True),
    ("agent", "list", "services", "default", False),
    ("agent", "create", "services", NS, False),
    ("agent", "get", "secrets", NS, False),
    ("agent", "create", "events", "default", True),
    ("agent", "create", "events.events.k8s.io", "default", True),
    ("agent", "delete", "events", "default", False),
    ("agent", "create", "leases.coordination.k8s.io", NS, False),
    # relay: read-only peers (and its pool's EndpointSlices, below), nothing else.
    ("relay", "get", "wirekubepeers.wirekube.io", "", True),
    ("relay", "list", "wirekubepeers.wirekube.io", "", True),
    ("relay", "watch", "wirekubepeers.wirekube.io", "", True),
    ("relay", "create", "wirekubepeers.wirekube.io", "", False),
    ("relay", "patch", "wirekubepeers.wirekube.io", "", False),
    ("relay", "patch", "wirekubepeers.wirekube.io/status", "", False),
    ("relay", "delete", "wirekubepeers.wirekube.io", "", False),
    ("relay", "list", "wirekubemeshes.wirekube.io", "", False),
    ("relay", "list", "wirekubegateways.wirekube.io", "", False),
    ("relay", "list", "nodes", "", False),
    ("relay", "list", "services", NS, False),
    ("relay", "create", "events", "default", False),
    ("relay", "get", "secrets", NS, False),
    # ...and its pool's EndpointSlices, in its own namespace only, read-only
    ("relay", "list", "endpointslices.discovery.k8s.io", NS, True),
    ("relay", "watch", "endpointslices.discovery.k8s.io", NS, True),
    ("relay", "get", "endpointslices.discovery.k8s.io", NS, True),
    ("relay", "list", "endpointslices.discovery.k8s.io", "default", False),
    ("relay", "create", "endpointslices.discovery.k8s.io", NS, False),
    ("relay", "patch", "endpointslices.discovery.k8s.io", NS, False),
    ("relay", "delete", "endpointslices.discovery.k8s.io", NS, False),
    # gateway-controller: reads peers + gateways, writes gateway status, holds a lease.
    ("gateway-controller", "list", "wirekubepeers.wirekube.io", "", True),
    ("gateway-controller", "watch", "wirekubegateways.wirekube.io", "", True),
    ("gateway-controller", "patch", "wirekubegateways.wirekube.io/status", "", True),
    ("gateway-controller", "update", "wirekubegateways.wirekube.io/status", "", True),
    ("gateway-controller", "patch", "wirekubegateways.wirekube.io", "", False),
    ("gateway-controller", "create", "wirekubegateways.wirekube.io", "", False),
    ("gateway-controller", "delete", "wirekubegateways.wirekube.io", "", False),
    ("gateway-controller", "create", "wirekubepeers.wirekube.io", "", False),
    ("gateway-controller", "patch", "wirekubepeers.wirekube.io", "", False),
    ("gateway-controller", "patch", "wirekubepeers.wirekube.io/status", "", False),
    ("gateway-controller", "create", "leases.coordination.k8s.io", NS, True),
    ("gateway-controller", "update", "leases.coordination.k8s.io", NS, True),
    ("gateway-controller", "get", "leases.coordination.k8s.io", NS, True),
    ("gateway-controller", "create", "leases.coordination.k8s.io", "default", False),
    ("gateway-controller", "create", "leases.coordination.k8s.io", "kube-system", False),
    ("gateway-controller", "create", "events", "default", True),
    # ... garbage-collects the peers of nodes that left (peergc): delete
    # peers, read nodes; never write nodes ...
    ("gateway-controller", "delete", "wirekubepeers.wirekube.io", "", True),
    ("gateway-controller", "delete", "nodes", "", False),
    ("gateway-controller", "deletecollection", "wirekubepeers.wirekube.io", "", False),
    # ... and runs the managed relay: reads meshes and nodes, writes mesh status.
    ("gateway-controller", "list", "nodes", "", True),
    ("gateway-controller", "watch", "nodes", "", True),
    ("gateway-controller", "patch", "nodes", "", False),
    ("gateway-controller", "patch", "nodes/status", "", False),
    ("gateway-controller", "list", "wirekubemeshes.wirekube.io", "", True),
    ("gateway-controller", "watch", "wirekubemeshes.wirekube.io", "", True),
    ("gateway-controller", "patch", "wirekubemeshes.wirekube.io/status", "", True),
    ("gateway-controller", "patch", "wirekubemeshes.wirekube.io", "", False),
    ("gateway-controller", "update", "wirekubemeshes.wirekube.io", "", False),
    ("gateway-controller", "delete", "wirekubemeshes.wirekube.io", "", False),
    ("gateway-controller", "list", "deployments.apps", NS, True),
    ("gateway-controller", "watch", "services", NS, True),
    ("gateway-controller", "list", "poddisruptionbudgets.policy", NS, True),
    ("gateway-controller", "list", "deployments.apps", "default", False),
    ("gateway-controller", "list", "secrets", NS, False),
    ("gateway-controller", "watch", "secrets", NS, False),
    ("gateway-controller", "create", "secrets", NS, True),
    ("gateway-controller", "create", "secrets", "default", False),
    ("gateway-controller", "list", "pods", NS, False),
    ("gateway-controller", "create", "pods", NS, False),
    # stun-probe: nothing at all.
    ("stun-probe", "get", "wirekubepeers.wirekube.io", "", False),
    ("stun-probe", "list", "wirekubemeshes.wirekube.io", "", False),
    ("stun-probe", "list", "wirekubegateways.wirekube.io", "", False),
    ("stun-probe", "list", "nodes", "", False),
    ("stun-probe", "list", "services", NS, False),
    ("stun-probe", "create", "events", "default", False),
    ("stun-probe", "get", "leases.coordination.k8s.io", NS, False),
]


@pytest.mark.parametrize(
    ("service", "verb", "resource", "namespace", "allowed"),
    MATRIX,
    ids=[
        f"{s}-{v}-{r.split('.')[0]}{'/status' if r.endswith('/status') else ''}"
        f"{'-in-' + n if n else ''}-{'yes' if a else 'no'}"
        for s, v, r, n, a in MATRIX
    ],
)
def test_can_i(
    control_plane: Any, service: str, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={sa_user(service)}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--namespace={namespace}"] if namespace else []
    proc = control_plane.kubectl(*args, check=False)
    assert proc.stdout.strip() == ("yes" if allowed else "no"), proc.stdout + proc.stderr
    assert proc.returncode == (0 if allowed else 1)


# The managed relay's objects, by name: (verb, resource, name, namespace, allowed).
NAMED: list[tuple[str, str, str, str, bool]] = [
    *[(v, "deployments.apps", "wirekube-relay", NS, True)
      for v in ("get", "create", "patch", "delete")],
    *[(v, "services", n, NS, True)
      for v in ("get", "create", "patch", "delete")
      for n in ("wirekube-relay", "wirekube-relay-pool")],
    *[(v, "poddisruptionbudgets.policy", "wirekube-relay", NS, True)
      for v in ("get", "create", "patch", "delete")],
    ("get", "secrets", "wirekube-relay-mesh", NS, True),
    ("delete", "secrets", "wirekube-relay-mesh", NS, True),
    ("patch", "secrets", "wirekube-relay-mesh", NS, False),
    ("update", "secrets", "wirekube-relay-mesh", NS, False),
    ("get", "secrets", "wirekube-agent-token", NS, False),
    ("delete", "secrets", "other", NS, False),
    ("patch", "deployments.apps", "wirekube-gateway-controller", NS, False),
    ("delete", "deployments.apps", "wirekube-stun-probe", NS, False),
    ("update", "deployments.apps", "wirekube-relay", NS, False),
    ("patch", "deployments.apps", "wirekube-relay", "default", False),
    ("patch", "services", "wirekube-stun-probe", NS, False),
    ("delete", "services", "kubernetes", "default", False),
    ("patch", "poddisruptionbudgets.policy", "other", NS, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "resource", "name", "namespace", "allowed"),
    NAMED,
    ids=[f"{v}-{r.split('.')[0]}-{n}-in-{ns}-{'yes' if a else 'no'}" for v, r, n, ns, a in NAMED],
)
def test_gateway_controller_owns_only_the_managed_relay(
    control_plane: Any, verb: str, resource: str, name: str, namespace: str, allowed: bool
) -> None:
    proc = control_plane.kubectl(
        "auth", "can-i", verb, f"{resource}/{name}", f"--namespace={namespace}",
        f"--as={sa_user('gateway-controller')}", check=False,
    )  # fmt: skip
    assert proc.stdout.strip() == ("yes" if allowed else "no"), proc.stdout + proc.stderr


def test_stun_probe_has_no_wirekube_or_core_permissions(control_plane: Any) -> None:
    out = control_plane.kubectl(
        "auth", "can-i", "--list", f"--as={sa_user('stun-probe')}", f"--namespace={NS}"
    ).stdout
    # Rows for resources start in column 0; non-resource URL rows are indented.
    lines = out.rstrip().splitlines()[1:]
    resources = {line.split()[0] for line in lines if line and not line[0].isspace()}
    # Only what every authenticated identity gets (self reviews, discovery URLs).
    assert resources <= {
        "selfsubjectreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
    }, out


# ---- real requests with each service account's own token ----------------------


@pytest.fixture(scope="module")
def as_sa(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("sa-kubeconfigs")
    kubeconfigs: dict[str, Path] = {
        s: control_plane.kubeconfig_for_service_account(
            NS, f"wirekube-{s}", path=tmp / f"{s}.kubeconfig", duration_seconds=3600
        )
        for s in SERVICES
    }

    def run(service: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(
            *args, kubeconfig=kubeconfigs[service], input=input, check=False
        )

    yield run


def forbidden(proc: subprocess.CompletedProcess[str], service: str) -> bool:
    return (
        proc.returncode != 0
        and "(Forbidden)" in proc.stderr
        and f'User "{sa_user(service)}" cannot' in proc.stderr
    )


def ok(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == 0


def test_tokens_identify_the_service_accounts(as_sa: Any) -> None:
    for s in SERVICES:
        out = as_sa(s, "auth", "whoami", "-o", "json")
        assert ok(out), out.stderr
        assert json.loads(out.stdout)["status"]["userInfo"]["username"] == sa_user(s)


@pytest.fixture
def world(objects: Any) -> dict[str, str]:
    """A node, a peer and a gateway created by the admin for the services to act on."""
    names = {
        "node": objects.name("rbac-node"),
        "peer": objects.name("node-rbac"),
        "gateway": objects.name("rbac-gw"),
    }
    objects.must_create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": names["node"]}})
    objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubePeer",
            "metadata": {"name": names["peer"]},
            "spec": {"publicKey": KEY},
        }
    )
    objects.must_create(
        {
            "apiVersion": API,
            "kind": "WireKubeGateway",
            "metadata": {"name": names["gateway"]},
            "spec": {"peerRefs": [names["peer"]], "routes": [{"cidr": "172.20.0.0/16"}]},
        }
    )
    return names


def _merge_patch(body: dict[str, Any]) -> list[str]:
    return ["--type=merge", "-p", json.dumps(body)]


def _event(name: str, regarding: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "wirekube.io/test",
            "reportingInstance": "test",
            "action": "Test",
            "reason": "Test",
            "type": "Normal",
            "regarding": regarding,
        }
    )


@pytest.fixture
def as_agent_pod(control_plane: Any, world: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """The agent with the token its pod on the world's node gets (bound to that Pod).

    The admission policy (test_agent_own_peer.py) lets only such a token write,
    and only that node's peer; RBAC is what this module proves."""
    identity = podidentity.issue(control_plane, world["node"], path=tmp_path / "agent.kubeconfig")

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(
            *args, kubeconfig=identity.kubeconfig, input=input, check=False
        )

    yield run
    identity.revoke(control_plane)


def test_agent_real_requests(
    as_sa: Any, as_agent_pod: Any, objects: Any, world: dict[str, str]
) -> None:
    a = "agent"
    own = f"node-{world['node']}"
    created = as_agent_pod(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": API,
                "kind": "WireKubePeer",
                "metadata": {"name": own},
                "spec": {"publicKey": KEY, "endpoint": "203.0.113.5:51820"},
            }
        ),
    )
    assert ok(created), created.stderr
    objects.track("WireKubePeer", own)
    assert ok(
        as_agent_pod(
            "patch", "wkp", own, *_merge_patch({"spec": {"endpoint": "203.0.113.6:51820"}})
        )
    )
    assert ok(
        as_agent_pod(
            "patch",
            "wkp",
            own,
            "--subresource=status",
            *_merge_patch({"status": {"natType": "cone", "connected": True}}),
        )
    )
    assert ok(as_sa(a, "get", "wkp", "-o", "name"))
    assert ok(as_sa(a, "get", "wkm", "-o", "name"))
    assert ok(as_sa(a, "get", "wkgw", world["gateway"]))
    assert ok(as_sa(a, "get", "node", world["node"]))
    assert ok(as_sa(a, "get", "services", "-n", NS))
    assert ok(
        as_sa(
            a,
            "create",
            "-f",
            "-",
            input=_event(
                objects.name("agent-ev"), {"apiVersion": API, "kind": "WireKubePeer", "name": own}
            ),
        )
    )

    assert forbidden(as_sa(a, "delete", "node", world["node"]), a)
    assert forbidden(as_sa(a, "label", "node", world["node"], "x=y"), a)
    assert forbidden(as_sa(a, "delete", "wkp", own), a)
    assert forbidden(as_agent_pod("delete", "wkp", own), a)
    assert forbidden(as_agent_pod("delete", "wkp", world["peer"]), a)
    assert forbidden(as_agent_pod("delete", "wkp", "--all"), a)
    assert forbidden(
        as_sa(
            a,
            "patch",
            "wkgw",
            world["gateway"],
            *_merge_patch({"spec": {"routes": [{"cidr": "10.0.0.0/8"}]}}),
        ),
        a,
    )
    assert forbidden(
        as_sa(
            a,
            "patch",
            "wkgw",
            world["gateway"],
            "--subresource=status",
            *_merge_patch({"status": {"activePeer": own}}),
        ),
        a,
    )
    assert forbidden(as_sa(a, "get", "secrets", "-n", NS), a)
    assert forbidden(as_sa(a, "get", "services", "-n", "default"), a)
    # Nothing the agent was refused happened.
    assert objects.get("Node", world["node"])["metadata"].get("labels", {}).get("x") is None
    assert "status" not in objects.get("WireKubeGateway", world["gateway"])


def test_relay_real_requests(as_sa: Any, objects: Any, world: dict[str, str]) -> None:
    r = "relay"
    got = as_sa(r, "get", "wirekubepeers", world["peer"], "-o", "json")
    assert ok(got) and json.loads(got.stdout)["spec"]["publicKey"] == KEY
    assert forbidden(
        as_sa(
            r,
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": API,
                    "kind": "WireKubePeer",
                    "metadata": {"name": objects.name("node-x")},
                    "spec": {"publicKey": KEY},
                }
            ),
        ),
        r,
    )
    assert forbidden(
        as_sa(
            r,
            "patch",
            "wkp",
            world["peer"],
            *_merge_patch({"spec": {"endpoint": "198.51.100.1:1"}}),
        ),
        r,
    )
    assert forbidden(
        as_sa(
            r,
            "patch",
            "wkp",
            world["peer"],
            "--subresource=status",
            *_merge_patch({"status": {"connected": True}}),
        ),
        r,
    )
    assert forbidden(as_sa(r, "delete", "wkp", world["peer"]), r)
    for what in (["get", "nodes"], ["get", "wkm"], ["get", "wkgw"], ["get", "svc", "-n", NS]):
        assert forbidden(as_sa(r, *what), r), what
    assert objects.get("WireKubePeer", world["peer"])["spec"] == {"publicKey": KEY}


def test_gateway_controller_real_requests(as_sa: Any, objects: Any, world: dict[str, str]) -> None:
    g = "gateway-controller"
    assert ok(as_sa(g, "get", "wkp", world["peer"]))
    patched = as_sa(
        g,
        "patch",
        "wkgw",
        world["gateway"],
        "--subresource=status",
        *_merge_patch(
            {"status": {"activePeer": world["peer"], "ready": True, "routesInjected": 1}}
        ),
    )
    assert ok(patched), patched.stderr
    assert objects.get("WireKubeGateway", world["gateway"])["status"]["activePeer"] == world["peer"]

    lease = objects.name("wirekube-gateway-controller")
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease, "namespace": NS},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15},
    }
    try:
        assert ok(as_sa(g, "create", "-f", "-", input=json.dumps(body)))
        renewed = as_sa(
            g,
            "patch",
            "lease",
            lease,
            "-n",
            NS,
            *_merge_patch({"spec": {"holderIdentity": "replica-b"}}),
        )
        assert ok(renewed), renewed.stderr
        other = dict(body, metadata={"name": lease, "namespace": "default"})
        assert forbidden(as_sa(g, "create", "-f", "-", input=json.dumps(other)), g)
    finally:
        objects.cp.kubectl("delete", "lease", lease, "-n", NS, "--ignore-not-found")

    assert forbidden(
        as_sa(
            g,
            "patch",
            "wkgw",
            world["gateway"],
            *_merge_patch({"spec": {"peerRefs": ["node-evil"]}}),
        ),
        g,
    )
    assert forbidden(
        as_sa(
            g,
            "patch",
            "wkp",
            world["peer"],
            *_merge_patch({"spec": {"allowedIPs": ["172.20.0.0/16"]}}),
        ),
        g,
    )
    assert forbidden(
        as_sa(
            g,
            "patch",
            "wkp",
            world["peer"],
            "--subresource=status",
            *_merge_patch({"status": {"connected": True}}),
        ),
        g,
    )
    assert ok(as_sa(g, "get", "nodes", world["node"]))
    assert forbidden(as_sa(g, "label", "node", world["node"], "x=y"), g)
    assert forbidden(as_sa(g, "delete", "node", world["node"]), g)
    assert objects.get("WireKubeGateway", world["gateway"])["spec"]["peerRefs"] == [world["peer"]]
    # Peer garbage collection: the controller deletes a departed node's peer.
    assert ok(as_sa(g, "delete", "wkp", world["peer"]))


def test_gateway_controller_real_requests_for_the_managed_relay(as_sa: Any) -> None:
    """Server-side applies of the relay's own objects pass (dry run: nothing
    is left behind in the shared namespace); anything else is refused."""
    g = "gateway-controller"

    def apply(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return as_sa(g, "apply", "--server-side", "--field-manager=wirekube-gateway-controller",
                     "--dry-run=server", "-f", "-", input=json.dumps(obj))  # fmt: skip

    def service(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                "spec": {"clusterIP": "None", "ports": [{"port": 3478}]}}  # fmt: skip

    assert ok(apply(service("wirekube-relay-pool")))
    assert forbidden(apply(service("wirekube-something-else")), g)
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "wirekube-relay-mesh", "namespace": NS},
              "stringData": {"secret": "x"}}  # fmt: skip
    created = as_sa(g, "create", "--dry-run=server", "-f", "-", input=json.dumps(secret))
    assert ok(created), created.stderr
    assert forbidden(as_sa(g, "get", "secrets", "-n", NS), g)
    assert forbidden(as_sa(g, "get", "deployments", "wirekube-gateway-controller", "-n", NS), g)
    assert ok(as_sa(g, "get", "deployments", "-n", NS, "-l", "app.kubernetes.io/name=x"))
    assert ok(as_sa(g, "get", "wkm"))


def test_stun_probe_real_requests(as_sa: Any, world: dict[str, str]) -> None:
    s = "stun-probe"
    for what in (
        ["get", "wkp", world["peer"]],
        ["get", "wkm"],
        ["get", "wkgw"],
        ["get", "nodes"],
        ["get", "svc", "-n", NS],
        ["get", "leases", "-n", NS],
    ):
        assert forbidden(as_sa(s, *what), s), what
