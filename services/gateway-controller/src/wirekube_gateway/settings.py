"""Command line and environment of wirekube-gateway-controller.

The Deployment (deploy/kustomize/base/gateway-controller.yaml) sets
``POD_NAME`` (the election identity), ``POD_NAMESPACE`` (where the Lease
lives) and ``WIREKUBE_LEADER_ELECTION_LEASE`` (its name); flags override.
"""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from dataclasses import dataclass

from wirekube_common.gwhealth.report import NAMESPACE as HEALTH_NAMESPACE
from wirekube_common.metrics import DEFAULT_METRICS_PORT
from wirekube_gateway.managedrelay.desired import RelayConfig
from wirekube_gateway.timers import (
    LEASE_DURATION_S,
    PEER_GC_GRACE_S,
    RENEW_DEADLINE_S,
    RETRY_PERIOD_S,
)

DEFAULT_LEASE = "wirekube-gateway-controller"
DEFAULT_NAMESPACE = "wirekube-system"
# The relay image when the Deployment does not say (WIREKUBE_RELAY_IMAGE): the
# release this controller belongs to. The base manifests set it explicitly.
DEFAULT_RELAY_IMAGE = "wirekube/relay:0.1.0"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None
    identity: str
    lease_name: str
    lease_namespace: str
    health_namespace: str
    metrics_address: str
    metrics_port: int
    lease_duration_s: float
    renew_deadline_s: float
    retry_period_s: float
    failback: bool
    peer_gc_grace_s: float = PEER_GC_GRACE_S
    managed_relay: RelayConfig | None = None  # None: --managed-relay off
    mesh_name: str = "default"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="wirekube-gateway-controller",
        description="Elects the active peer of every WireKubeGateway from the health reports "
        "of its gateway peers and publishes it in the gateway's status. Run two replicas: "
        "one leads (a coordination.k8s.io Lease), the other stands by.",
    )
    p.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG") or None,
        help="kubeconfig path (default: in-cluster config)",
    )
    p.add_argument(
        "--identity",
        default=env("POD_NAME") or None,
        help="leader-election identity (default: $POD_NAME, else hostname + random)",
    )
    p.add_argument(
        "--lease-name",
        default=env("WIREKUBE_LEADER_ELECTION_LEASE") or DEFAULT_LEASE,
        help="leader-election Lease name (default: $WIREKUBE_LEADER_ELECTION_LEASE)",
    )
    p.add_argument(
        "--lease-namespace",
        default=env("POD_NAMESPACE") or DEFAULT_NAMESPACE,
        help="namespace of the Lease (default: $POD_NAMESPACE)",
    )
    p.add_argument(
        "--health-namespace",
        default=HEALTH_NAMESPACE,
        help="namespace of the agents' health-report Leases",
    )
    p.add_argument("--metrics-address", default="0.0.0.0")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="/metrics and /healthz port (0: none)",
    )
    p.add_argument("--lease-duration", type=float, default=LEASE_DURATION_S, metavar="SECONDS")
    p.add_argument("--renew-deadline", type=float, default=RENEW_DEADLINE_S, metavar="SECONDS")
    p.add_argument("--retry-period", type=float, default=RETRY_PERIOD_S, metavar="SECONDS")
    p.add_argument(
        "--failback",
        choices=["hold", "never"],
        default="hold",
        help="hold: an earlier peerRef takes the role back after staying healthy for "
        "2 x failureThreshold x intervalSeconds; never: only on failure",
    )
    p.add_argument(
        "--peer-gc-grace",
        type=float,
        default=PEER_GC_GRACE_S,
        metavar="SECONDS",
        help="delete the WireKubePeer of a node that left the mesh (Node gone or no longer "
        "labelled wirekube.io/vpn-enabled=true) after this long; 0 disables (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--managed-relay",
        choices=["on", "off"],
        default=env("WIREKUBE_MANAGED_RELAY") or "on",
        help="run the managed-relay reconciler (WireKubeMesh spec.relay.managed -> the relay "
        "Deployment, Services, Secret and PodDisruptionBudget)",
    )
    p.add_argument(
        "--mesh-name",
        default=env("WIREKUBE_MESH_NAME") or "default",
        help="the WireKubeMesh whose spec.relay.managed is reconciled",
    )
    p.add_argument(
        "--relay-namespace",
        default=env("WIREKUBE_RELAY_NAMESPACE") or env("POD_NAMESPACE") or DEFAULT_NAMESPACE,
        help="where the managed relay's objects live (default: $POD_NAMESPACE)",
    )
    p.add_argument(
        "--relay-image",
        default=env("WIREKUBE_RELAY_IMAGE") or DEFAULT_RELAY_IMAGE,
        help="the managed relay's container image (default: $WIREKUBE_RELAY_IMAGE)",
    )
    p.add_argument(
        "--relay-image-pull-policy",
        choices=PULL_POLICIES,
        default=env("WIREKUBE_RELAY_IMAGE_PULL_POLICY") or "IfNotPresent",
    )
    p.add_argument("--log-level", default=None)
    return p


def from_args(args: argparse.Namespace) -> Settings:
    identity = args.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    if not 0 < args.retry_period < args.renew_deadline < args.lease_duration:
        raise SettingsError("need 0 < --retry-period < --renew-deadline < --lease-duration")
    if not 0 <= args.metrics_port <= 65535:
        raise SettingsError("--metrics-port must be 0-65535")
    if not 0 <= args.peer_gc_grace < float("inf"):
        raise SettingsError("--peer-gc-grace must be a number of seconds >= 0")
    return Settings(
        kubeconfig=args.kubeconfig,
        identity=identity,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        health_namespace=args.health_namespace,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        lease_duration_s=args.lease_duration,
        renew_deadline_s=args.renew_deadline,
        retry_period_s=args.retry_period,
        failback=args.failback == "hold",
        peer_gc_grace_s=args.peer_gc_grace,
        managed_relay=_relay_config(args),
        mesh_name=args.mesh_name,
    )


def _relay_config(args: argparse.Namespace) -> RelayConfig | None:
    if args.managed_relay not in ("on", "off"):  # from the environment: argparse skips it
        raise SettingsError("WIREKUBE_MANAGED_RELAY must be on or off")
    if args.managed_relay == "off":
        return None
    if not args.relay_image or any(c.isspace() for c in args.relay_image):
        raise SettingsError("--relay-image must be a non-empty image reference")
    if args.relay_image_pull_policy not in PULL_POLICIES:
        raise SettingsError(f"--relay-image-pull-policy must be one of {PULL_POLICIES}")
    return RelayConfig(
        namespace=args.relay_namespace,
        image=args.relay_image,
        image_pull_policy=args.relay_image_pull_policy,
    )
