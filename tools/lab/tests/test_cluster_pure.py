"""cluster: the pure helpers (image names, the lab-safety check, per-node archives, CoreDNS)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import yaml

from wirekube_lab import kubeplan
from wirekube_lab.cluster import (
    KubeClusterError,
    check_lab_safe,
    coredns_manifests,
    image_repository_name,
    node_archives,
    normalize_reference,
)


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("wirekube/agent:dev", "docker.io/wirekube/agent:dev"),
        ("busybox", "docker.io/library/busybox:latest"),
        (
            "registry.internal.example/wirekube/relay:0.1.0",
            "registry.internal.example/wirekube/relay:0.1.0",
        ),
        ("localhost/x/y:1", "localhost/x/y:1"),
        ("host:5000/a/b", "host:5000/a/b:latest"),
        ("docker.io/wirekube/agent@sha256:ab", "docker.io/wirekube/agent@sha256:ab"),
    ],
)
def test_references_are_normalised_as_the_cri_stores_them(ref: str, want: str) -> None:
    assert normalize_reference(ref) == want


def test_repository_name_drops_registry_tag_and_digest() -> None:
    assert (
        image_repository_name("registry.internal.example/wirekube/gateway-controller:0.1.0")
        == "gateway-controller"
    )
    assert image_repository_name("docker.io/wirekube/agent@sha256:00") == "agent"
    assert image_repository_name("stun-probe") == "stun-probe"


def _mesh(servers: list[str]) -> str:
    return yaml.safe_dump_all(
        [
            {"kind": "Deployment", "metadata": {"name": "x"}},
            {
                "kind": "WireKubeMesh",
                "metadata": {"name": "default"},
                "spec": {"stunServers": servers},
            },
        ]
    )


def test_lab_safety_refuses_public_and_named_stun_servers() -> None:
    check_lab_safe(_mesh(["198.18.0.11:3478", "198.18.0.12:3478"]))
    check_lab_safe(_mesh([]))
    with pytest.raises(KubeClusterError, match="public"):
        check_lab_safe(_mesh(["198.18.0.11:3478", "1.1.1.1:3478"]))
    with pytest.raises(KubeClusterError, match="cannot vouch"):
        check_lab_safe(_mesh(["stun.cloudflare.com:3478", "198.18.0.11:3478"]))


def _plan(taints: tuple[str, ...]) -> kubeplan.KubeNodePlan:
    return kubeplan.KubeNodePlan(
        "n",
        "n",
        "ns",
        IPv4Address("10.1.0.10"),
        "vpc",
        IPv4Network("10.244.1.0/24"),
        "/c0",
        (),
        taints,
    )


def test_a_private_node_imports_only_pause_and_the_agent() -> None:
    addons = {kubeplan.PAUSE_IMAGE: Path("p.tar"), kubeplan.COREDNS_IMAGE: Path("c.tar")}
    services = {s: Path(f"{s}.tar") for s in ("agent", "relay", "gateway-controller", "stun-probe")}
    assert node_archives(_plan(("k=v:NoSchedule",)), addons, services) == [
        Path("p.tar"),
        Path("agent.tar"),
    ]
    assert len(node_archives(_plan(()), addons, services)) == 6


def test_coredns_answers_cluster_names_and_forwards_nothing() -> None:
    docs = coredns_manifests("10.96.0.10", kubeplan.COREDNS_IMAGE)
    corefile = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["Corefile"]
    assert "kubernetes cluster.local" in corefile
    assert "forward" not in corefile and "proxy" not in corefile
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "10.96.0.10"
