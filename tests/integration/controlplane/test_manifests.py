"""deploy/kustomize renders with the pinned kubectl, every overlay is accepted by
the real apiserver (server-side dry run: built-in schemas + our CRDs), and the
workloads have the shape configuration.txt describes.

The relay's Deployment, Services and PodDisruptionBudget are not in the
manifests any more: the gateway controller makes them from each overlay's
WireKubeMesh (``spec.relay.managed``) with the image the overlay gives it, and
what it would make is checked here too (rendered by the controller's own
``desired`` and accepted by the apiserver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_common.crd import Mesh
from wirekube_gateway.managedrelay import desired as managed

OVERLAYS = {
    "base": "deploy/kustomize/base",
    "dev": "deploy/kustomize/overlays/dev",
    "production": "deploy/kustomize/overlays/production",
    "air-gapped": "deploy/kustomize/overlays/air-gapped",
}
RELAY_REPLICAS = {"base": 1, "dev": 1, "production": 3, "air-gapped": 2}
NS = "wirekube-system"
# Agents' gateway health-report Leases (agent writes, gateway controller reads).
HEALTH_NS = "wirekube-gateway-health"


def render(cp: Any, repo: Path, overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = cp.kubectl("kustomize", str(repo / OVERLAYS[overlay])).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    index = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(index) == len(docs), "duplicate objects"
    return index


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_expected_relay_replicas(
    control_plane: Any, repo: Path, overlay: str
) -> None:
    objs = render(control_plane, repo, overlay)
    mesh = objs[("WireKubeMesh", "default")]
    assert mesh["spec"]["relay"]["provider"] == "managed"
    assert mesh["spec"]["relay"]["managed"]["replicas"] == RELAY_REPLICAS[overlay]
    # The controller owns the relay's objects; the manifests do not duplicate them.
    for owned in (
        ("Deployment", "wirekube-relay"),
        ("Service", "wirekube-relay"),
        ("Service", "wirekube-relay-pool"),
        ("PodDisruptionBudget", "wirekube-relay"),
        ("Secret", "wirekube-relay-mesh"),
    ):
        assert owned not in objs, owned
    # ... but what the relay pods need stays: their ServiceAccount and role.
    assert ("ServiceAccount", "wirekube-relay") in objs
    assert ("ClusterRoleBinding", "wirekube-relay") in objs
    # Scaling the relay touches nothing else.
    assert objs[("Deployment", "wirekube-gateway-controller")]["spec"]["replicas"] == 2
    assert ("DaemonSet", "wirekube-agent") in objs
    for crd in ("wirekubemeshes", "wirekubepeers", "wirekubegateways"):
        assert ("CustomResourceDefinition", f"{crd}.wirekube.io") in objs
    assert "namespace" not in mesh["metadata"], "the mesh is cluster-scoped"
    # A node writes only its own peer (test_agent_own_peer.py), in every overlay.
    binding = objs[("ValidatingAdmissionPolicyBinding", "wirekube-agent-own-peer")]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert ("ValidatingAdmissionPolicy", "wirekube-agent-own-peer") in objs
    for (kind, _), obj in objs.items():
        if kind in (
            "Deployment",
            "DaemonSet",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        ):
            allowed = (NS, HEALTH_NS) if kind in ("Role", "RoleBinding") else (NS,)
            assert obj["metadata"]["namespace"] in allowed, (kind, obj["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_accepted_by_the_apiserver(control_plane: Any, repo: Path, overlay: str) -> None:
    proc = control_plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        str(repo / OVERLAYS[overlay]),
    )
    assert "wirekubemesh.wirekube.io/default serverside-applied (server dry run)" in proc.stdout
    assert "daemonset.apps/wirekube-agent serverside-applied (server dry run)" in proc.stdout
    for name in ("wirekube-relay", "wirekube-stun-probe", "wirekube-gateway-controller"):
        assert f"networkpolicy.networking.k8s.io/{name} serverside-applied" in proc.stdout


def controller_env(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    dep = objs[("Deployment", "wirekube-gateway-controller")]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def managed_relay(
    objs: dict[tuple[str, str], dict[str, Any]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """What the gateway controller would make from this overlay."""
    env = controller_env(objs)
    mesh = Mesh.from_dict({**objs[("WireKubeMesh", "default")], "metadata": {
        "name": "default", "uid": "00000000-0000-0000-0000-000000000001"}})  # fmt: skip
    config = managed.RelayConfig(
        namespace=NS,
        image=env["WIREKUBE_RELAY_IMAGE"],
        image_pull_policy=env["WIREKUBE_RELAY_IMAGE_PULL_POLICY"],
    )
    made = managed.desired(mesh, config)
    made.append(managed.mesh_secret(mesh, config, b"x" * 32))
    return {(o["kind"], o["metadata"]["name"]): o for o in made}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_relay_the_controller_makes_from_each_overlay_is_accepted(
    control_plane: Any, repo: Path, overlay: str
) -> None:
    objs = render(control_plane, repo, overlay)
    made = managed_relay(objs)
    dep = made[("Deployment", "wirekube-relay")]
    assert dep["spec"]["replicas"] == RELAY_REPLICAS[overlay]
    # The pods' ServiceAccount exists in the overlay.
    pod = dep["spec"]["template"]["spec"]
    assert ("ServiceAccount", pod["serviceAccountName"]) in objs
    docs = [o for o in made.values()]
    for o in docs:  # a dry run cannot resolve an owner that does not exist yet
        del o["metadata"]["ownerReferences"]
    proc = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        input="\n---\n".join(yaml.safe_dump(o) for o in docs),
    )  # fmt: skip
    assert "deployment.apps/wirekube-relay serverside-applied (server dry run)" in proc.stdout
    assert "poddisruptionbudget.policy/wirekube-relay serverside-applied" in proc.stdout


def test_overlay_specifics(control_plane: Any, repo: Path) -> None:
    prod = render(control_plane, repo, "production")
    assert prod[("WireKubeMesh", "default")]["spec"]["relay"]["managed"]["replicas"] == 3
    pdb = managed_relay(prod)[("PodDisruptionBudget", "wirekube-relay")]["spec"]
    assert pdb["maxUnavailable"] == 1, "a drain never takes the 3-replica pool below two"
    assert controller_env(prod)["WIREKUBE_RELAY_IMAGE"] == "wirekube/relay:0.1.0"

    gapped = render(control_plane, repo, "air-gapped")
    mesh = gapped[("WireKubeMesh", "default")]["spec"]
    assert mesh["relay"]["mode"] == "always"
    assert "stunServers" not in mesh
    assert ("Deployment", "wirekube-stun-probe") not in gapped
    assert ("Service", "wirekube-stun-probe") not in gapped
    # The overlay's `images:` entry reaches the relay pods through the controller.
    image = managed_relay(gapped)[("Deployment", "wirekube-relay")]["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == "registry.internal.example/wirekube/relay:0.1.0"

    dev = render(control_plane, repo, "dev")
    assert dev[("WireKubeMesh", "default")]["spec"]["relay"]["managed"]["serviceType"] == "NodePort"
    assert managed_relay(dev)[("Service", "wirekube-relay")]["spec"]["type"] == "NodePort"
    assert dev[("WireKubeMesh", "default")]["spec"]["relay"]["handshakeTimeoutSeconds"] < 30
    relay_pod = managed_relay(dev)[("Deployment", "wirekube-relay")]["spec"]["template"]["spec"]
    for pod in [dev[("DaemonSet", "wirekube-agent")]["spec"]["template"]["spec"], relay_pod]:
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["image"].endswith(":dev") and c["imagePullPolicy"] == "Never"

    base = render(control_plane, repo, "base")
    relay_svc = managed_relay(base)[("Service", "wirekube-relay")]["spec"]
    assert relay_svc["type"] == "LoadBalancer"
    assert relay_svc["ports"] == [
        {"name": "relay", "port": 3478, "targetPort": "relay", "protocol": "TCP"}
    ]
    pool = managed_relay(base)[("Service", "wirekube-relay-pool")]["spec"]
    assert pool["clusterIP"] == "None", "headless: one DNS record per relay replica"
    stun = base[("Service", "wirekube-stun-probe")]["spec"]
    assert sorted((p["port"], p["protocol"]) for p in stun["ports"]) == [
        (3478, "TCP"),
        (3478, "UDP"),
    ]


def test_agent_daemonset_matches_configuration(control_plane: Any, repo: Path) -> None:
    ds = render(control_plane, repo, "base")[("DaemonSet", "wirekube-agent")]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == "wirekube-agent"
    assert pod["nodeSelector"]["wirekube.io/vpn-enabled"] == "true"
    (init,) = pod["initContainers"]
    assert init["command"] == ["wirekube-agent", "cleanup"]
    (agent,) = pod["containers"]
    # configuration.txt names NET_ADMIN and SYS_MODULE; the agent also needs
    # NET_RAW for STUN and path probes on WireGuard's port (a raw socket).
    wanted = {
        "cleanup": ["NET_ADMIN", "SYS_MODULE"],
        "agent": ["NET_ADMIN", "NET_RAW", "SYS_MODULE"],
    }
    for c in (init, agent):
        sc = c["securityContext"]
        assert sc["privileged"] is False
        assert sorted(sc["capabilities"]["add"]) == wanted[c["name"]]
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["host-proc-sys-net"] == "/host/proc/sys/net"
        assert mounts["state"] == "/var/lib/wirekube"
        env = {e["name"]: e for e in c["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["host-proc-sys-net"]["hostPath"]["path"] == "/proc/sys/net"
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/wirekube"
    # no container port (under hostNetwork a hostPort, which would keep a
    # surge rollout's new pod off its node); Prometheus is told by annotation
    assert "ports" not in agent
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_only_the_agent_may_be_root(control_plane: Any, repo: Path) -> None:
    objs = render(control_plane, repo, "base")
    objs.update(managed_relay(objs))
    for name in ("wirekube-relay", "wirekube-gateway-controller", "wirekube-stun-probe"):
        pod = objs[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["serviceAccountName"] == name
        for c in pod["containers"]:
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert "add" not in c["securityContext"]["capabilities"]
    stun = objs[("Deployment", "wirekube-stun-probe")]["spec"]["template"]["spec"]
    assert stun["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_what_each_service_needs(
    control_plane: Any, repo: Path, overlay: str
) -> None:
    """One ingress policy per pod workload (not the host-network agent); every
    port it admits is a named port of that workload; admin gRPC is never admitted."""
    objs = render(control_plane, repo, overlay)
    policies = {name: o for (kind, name), o in objs.items() if kind == "NetworkPolicy"}
    wanted = {
        "wirekube-relay": {("relay", "TCP"), ("metrics", "TCP")},
        "wirekube-stun-probe": {("stun-udp", "UDP"), ("stun-tcp", "TCP"), ("metrics", "TCP")},
        "wirekube-gateway-controller": {("metrics", "TCP")},
    }
    assert set(policies) == set(wanted)
    agent = objs[("DaemonSet", "wirekube-agent")]["spec"]["template"]["spec"]
    assert agent["hostNetwork"] is True  # why the agent has no policy
    for name, pol in policies.items():
        spec = pol["spec"]
        assert pol["metadata"]["namespace"] == NS and spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        admitted = {(p["port"], p["protocol"]) for rule in spec["ingress"] for p in rule["ports"]}
        assert admitted == wanted[name], name
        for rule in spec["ingress"]:
            if any(p["port"] == "metrics" for p in rule["ports"]):
                assert rule["from"] == [{"namespaceSelector": {}}]  # in-cluster only
        # The relay's Deployment may instead be made by the managed-relay
        # controller (then not rendered here); where rendered, the policy's
        # ports are its container's named ports.
        workload = objs.get(("Deployment", name))
        if workload is not None:
            (container,) = workload["spec"]["template"]["spec"]["containers"]
            named = {(p["name"], p.get("protocol", "TCP")) for p in container["ports"]}
            assert admitted <= named, (name, admitted - named)
