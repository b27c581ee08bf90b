"""A node writes only its own WireKubePeer: the admission policy on the real apiserver.

deploy/kustomize/base/admission/agent-own-peer.yaml is installed with the CRDs
and RBAC (``install_wirekube``). The agents here hold exactly what a kubelet
gives an agent pod: a TokenRequest token bound to a Pod whose ``nodeName`` is
set (``wirekube_lab.podidentity``; no kubelet needed), which names that node in
``userInfo.extra``. Every write path is exercised - create, merge patch,
update (PUT), server-side apply - on the object and on its status
subresource, which the policy must match separately.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from wirekube_lab import podidentity
from wirekube_lab.controlplane import ControlPlane

NS = "wirekube-system"
API = "wirekube.io/v1alpha1"
NODE_LABEL = "wirekube.io/node"
KEY_X = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_Y = "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA="
KEY_EVIL = "aN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA="
POLICY = "ValidatingAdmissionPolicy 'wirekube-agent-own-peer'"
NO_NODE = "this token names no node"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def peer(name: str, node: str | None, key: str, endpoint: str = "203.0.113.5:51820") -> str:
    meta: dict[str, Any] = {"name": name}
    if node is not None:
        meta["labels"] = {NODE_LABEL: node}
    return json.dumps(
        {
            "apiVersion": API,
            "kind": "WireKubePeer",
            "metadata": meta,
            "spec": {"publicKey": key, "endpoint": endpoint},
        }
    )


def status_body(name: str, node: str, **status: Any) -> str:
    return json.dumps(
        {
            "apiVersion": API,
            "kind": "WireKubePeer",
            "metadata": {"name": name, "labels": {NODE_LABEL: node}},
            "status": status,
        }
    )


class World:
    """Nodes x, y, w (a node with no peer yet); agents on x, y and w; an unbound agent token."""

    def __init__(self, cp: ControlPlane, suffix: str, tmp: Path) -> None:
        self.cp = cp
        self.x, self.y, self.w = (f"vap-{n}-{suffix}" for n in ("x", "y", "w"))
        for node in (self.x, self.y, self.w):
            cp.kubectl(
                "create",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
            )
        self.identities = {
            node: podidentity.issue(cp, node, path=tmp / f"{node}.kubeconfig")
            for node in (self.x, self.y, self.w)
        }
        self.unbound = cp.kubeconfig_for_service_account(
            NS, "wirekube-agent", path=tmp / "unbound.kubeconfig", duration_seconds=3600
        )

    def as_node(self, node: str) -> Kubectl:
        return self._runner(self.identities[node].kubeconfig)

    def as_unbound(self) -> Kubectl:
        return self._runner(self.unbound)

    def _runner(self, kubeconfig: Path) -> Kubectl:
        def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
            return self.cp.kubectl(*args, kubeconfig=kubeconfig, input=input, check=False)

        return run

    def admin(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, input=input, check=False)

    def get(self, name: str) -> dict[str, Any]:
        return json.loads(self.cp.kubectl("get", "wkp", name, "-o", "json").stdout)

    def cleanup(self) -> None:
        for identity in self.identities.values():
            identity.revoke(self.cp)
        for node in (self.x, self.y, self.w):
            for name in (f"node-{node}", f"node-{node}-2"):
                self.admin("delete", "wkp", name, "--ignore-not-found", "--wait=false")
            self.admin("delete", "node", node, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(control_plane, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("vap"))
    try:
        # y's peer exists (its own agent made it); x's is made by the first test.
        made = w.as_node(w.y)("create", "-f", "-", input=peer(f"node-{w.y}", w.y, KEY_Y))
        assert made.returncode == 0, made.stderr
        yield w
    finally:
        w.cleanup()


def refused(proc: subprocess.CompletedProcess[str], why: str) -> bool:
    """Refused by the policy (reason Forbidden) for the reason given."""
    return (
        proc.returncode != 0
        and "(Forbidden)" in proc.stderr
        and POLICY in proc.stderr
        and why in proc.stderr
    )


def ok(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == 0


def merge(body: dict[str, Any]) -> list[str]:
    return ["--type=merge", "-p", json.dumps(body)]


def test_the_token_names_its_pods_node(world: World) -> None:
    who = world.as_node(world.x)("auth", "whoami", "-o", "json")
    assert ok(who), who.stderr
    extra = json.loads(who.stdout)["status"]["userInfo"]["extra"]
    assert extra["authentication.kubernetes.io/node-name"] == [world.x]
    unbound = json.loads(world.as_unbound()("auth", "whoami", "-o", "json").stdout)
    assert "authentication.kubernetes.io/node-name" not in unbound["status"]["userInfo"].get(
        "extra", {}
    )


def test_an_agent_writes_its_own_peer_every_way(world: World) -> None:
    x, own = world.x, f"node-{world.x}"
    agent = world.as_node(x)
    made = agent("create", "-f", "-", input=peer(own, x, KEY_X))
    assert ok(made), made.stderr
    steps = {
        "merge patch": agent("patch", "wkp", own, *merge({"spec": {"endpoint": "203.0.113.6:51820"}})),
        "json patch": agent(
            "patch", "wkp", own, "--type=json",
            "-p", json.dumps([{"op": "replace", "path": "/spec/persistentKeepalive", "value": 25}]),
        ),
        "server-side apply": agent(
            "apply", "--server-side", "--force-conflicts", "--field-manager=wirekube-agent", "-f", "-",
            input=peer(own, x, KEY_X, endpoint="203.0.113.7:51820"),
        ),
        "status merge patch": agent(
            "patch", "wkp", own, "--subresource=status", *merge({"status": {"natType": "cone"}})
        ),
        "status server-side apply": agent(
            "apply", "--server-side", "--force-conflicts", "--subresource=status",
                "--field-manager=wirekube-agent",
            "-f", "-", input=status_body(own, x, connected=True),
        ),
    }  # fmt: skip
    for what, proc in steps.items():
        assert ok(proc), (what, proc.stderr)
    # update (PUT) of the object and of its status, from what it reads
    current = world.get(own)
    current["spec"]["endpoint"] = "203.0.113.8:51820"
    replaced = agent("replace", "-f", "-", input=json.dumps(current))
    assert ok(replaced), replaced.stderr
    current = world.get(own)
    current["status"]["transportMode"] = "direct"
    replaced = agent("replace", "--subresource=status", "-f", "-", input=json.dumps(current))
    assert ok(replaced), replaced.stderr
    got = world.get(own)
    assert got["spec"]["endpoint"] == "203.0.113.8:51820"
    assert got["spec"]["persistentKeepalive"] == 25
    assert got["status"]["connected"] is True and got["status"]["natType"] == "cone"
    assert got["status"]["transportMode"] == "direct"
    assert got["metadata"]["labels"][NODE_LABEL] == x


def test_another_nodes_peer_is_refused_for_every_verb(world: World) -> None:
    y = f"node-{world.y}"
    agent = world.as_node(world.x)
    before = world.get(y)
    stolen = dict(before, spec=dict(before["spec"], publicKey=KEY_EVIL))
    stolen_status = dict(before, status={"connected": True})
    attempts = {
        "merge patch": agent("patch", "wkp", y, *merge({"spec": {"publicKey": KEY_EVIL}})),
        "json patch": agent(
            "patch", "wkp", y, "--type=json",
            "-p", json.dumps([{"op": "replace", "path": "/spec/publicKey", "value": KEY_EVIL}]),
        ),
        "update": agent("replace", "-f", "-", input=json.dumps(stolen)),
        "server-side apply": agent(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=peer(y, world.y, KEY_EVIL, endpoint="198.51.100.66:51820"),
        ),
        "status merge patch": agent(
            "patch", "wkp", y, "--subresource=status", *merge({"status": {"connected": True}})
        ),
        "status update": agent(
            "replace", "--subresource=status", "-f", "-", input=json.dumps(stolen_status)
        ),
        "status server-side apply": agent(
            "apply", "--server-side", "--force-conflicts", "--subresource=status", "-f", "-",
            input=status_body(y, world.y, connected=True),
        ),
    }  # fmt: skip
    why = f"the agent on node {world.x} may write only WireKubePeer node-{world.x}, not {y}"
    for what, proc in attempts.items():
        assert refused(proc, why), (what, proc.stderr)
    after = world.get(y)
    assert after["spec"] == before["spec"]
    assert after.get("status") == before.get("status")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_creating_a_peer_named_for_another_node_is_refused(world: World) -> None:
    agent = world.as_node(world.x)
    # exact name, not a prefix: node-<x>-2 belongs to a node called <x>-2
    for name, label in (
        (f"node-{world.x}-2", world.x),
        (f"node-{world.w}", world.w),
        (f"node-{world.w}", world.x),
    ):
        proc = agent("create", "-f", "-", input=peer(name, label, KEY_EVIL))
        assert refused(proc, f"may write only WireKubePeer node-{world.x}, not {name}"), proc.stderr
        applied = agent("apply", "--server-side", "-f", "-", input=peer(name, label, KEY_EVIL))
        assert refused(applied, f"not {name}"), applied.stderr
        assert world.admin("get", "wkp", name).returncode != 0, name


def test_the_node_label_may_not_be_changed_or_removed(world: World) -> None:
    x, own = world.x, f"node-{world.x}"
    agent = world.as_node(x)
    if world.admin("get", "wkp", own).returncode != 0:  # run on its own
        assert ok(agent("create", "-f", "-", input=peer(own, x, KEY_X)))
    to_y = f"may not set label {NODE_LABEL} to {world.y}"
    removed = f"may not remove label {NODE_LABEL}"
    attempts = [
        (agent("label", "wkp", own, "--overwrite", f"{NODE_LABEL}={world.y}"), to_y),
        (agent("patch", "wkp", own, *merge({"metadata": {"labels": {NODE_LABEL: world.y}}})), to_y),
        (agent("label", "wkp", own, f"{NODE_LABEL}-"), removed),
        (agent("patch", "wkp", own, *merge({"metadata": {"labels": None}})), removed),
        (
            agent(
                "patch", "wkp", own, "--type=json",
                "-p", json.dumps([{"op": "remove", "path": "/metadata/labels"}]),
            ),
            removed,
        ),
    ]  # fmt: skip
    for proc, why in attempts:
        assert refused(proc, why), proc.stderr
    # nor can a new peer be born with another node's label
    w_agent = world.as_node(world.w)
    proc = w_agent("create", "-f", "-", input=peer(f"node-{world.w}", world.y, KEY_EVIL))
    assert refused(proc, f"the agent on node {world.w} {to_y}"), proc.stderr
    assert world.get(own)["metadata"]["labels"][NODE_LABEL] == x
    # other labels stay the agent's to manage
    assert ok(agent("label", "wkp", own, "example.com/team=net"))


def test_a_token_bound_to_no_pod_writes_nothing(world: World) -> None:
    unbound = world.as_unbound()
    x, own = world.x, f"node-{world.x}"
    if world.admin("get", "wkp", own).returncode != 0:  # run on its own
        assert ok(world.as_node(x)("create", "-f", "-", input=peer(own, x, KEY_X)))
    before = world.get(own)
    attempts = [
        unbound("create", "-f", "-", input=peer(f"node-{world.w}", world.w, KEY_EVIL)),
        unbound("patch", "wkp", own, *merge({"spec": {"publicKey": KEY_EVIL}})),
        unbound(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=peer(own, x, KEY_EVIL)
        ),
        unbound(
            "patch", "wkp", own, "--subresource=status", *merge({"status": {"connected": False}})
        ),
    ]
    for proc in attempts:
        assert refused(proc, NO_NODE), proc.stderr
    assert world.get(own)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # Reading stays allowed: the policy only judges writes.
    assert ok(unbound("get", "wkp", own))


def test_the_refusal_is_a_forbidden_status_that_says_why(world: World) -> None:
    api = world.cp.api_client(world.identities[world.x].kubeconfig)
    with api:
        custom = k8s.CustomObjectsApi(api)
        with pytest.raises(k8s.ApiException) as caught:
            custom.patch_cluster_custom_object(
                "wirekube.io", "v1alpha1", "wirekubepeers", f"node-{world.y}",
                {"spec": {"publicKey": KEY_EVIL}},
            )  # fmt: skip
    status = json.loads(caught.value.body)
    assert caught.value.status == 403
    assert status["reason"] == "Forbidden"
    assert (
        f"the agent on node {world.x} may write only WireKubePeer node-{world.x}, "
        f"not node-{world.y}" in status["message"]
    )


def test_admins_and_other_identities_are_unaffected(world: World) -> None:
    y = f"node-{world.y}"
    assert ok(world.admin("patch", "wkp", y, *merge({"spec": {"persistentKeepalive": 30}})))
    assert ok(world.admin("label", "wkp", y, "--overwrite", f"{NODE_LABEL}={world.y}"))
    assert ok(
        world.admin(
            "patch", "wkp", y, "--subresource=status", *merge({"status": {"connected": False}})
        )
    )
    other = f"node-{world.y}-2"
    assert ok(world.admin("create", "-f", "-", input=peer(other, None, KEY_EVIL)))
    assert ok(world.admin("delete", "wkp", other))
    # The gateway controller garbage-collects peers of departed nodes: DELETE is
    # not judged by the policy, only RBAC (tests/integration/controlplane/test_rbac.py).


def test_the_policy_matches_the_agent_the_manifests_deploy(
    control_plane: ControlPlane, repo: Path
) -> None:
    """The policy names the agent by username; the DaemonSet must run as exactly
    that ServiceAccount with the kubelet's pod-bound token (automount on)."""
    out = control_plane.kubectl("kustomize", str(repo / "deploy/kustomize/base")).stdout
    objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    ds = objs[("DaemonSet", "wirekube-agent")]
    pod = ds["spec"]["template"]["spec"]
    user = f"system:serviceaccount:{ds['metadata']['namespace']}:{pod['serviceAccountName']}"
    assert pod.get("automountServiceAccountToken", True) is True
    sa = objs[("ServiceAccount", pod["serviceAccountName"])]
    assert sa.get("automountServiceAccountToken", True) is True
    policy = objs[("ValidatingAdmissionPolicy", "wirekube-agent-own-peer")]["spec"]
    (condition,) = policy["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{user}'"
    binding = objs[("ValidatingAdmissionPolicyBinding", "wirekube-agent-own-peer")]["spec"]
    assert binding["policyName"] == "wirekube-agent-own-peer"
    assert policy["failurePolicy"] == "Fail"
