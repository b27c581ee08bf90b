"""Where the API server is and how to authenticate: in-cluster or a kubeconfig.

Why not ``kubernetes.config``: importing anything from the ``kubernetes``
package runs its ``__init__``, which loads the kubeconfig machinery with
oauthlib, requests, dateutil, pydantic and websocket — measured here 0.3 s of
CPU per process from bytecode (0.8-1.0 s where modules are compiled at
start), as much as the rest of the agent's imports together. Time to first
contact of a freshly started node is mostly start-up CPU.

The two shapes a WireKube service meets are read here directly: the in-cluster
service account (token file, CA, ``KUBERNETES_SERVICE_*``) and a kubeconfig
with static credentials (token, token file, client certificate, CA, insecure).
Anything else a kubeconfig can hold — ``exec`` credential plugins,
``auth-provider`` — is handed to the kubernetes package, imported only then,
which runs the plugin and refreshes its tokens (``ClusterConfig.auth_headers``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Credentials we read ourselves; any other user field goes to the library.
STATIC_USER_FIELDS = frozenset(
    {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
     "client-key-data"}
)  # fmt: skip


class ConfigError(Exception):
    """The kubeconfig or in-cluster environment cannot be used (says why)."""


@dataclass(frozen=True)
class ClusterConfig:
    server: str  # https://host:port, no trailing slash
    ca_pem: bytes | None = None  # None: the system's trust store
    verify: bool = True
    tls_server_name: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    # Bound service-account tokens rotate: the file is re-read (see connect.Auth).
    token_file: str | None = None
    # Set when the kubernetes package owns authentication (exec plugins).
    auth_headers: Callable[[], dict[str, str]] | None = None


def load(kubeconfig: str | None, context: str | None = None) -> ClusterConfig:
    """The kubeconfig at ``kubeconfig`` (its ``context``, default the current
    one), or the in-cluster config when None."""
    if kubeconfig is None:
        return in_cluster(os.environ, SERVICE_ACCOUNT_DIR)
    path = Path(kubeconfig)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"kubeconfig {path}: not a mapping")
    cluster, user = select_context(document, str(path), context)
    if set(user) - STATIC_USER_FIELDS:
        return _from_library(str(path), context)
    return from_kubeconfig(cluster, user, path.parent)


def in_cluster(env: Mapping[str, str], sa_dir: Path) -> ClusterConfig:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no --kubeconfig given"
        )
    token_file = sa_dir / "token"
    if not token_file.is_file():
        raise ConfigError(f"no service-account token at {token_file}")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_pem=_read(sa_dir / "ca.crt"),
        token_file=str(token_file),
    )


def select_context(
    document: Mapping[str, Any], where: str, context: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster and user entries of ``context`` (default: the current context)."""

    def named(section: str, name: Any) -> dict[str, Any]:
        for entry in document.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                body = entry.get(section[:-1])  # "clusters" -> "cluster"
                return body if isinstance(body, dict) else {}
        raise ConfigError(f"kubeconfig {where}: no {section[:-1]} named {name!r}")

    current = context or document.get("current-context")
    if not current:
        raise ConfigError(f"kubeconfig {where}: no current-context")
    context = named("contexts", current)
    return named("clusters", context.get("cluster")), named("users", context.get("user"))


def from_kubeconfig(
    cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path
) -> ClusterConfig:
    """Static credentials; relative file names are relative to the kubeconfig,
    as kubectl reads them."""
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"cluster server {server!r} is not an http(s) URL")

    cert = _material(user, "client-certificate", base)
    key = _material(user, "client-key", base)
    if (cert is None) != (key is None):
        raise ConfigError("kubeconfig has a client certificate without its key, or a key alone")
    token_file = user.get("tokenFile")
    return ClusterConfig(
        server=server,
        ca_pem=_material(cluster, "certificate-authority", base),
        verify=not cluster.get("insecure-skip-tls-verify", False),
        tls_server_name=cluster.get("tls-server-name") or None,
        client_cert_pem=cert,
        client_key_pem=key,
        token=user.get("token") or None,
        token_file=str(base / str(token_file)) if token_file else None,
    )


def _material(entry: Mapping[str, Any], field: str, base: Path) -> bytes | None:
    """PEM from ``<field>-data`` (base64, inline) or from the file ``<field>``."""
    inline = entry.get(f"{field}-data")
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True)
        except ValueError as exc:
            raise ConfigError(f"kubeconfig {field}-data is not base64") from exc
    name = entry.get(field)
    return _read(base / str(name)) if name else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _from_library(kubeconfig: str, context: str | None = None) -> ClusterConfig:
    """Exec plugins and auth providers: the kubernetes package runs them."""
    from kubernetes import client, config  # noqa: PLC0415 - heavy; only for these kubeconfigs

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)

    def headers() -> dict[str, str]:
        # auth_settings() runs the refresh hook (a new exec token when expired).
        return {
            s["key"]: str(s["value"]) for s in cfg.auth_settings().values() if s["in"] == "header"
        }

    return ClusterConfig(
        server=str(cfg.host).rstrip("/"),
        ca_pem=_read(Path(cfg.ssl_ca_cert)) if cfg.ssl_ca_cert else None,
        verify=bool(cfg.verify_ssl),
        tls_server_name=getattr(cfg, "tls_server_name", None) or None,
        client_cert_pem=_read(Path(cfg.cert_file)) if cfg.cert_file else None,
        client_key_pem=_read(Path(cfg.key_file)) if cfg.key_file else None,
        auth_headers=headers,
    )
