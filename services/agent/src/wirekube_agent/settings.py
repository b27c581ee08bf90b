"""Agent settings: command-line flags with environment fallbacks.

Mesh-wide settings (port, MTU, relay mode...) are not here: they come from the
WireKubeMesh object and change live. These are the per-process knobs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

ENDPOINT_SOURCES = ("annotation", "stun", "ipv6", "aws-imds", "external-ip", "internal")
DEFAULT_ENDPOINT_SOURCES = ("annotation", "stun", "ipv6", "aws-imds", "external-ip", "internal")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    node_name: str
    kubeconfig: str | None
    state_dir: str
    backend: str
    wireguard_go: str
    sysctl_root: str
    metrics_port: int
    mesh_name: str
    endpoint_sources: tuple[str, ...]
    dns_server: str | None
    relay_service: str
    log_level: str
    relay_ca_file: str | None = None
    relay_proxy_credentials_file: str | None = None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="wirekube-agent", description="WireKube node agent")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="run the agent (default)")
    clean = sub.add_parser("cleanup", help="remove the interface, table and rules (initContainer)")
    clean.add_argument("--interface", default=env("WIREKUBE_INTERFACE", "wire_kube"))
    p.add_argument("--node-name", default=env("NODE_NAME"), help="this node (env NODE_NAME)")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="default: in-cluster")
    p.add_argument("--state-dir", default=env("WIREKUBE_STATE_DIR", "/var/lib/wirekube"))
    p.add_argument(
        "--wireguard-backend",
        dest="backend",
        choices=("auto", "kernel", "userspace"),
        default=env("WIREKUBE_WIREGUARD_BACKEND", "auto"),
    )
    p.add_argument("--wireguard-go", default=env("WIREKUBE_WIREGUARD_GO", "wireguard-go"))
    p.add_argument(
        "--sysctl-root",
        default=env("WIREKUBE_SYSCTL_ROOT", "/proc/sys"),
        help="where net/ipv4/conf lives (the DaemonSet mounts the host's at /host/proc/sys)",
    )
    p.add_argument("--metrics-port", type=int, default=int(env("WIREKUBE_METRICS_PORT", "9090")))
    p.add_argument("--mesh-name", default=env("WIREKUBE_MESH_NAME", "default"))
    p.add_argument(
        "--endpoint-sources",
        default=env("WIREKUBE_ENDPOINT_SOURCES", ",".join(DEFAULT_ENDPOINT_SOURCES)),
        help="comma-separated, in priority order: " + ",".join(ENDPOINT_SOURCES),
    )
    p.add_argument(
        "--dns-server", default=env("WIREKUBE_DNS_SERVER"), help="resolver for relay names"
    )
    p.add_argument(
        "--relay-service",
        default=env("WIREKUBE_RELAY_SERVICE", "wirekube-system/wirekube-relay"),
        help="namespace/name of the managed relay's Service",
    )
    p.add_argument("--log-level", default=env("WIREKUBE_LOG_LEVEL", "info"))
    p.add_argument(
        "--relay-ca-file",
        default=env("WIREKUBE_RELAY_CA_FILE"),
        help="PEM CA bundle for a TLS relay's certificate (default: the system store)",
    )
    p.add_argument(
        "--relay-proxy-credentials-file",
        default=env("WIREKUBE_RELAY_PROXY_CREDENTIALS_FILE"),
        help="'user:password' for the HTTP proxy to the relay (a mounted Secret key)",
    )
    return p


def from_args(args: argparse.Namespace) -> Settings:
    if not args.node_name:
        raise SettingsError("NODE_NAME is required (set it from the downward API: spec.nodeName)")
    sources = tuple(s.strip() for s in args.endpoint_sources.split(",") if s.strip())
    unknown = [s for s in sources if s not in ENDPOINT_SOURCES]
    if unknown:
        raise SettingsError(f"unknown endpoint sources {unknown}; known: {ENDPOINT_SOURCES}")
    return Settings(
        node_name=args.node_name,
        kubeconfig=args.kubeconfig,
        state_dir=args.state_dir,
        backend=args.backend,
        wireguard_go=args.wireguard_go,
        sysctl_root=args.sysctl_root,
        metrics_port=args.metrics_port,
        mesh_name=args.mesh_name,
        endpoint_sources=sources,
        dns_server=args.dns_server,
        relay_service=args.relay_service,
        log_level=args.log_level,
        relay_ca_file=args.relay_ca_file,
        relay_proxy_credentials_file=args.relay_proxy_credentials_file,
    )
