"""Kubeconfig and in-cluster loading, and the Authorization header they give."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wirekube_common.kube.config import ConfigError, in_cluster, load
from wirekube_common.kube.connect import TOKEN_REREAD_S, Auth

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(tmp: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": cluster or {"server": "https://10.0.0.1:6443/",
                                                 "certificate-authority-data": b64(CA)}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }  # fmt: skip
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_static_token_and_inline_ca(tmp_path: Path) -> None:
    cfg = load(write_kubeconfig(tmp_path, {"token": "abc"}))
    assert cfg.server == "https://10.0.0.1:6443"
    assert cfg.ca_pem == CA and cfg.verify
    assert Auth(cfg).headers() == {"Authorization": "Bearer abc"}


def test_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(CA)
    (tmp_path / "tls.crt").write_bytes(b"CERT")
    (tmp_path / "tls.key").write_bytes(b"KEY")
    cluster = {"server": "https://api:6443", "certificate-authority": "ca.crt",
               "tls-server-name": "kubernetes"}  # fmt: skip
    user = {"client-certificate": "tls.crt", "client-key": "tls.key"}
    cfg = load(write_kubeconfig(tmp_path, user, cluster))
    assert (cfg.ca_pem, cfg.client_cert_pem, cfg.client_key_pem) == (CA, b"CERT", b"KEY")
    assert cfg.tls_server_name == "kubernetes"
    assert Auth(cfg).headers() == {}


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    cluster = {"server": "https://api:6443", "insecure-skip-tls-verify": True}
    assert not load(write_kubeconfig(tmp_path, {"token": "t"}, cluster)).verify


@pytest.mark.parametrize(
    ("user", "cluster", "why"),
    [
        ({"client-certificate-data": b64(b"CERT")}, None, "without its key"),
        ({"token": "t"}, {"server": "api:6443"}, "not an http"),
        ({"token": "t"}, {"server": "https://a", "certificate-authority-data": "%%"}, "base64"),
        ({"client-certificate": "missing.crt", "client-key": "missing.key"}, None, "cannot read"),
    ],
)
def test_bad_kubeconfigs_say_why(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        load(write_kubeconfig(tmp_path, user, cluster))


def test_unknown_context_and_garbage(tmp_path: Path) -> None:
    path = Path(write_kubeconfig(tmp_path, {"token": "t"}))
    doc = yaml.safe_load(path.read_text())
    doc["current-context"] = "elsewhere"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="no context named 'elsewhere'"):
        load(str(path))
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load(str(path))
    with pytest.raises(ConfigError, match="kubeconfig"):
        load(str(tmp_path / "absent"))


def test_in_cluster_rereads_a_rotated_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes(CA)
    cfg = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                     tmp_path)  # fmt: skip
    assert cfg.server == "https://[fd00::1]:443" and cfg.ca_pem == CA
    now = [0.0]
    auth = Auth(cfg, clock=lambda: now[0])
    assert auth.headers() == {"Authorization": "Bearer first"}
    (tmp_path / "token").write_text("second\n")
    now[0] = TOKEN_REREAD_S / 2
    assert auth.headers() == {"Authorization": "Bearer first"}  # not re-read yet
    now[0] = TOKEN_REREAD_S
    assert auth.headers() == {"Authorization": "Bearer second"}
    (tmp_path / "token").unlink()  # mid-rotation: keep the last token
    now[0] = 2 * TOKEN_REREAD_S
    assert auth.headers() == {"Authorization": "Bearer second"}


def test_not_in_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not in a cluster"):
        in_cluster({}, tmp_path)
    with pytest.raises(ConfigError, match="no service-account token"):
        in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                   tmp_path)  # fmt: skip


def test_exec_plugins_run_through_the_kubernetes_package(tmp_path: Path) -> None:
    """A credential plugin (as EKS and GKE kubeconfigs use) really runs."""
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-plugin"},
    }
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
            "interactiveMode": "Never",
        }
    }
    cfg = load(write_kubeconfig(tmp_path, user))
    assert cfg.server == "https://10.0.0.1:6443" and cfg.auth_headers is not None
    assert Auth(cfg).headers() == {"authorization": "Bearer from-plugin"}


def test_services_never_import_the_kubernetes_package() -> None:
    """Importing it costs 0.3 s of CPU per process (see kube.config)."""
    modules = ["wirekube_agent.__main__", "wirekube_agent.reconciler", "wirekube_gateway.__main__",
               "wirekube_relay.__main__",
               "wirekube_relay.client.k8s", "wirekube_common.gwhealth.__main__"]  # fmt: skip
    script = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    script += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
