"""A real Kubernetes control plane for tests and the lab: etcd + kube-apiserver.

Design
------
Two child processes, nothing faked: etcd (loopback only, plain HTTP, fsync off:
it holds throw-away lab state) and kube-apiserver with client-certificate and
service-account-token authentication, ``--authorization-mode=Node,RBAC`` and no
anonymous access. The binaries are the pinned builds of
``tools/controlplane/build.sh`` (``ensure_binaries()`` runs it; it returns at
once when the versioned cache exists). Certificates come from
``controlplane_pki`` (pure): the serving certificate covers 127.0.0.1, the lab
uplink address 100.64.0.1 through which processes inside network namespaces
reach the apiserver, the first Service IP and the ``kubernetes.default.svc``
names. The apiserver binds 0.0.0.0 on a free port so lab namespaces reach it
through the lab's DNAT; there is no insecure port.

Children are started with ``PR_SET_PDEATHSIG`` (SIGKILL) so they die with the process
that started them even if that process is SIGKILLed (Linux ties this to the
starting *thread*: call ``start()`` from a thread that lives as long as the
control plane, e.g. the main thread); ``stop()`` ends them by
PID (SIGTERM, then SIGKILL after a grace period), apiserver first. Everything
lives in one work dir (a fresh temp dir wk-cp-<pid>-*, swept by later runs if
its owner died without stopping, unless one is given: then only its
``pki/``, ``etcd/``, ``logs/`` and ``kube-cache/`` subdirs are (re)created).

API (small on purpose; the lab CLI and the pytest plugin use only this)::

    with ControlPlane() as cp:                 # start(): prints its start-up time
        cp.server_url                          # https://127.0.0.1:<port>
        cp.lab_server_url                      # https://100.64.0.1:<port>
        cp.kubeconfig                          # admin kubeconfig (system:masters)
        cp.write_kubeconfig(path, lab=True)    # admin kubeconfig for lab hosts
        cp.kubeconfig_for_service_account("wirekube-system", "wirekube-agent", lab=True)
        cp.kubeconfig_for_service_account(..., bound_pod="pod")  # token naming the pod's node
        cp.install_wirekube()                  # CRDs, namespace, RBAC, admission policies
        cp.kubectl("get", "wkp")               # CompletedProcess (text); raises on failure
        cp.api_client()                        # kubernetes.client.ApiClient as admin

Command line (a detached control plane for humans and scripts)::

    python -m wirekube_lab.controlplane up [--workdir DIR] [--no-install] [--foreground]
    python -m wirekube_lab.controlplane status|down [--workdir DIR]

``up`` starts a supervisor process in the background, waits until the
apiserver is ready (CRDs, RBAC and admission policies installed unless
``--no-install``, plus one token kubeconfig per service account,
DIR/wirekube-<service>.kubeconfig, which docker-compose.yml mounts; the
agent's is bound to a stand-in Pod on node $NODE_NAME, default compose-node),
prints the URLs and kubeconfig paths (also in DIR/state.json) and returns;
``down`` stops it by its PID. DIR defaults to $WIREKUBE_CONTROLPLANE_DIR or
/tmp/wirekube-controlplane.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from wirekube_lab import controlplane_pki as pki
from wirekube_lab import podidentity

DEFAULT_LAB_ADDRESS = "100.64.0.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
WIREKUBE_CRDS = (
    "wirekubemeshes.wirekube.io",
    "wirekubepeers.wirekube.io",
    "wirekubegateways.wirekube.io",
)
WIREKUBE_NAMESPACE = "wirekube-system"
SERVICE_ACCOUNTS = (
    "wirekube-agent",
    "wirekube-relay",
    "wirekube-gateway-controller",
    "wirekube-stun-probe",
)
INSTALL_KUSTOMIZATIONS = (
    "deploy/kustomize/base/crds",
    "deploy/kustomize/base/rbac",
    "deploy/kustomize/base/admission",
)
AGENT_USER = f"system:serviceaccount:{WIREKUBE_NAMESPACE}:wirekube-agent"
# The agent-own-peer policy's refusal of a token that names no node: seeing it
# on a dry-run create proves the admission plugin has loaded the policy.
POLICY_LOADED_MARK = "this token names no node"
# Admission policies take effect when the plugin's informer has seen them
# (about a second); ten covers a loaded machine.
POLICY_TIMEOUT_S = 10.0
# The node the compose stack's agent runs as (docker-compose.yml: NODE_NAME).
COMPOSE_AGENT_NODE = "compose-node"

# A cold kube-apiserver start on 2 busy cores (bootstrap RBAC roles, priority
# levels, CRD controllers) takes 5-20 s; two minutes only trips on a real hang.
STARTUP_TIMEOUT_S = 120.0
# etcd answers /health within a second or two; 30 s covers a loaded machine.
ETCD_TIMEOUT_S = 30.0
# Graceful apiserver shutdown drains watches; past this it is killed.
STOP_GRACE_S = 15.0
# Poll period for readiness: short, start-up time is printed and compared.
POLL_S = 0.1
# A port picked free can be taken by someone else before the child binds it;
# a couple of retries with new ports make that race harmless.
PORT_RETRIES = 3
DEFAULT_CLI_DIR = "/tmp/wirekube-controlplane"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def repo_root(start: Path | None = None) -> Path:
    """The checkout holding tools/controlplane/build.sh ($WIREKUBE_REPO_ROOT wins)."""
    env = os.environ.get("WIREKUBE_REPO_ROOT")
    candidates = [Path(env)] if env else []
    here = (start or Path(__file__)).resolve()
    candidates += [here, *here.parents, Path.cwd(), *Path.cwd().parents]
    for c in candidates:
        if (c / "tools/controlplane/build.sh").is_file():
            return c
    raise FileNotFoundError("cannot find tools/controlplane/build.sh; set WIREKUBE_REPO_ROOT")


def ensure_binaries(repo: Path | None = None, log: Callable[[str], None] = _stderr) -> Path:
    """Run build.sh (instant when cached) and return the directory of the binaries."""
    script = (repo or repo_root()) / "tools/controlplane/build.sh"
    proc = subprocess.run(
        ["bash", str(script), "--print-dir"], capture_output=True, text=True, check=False
    )
    for line in proc.stderr.splitlines():
        log(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent_hook() -> Callable[[], None]:
    parent = os.getpid()

    def hook() -> None:  # runs in the child between fork and exec
        # SIGKILL, not SIGTERM: an orphaned apiserver's graceful shutdown waits
        # for an etcd that is dying too, and the lab's state is throw-away.
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


_TMP_PREFIX = "wk-cp-"


def _sweep_orphaned_workdirs() -> None:
    """Remove temp work dirs of launchers that died without stop() (SIGKILL, OOM).

    Temp dirs are named wk-cp-<owner pid>-<random>; only those whose owner is
    gone are removed, so concurrent sessions never lose theirs.
    """
    for d in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = d.name.removeprefix(_TMP_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ControlPlaneError(RuntimeError):
    """Start-up failed; the message carries the tail of the failing process's log."""


class ControlPlane:
    """etcd + kube-apiserver as child processes (see the module docstring)."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        bin_dir: Path | None = None,
        lab_address: str = DEFAULT_LAB_ADDRESS,
        extra_sans: Sequence[str] = (),
        bind_address: str = "0.0.0.0",
        startup_timeout: float = STARTUP_TIMEOUT_S,
        log: Callable[[str], None] = _stderr,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        if workdir is None:
            _sweep_orphaned_workdirs()
        self.workdir = (
            Path(workdir)
            if workdir
            else Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        )
        self._bin_dir = bin_dir
        self.lab_address = lab_address
        self._extra_sans = tuple(extra_sans)
        self._bind_address = bind_address
        self._startup_timeout = startup_timeout
        self._log = log
        self._extra_apiserver_args = tuple(extra_apiserver_args)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.port = 0
        self.startup_seconds = 0.0
        self.pki_dir = self.workdir / "pki"
        self.log_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.ca_file = self.pki_dir / "ca.crt"

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = ensure_binaries(log=self._log)
        return self._bin_dir

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def lab_server_url(self) -> str:
        return f"https://{self.lab_address}:{self.port}"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items()}

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        bins = self.bin_dir
        for sub in ("pki", "etcd", "logs", "kube-cache"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
            (self.workdir / sub).mkdir(parents=True)
        atexit.register(self.stop)
        try:
            self._write_pki()
            etcd_url = self._start_etcd(bins)
            t_etcd = time.monotonic() - t0
            self._start_apiserver(bins, etcd_url)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._log(
            f"control plane ready in {self.startup_seconds:.1f}s (etcd {t_etcd:.1f}s, "
            f"kube-apiserver {self.startup_seconds - t_etcd:.1f}s): {self.server_url} "
            f"(lab: {self.lab_server_url}), kubeconfig {self.kubeconfig}"
        )
        return self

    def stop(self) -> None:
        with self._lock:
            for name in ("kube-apiserver", "etcd"):
                proc = self._procs.pop(name, None)
                if proc is None or proc.poll() is not None:
                    continue
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            atexit.unregister(self.stop)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- start-up steps ----------------------------------------------------
    def _write_pki(self) -> None:
        ca = pki.CertificateAuthority.generate()
        dns, ips = pki.apiserver_serving_sans(self.lab_address, SERVICE_IP, self._extra_sans)
        serving = ca.issue("kube-apiserver", dns_names=dns, ip_addresses=ips, server=True)
        admin = ca.issue(pki.ADMIN_USER, organizations=[pki.MASTERS_GROUP], client=True)
        sa_key, sa_pub = pki.service_account_signing_key()
        files = {
            "ca.crt": ca.cert_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "sa.key": sa_key,
            "sa.pub": sa_pub,
        }
        for name, data in files.items():
            path = self.pki_dir / name
            path.write_bytes(data)
            if name.endswith(".key"):
                path.chmod(0o600)
        self._admin = admin
        self._ca_pem = ca.cert_pem
        # Kept so the lab's kubelet mode can issue node and component
        # client certificates (system:node:<name>, system:kube-proxy, ...).
        self.ca = ca

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509 - only calls prctl
        )
        log.close()
        self._procs[name] = proc
        return proc

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode}:\n{_tail(self.log_dir / f'{name}.log')}"
                )
            if ready():
                return
            time.sleep(POLL_S)
        raise ControlPlaneError(
            f"{name} not ready after {timeout:.0f}s:\n{_tail(self.log_dir / f'{name}.log')}"
        )

    def _start_etcd(self, bins: Path) -> str:
        for attempt in range(PORT_RETRIES):
            client, peer = _free_port("127.0.0.1"), _free_port("127.0.0.1")
            url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            self._spawn(
                "etcd",
                [
                    str(bins / "etcd"),
                    "--name=wirekube-lab",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={url}",
                    f"--advertise-client-urls={url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=wirekube-lab={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
            )
            try:
                self._wait("etcd", functools.partial(_etcd_healthy, url), ETCD_TIMEOUT_S)
                return url
            except ControlPlaneError as e:
                if "address already in use" not in str(e) or attempt == PORT_RETRIES - 1:
                    raise
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        raise AssertionError("unreachable")

    def _start_apiserver(self, bins: Path, etcd_url: str) -> None:
        p = self.pki_dir
        for attempt in range(PORT_RETRIES):
            self.port = _free_port(self._bind_address)
            self._spawn(
                "kube-apiserver",
                [
                    str(bins / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self._bind_address}",
                    f"--secure-port={self.port}",
                    f"--advertise-address={self.lab_address}",
                    f"--cert-dir={p}",
                    f"--tls-cert-file={p / 'apiserver.crt'}",
                    f"--tls-private-key-file={p / 'apiserver.key'}",
                    f"--client-ca-file={p / 'ca.crt'}",
                    "--anonymous-auth=false",
                    "--authorization-mode=Node,RBAC",
                    f"--service-account-issuer={SA_ISSUER}",
                    f"--api-audiences={SA_ISSUER}",
                    f"--service-account-key-file={p / 'sa.pub'}",
                    f"--service-account-signing-key-file={p / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--v=1",
                    *self._extra_apiserver_args,
                ],
            )
            try:
                self._wait("kube-apiserver", self._apiserver_ready, self._startup_timeout)
                break
            except ControlPlaneError as e:
                if "address already in use" not in str(e) or attempt == PORT_RETRIES - 1:
                    raise
        self.kubeconfig.write_text(self._admin_kubeconfig(self.server_url))
        self.kubeconfig.chmod(0o600)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _apiserver_ready(self) -> bool:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self._ssl_context(), timeout=5
        )
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            return resp.status == 200 and resp.read().strip() == b"ok"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    # ---- clients and kubeconfigs ------------------------------------------
    def _admin_kubeconfig(self, server: str) -> str:
        return pki.dump_kubeconfig(
            pki.kubeconfig(
                server,
                self._ca_pem,
                user=pki.ADMIN_USER,
                client_cert_pem=self._admin.cert_pem,
                client_key_pem=self._admin.key_pem,
            )
        )

    def write_kubeconfig(self, path: Path | str, *, lab: bool = False) -> Path:
        """Write an admin kubeconfig; ``lab=True`` points it at https://100.64.0.1:<port>."""
        path = Path(path)
        path.write_text(self._admin_kubeconfig(self.lab_server_url if lab else self.server_url))
        path.chmod(0o600)
        return path

    def kubeconfig_for_service_account(
        self,
        namespace: str,
        name: str,
        *,
        lab: bool = False,
        path: Path | str | None = None,
        duration_seconds: int = 86400,
        bound_pod: str | None = None,
    ) -> Path:
        """A kubeconfig with a token for ``namespace/name`` from the TokenRequest API.

        ``bound_pod``: bind the token to that Pod (same namespace), as the
        kubelet does for a pod's own token: it then names the Pod's node
        (userInfo.extra ``authentication.kubernetes.io/node-name``) and dies
        with the Pod. See ``wirekube_lab.podidentity``.
        """
        bound = (
            k8s_client.V1BoundObjectReference(api_version="v1", kind="Pod", name=bound_pod)
            if bound_pod
            else None
        )
        with self.api_client() as api:
            request = k8s_client.AuthenticationV1TokenRequest(
                spec=k8s_client.V1TokenRequestSpec(
                    audiences=[SA_ISSUER],
                    expiration_seconds=duration_seconds,
                    bound_object_ref=bound,
                )
            )
            resp = k8s_client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
        if resp.status is None or not resp.status.token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        token = resp.status.token
        user = pki.service_account_username(namespace, name)
        config = pki.kubeconfig(
            self.lab_server_url if lab else self.server_url,
            self._ca_pem,
            user=user,
            token=token,
            namespace=namespace,
        )
        out = (
            Path(path)
            if path
            else self.workdir / f"sa-{namespace}-{name}{'-lab' if lab else ''}.kubeconfig"
        )
        out.write_text(pki.dump_kubeconfig(config))
        out.chmod(0o600)
        return out

    def api_client(self, kubeconfig: Path | str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` (admin unless another kubeconfig is given)."""
        return k8s_config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | str | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane; raise on failure if ``check``."""
        env = dict(os.environ, KUBECACHEDIR=str(self.workdir / "kube-cache"))
        env.pop("KUBECONFIG", None)
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}"]
        proc = subprocess.run(
            [*argv, *args],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def install_wirekube(self, repo: Path | None = None) -> None:
        """Apply the CRDs, namespace + RBAC and admission policies of deploy/kustomize/base;
        wait for the CRDs and until the policies are in effect."""
        root = repo or repo_root()
        t0 = time.monotonic()
        for k in INSTALL_KUSTOMIZATIONS:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(root / k))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{c}" for c in WIREKUBE_CRDS),
        )
        self._wait_for_admission_policy()
        self._log(f"installed WireKube CRDs, RBAC and admission in {time.monotonic() - t0:.1f}s")

    def _wait_for_admission_policy(self) -> None:
        """Until the agent-own-peer policy refuses a (dry-run) write by a token naming no node."""
        probe = json.dumps(
            {
                "apiVersion": "wirekube.io/v1alpha1",
                "kind": "WireKubePeer",
                "metadata": {"name": "node-admission-probe"},
                "spec": {"publicKey": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="},
            }
        )
        deadline = time.monotonic() + POLICY_TIMEOUT_S
        while True:
            proc = self.kubectl(
                "create", "--dry-run=server", f"--as={AGENT_USER}", "-f", "-",
                input=probe, check=False,
            )  # fmt: skip
            if POLICY_LOADED_MARK in proc.stderr:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"admission policy not in effect after {POLICY_TIMEOUT_S:.0f}s: "
                    f"{proc.stdout}{proc.stderr}"
                )
            time.sleep(POLL_S)


def _etcd_healthy(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status == 200 and json.loads(resp.read()).get("health") == "true"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


# ---- command line -----------------------------------------------------------
def _state_file(workdir: Path) -> Path:
    return workdir / "state.json"


def _serve(workdir: Path, install: bool, lab_address: str) -> int:
    """Run a control plane in the foreground until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workdir.mkdir(parents=True, exist_ok=True)
    state = _state_file(workdir)
    state.unlink(missing_ok=True)
    with ControlPlane(workdir, lab_address=lab_address) as cp:
        service_kubeconfigs = {}
        if install:
            cp.install_wirekube()
            # One token kubeconfig per service account (docker-compose.yml mounts
            # them). The agent's is bound to a stand-in Pod on its node: the
            # admission policy lets only such tokens write their node's peer.
            for sa in SERVICE_ACCOUNTS:
                path = workdir / f"{sa}.kubeconfig"
                if sa == "wirekube-agent":
                    node = os.environ.get("NODE_NAME", COMPOSE_AGENT_NODE)
                    podidentity.issue(cp, node, path=path)
                else:
                    cp.kubeconfig_for_service_account(WIREKUBE_NAMESPACE, sa, path=path)
                service_kubeconfigs[sa] = str(path)
        lab_kc = cp.write_kubeconfig(workdir / "admin-lab.kubeconfig", lab=True)
        info = {
            "pid": os.getpid(),
            "server_url": cp.server_url,
            "lab_server_url": cp.lab_server_url,
            "kubeconfig": str(cp.kubeconfig),
            "lab_kubeconfig": str(lab_kc),
            "kubectl": str(cp.bin_dir / "kubectl"),
            "startup_seconds": round(cp.startup_seconds, 2),
            "pids": cp.pids,
            "service_kubeconfigs": service_kubeconfigs,
        }
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.rename(state)
        print(json.dumps(info, indent=2), flush=True)
        while not stop.wait(1.0):
            if any(p.poll() is not None for p in cp._procs.values()):
                _stderr("a control plane process exited; stopping")
                break
    state.unlink(missing_ok=True)
    return 0


def _up(workdir: Path, install: bool, lab_address: str) -> int:
    state = _state_file(workdir)
    if state.exists():
        info = json.loads(state.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], 0)
            print(json.dumps(info, indent=2))
            return 0
        state.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "wirekube_lab.controlplane",
        "serve",
        f"--workdir={workdir}",
        f"--lab-address={lab_address}",
    ] + ([] if install else ["--no-install"])
    with (workdir / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S + 60
    while time.monotonic() < deadline:
        if state.exists():
            print(state.read_text())
            return 0
        if proc.poll() is not None:
            _stderr(f"control plane failed to start:\n{_tail(workdir / 'serve.log', 40)}")
            return 1
        time.sleep(0.2)
    proc.terminate()
    _stderr("control plane did not become ready in time")
    return 1


def _down(workdir: Path) -> int:
    state = _state_file(workdir)
    if not state.exists():
        print(f"no control plane running in {workdir}")
        return 0
    pid = int(json.loads(state.read_text())["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S * 2
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    print(f"control plane in {workdir} stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wirekube_lab.controlplane")
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    default_dir = os.environ.get("WIREKUBE_CONTROLPLANE_DIR", DEFAULT_CLI_DIR)
    parser.add_argument("--workdir", type=Path, default=Path(default_dir))
    parser.add_argument("--lab-address", default=DEFAULT_LAB_ADDRESS)
    parser.add_argument("--no-install", action="store_true", help="skip CRDs and RBAC")
    parser.add_argument("--foreground", action="store_true", help="up: stay attached")
    args = parser.parse_args(argv)
    install = not args.no_install
    if args.command == "serve" or (args.command == "up" and args.foreground):
        return _serve(args.workdir, install, args.lab_address)
    if args.command == "up":
        return _up(args.workdir, install, args.lab_address)
    if args.command == "down":
        return _down(args.workdir)
    state = _state_file(args.workdir)
    print(state.read_text() if state.exists() else f"no control plane in {args.workdir}")
    return 0 if state.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
