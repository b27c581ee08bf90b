"""The managed relay on the real apiserver: WireKubeMesh ``spec.relay.managed``
→ the relay's Deployment, Services, PodDisruptionBudget and Secret, made by
real ``wirekube-gateway-controller`` processes with the controller's own
ServiceAccount token and the production Role (rendered into a namespace of the
test's own, so tests never share the relay's fixed object names).

The control plane runs no kube-controller-manager: no pods, no garbage
collector. What is removed is removed by the controller itself.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_agent.k8s.translate import node_from_object
from wirekube_agent.relaying.target import relay_target
from wirekube_common.crd import Mesh
from wirekube_common.kube.rest import MERGE_PATCH, ApiException
from wirekube_common.relayaddress import NodeAddresses, choose, status_host
from wirekube_gateway.managedrelay.kube import collection_path

from .conftest import CRD, ControllerProcess, GatewayEnv, wait_for

IMAGE = "registry.example/wirekube/relay:test"
RBAC = Path(__file__).parents[3] / "deploy/kustomize/base/rbac/gateway-controller.yaml"
ROLE = "wirekube-gateway-controller-managed-relay"
OWNED = [
    ("Deployment", "wirekube-relay"),
    ("Service", "wirekube-relay"),
    ("Service", "wirekube-relay-pool"),
    ("PodDisruptionBudget", "wirekube-relay"),
    ("Secret", "wirekube-relay-mesh"),
]
# A pass runs within a second of a change; the rest is the watch round trip
# and a loaded machine.
SETTLE_S = 20
# Three reconcile ticks: long enough to see a flapping write.
STEADY_S = 3.5


class RelayWorld:
    def __init__(self, env: GatewayEnv) -> None:
        self.env = env
        self.rest = env.rest
        self.ns = env.name("wk-mr")
        self.mesh = env.name("mr")
        self.nodes: list[str] = []
        self.rest.call("POST", "/api/v1/namespaces",
                       body={"metadata": {"name": self.ns}})  # fmt: skip
        # The production Role and RoleBinding, in this test's namespace.
        for doc in yaml.safe_load_all(RBAC.read_text()):
            if doc and doc["metadata"]["name"] == ROLE and doc["kind"] in ("Role", "RoleBinding"):
                doc["metadata"]["namespace"] = self.ns
                plural = "roles" if doc["kind"] == "Role" else "rolebindings"
                self.rest.call(
                    "POST",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.ns}/{plural}",
                    body=doc,
                )

    def start(self, identity: str = "mr-a") -> ControllerProcess:
        return self.env.start_controller(
            identity, "--managed-relay", "on", "--mesh-name", self.mesh,
            "--relay-namespace", self.ns, "--relay-image", IMAGE,
        )  # fmt: skip

    # -- the mesh --------------------------------------------------------------
    def create_mesh(self, relay: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "wirekube.io/v1alpha1", "kind": "WireKubeMesh",
                "metadata": {"name": self.mesh}, "spec": {"relay": relay}}  # fmt: skip
        return self.rest.call("POST", f"{CRD}/wirekubemeshes", body=body)

    def patch_managed(self, managed: dict[str, Any] | None, **relay: Any) -> None:
        patch: dict[str, Any] = dict(relay)
        if managed is not None:
            patch["managed"] = managed
        self.rest.call("PATCH", f"{CRD}/wirekubemeshes/{self.mesh}",
                       body={"spec": {"relay": patch}}, content_type=MERGE_PATCH)  # fmt: skip

    def mesh_obj(self) -> dict[str, Any]:
        return self.rest.call("GET", f"{CRD}/wirekubemeshes/{self.mesh}")

    def relay_status(self) -> dict[str, Any]:
        return dict((self.mesh_obj().get("status") or {}).get("relay") or {})

    def delete_mesh(self) -> None:
        with contextlib.suppress(ApiException):
            self.rest.call("DELETE", f"{CRD}/wirekubemeshes/{self.mesh}")

    # -- owned objects ---------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.rest.call("GET", f"{collection_path(kind, self.ns)}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait(self, what: str, cond: Any) -> Any:
        return wait_for(cond, SETTLE_S, what)

    def all_made(self) -> dict[tuple[str, str], dict[str, Any]]:
        def made() -> dict[tuple[str, str], dict[str, Any]] | None:
            objs = {k: self.get(*k) for k in OWNED}
            return objs if all(objs.values()) else None  # type: ignore[return-value]

        return self.wait("every managed relay object", made)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.env.cp.kubectl(*args)

    def add_node(self, base: str, internal: str, external: str | None = None) -> str:
        name = self.env.name(base)
        self.rest.call("POST", "/api/v1/nodes", body={"metadata": {"name": name}})
        self.nodes.append(name)
        addresses = [{"type": "InternalIP", "address": internal}]
        if external:
            addresses.append({"type": "ExternalIP", "address": external})
        self.rest.call("PATCH", f"/api/v1/nodes/{name}/status",
                       body={"status": {"addresses": addresses}},
                       content_type=MERGE_PATCH)  # fmt: skip
        return name

    def close(self) -> None:
        self.delete_mesh()
        for kind, name in OWNED:
            with contextlib.suppress(ApiException):
                self.rest.call("DELETE", f"{collection_path(kind, self.ns)}/{name}")
        for node in self.nodes:
            with contextlib.suppress(ApiException):
                self.rest.call("DELETE", f"/api/v1/nodes/{node}")
        with contextlib.suppress(ApiException):
            self.rest.call("DELETE", f"/api/v1/namespaces/{self.ns}")


@pytest.fixture
def world(gateway_env: GatewayEnv) -> Iterator[RelayWorld]:
    w = RelayWorld(gateway_env)
    try:
        yield w
    finally:
        for c in gateway_env.controllers:
            c.stop()
            print(f"--- controller {c.identity} ---\n{c.log_text()[-6000:]}")  # shown on failure
        w.close()


def _svc(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objs[("Service", "wirekube-relay")]["spec"]


def test_the_mesh_spec_becomes_the_relay_and_follows_its_changes(world: RelayWorld) -> None:
    mesh = world.create_mesh({"provider": "managed", "managed": {"replicas": 2,
                                                                 "serviceType": "NodePort"}})  # fmt: skip
    world.start()
    objs = world.all_made()
    uid = mesh["metadata"]["uid"]
    for (kind, name), obj in objs.items():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("WireKubeMesh", world.mesh, uid), kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "wirekube-gateway-controller"
        ), name
    dep = objs[("Deployment", "wirekube-relay")]
    assert dep["spec"]["replicas"] == 2
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WIREKUBE_RELAY_MESH_DNS"] == f"wirekube-relay-pool.{world.ns}.svc"
    assert env["WIREKUBE_RELAY_MESH_ENDPOINTS"] == f"{world.ns}/wirekube-relay-pool"
    svc = _svc(objs)
    assert svc["type"] == "NodePort" and 30000 <= svc["ports"][0]["nodePort"] <= 32767
    assert objs[("Service", "wirekube-relay-pool")]["spec"]["clusterIP"] == "None"
    assert objs[("PodDisruptionBudget", "wirekube-relay")]["spec"]["maxUnavailable"] == 1
    secret = base64.b64decode(objs[("Secret", "wirekube-relay-mesh")]["data"]["secret"])
    assert len(secret) >= 32

    # replicas: the Deployment follows.
    world.patch_managed({"replicas": 3})
    world.wait("3 replicas", lambda: world.get("Deployment", "wirekube-relay")["spec"]["replicas"] == 3)  # type: ignore[index]  # fmt: skip
    world.wait("status says 3", lambda: world.relay_status().get("replicas") == 3)
    # Replicas becoming ready (no kube-controller-manager here: the admin
    # plays the Deployment controller) show in the mesh status.
    world.rest.call(
        "PATCH",
        f"{collection_path('Deployment', world.ns)}/wirekube-relay/status",
        body={"status": {"replicas": 3, "readyReplicas": 2}},
        content_type=MERGE_PATCH,
    )
    world.wait("2 ready in status", lambda: world.relay_status().get("readyReplicas") == 2)

    # serviceType LoadBalancer: the Service follows; a cloud's load balancer
    # (played here by the admin) publishes an ingress IP; agents and the
    # status use it.
    world.patch_managed({"serviceType": "LoadBalancer"})
    lb = world.wait(
        "a LoadBalancer Service",
        lambda: (
            (s := world.get("Service", "wirekube-relay"))
            and s["spec"]["type"] == "LoadBalancer"
            and s
        ),
    )
    assert lb["spec"]["externalTrafficPolicy"] == "Local"
    world.rest.call(
        "PATCH",
        f"{collection_path('Service', world.ns)}/wirekube-relay/status",
        body={"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.77"}]}}},
        content_type=MERGE_PATCH,
    )
    status = world.wait(
        "the LB address in status",
        lambda: (r := world.relay_status()).get("source") == "LoadBalancer" and r,
    )
    assert status["address"] == "198.51.100.77:3478"

    # ClusterIP with externalIPs (the spec extension), on another port.
    world.patch_managed({"serviceType": "ClusterIP", "externalIPs": ["198.51.100.5"],
                         "port": 4443})  # fmt: skip
    cip = world.wait(
        "a ClusterIP Service with externalIPs",
        lambda: (
            (s := world.get("Service", "wirekube-relay")) and s["spec"]["type"] == "ClusterIP" and s
        ),
    )
    assert cip["spec"]["externalIPs"] == ["198.51.100.5"]
    assert cip["spec"]["ports"][0]["port"] == 4443 and "nodePort" not in cip["spec"]["ports"][0]
    # Not Local any more (the API server defaults Cluster for external IPs).
    assert cip["spec"].get("externalTrafficPolicy", "Cluster") == "Cluster"
    dep = world.get("Deployment", "wirekube-relay")
    assert dep is not None
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "relay", "containerPort": 4443, "protocol": "TCP"} in container["ports"]
    status = world.wait(
        "the external IP in status",
        lambda: (r := world.relay_status()).get("source") == "ExternalIP" and r,
    )
    assert status["address"] == "198.51.100.5:4443"
    assert status["service"] == f"{world.ns}/wirekube-relay"
    # The secret was never rewritten along the way.
    after = world.get("Secret", "wirekube-relay-mesh")
    assert after is not None
    assert after["metadata"]["uid"] == objs[("Secret", "wirekube-relay-mesh")]["metadata"]["uid"]
    assert base64.b64decode(after["data"]["secret"]) == secret


def test_kubectl_scale_is_reverted_and_said_so(world: RelayWorld) -> None:
    world.create_mesh({"provider": "managed", "managed": {"replicas": 2}})
    world.start()
    world.all_made()
    world.kubectl("scale", "deployment/wirekube-relay", "-n", world.ns, "--replicas=5")
    world.wait(
        "the scale reverted to the mesh's 2",
        lambda: world.get("Deployment", "wirekube-relay")["spec"]["replicas"] == 2,  # type: ignore[index]
    )
    events = world.wait(
        "a ScaleReverted event on the mesh",
        lambda: [e for e in world.env.events_for(world.mesh) if e["reason"] == "ScaleReverted"],
    )
    time.sleep(STEADY_S)  # one scale, one revert, one event
    reverted = [e for e in world.env.events_for(world.mesh) if e["reason"] == "ScaleReverted"]
    assert len(reverted) == 1 and reverted[0].get("count", 1) == 1, reverted
    assert events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["kind"] == "WireKubeMesh"
    assert "scaled to 5" in events[0]["message"] and "replicas is 2" in events[0]["message"]


def test_deleting_the_mesh_or_changing_the_provider_removes_everything(world: RelayWorld) -> None:
    world.create_mesh({"provider": "managed", "managed": {"serviceType": "NodePort"}})
    world.start()
    world.all_made()
    world.wait("a status", lambda: world.relay_status().get("service"))

    world.patch_managed(None, provider="external", external={"endpoint": "relay.example:3478"})
    world.wait("all removed", lambda: all(world.get(*k) is None for k in OWNED))
    world.wait("status.relay removed", lambda: not world.relay_status())

    world.patch_managed(None, provider="managed")
    world.all_made()
    world.delete_mesh()
    world.wait("all removed with the mesh", lambda: all(world.get(*k) is None for k in OWNED))


def test_a_standby_writes_nothing_and_an_existing_secret_is_never_rewritten(
    world: RelayWorld,
) -> None:
    own = {"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "wirekube-relay-mesh", "namespace": world.ns},
           "data": {"secret": base64.b64encode(b"operator-chosen").decode()}}  # fmt: skip
    world.rest.call("POST", collection_path("Secret", world.ns), body=own)
    world.create_mesh({"provider": "managed", "managed": {}})
    first = world.start("mr-a")
    world.all_made()
    # A standby watches and writes nothing while the leader applies a change.
    second = world.start("mr-b")
    world.env.leader([first, second])
    world.patch_managed({"replicas": 3})
    world.wait("the leader applies", lambda: world.get("Deployment", "wirekube-relay")["spec"]["replicas"] == 3)  # type: ignore[index]  # fmt: skip
    assert first.is_leader() and "applied" not in second.log_text()
    # The standby takes over from the first: nothing is rotated.
    first.stop()
    world.patch_managed({"replicas": 2})
    world.wait("the new leader applies", lambda: world.get("Deployment", "wirekube-relay")["spec"]["replicas"] == 2)  # type: ignore[index]  # fmt: skip
    assert "applied Deployment" in second.log_text()
    secret = world.get("Secret", "wirekube-relay-mesh")
    assert secret is not None
    assert base64.b64decode(secret["data"]["secret"]) == b"operator-chosen"
    # Not ours, so it stays when the managed relay goes.
    world.delete_mesh()
    world.wait("the relay removed", lambda: world.get("Deployment", "wirekube-relay") is None)
    assert world.get("Secret", "wirekube-relay-mesh") is not None


def test_a_spec_it_cannot_build_changes_nothing_and_says_why(world: RelayWorld) -> None:
    world.create_mesh({"provider": "managed", "managed": {"serviceType": "NodePort"}})
    world.start()
    before = world.all_made()
    world.patch_managed({"serviceType": "ClusterIP"})  # no externalIPs: unreachable
    status = world.wait("a problem in status", lambda: (r := world.relay_status()).get("problem") and r)  # fmt: skip
    assert "needs spec.relay.managed.externalIPs" in status["problem"]
    assert _svc(world.all_made())["type"] == "NodePort"
    assert (
        world.get("Deployment", "wirekube-relay")["metadata"]["resourceVersion"]
        == (  # type: ignore[index]
            before[("Deployment", "wirekube-relay")]["metadata"]["resourceVersion"]
        )
    )


def test_nodeport_address_prefers_an_external_ip_and_agents_choose_the_same(
    world: RelayWorld,
) -> None:
    nat = world.add_node("mr-nat", "10.77.0.5")
    public = world.add_node("mr-public", "10.66.0.7", "203.0.113.77")
    world.create_mesh({"provider": "managed", "mode": "always",
                       "managed": {"serviceType": "NodePort"}})  # fmt: skip
    world.start()
    world.all_made()
    status = world.wait(
        "a NodePort address in status",
        lambda: (r := world.relay_status()).get("source") == "NodePort" and r,
    )
    service = world.get("Service", "wirekube-relay")
    assert service is not None
    node_port = service["spec"]["ports"][0]["nodePort"]
    nodes = world.rest.call("GET", "/api/v1/nodes")["items"]
    mesh_obj = world.mesh_obj()
    # The controller's status is the shared rule fed from the real apiserver
    # (sticky: the address in status stays while valid) ...
    expected = choose(
        service, [NodeAddresses.from_object(n) for n in nodes], 3478,
        current=status_host(mesh_obj),
    )  # fmt: skip
    assert status["address"] == f"{expected.host}:{node_port}"
    assert status["node"] == expected.node and status["reason"] == expected.reason
    # ... an ExternalIP (this cluster has at least ours), never an InternalIP ...
    assert expected.host in {
        a["address"]
        for n in nodes
        for a in n["status"].get("addresses", [])
        if a["type"] == "ExternalIP"
    }
    if expected.node == public:
        assert status["address"] == f"203.0.113.77:{node_port}"
    # ... and the NAT'd node's agent picks that same address from the same
    # objects (its own InternalIP loses to a node ExternalIP).
    target = relay_target(
        Mesh.from_dict(mesh_obj).spec,
        node_from_object(world.rest.call("GET", f"/api/v1/nodes/{nat}")),
        service,
        nodes=[NodeAddresses.from_object(n) for n in nodes],
        current=status_host(mesh_obj),
    )
    assert target.addresses == ((expected.host, node_port),), target.reason

    # Settled: passes keep running (one a second) and write nothing.
    versions = {k: world.get(*k)["metadata"]["resourceVersion"] for k in OWNED}  # type: ignore[index]
    mesh_version = world.mesh_obj()["metadata"]["resourceVersion"]
    time.sleep(STEADY_S)
    assert {k: world.get(*k)["metadata"]["resourceVersion"] for k in OWNED} == versions  # type: ignore[index]
    assert world.mesh_obj()["metadata"]["resourceVersion"] == mesh_version


def test_a_deleted_secret_comes_back_new_and_says_so(world: RelayWorld) -> None:
    world.create_mesh({"provider": "managed", "managed": {}})
    world.start()
    first = world.all_made()[("Secret", "wirekube-relay-mesh")]
    world.rest.call("DELETE", f"{collection_path('Secret', world.ns)}/wirekube-relay-mesh")
    again = world.wait(
        "a new Secret",
        lambda: (
            (s := world.get("Secret", "wirekube-relay-mesh"))
            and s["metadata"]["uid"] != first["metadata"]["uid"]
            and s
        ),
    )
    assert again["data"]["secret"] != first["data"]["secret"]
    world.wait(
        "a second MeshSecretCreated event",
        lambda: [e for e in world.env.events_for(world.mesh)
                 if e["reason"] == "MeshSecretCreated"][1:],
    )  # fmt: skip
