"""One lab host as a real Kubernetes node: containerd, kubelet and kube-proxy.

A :class:`KubeNode` executes a :class:`~wirekube_lab.kubeplan.KubeNodePlan`:

1. it writes the node's files under ``<workdir>/<host>/kube/`` (configs,
   kubeconfigs, the CA) — these directories become the node's
   ``/var/lib/kubelet``, ``/var/lib/containerd``, ``/etc/kubernetes``, ...;
2. it starts a *holder* process in the host's network namespace and a fresh
   private mount namespace (``nsenter --net`` + ``unshare --mount``; not ``ip
   netns exec``, which remounts ``/sys`` and would hide the cgroup file
   systems the kubelet needs). The holder mounts the node's directories and
   tmpfs on ``/run/containerd``, ``/run/wireguard`` and ``/run/netns``, then
   sleeps;
3. containerd, the kubelet and kube-proxy are started inside the holder's
   namespaces (``nsenter -t <holder> -m -n``), so they share one view of the
   node's files, as on a real machine; images are imported there with ``ctr``;
4. the node's WireGuard device: the lab has no kernel WireGuard, so the node
   runs wireguard-go for the mesh interface itself, in the holder's namespaces
   and outside kubelet and every pod, with its UAPI socket in the node's
   ``/run/wireguard`` (which the agent DaemonSet mounts). It stands in for the
   kernel module: the device outlives any agent pod, and the agent adopts it
   over the socket as it adopts a kernel interface over netlink, so an agent
   restart does not take the node's tunnels down (docs/lab.md). If an agent
   removes the interface (its node left the mesh), this wireguard-go exits and
   a later agent starts its own inside its pod, the userspace fallback.

Teardown (:meth:`KubeNode.stop`), in order and by PID: the kubelet and
kube-proxy; every process in the node's cgroup subtree (the pods' containers,
which live in network namespaces of their own and so are not found by the
lab's per-namespace sweep); containerd; the holder (its mount namespace, and
with it every overlay and netns mount of the node, goes away with it); then
the node's cgroup directories in every hierarchy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from . import kubeplan, netops
from .kubeplan import KubeNodePlan
from .processes import LabProcess, run_checked

log = logging.getLogger(__name__)

CGROUP_FS = Path("/sys/fs/cgroup")
# containerd answers its socket within a second or two, even on a busy host.
CONTAINERD_READY_TIMEOUT_S = 30.0
# The kubelet's own grace: containers get SIGTERM from containerd when it goes.
STOP_GRACE_S = 5.0
# Processes left in the node's cgroups after SIGKILL need a moment to be reaped.
CGROUP_DRAIN_S = 5.0
# Importing a ~100 MB image into containerd takes a few seconds on a busy host.
IMPORT_TIMEOUT_S = 180.0
# wireguard-go opens its UAPI socket within milliseconds; a busy host, a second.
WIREGUARD_READY_TIMEOUT_S = 15.0


class KubeNodeError(RuntimeError):
    """A node could not be set up."""


class KubeNode:
    """The processes and files of one lab node (see the module docstring)."""

    def __init__(self, plan: KubeNodePlan, root: Path, bin_dir: Path) -> None:
        self.plan = plan
        self.root = root
        self.bin_dir = bin_dir
        self.holder: LabProcess | None = None
        self.containerd: LabProcess | None = None
        self.kubelet: LabProcess | None = None
        self.kube_proxy: LabProcess | None = None
        self.wireguard: LabProcess | None = None

    # ------------------------------------------------------------------ files

    def path(self, mount_point: str) -> Path:
        """Where a private directory of the node (e.g. ``/var/lib/kubelet``) lives on the host."""
        for target, name in kubeplan.PRIVATE_DIRS:
            if mount_point == target or mount_point.startswith(target + "/"):
                return self.root / name / mount_point[len(target) :].lstrip("/")
        raise KeyError(f"{mount_point} is not one of the node's private directories")

    def write_files(self, ca_pem: bytes, kubelet_kc: str, proxy_kc: str) -> None:
        for _, name in kubeplan.PRIVATE_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        etc = self.path("/etc/kubernetes")
        files = {
            "containerd.toml": kubeplan.containerd_config(self.plan),
            "kubelet.yaml": kubeplan.kubelet_config(self.plan),
            "kube-proxy.yaml": kubeplan.kube_proxy_config(self.plan),
            "kubelet.kubeconfig": kubelet_kc,
            "kube-proxy.kubeconfig": proxy_kc,
        }
        for name, text in files.items():
            (etc / name).write_text(text)
            if name.endswith(".kubeconfig"):
                (etc / name).chmod(0o600)
        (etc / "ca.crt").write_bytes(ca_pem)
        (self.path("/etc/cni/net.d") / "10-wklab.conflist").write_text(
            kubeplan.cni_config(self.plan)
        )

    # ------------------------------------------------------------------ processes

    def _log_path(self, name: str) -> Path:
        return self.root.parent / f"{name}.log"

    def _popen(self, name: str, argv: Sequence[str]) -> LabProcess:
        path = self._log_path(name)
        with open(path, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        return LabProcess(self.plan.host, name, list(argv), path, popen)

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in the node's network and mount namespaces."""
        if self.holder is None:
            raise KubeNodeError(f"{self.plan.name}: the node is not started")
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]

    def exec(
        self, argv: Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return run_checked(self.enter_argv(argv), check, timeout)

    def start_holder(self) -> LabProcess:
        script = kubeplan.mount_script(PurePosixPath(self.root))
        script += "echo mounted\nexec sleep infinity\n"
        self.holder = self._popen(
            "kube-holder",
            [
                "nsenter",
                f"--net=/run/netns/{self.plan.ns}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
        self.holder.wait_for_log(r"(?m)^mounted$", timeout=15)
        # The holder's PID is that of `nsenter`, which execs unshare, which
        # execs sh, which execs sleep: one process, in the new namespaces.
        return self.holder

    def start_containerd(self) -> LabProcess:
        binary = _which("containerd")
        self.containerd = self._popen(
            "containerd", self.enter_argv(kubeplan.containerd_argv(binary))
        )
        deadline = time.monotonic() + CONTAINERD_READY_TIMEOUT_S
        while True:
            if self.ctr(["version"], check=False).returncode == 0:
                return self.containerd
            if not self.containerd.alive or time.monotonic() > deadline:
                raise KubeNodeError(
                    f"{self.plan.name}: containerd did not come up:\n"
                    f"{self.containerd.log_text()[-3000:]}"
                )
            time.sleep(0.2)

    def ctr(
        self, args: Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", kubeplan.CONTAINERD_SOCKET, "--namespace", "k8s.io", *args]
        return self.exec(argv, check=check, timeout=timeout)

    def import_image(self, archive: Path) -> None:
        # Content only: the CRI unpacks an image when a container first needs it
        # (containerd 1.6, WithNewSnapshot), so a node unpacks only what it runs.
        self.ctr(["images", "import", "--no-unpack", str(archive)], timeout=IMPORT_TIMEOUT_S)

    def tag_image(self, source: str, target: str) -> None:
        if source != target:
            self.ctr(["images", "tag", "--force", source, target])

    def images(self) -> list[str]:
        out = self.ctr(["images", "list", "--quiet"]).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def make_cgroups(self) -> None:
        """The node's cgroup root in every hierarchy (the kubelet insists it exists)."""
        rel = self.plan.cgroup_root.lstrip("/")
        if (CGROUP_FS / "cgroup.controllers").exists():
            (CGROUP_FS / rel).mkdir(exist_ok=True)
            return
        for hierarchy in CGROUP_FS.iterdir():
            if not hierarchy.is_dir() or hierarchy.is_symlink():
                continue
            path = hierarchy / rel
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                # A v1 cpuset starts with no CPUs and no memory nodes: nothing
                # could run in it until it inherits its parent's.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((hierarchy / knob).read_text())

    def start_kubelet(self) -> LabProcess:
        self.make_cgroups()
        argv = kubeplan.kubelet_argv(str(self.bin_dir / "kubelet"), self.plan)
        self.kubelet = self._popen("kubelet", self.enter_argv(argv))
        return self.kubelet

    def start_kube_proxy(self) -> LabProcess:
        argv = kubeplan.kube_proxy_argv(str(self.bin_dir / "kube-proxy"))
        self.kube_proxy = self._popen("kube-proxy", self.enter_argv(argv))
        return self.kube_proxy

    def start_wireguard(self, interface: str) -> LabProcess:
        """The node's WireGuard device, as a kernel module would provide it (module doc)."""
        assert self.holder is not None
        argv = ["env", "WG_PROCESS_FOREGROUND=1", _which("wireguard-go"), interface]
        self.wireguard = self._popen("wireguard-go", self.enter_argv(argv))
        # The socket, seen through the holder's mount namespace.
        sock = Path(f"/proc/{self.holder.pid}/root{kubeplan.WIREGUARD_RUN_DIR}/{interface}.sock")
        deadline = time.monotonic() + WIREGUARD_READY_TIMEOUT_S
        while not sock.exists():
            if not self.wireguard.alive or time.monotonic() > deadline:
                raise KubeNodeError(
                    f"{self.plan.name}: wireguard-go did not open {sock}:\n"
                    f"{self.wireguard.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        return self.wireguard

    def processes(self) -> list[LabProcess]:
        procs = (self.kubelet, self.kube_proxy, self.containerd, self.holder)
        return [p for p in procs if p is not None]

    # ------------------------------------------------------------------ teardown

    def cgroup_dirs(self) -> list[Path]:
        """The node's cgroup root in every hierarchy (v1: one per controller; v2: one)."""
        rel = self.plan.cgroup_root.lstrip("/")
        if (CGROUP_FS / "cgroup.controllers").exists():
            candidates = [CGROUP_FS / rel]
        else:
            candidates = [d / rel for d in CGROUP_FS.iterdir() if d.is_dir() and not d.is_symlink()]
        return [c for c in candidates if c.is_dir()]

    def cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for top in self.cgroup_dirs():
            pids |= _procs_under(top)
        return pids

    def stop(self) -> list[str]:
        """Stop everything of this node; returns what could not be cleaned."""
        errors: list[str] = []
        for proc in (self.kubelet, self.kube_proxy):
            if proc is not None:
                proc.stop(grace=STOP_GRACE_S)
        deadline = time.monotonic() + CGROUP_DRAIN_S
        while (pids := self.cgroup_pids() - {os.getpid()}) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if pids:
            errors.append(f"{self.plan.name}: processes left in its cgroups: {sorted(pids)}")
        # wireguard-go is not in the node's cgroups (it is the "kernel"); it
        # goes with its device after the pods, before the holder.
        for proc in (self.wireguard, self.containerd, self.holder):
            if proc is not None:
                proc.stop(grace=STOP_GRACE_S)
        for top in self.cgroup_dirs():
            _remove_tree(top)
            if top.exists():
                errors.append(f"{self.plan.name}: cgroup {top} could not be removed")
        return errors


def _procs_under(top: Path) -> set[int]:
    """PIDs in a cgroup subtree. The kubelet and runc remove cgroups while we
    walk, so a directory that vanishes is skipped (os.walk ignores it)."""
    pids: set[int] = set()
    for dirpath, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(t) for t in (Path(dirpath) / "cgroup.procs").read_text().split())
    return pids


def _remove_tree(top: Path) -> None:
    """rmdir a cgroup subtree, deepest first (a cgroup goes only once childless)."""
    for dirpath, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _which(name: str) -> str:
    for d in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/usr/bin"]:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise KubeNodeError(f"{name} is not installed (scripts/bootstrap.sh installs it)")


def _hierarchies() -> list[Path]:
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [d for d in CGROUP_FS.iterdir() if d.is_dir() and not d.is_symlink()]


def sweep_cgroups() -> list[str]:
    """Kill what is left in node cgroups of dead lab runs and remove them."""
    names = sorted({d.name for h in _hierarchies() for d in h.iterdir() if d.is_dir()})
    owners = {int(n.split("-")[1]) for n in kubeplan.stale_cgroup_roots(names, alive=set())}
    alive = {pid for pid in owners if netops.pid_alive(pid)}
    stale = kubeplan.stale_cgroup_roots(names, alive)
    for name in stale:
        tops = [h / name for h in _hierarchies() if (h / name).is_dir()]
        for top in tops:
            for pid in _procs_under(top):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for top in tops:
            _remove_tree(top)
    if stale:
        log.info("swept node cgroups of dead lab runs: %s", ", ".join(stale))
    return stale
