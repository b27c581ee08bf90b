"""The managed relay's pure steps: desired objects, the plan, the status."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from wirekube_common.crd import Mesh
from wirekube_common.relayaddress import NODE_PORT, RelayAddress
from wirekube_gateway.managedrelay import desired as d
from wirekube_gateway.managedrelay.plan import Apply, Delete, Note, drift, plan
from wirekube_gateway.managedrelay.status import relay_status

CONFIG = d.RelayConfig(namespace="wk-ns", image="registry.example/wirekube/relay:1.2.3")


def mesh(relay: dict[str, Any] | None = None, uid: str = "uid-1") -> Mesh:
    spec = {"relay": relay if relay is not None else {"provider": "managed", "managed": {}}}
    return Mesh.from_dict({"metadata": {"name": "default", "uid": uid}, "spec": spec})


def by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_nothing_unless_the_provider_is_managed() -> None:
    assert d.desired(mesh({"provider": "external", "external": {"endpoint": "r:1"}}), CONFIG) == []
    assert d.desired(mesh({}), CONFIG) == []


def test_defaults_give_one_replica_behind_a_load_balancer() -> None:
    objs = by_kind(d.desired(mesh(), CONFIG))
    assert set(objs) == {
        ("Deployment", "wirekube-relay"),
        ("Service", "wirekube-relay"),
        ("Service", "wirekube-relay-pool"),
        ("PodDisruptionBudget", "wirekube-relay"),
    }
    dep = objs[("Deployment", "wirekube-relay")]
    assert dep["spec"]["replicas"] == 1
    svc = objs[("Service", "wirekube-relay")]["spec"]
    assert svc["type"] == "LoadBalancer" and svc["externalTrafficPolicy"] == "Local"
    assert svc["ports"] == [
        {"name": "relay", "port": 3478, "targetPort": "relay", "protocol": "TCP"}
    ]
    pool = objs[("Service", "wirekube-relay-pool")]["spec"]
    assert pool["clusterIP"] == "None" and pool["selector"] == svc["selector"]
    pdb = objs[("PodDisruptionBudget", "wirekube-relay")]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == svc["selector"]


def test_every_object_is_owned_by_the_mesh_and_labelled_as_ours() -> None:
    for obj in d.desired(mesh(uid="u-42"), CONFIG):
        meta = obj["metadata"]
        assert meta["namespace"] == "wk-ns"
        assert meta["ownerReferences"] == [
            {"apiVersion": "wirekube.io/v1alpha1", "kind": "WireKubeMesh", "name": "default",
             "uid": "u-42", "controller": True}
        ]  # fmt: skip
        for pair in d.OWNED_SELECTOR.split(","):
            k, v = pair.split("=")
            assert meta["labels"][k] == v
        assert meta["annotations"][d.APPLIED_HASH] == d.applied_hash(obj)


def test_the_relay_pod_follows_the_pinned_relay_interface() -> None:
    m = mesh({"provider": "managed", "managed": {"replicas": 3, "port": 4443}})
    dep = by_kind(d.desired(m, CONFIG))[("Deployment", "wirekube-relay")]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "wirekube-relay"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == CONFIG.image and c["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e for e in c["env"]}
    assert env["WIREKUBE_RELAY_LISTEN"]["value"] == "0.0.0.0:4443"
    assert env["WIREKUBE_RELAY_MESH_DNS"]["value"] == "wirekube-relay-pool.wk-ns.svc"
    assert env["WIREKUBE_RELAY_MESH_ENDPOINTS"]["value"] == "wk-ns/wirekube-relay-pool"
    assert env["WIREKUBE_RELAY_MESH_SECRET_FILE"]["value"] == "/etc/wirekube/relay-mesh/secret"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert {"name": "relay", "containerPort": 4443, "protocol": "TCP"} in c["ports"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    (mount,) = c["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == "/etc/wirekube/relay-mesh" and mount["name"] == volume["name"]
    assert volume["secret"]["secretName"] == "wirekube-relay-mesh"
    assert dep["spec"]["selector"]["matchLabels"].items() <= (
        dep["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize(
    ("managed", "policy"),
    [
        ({"serviceType": "NodePort"}, "Cluster"),
        ({"serviceType": "LoadBalancer"}, "Local"),
        ({"serviceType": "ClusterIP", "externalIPs": ["198.51.100.4"]}, None),
    ],
)
def test_service_types(managed: dict[str, Any], policy: str | None) -> None:
    m = mesh({"provider": "managed", "managed": managed})
    svc = by_kind(d.desired(m, CONFIG))[("Service", "wirekube-relay")]["spec"]
    assert svc["type"] == managed["serviceType"]
    assert svc.get("externalTrafficPolicy") == policy
    assert svc.get("externalIPs") == managed.get("externalIPs")


@pytest.mark.parametrize(
    ("managed", "problem"),
    [
        ({"serviceType": "ClusterIP"}, "needs spec.relay.managed.externalIPs"),
        ({"serviceType": "ExternalName"}, "must be one of"),
        ({"replicas": 1000}, "replicas must be"),
        ({"replicas": -1}, "replicas must be"),
        ({"port": 9090}, "metrics or admin port"),
        ({"externalIPs": ["relay.example"]}, "not an IP address"),
    ],
)
def test_specs_the_controller_will_not_build(managed: dict[str, Any], problem: str) -> None:
    with pytest.raises(d.InvalidManagedRelay, match=problem):
        d.desired(mesh({"provider": "managed", "managed": managed}), CONFIG)


def test_the_mesh_secret_is_random_printable_and_owned() -> None:
    s = d.mesh_secret(mesh(), CONFIG, bytes(range(32)))
    value = base64.b64decode(s["data"]["secret"])
    assert value.isascii() and value.strip() == value and len(value) == 43
    assert s["metadata"]["name"] == "wirekube-relay-mesh"
    assert s["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert d.mesh_secret(mesh(), CONFIG, bytes(32)) != s


# -- plan ----------------------------------------------------------------------


def as_observed(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the API server would hand back: our fields plus defaults and allocations."""
    out = {}
    for i, obj in enumerate(copy.deepcopy(objs)):
        obj["metadata"]["uid"] = f"obj-{i}"
        obj["metadata"]["resourceVersion"] = str(100 + i)
        if obj["kind"] == "Service" and obj["spec"].get("type") in ("NodePort", "LoadBalancer"):
            obj["spec"]["clusterIP"] = "10.96.0.9"
            for p in obj["spec"]["ports"]:
                p["nodePort"] = 31000
        if obj["kind"] == "Deployment":
            obj["spec"]["revisionHistoryLimit"] = 10
            obj["status"] = {"readyReplicas": 1}
        out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def test_missing_objects_are_applied_in_order() -> None:
    objs = d.desired(mesh(), CONFIG)
    ops = plan(objs, {})
    assert [op.obj for op in ops if isinstance(op, Apply)] == objs
    assert all(isinstance(op, Apply) and op.why == "missing" for op in ops)


def test_server_defaults_are_not_drift() -> None:
    objs = d.desired(mesh(), CONFIG)
    assert plan(objs, as_observed(objs)) == []


def test_a_spec_change_reapplies_even_when_it_only_removes_a_field() -> None:
    with_ips = d.desired(
        mesh({"provider": "managed", "managed": {"externalIPs": ["198.51.100.4"]}}), CONFIG
    )
    without = d.desired(mesh(), CONFIG)
    ops = plan(without, as_observed(with_ips))
    assert [
        (op.obj["kind"], op.obj["metadata"]["name"]) for op in ops if isinstance(op, Apply)
    ] == [("Service", "wirekube-relay")]


def test_kubectl_scale_is_reverted_with_an_event() -> None:
    objs = d.desired(mesh({"provider": "managed", "managed": {"replicas": 2}}), CONFIG)
    observed = as_observed(objs)
    observed[("Deployment", "wirekube-relay")]["spec"]["replicas"] = 5
    ops = plan(objs, observed)
    apply, note = ops
    assert isinstance(apply, Apply) and apply.obj["spec"]["replicas"] == 2
    assert "scaled to 5" in apply.why
    assert isinstance(note, Note) and note.reason == "ScaleReverted" and note.warning
    assert "replicas is 2" in note.message


def test_other_edits_are_drift_too() -> None:
    objs = d.desired(mesh(), CONFIG)
    observed = as_observed(objs)
    observed[("Service", "wirekube-relay")]["spec"]["type"] = "NodePort"
    (op,) = plan(objs, observed)
    assert isinstance(op, Apply) and ".spec.type" in op.why


def test_unwanted_owned_objects_are_deleted_with_their_uid() -> None:
    observed = as_observed(d.desired(mesh(), CONFIG))
    ops = plan([], observed)
    assert all(isinstance(op, Delete) for op in ops) and len(ops) == 4
    assert {(op.kind, op.name, op.uid) for op in ops if isinstance(op, Delete)} == {
        (k[0], k[1], o["metadata"]["uid"]) for k, o in observed.items()
    }


def test_drift() -> None:
    assert drift({"a": 1}, {"a": 1, "b": 2}) is None
    assert drift({"a": [1, {"x": 1}]}, {"a": [1, {"x": 1, "y": 0}]}) is None
    assert drift({"a": [1]}, {"a": [1, 2]}) == ".a"
    assert drift({"a": {"b": 1}}, {"a": {"b": 2}}) == ".a.b"
    assert drift({"a": {"b": 1}}, {"a": None}) == ".a"


# -- status --------------------------------------------------------------------


def test_status_says_where_and_why() -> None:
    address = RelayAddress("203.0.113.7", 31478, NODE_PORT, "node c's ExternalIP", "c")
    s = relay_status(address, 3, {"status": {"readyReplicas": 2}}, "ns/wirekube-relay", 4)
    assert s == {
        "address": "203.0.113.7:31478",
        "source": "NodePort",
        "node": "c",
        "reason": "node c's ExternalIP",
        "replicas": 3,
        "readyReplicas": 2,
        "service": "ns/wirekube-relay",
        "observedGeneration": 4,
    }
    v6 = relay_status(RelayAddress("2001:db8::1", 3478, "ExternalIP", "x"), 1, None, "s", 1)
    assert v6["address"] == "[2001:db8::1]:3478" and v6["readyReplicas"] == 0
    none = relay_status(
        RelayAddress(reason="waiting for the load balancer"), 1, None, "s", 1, "bad"
    )
    assert "address" not in none and none["problem"] == "bad"
