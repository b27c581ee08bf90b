"""What a lab node needs to be a real Kubernetes node, as plain data (pure).

``plan_kube_nodes(plan, cluster_name)`` maps every ``node`` host of a built
lab to a :class:`KubeNodePlan`: its pod CIDR, the directories that replace
the host's own inside the node's private mount namespace, and the text of
every configuration file (containerd, the CNI bridge, kubelet, kube-proxy).
:mod:`~wirekube_lab.kubenode` writes those files and starts the processes;
:mod:`~wirekube_lab.cluster` ties the nodes to the control plane. Nothing
here touches the kernel, so every decision is unit-tested without root.

Choices, and why:

* **One pod CIDR per node** from :data:`CLUSTER_CIDR`, chosen here rather
  than by the controller-manager's node IPAM: the CNI configuration must
  exist before the kubelet registers. The lab plays the cloud's routes: a
  node's pod CIDR is routed to the node by its network's router (and by the
  internet when the node is on it), so a public node's pods are reachable
  from anywhere and a NAT'd node's pods only from its own network — as in a
  real VPC.
* **cgroupfs under a cgroup root of our own** per node (``/wklab-<run>-<n>``):
  every kubelet's pods live in their own subtree, which teardown removes.
* **Image garbage collection off**: the images are imported, never pulled,
  so a collected image could not come back.
* **No upstream DNS**: CoreDNS answers cluster names only and the kubelet's
  ``resolvConf`` is empty, so no pod ever queries a resolver outside the lab.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import PurePosixPath

import yaml

from .addressing import HostPlan, LabPlan

CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
NODE_CIDR_PREFIX = 24
CLUSTER_DNS = IPv4Address("10.96.0.10")
CLUSTER_DOMAIN = "cluster.local"
# The pause image the CRI plugin uses for every pod sandbox (built from
# source by tools/kubenode/build.sh and imported under this name).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
# A lab node runs a handful of pods; a small cap keeps a scheduling bug visible.
MAX_PODS = 40
# Pods get a default grace period of 30 s; the kubelet must not wait for a
# node shutdown that never comes in a lab.
KUBELET_NODE_STATUS_UPDATE = "4s"

# Inside each node's mount namespace these paths are bind mounts of the
# node's own directories under <workdir>/<node>/kube/ (key: mount point,
# value: the directory name under that root). The rest of the file system is
# the host's, read-write, as on a real node.
PRIVATE_DIRS: tuple[tuple[str, str], ...] = (
    ("/var/lib/kubelet", "var-lib-kubelet"),
    ("/var/lib/containerd", "var-lib-containerd"),
    ("/var/lib/wirekube", "var-lib-wirekube"),
    ("/var/lib/cni", "var-lib-cni"),
    ("/var/log/pods", "var-log-pods"),
    ("/var/log/containers", "var-log-containers"),
    ("/etc/cni/net.d", "etc-cni"),
    ("/etc/kubernetes", "etc-kubernetes"),
)
# Fresh tmpfs mounts (runtime state that must not outlive the node).
WIREGUARD_RUN_DIR = "/run/wireguard"  # wireguard-go's UAPI sockets (= /var/run/wireguard)
PRIVATE_TMPFS: tuple[str, ...] = ("/run/containerd", WIREGUARD_RUN_DIR, "/run/netns")


class KubePlanError(ValueError):
    """The lab cannot be turned into a cluster as asked."""


@dataclass(frozen=True)
class KubeNodePlan:
    name: str
    host: str
    ns: str
    address: IPv4Address
    network: str
    pod_cidr: IPv4Network
    cgroup_root: str
    labels: tuple[tuple[str, str], ...]
    taints: tuple[str, ...]

    @property
    def bridge_gateway(self) -> IPv4Address:
        return self.pod_cidr.network_address + 1


def node_pod_cidr(index: int) -> IPv4Network:
    """The ``index``-th /24 of the cluster CIDR (index 0 is skipped: easier to read)."""
    subnets = CLUSTER_CIDR.num_addresses // (2 ** (32 - NODE_CIDR_PREFIX))
    if not 0 <= index < subnets - 1:
        raise KubePlanError(f"no pod CIDR left for node #{index} in {CLUSTER_CIDR}")
    base = int(CLUSTER_CIDR.network_address) + (index + 1) * 2 ** (32 - NODE_CIDR_PREFIX)
    return IPv4Network((base, NODE_CIDR_PREFIX))


# The taint the lab puts on nodes without a public address (``--kube``
# topologies may ask for it with ``labels: {wirekube.io/lab-private: "true"}``):
# workloads that must be reachable from everywhere (the relay) stay off them.
PRIVATE_TAINT_KEY = "wirekube.io/lab-private"
VPN_LABEL = "wirekube.io/vpn-enabled"


def plan_kube_nodes(plan: LabPlan, cluster: str) -> tuple[KubeNodePlan, ...]:
    """One plan per ``node`` host of the lab, in topology order."""
    hosts = [h for h in plan.hosts if h.role == "node"]
    if not hosts:
        raise KubePlanError("the topology has no host with role node")
    out: list[KubeNodePlan] = []
    for index, host in enumerate(hosts):
        labels = dict(plan.topology.host(host.name).labels_dict)
        # What an operator does to put a node in the mesh (the DaemonSet's
        # nodeSelector); a topology may say "false" to keep a node out.
        labels.setdefault(VPN_LABEL, "true")
        taints = ()
        if labels.get(PRIVATE_TAINT_KEY) == "true":
            taints = (f"{PRIVATE_TAINT_KEY}=true:NoSchedule",)
        out.append(
            KubeNodePlan(
                name=host.name,
                host=host.name,
                ns=host.ns,
                address=host.address,
                network=host.network,
                pod_cidr=node_pod_cidr(index),
                cgroup_root=f"/{cluster}{index}",
                labels=tuple(sorted(labels.items())),
                taints=taints,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class PodRoute:
    """``ip route replace <cidr> via <via>`` in namespace ``ns`` (the lab's cloud routes)."""

    ns: str
    cidr: IPv4Network
    via: IPv4Address

    def argv(self) -> list[str]:
        return ["ip", "-n", self.ns, "route", "replace", str(self.cidr), "via", str(self.via)]


def pod_routes(plan: LabPlan, nodes: tuple[KubeNodePlan, ...]) -> tuple[PodRoute, ...]:
    """Routes that make each node's pod CIDR reachable the way a cloud would.

    The router of the node's network routes the CIDR to the node; a node on
    the internet is routed by the internet namespace. Nodes on one network
    reach each other's pods through that router (their default gateway).
    """
    routes: list[PodRoute] = []
    for node in nodes:
        host: HostPlan = plan.host(node.host)
        if host.network == "internet":
            routes.append(PodRoute(plan.internet_ns, node.pod_cidr, host.address))
        else:
            router = plan.router(host.network)
            routes.append(PodRoute(router.ns, node.pod_cidr, host.address))
            if not router.nat.translates:
                routes.append(PodRoute(plan.internet_ns, node.pod_cidr, router.wan_address))
    return tuple(routes)


def containerd_config(node: KubeNodePlan) -> str:
    """containerd 1.6's config (version 2 schema) for one node."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            'root = "/var/lib/containerd"',
            'state = "/run/containerd"',
            # The plugins a lab node never uses; without this list containerd
            # logs a failure for each at every start.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
            '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
            '"io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f'  address = "{CONTAINERD_SOCKET}"',
            "[ttrpc]",
            '  address = "/run/containerd/containerd.sock.ttrpc"',
            "[debug]",
            '  level = "warn"',
            f"[{cri}]",
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            # The lab runs as root on a shared host: a container may lower its
            # OOM priority only as far as containerd's own (the kubelet asks
            # for -997 for critical pods, which a nested node must not grant).
            "  restrict_oom_score_adj = true",
            "  enable_cdi = false",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            '  conf_dir = "/etc/cni/net.d"',
            "",
        ]
    )


def cni_config(node: KubeNodePlan) -> str:
    """A bridge + host-local network per node; traffic leaving the pod CIDR is masqueraded."""
    conf = {
        "cniVersion": "0.4.0",
        "name": "wklab-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(node.pod_cidr)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def kubelet_config(node: KubeNodePlan) -> str:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": str(node.address),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": "/etc/kubernetes/ca.crt"},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [str(CLUSTER_DNS)],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "failSwapOn": False,
        "maxPods": MAX_PODS,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": KUBELET_NODE_STATUS_UPDATE,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
        "registerNode": True,
        "registerWithTaints": [_taint(t) for t in node.taints],
        "localStorageCapacityIsolation": False,
        "staticPodPath": "",
        "logging": {"verbosity": 1},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _taint(spec: str) -> dict[str, str]:
    keyval, _, effect = spec.partition(":")
    key, _, value = keyval.partition("=")
    return {"key": key, "value": value, "effect": effect}


def kubelet_argv(binary: str, node: KubeNodePlan) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in node.labels)
    argv = [
        binary,
        "--config=/etc/kubernetes/kubelet.yaml",
        "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig",
        "--root-dir=/var/lib/kubelet",
        f"--hostname-override={node.name}",
        f"--node-ip={node.address}",
    ]
    if labels:
        argv.append(f"--node-labels={labels}")
    return argv


def kube_proxy_config(node: KubeNodePlan) -> str:
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": "/etc/kubernetes/kube-proxy.kubeconfig"},
        "hostnameOverride": node.name,
        "clusterCIDR": str(CLUSTER_CIDR),
        "bindAddress": str(node.address),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zeros: leave the conntrack sysctls alone. nf_conntrack_max is one
        # value for the whole host, which a lab must never change.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # NodePorts answer on the node's lab address only.
        "nodePortAddresses": [f"{node.address}/32"],
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def kube_proxy_argv(binary: str) -> list[str]:
    return [binary, "--config=/etc/kubernetes/kube-proxy.yaml", "--v=1"]


def containerd_argv(binary: str) -> list[str]:
    return [binary, "--config=/etc/kubernetes/containerd.toml"]


def mount_script(node_root: PurePosixPath) -> str:
    """Shell run inside the node's fresh mount namespace before anything starts."""
    lines = ["set -e", "mount --make-rprivate /"]
    for target, name in PRIVATE_DIRS:
        lines.append(f"mkdir -p {target} {node_root / name}")
        lines.append(f"mount --bind {node_root / name} {target}")
    for target in PRIVATE_TMPFS:
        lines.append(f"mkdir -p {target}")
        lines.append(f"mount -t tmpfs -o mode=0755 wklab-kube {target}")
    return "\n".join(lines) + "\n"


_CGROUP_NAME = re.compile(r"^wklab-(\d+)-[a-z0-9]+-k\d+$")


def stale_cgroup_roots(names: list[str], alive: set[int]) -> list[str]:
    """Node cgroup roots (``wklab-<pid>-<run>-k<n>``) whose owner PID is not alive.

    A lab killed with SIGKILL leaves its nodes' cgroups (and the containers in
    them) behind; the next cluster start sweeps them, as the lab sweeps
    namespaces. Only names that parse as ours are ever returned.
    """
    out = []
    for name in names:
        match = _CGROUP_NAME.match(name)
        if match and int(match.group(1)) not in alive:
            out.append(name)
    return out
