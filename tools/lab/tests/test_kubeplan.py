"""kubeplan: node plans, pod routes and the rendered node configuration."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import PurePosixPath

import pytest
import yaml

from wirekube_lab import kubeplan
from wirekube_lab.addressing import plan_lab
from wirekube_lab.naming import RunIds
from wirekube_lab.topology import parse_topology

TOPOLOGY = {
    "name": "kube",
    "networks": {"vpc-a": {"nat": {"kind": "symmetric"}}},
    "hosts": {
        "pub": {"network": "internet", "role": "node"},
        "a1": {
            "network": "vpc-a",
            "role": "node",
            "labels": {"wirekube.io/lab-private": "true", "zone": "a"},
        },
        "stun": {"network": "internet", "role": "stun"},
    },
}


def _plan():
    return plan_lab(
        parse_topology(TOPOLOGY), RunIds(pid=1, run="abcde"), IPv4Network("100.64.0.4/30")
    )


def test_one_plan_per_node_host_with_its_own_pod_cidr_and_cgroup() -> None:
    nodes = kubeplan.plan_kube_nodes(_plan(), "wklab-1-abcde-k")
    assert [n.name for n in nodes] == ["pub", "a1"]
    assert [str(n.pod_cidr) for n in nodes] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert [n.cgroup_root for n in nodes] == ["/wklab-1-abcde-k0", "/wklab-1-abcde-k1"]
    assert nodes[0].taints == ()
    assert nodes[1].taints == ("wirekube.io/lab-private=true:NoSchedule",)
    assert dict(nodes[1].labels)["zone"] == "a"
    assert nodes[1].bridge_gateway == IPv4Address("10.244.2.1")


def test_a_topology_without_nodes_is_refused() -> None:
    topo = {"name": "x", "hosts": {"s": {"network": "internet", "role": "stun"}}}
    plan = plan_lab(parse_topology(topo), RunIds(pid=1, run="abcde"), IPv4Network("100.64.0.4/30"))
    with pytest.raises(kubeplan.KubePlanError):
        kubeplan.plan_kube_nodes(plan, "c")


def test_pod_cidrs_run_out_with_a_clear_error() -> None:
    assert str(kubeplan.node_pod_cidr(254)) == "10.244.255.0/24"
    with pytest.raises(kubeplan.KubePlanError):
        kubeplan.node_pod_cidr(255)


def test_pod_routes_public_node_from_the_internet_nated_node_only_in_its_network() -> None:
    plan = _plan()
    nodes = kubeplan.plan_kube_nodes(plan, "c")
    routes = kubeplan.pod_routes(plan, nodes)
    pub, a1 = plan.host("pub"), plan.host("a1")
    router = plan.router("vpc-a")
    assert set(routes) == {
        kubeplan.PodRoute(plan.internet_ns, nodes[0].pod_cidr, pub.address),
        kubeplan.PodRoute(router.ns, nodes[1].pod_cidr, a1.address),
    }
    assert routes[0].argv()[:4] == ["ip", "-n", plan.internet_ns, "route"]


def test_kubelet_config_keeps_images_and_never_names_an_upstream_resolver() -> None:
    node = kubeplan.plan_kube_nodes(_plan(), "c")[1]
    cfg = yaml.safe_load(kubeplan.kubelet_config(node))
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["cgroupRoot"] == node.cgroup_root
    assert cfg["imageGCHighThresholdPercent"] == 100
    assert cfg["resolvConf"] == ""
    assert cfg["clusterDNS"] == ["10.96.0.10"]
    assert cfg["registerWithTaints"] == [
        {"key": "wirekube.io/lab-private", "value": "true", "effect": "NoSchedule"}
    ]
    argv = kubeplan.kubelet_argv("/bin/kubelet", node)
    assert f"--node-ip={node.address}" in argv
    assert "--node-labels=wirekube.io/lab-private=true,wirekube.io/vpn-enabled=true,zone=a" in argv


def test_kube_proxy_leaves_the_hosts_conntrack_sysctls_alone() -> None:
    node = kubeplan.plan_kube_nodes(_plan(), "c")[0]
    cfg = yaml.safe_load(kubeplan.kube_proxy_config(node))
    assert cfg["conntrack"]["maxPerCore"] == 0
    assert cfg["conntrack"]["min"] == 0
    assert cfg["nodePortAddresses"] == [f"{node.address}/32"]


def test_cni_bridge_hands_out_the_nodes_pod_cidr() -> None:
    node = kubeplan.plan_kube_nodes(_plan(), "c")[0]
    conf = json.loads(kubeplan.cni_config(node))
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]


def test_containerd_config_restricts_oom_score_and_uses_the_pause_image() -> None:
    node = kubeplan.plan_kube_nodes(_plan(), "c")[0]
    text = kubeplan.containerd_config(node)
    assert "restrict_oom_score_adj = true" in text
    assert f'sandbox_image = "{kubeplan.PAUSE_IMAGE}"' in text
    assert "SystemdCgroup = false" in text


def test_mount_script_binds_every_private_dir_and_mounts_runtime_tmpfs() -> None:
    script = kubeplan.mount_script(PurePosixPath("/w/node/kube"))
    for target, name in kubeplan.PRIVATE_DIRS:
        assert f"mount --bind /w/node/kube/{name} {target}" in script
    for target in kubeplan.PRIVATE_TMPFS:
        assert f"wklab-kube {target}" in script


def test_only_our_cgroup_roots_of_dead_owners_are_stale() -> None:
    names = ["wklab-10-abcde-k0", "wklab-11-fghij-k2", "kubepods", "wklab-10-abcde", "user.slice"]
    assert kubeplan.stale_cgroup_roots(names, alive={11}) == ["wklab-10-abcde-k0"]
