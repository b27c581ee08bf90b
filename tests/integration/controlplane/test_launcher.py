"""The launcher itself: TLS names, authentication, kubeconfigs, clean stops.

Beyond the shared session control plane, these tests start their own short-lived
instances to prove that every child process is ended by PID - by stop(), by the
command line's `down`, and even when the launching process is SIGKILLed.
"""

from __future__ import annotations

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
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client

from wirekube_lab.controlplane import ControlPlane


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait() is missing.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _handshake(cp: Any, server_hostname: str) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    with (
        socket.create_connection(("127.0.0.1", cp.port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=server_hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def test_serving_certificate_names(control_plane: Any) -> None:
    # The TLS handshake succeeds for every name a client may dial ...
    for name in ("127.0.0.1", "100.64.0.1", "localhost", "kubernetes.default.svc"):
        cert = _handshake(control_plane, name)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc.cluster.local" in san.get_values_for_type(x509.DNSName)
    # ... and fails for any other.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(control_plane, "100.64.0.2")


def test_no_anonymous_access(control_plane: Any) -> None:
    ctx = ssl.create_default_context(cafile=str(control_plane.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", control_plane.port, context=ctx, timeout=5)
    conn.request("GET", "/api")
    assert conn.getresponse().status == 401
    conn.close()


def test_admin_identity_and_api_client(control_plane: Any) -> None:
    who = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json").stdout)
    assert "system:masters" in who["status"]["userInfo"]["groups"]
    with control_plane.api_client() as api:
        names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system", "wirekube-system"} <= names


def test_kubeconfigs_for_lab_hosts(control_plane: Any, tmp_path: Path) -> None:
    lab = yaml.safe_load(control_plane.write_kubeconfig(tmp_path / "lab", lab=True).read_text())
    assert lab["clusters"][0]["cluster"]["server"] == f"https://100.64.0.1:{control_plane.port}"
    sa = control_plane.kubeconfig_for_service_account(
        "wirekube-system", "wirekube-agent", lab=True, path=tmp_path / "agent"
    )
    cfg = yaml.safe_load(sa.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == control_plane.lab_server_url
    assert cfg["contexts"][0]["context"]["namespace"] == "wirekube-system"
    assert oct(sa.stat().st_mode & 0o777) == "0o600"
    # The same token works against the root-namespace address.
    local = control_plane.kubeconfig_for_service_account(
        "wirekube-system", "wirekube-agent", path=tmp_path / "agent-local"
    )
    who = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=local).stdout)
    assert who["status"]["userInfo"]["username"] == (
        "system:serviceaccount:wirekube-system:wirekube-agent"
    )


def test_stop_ends_both_processes_and_removes_the_temp_dir(control_plane: Any) -> None:
    cp = ControlPlane(bin_dir=control_plane.bin_dir, log=lambda _m: None)
    with cp:
        pids = list(cp.pids.values())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        assert cp.startup_seconds < 60
        workdir = cp.workdir
    assert _wait_dead(pids, 1.0) == []
    assert not workdir.exists()


def test_children_die_with_a_killed_launcher(control_plane: Any, tmp_path: Path) -> None:
    # An explicit work dir: a SIGKILLed launcher cannot remove its temp dir.
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from wirekube_lab.controlplane import ControlPlane\n"
        f"cp = ControlPlane({str(tmp_path / 'cp')!r}, bin_dir=Path({str(control_plane.bin_dir)!r}),"
        " log=lambda m: None)\n"
        "cp.start()\n"
        "print(json.dumps(cp.pids), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = list(json.loads(proc.stdout.readline()).values())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _wait_dead(pids) == [], "etcd/kube-apiserver outlived their launcher"


def test_command_line_up_status_down(control_plane: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "cp"
    cli = [sys.executable, "-m", "wirekube_lab.controlplane"]
    env = dict(os.environ, WIREKUBE_CONTROLPLANE_DIR=str(workdir))
    env.pop("NODE_NAME", None)  # the agent's stand-in Pod is then on compose-node
    try:
        up = subprocess.run(
            [*cli, "up"], capture_output=True, text=True, env=env, timeout=240, check=False
        )
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["startup_seconds"] > 0
        assert set(info["service_kubeconfigs"]) == {
            "wirekube-agent",
            "wirekube-relay",
            "wirekube-gateway-controller",
            "wirekube-stun-probe",
        }
        pids = [info["pid"], *info["pids"].values()]
        assert all(_alive(p) for p in pids)
        relay_kc = info["service_kubeconfigs"]["wirekube-relay"]
        out = subprocess.run(
            [info["kubectl"], f"--kubeconfig={relay_kc}", "get", "wkp"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        # The agent's token is bound to a stand-in Pod on the compose node, so
        # the admission policy lets it write node-compose-node (and only that).
        agent_kc = info["service_kubeconfigs"]["wirekube-agent"]
        who = subprocess.run(
            [info["kubectl"], f"--kubeconfig={agent_kc}", "auth", "whoami", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert who.returncode == 0, who.stderr
        extra = json.loads(who.stdout)["status"]["userInfo"]["extra"]
        assert extra["authentication.kubernetes.io/node-name"] == ["compose-node"]
        status = subprocess.run(
            [*cli, "status"], capture_output=True, text=True, env=env, timeout=30, check=False
        )
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == info["pid"]
    finally:
        down = subprocess.run(
            [*cli, "down"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
    assert down.returncode == 0, down.stderr
    assert _wait_dead(pids) == []
    assert not (workdir / "state.json").exists()


def test_build_script_is_instant_when_cached_and_binaries_are_pinned(
    control_plane: Any, repo: Path
) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(repo / "tools/controlplane/build.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert time.monotonic() - t0 < 5.0
    assert "cached:" in proc.stderr
    bin_dir = Path(proc.stdout.strip())
    assert bin_dir == control_plane.bin_dir
    assert bin_dir.parent.name == "k8s-v1.34.4-etcd-v3.6.4"
    version = subprocess.run(
        [str(bin_dir / "kube-apiserver"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.strip() == "Kubernetes v1.34.4"
    etcd = subprocess.run(
        [str(bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "etcd Version: 3.6.4" in etcd
    server = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert server["serverVersion"]["gitVersion"] == "v1.34.4"
    assert server["clientVersion"]["gitVersion"] == "v1.34.4"


def test_orphaned_temp_dirs_are_swept_live_ones_kept(control_plane: Any) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = Path(tempfile.gettempdir())
    orphan = tmp / f"wk-cp-{dead.pid}-sweeptest"
    live = tmp / f"wk-cp-{os.getpid()}-sweeptest"
    for d in (orphan, live):
        (d / "etcd").mkdir(parents=True, exist_ok=True)
    try:
        cp = ControlPlane(bin_dir=control_plane.bin_dir, log=lambda _m: None)
        assert cp.workdir.name.startswith(f"wk-cp-{os.getpid()}-")
        cp.stop()  # never started: only removes its own temp dir
        assert not orphan.exists()
        assert live.exists()
        assert not cp.workdir.exists()
    finally:
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
