"""A real Kubernetes cluster on a lab: every ``node`` host runs a kubelet.

``KubeCluster(lab)`` starts, in order:

* the control plane (:class:`~wirekube_lab.controlplane.ControlPlane`, with
  ``--kubelet-preferred-address-types=InternalIP``) plus kube-scheduler and
  kube-controller-manager, all in the root namespace on loopback;
* one :class:`~wirekube_lab.kubenode.KubeNode` per node host (containerd,
  kubelet, kube-proxy in the host's namespaces), with the pause and CoreDNS
  images (built from source, packed by :mod:`~wirekube_lab.ociarchive`) and
  the service images (archives from ``make images``) imported into each
  node's containerd under the names the overlay asks for;
* the lab's "cloud routes" for pod CIDRs (:func:`kubeplan.pod_routes`) and the
  cluster DNS add-on (CoreDNS, cluster names only: nothing is forwarded).

:meth:`KubeCluster.apply_overlay` then runs ``kubectl apply -k`` on a
two-line kustomization in the work dir whose only resource is the overlay
as shipped; its one patch replaces the mesh's public STUN servers with the
lab's own (or drops them) because nothing in the lab may ever send to a
public address. Everything else — the agent DaemonSet, relay, controller,
stun-probe, RBAC — is scheduled and run by the kubelets.

Binaries: ``tools/kubenode/build.sh`` (cached under /var/cache/wirekube).
Service images: :func:`service_image_archives` runs ``scripts/images.sh
--save`` (``make images``) into ``$WIREKUBE_IMAGE_DIR`` (default
``/var/cache/wirekube/kube-images``) and imports ``<service>-<arch>.tar``.
Nodes with the lab's private taint import only the agent's (nothing else
may run there), which saves a few hundred MB and seconds per node.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from wirekube_common.crd import MeshSpec

from . import controlplane_pki as pki
from . import dockerarchive, kubeplan, ociarchive
from .controlplane import SERVICE_CIDR, ControlPlane, repo_root
from .kubenode import KubeNode, sweep_cgroups
from .lab import Lab
from .processes import LabProcess

log = logging.getLogger(__name__)

SERVICES = ("agent", "relay", "gateway-controller", "stun-probe")
DEFAULT_CACHE_DIR = "/var/cache/wirekube"
# Three kubelets registering and turning Ready on 2 busy cores: ~20-60 s.
NODES_READY_TIMEOUT_S = 180.0
# CoreDNS pulls nothing (imported image); it is Ready within seconds.
ADDON_READY_TIMEOUT_S = 120.0
POLL_S = 0.5
SCHEDULER_USER = "system:kube-scheduler"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
PROXY_USER = "system:kube-proxy"
NODES_GROUP = "system:nodes"
LIB_MODULES = Path("/lib/modules")


class KubeClusterError(RuntimeError):
    """The cluster could not be brought up."""


def ensure_node_binaries(repo: Path | None = None) -> Path:
    """Run tools/kubenode/build.sh (instant when cached); the directory of the binaries."""
    script = (repo or repo_root()) / "tools/kubenode/build.sh"
    proc = subprocess.run(
        ["bash", str(script), "--print-dir"], capture_output=True, text=True, check=False
    )
    for line in proc.stderr.splitlines():
        log.info("%s", line)
    if proc.returncode != 0:
        raise KubeClusterError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def image_dir() -> Path:
    """Where the service image archives for the nodes are kept (outside the repository)."""
    env = os.environ.get("WIREKUBE_IMAGE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("WIREKUBE_CACHE_DIR", DEFAULT_CACHE_DIR)) / "kube-images"


def service_image_archives(directory: Path | None = None, build: bool = True) -> dict[str, Path]:
    """``{service: archive}``: the four service images as ``ctr import`` reads them.

    With ``build``, ``scripts/images.sh --save`` (from ``make images``) runs
    first: it builds offline with podman and rewrites an archive only when
    its image changed, so a warm run costs seconds.
    """
    directory = directory or image_dir()
    arch = ociarchive.host_arch()
    script = repo_root() / "scripts/images.sh"
    if build and script.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["bash", str(script), "--save", str(directory), "--no-controlplane"],
            capture_output=True,
            text=True,
            check=False,
            cwd=repo_root(),
        )
        for line in proc.stderr.splitlines():
            log.info("%s", line)
        if proc.returncode != 0:
            raise KubeClusterError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    found: dict[str, Path] = {}
    for service in SERVICES:
        for name in (f"{service}-{arch}.tar", f"{service}.tar"):
            if (directory / name).is_file():
                found[service] = directory / name
                break
    missing = sorted(set(SERVICES) - set(found))
    if missing:
        raise KubeClusterError(
            f"no image archive in {directory} for {', '.join(missing)} (`make images` makes them)"
        )
    return found


class KubeCluster:
    """See the module docstring."""

    def __init__(
        self,
        lab: Lab,
        *,
        image_dir: Path | None = None,
        service_images: bool = True,
        log_fn: Callable[[str], None] | None = None,
    ) -> None:
        self.lab = lab
        self.image_dir = image_dir
        self.service_images = service_images
        self._log = log_fn or (lambda msg: log.info("%s", msg))
        self.workdir = lab.workdir / "kube"
        self.cp: ControlPlane | None = None
        self.nodes: dict[str, KubeNode] = {}
        self.components: list[LabProcess] = []
        self.timings: dict[str, float] = {}
        self.image_names: dict[str, str] = {}  # image reference in the containerd -> archive
        self._bin_dir: Path | None = None
        self._lib_modules_absent = False

    # ------------------------------------------------------------------ start

    def __enter__(self) -> KubeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _timed(self, key: str, t0: float) -> float:
        self.timings[key] = round(time.monotonic() - t0, 1)
        return time.monotonic()

    def start(self) -> None:
        t = t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The agent DaemonSet mounts /lib/modules (DirectoryOrCreate); a lab
        # node shares the host's /lib, so the kubelet may create it on a host
        # without modules. stop() removes it again if it is ours and empty.
        self._lib_modules_absent = not LIB_MODULES.exists()
        sweep_cgroups()
        self._bin_dir = ensure_node_binaries()
        t = self._timed("node_binaries_s", t)
        archives = service_image_archives(self.image_dir) if self.service_images else {}
        merged = None
        if archives:
            merged = dockerarchive.merged(
                [archives[s] for s in SERVICES],
                next(iter(archives.values())).with_name(f"all-{ociarchive.host_arch()}.tar"),
            )
        t = self._timed("service_images_s", t)
        self.cp = ControlPlane(
            self.workdir / "controlplane",
            log=self._log,
            extra_apiserver_args=("--kubelet-preferred-address-types=InternalIP",),
        ).start()
        self.cp.install_wirekube()
        t = self._timed("controlplane_s", t)
        self._start_components()
        plans = kubeplan.plan_kube_nodes(self.lab.plan, self.lab.ids.prefix + "k")
        for route in kubeplan.pod_routes(self.lab.plan, plans):
            subprocess.run(route.argv(), check=True, capture_output=True, text=True)
        addon_archives = self._addon_archives()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(plans)) as pool:
            futures = [
                pool.submit(self._start_node, p, node_archives(p, addon_archives, archives, merged))
                for p in plans
            ]
            for f in futures:
                f.result()
        t = self._timed("nodes_started_s", t)
        self.wait_nodes_ready([p.name for p in plans])
        t = self._timed("nodes_ready_s", t)
        self._apply_coredns()
        self.wait_rollout("deployment/coredns", "kube-system", ADDON_READY_TIMEOUT_S)
        self._timed("coredns_ready_s", t)
        self._timed("cluster_up_s", t0)
        self._log(f"kube cluster up: {json.dumps(self.timings)}")

    def _component_kubeconfig(self, user: str, groups: tuple[str, ...], lab: bool) -> str:
        assert self.cp is not None
        pair = self.cp.ca.issue(user, organizations=groups, client=True)
        server = self.cp.lab_server_url if lab else self.cp.server_url
        return pki.dump_kubeconfig(
            pki.kubeconfig(
                server,
                self.cp.ca.cert_pem,
                user=user,
                client_cert_pem=pair.cert_pem,
                client_key_pem=pair.key_pem,
            )
        )

    def _spawn_root(self, name: str, argv: list[str]) -> LabProcess:
        path = self.workdir / f"{name}.log"
        with open(path, "ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = LabProcess("root", name, argv, path, popen)
        self.components.append(proc)
        return proc

    def _start_components(self) -> None:
        assert self.cp is not None and self._bin_dir is not None
        pki_dir = self.cp.pki_dir
        sched_kc = self.workdir / "scheduler.kubeconfig"
        sched_kc.write_text(self._component_kubeconfig(SCHEDULER_USER, (), lab=False))
        kcm_kc = self.workdir / "controller-manager.kubeconfig"
        kcm_kc.write_text(self._component_kubeconfig(CONTROLLER_MANAGER_USER, (), lab=False))
        for kc in (sched_kc, kcm_kc):
            kc.chmod(0o600)
        # Port 0: neither serves HTTPS (other labs on this host run their own).
        self._spawn_root(
            "kube-scheduler",
            [
                str(self._bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        self._spawn_root(
            "kube-controller-manager",
            [
                str(self._bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={pki_dir / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={kubeplan.CLUSTER_CIDR}",
                # Pod CIDRs are the lab's (kubeplan), not node IPAM's; no cloud.
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--v=1",
            ],
        )

    def _addon_archives(self) -> dict[str, Path]:
        assert self._bin_dir is not None
        out = self.workdir / "images"
        out.mkdir(parents=True, exist_ok=True)
        specs = {
            kubeplan.PAUSE_IMAGE: ("/pause", ["/pause"], "65535"),
            kubeplan.COREDNS_IMAGE: ("/coredns", ["/coredns"], "0"),
        }
        paths: dict[str, Path] = {}
        for ref, (inside, entry, user) in specs.items():
            binary = self._bin_dir / Path(inside).name
            data = ociarchive.image_archive(
                ref, [ociarchive.ImageFile(inside, binary.read_bytes())], entry, user=user
            )
            path = out / f"{Path(inside).name}.tar"
            path.write_bytes(data)
            paths[ref] = path
        return paths

    def _start_node(self, plan: kubeplan.KubeNodePlan, archives: list[Path]) -> None:
        assert self.cp is not None and self._bin_dir is not None
        node = KubeNode(plan, self.lab.host_dir(plan.host) / "kube", self._bin_dir)
        self.nodes[plan.name] = node
        node.write_files(
            self.cp.ca.cert_pem,
            self._component_kubeconfig(f"system:node:{plan.name}", (NODES_GROUP,), lab=True),
            self._component_kubeconfig(PROXY_USER, (), lab=True),
        )
        t0 = time.monotonic()
        node.start_holder()
        # Before the kubelet: the device is there when the first agent pod
        # starts, as a kernel module's would be (kubenode's module doc).
        node.start_wireguard(MeshSpec().interface_name)
        node.start_containerd()
        for archive in archives:
            node.import_image(archive)
        self.timings[f"images_{plan.name}_s"] = round(time.monotonic() - t0, 1)
        node.start_kubelet()
        node.start_kube_proxy()

    # ------------------------------------------------------------------ add-ons and overlays

    def _apply_coredns(self) -> None:
        assert self.cp is not None
        docs = coredns_manifests(str(kubeplan.CLUSTER_DNS), kubeplan.COREDNS_IMAGE)
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def tag_images(self, wanted: Mapping[str, str]) -> None:
        """Make each ``{reference: service}`` resolvable where that service's image is."""
        for node in self.nodes.values():
            have = {
                image_repository_name(r): r for r in node.images() if not r.startswith("sha256:")
            }
            for ref, service in wanted.items():
                if service in have:
                    node.tag_image(normalize_reference(have[service]), normalize_reference(ref))

    def lab_kustomization(self, overlay: Path, stun_servers: list[str] | None) -> Path:
        """The overlay as shipped, plus one patch for the mesh's STUN servers (see module doc)."""
        assert self.cp is not None
        rendered = self.cp.kubectl("kustomize", str(overlay)).stdout
        mesh = next(
            (d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "WireKubeMesh"),
            None,
        )
        patches: list[dict[str, Any]] = []
        if mesh is not None and "stunServers" in (mesh.get("spec") or {}):
            op: dict[str, Any] = (
                {"op": "replace", "path": "/spec/stunServers", "value": stun_servers}
                if stun_servers
                else {"op": "remove", "path": "/spec/stunServers"}
            )
            patches.append(
                {
                    "target": {"group": "wirekube.io", "kind": "WireKubeMesh", "name": "default"},
                    "patch": yaml.safe_dump([op]),
                }
            )
        root = self.workdir / f"overlay-{overlay.name}"
        root.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(overlay.resolve(), root)],
            "patches": patches,
        }
        (root / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        final = self.cp.kubectl("kustomize", str(root)).stdout
        check_lab_safe(final)
        return root

    def overlay_images(self, kustomization: Path) -> dict[str, str]:
        """``{image reference: service}`` for every container image the kustomization runs."""
        assert self.cp is not None
        out: dict[str, str] = {}
        for doc in yaml.safe_load_all(self.cp.kubectl("kustomize", str(kustomization)).stdout):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                # A controller that makes workloads itself names their image in
                # an environment variable (WIREKUBE_RELAY_IMAGE): tag it too.
                refs = [str(c["image"])] + [
                    str(e["value"])
                    for e in c.get("env") or []
                    if str(e.get("name", "")).endswith("_IMAGE") and e.get("value")
                ]
                for ref in refs:
                    name = image_repository_name(ref)
                    if name in SERVICES:
                        out[ref] = name
        return out

    def apply_overlay(self, overlay: Path, stun_servers: list[str] | None = None) -> Path:
        """``kubectl apply -k`` the overlay (wrapped as above); returns the kustomization dir."""
        assert self.cp is not None
        root = self.lab_kustomization(overlay, stun_servers)
        self.tag_images(self.overlay_images(root))
        self.cp.kubectl("apply", "-k", str(root), timeout=120)
        return root

    # ------------------------------------------------------------------ waiting

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert self.cp is not None
        return self.cp.kubectl(*args, **kwargs)

    def wait_nodes_ready(self, names: list[str], timeout: float = NODES_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = self.ready_nodes()
            if set(names) <= ready:
                return
            for node in self.nodes.values():
                for proc in node.processes():
                    if not proc.alive:
                        raise KubeClusterError(
                            f"{node.plan.name}: {proc.name} exited {proc.returncode}:\n"
                            f"{proc.log_text()[-3000:]}"
                        )
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"nodes not Ready after {timeout:.0f}s: {sorted(set(names) - ready)}"
                )
            time.sleep(POLL_S)

    def ready_nodes(self) -> set[str]:
        out = self.kubectl("get", "nodes", "-o", "json").stdout
        ready = set()
        for item in json.loads(out)["items"]:
            conds = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
            if conds.get("Ready") == "True":
                ready.add(item["metadata"]["name"])
        return ready

    def wait_rollout(self, what: str, namespace: str, timeout: float) -> float:
        t0 = time.monotonic()
        proc = self.kubectl(
            "rollout",
            "status",
            what,
            "-n",
            namespace,
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
            check=False,
        )
        if proc.returncode != 0:
            raise KubeClusterError(
                f"{what} not rolled out in {timeout:.0f}s: {proc.stderr.strip()}\n"
                f"{self.diagnose(namespace)}"
            )
        return time.monotonic() - t0

    def diagnose(self, namespace: str) -> str:
        """Pods and the latest events of a namespace, for a failure message."""
        pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = self.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
        ).stdout
        return f"{pods}\n{chr(10).join(events.splitlines()[-25:])}"

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def remove_node(self, name: str) -> None:
        """Decommission a node: stop its kubelet, runtime and pods, delete its Node."""
        node = self.nodes.pop(name)
        for msg in node.stop():
            log.warning("removing %s: %s", name, msg)
        self.kubectl("delete", "node", name, "--wait=true", timeout=60)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Every step runs even when an earlier one failed (the first error is re-raised)."""
        errors: list[str] = []
        failure: BaseException | None = None

        def node_stop(node: KubeNode) -> list[str]:
            try:
                return node.stop()
            except Exception as exc:  # reported below; the other nodes still stop
                return [f"{node.plan.name}: {exc!r}"]

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            for errs in pool.map(node_stop, list(self.nodes.values())):
                errors += errs
        for proc in self.components:
            try:
                proc.stop(grace=5.0)
            except Exception as exc:
                failure = failure or exc
        if self.cp is not None:
            try:
                self.cp.stop()
            except Exception as exc:
                failure = failure or exc
        if self._lib_modules_absent:
            with contextlib.suppress(OSError):
                LIB_MODULES.rmdir()
        for msg in errors:
            log.warning("kube cluster teardown: %s", msg)
        if failure is not None:
            raise failure


def node_archives(
    plan: kubeplan.KubeNodePlan,
    addons: Mapping[str, Path],
    services: Mapping[str, Path],
    merged: Path | None = None,
) -> list[Path]:
    """The archives a node imports: a private (tainted) node runs only the agent;
    the others take every service, from the merged archive when there is one."""
    if plan.taints:
        return [addons[kubeplan.PAUSE_IMAGE], *([services["agent"]] if "agent" in services else [])]
    return [*addons.values(), *([merged] if merged else services.values())]


def image_repository_name(reference: str) -> str:
    """The last path element of an image reference, without tag or digest."""
    last = reference.rsplit("/", 1)[-1]
    return last.partition("@")[0].partition(":")[0]


def normalize_reference(reference: str) -> str:
    """A reference as containerd's CRI stores it (``docker.io/`` and ``library/`` added)."""
    first, _, rest = reference.partition("/")
    if not rest:
        reference = f"docker.io/library/{reference}"
    elif "." not in first and ":" not in first and first != "localhost":
        reference = f"docker.io/{reference}"
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        reference += ":latest"
    return reference


def check_lab_safe(rendered: str) -> None:
    """Refuse manifests whose mesh names a STUN server outside the lab's address space."""
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") != "WireKubeMesh":
            continue
        for server in (doc.get("spec") or {}).get("stunServers") or []:
            host = str(server).rpartition(":")[0].strip("[]")
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise KubeClusterError(
                    f"the mesh names STUN server {server!r}: a name the lab cannot vouch for"
                ) from None
            if address.is_global:
                raise KubeClusterError(f"the mesh names a public STUN server {server!r}")


def coredns_manifests(cluster_dns: str, image: str) -> list[dict[str, Any]]:
    """CoreDNS as the cluster's DNS add-on: cluster names only, no forwarding."""
    ns = "kube-system"
    labels = {"k8s-app": "kube-dns"}
    corefile = (
        ".:53 {\n"
        "    errors\n"
        "    health :8080\n"
        "    ready :8181\n"
        f"    kubernetes {kubeplan.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n"
        "        ttl 30\n"
        "    }\n"
        "    cache 30\n"
        "}\n"
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": cluster_dns,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]
