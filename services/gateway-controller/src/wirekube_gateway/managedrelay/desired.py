"""What the managed relay should look like in the cluster (pure).

``desired(mesh, config)`` turns a WireKubeMesh with ``spec.relay.provider:
managed`` into the objects the controller owns, as plain API dicts ready for
server-side apply: the relay Deployment, the external Service (of
``managed.serviceType``), the headless pool Service (one DNS record per ready
replica: the replicas find each other there, and so can agents that reach
every replica) and a PodDisruptionBudget. ``mesh_secret`` is the pool's
shared secret, created once (see ``reconciler``).

Every object carries the labels that mark it as ours (``OWNED_SELECTOR``) and
an ownerReference to the mesh, so a cluster with a garbage collector removes
it with the mesh; the controller removes it itself too (``plan``), because
not every control plane runs kube-controller-manager.

The relay container follows the relay's pinned interface: it listens on
``managed.port``, finds the other replicas through
``wirekube-relay-pool.<ns>.svc`` (``WIREKUBE_RELAY_MESH_DNS``), proves pool
membership with the Secret ``wirekube-relay-mesh`` mounted at
``/etc/wirekube/relay-mesh/secret`` and recognises itself by ``POD_IP``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_common.crd import API_VERSION, Mesh

DEPLOYMENT = "wirekube-relay"
SERVICE = "wirekube-relay"
POOL_SERVICE = "wirekube-relay-pool"
PDB = "wirekube-relay"
SECRET = "wirekube-relay-mesh"
SECRET_KEY = "secret"
SECRET_DIR = "/etc/wirekube/relay-mesh"
SERVICE_ACCOUNT = "wirekube-relay"
METRICS_PORT = 9090
ADMIN_PORT = 9091

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "wirekube-gateway-controller"
# Selects exactly what this controller owns (and may delete).
OWNED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{NAME_LABEL}=wirekube-relay"
# The hash of the desired object as last applied: a change of the desired
# state is applied even when it only removes fields (which a "desired is a
# subset of observed" comparison cannot see).
APPLIED_HASH = "wirekube.io/applied-hash"

SELECTOR = {NAME_LABEL: "wirekube-relay"}
LABELS = {
    NAME_LABEL: "wirekube-relay",
    "app.kubernetes.io/component": "relay",
    "app.kubernetes.io/part-of": "wirekube",
    MANAGED_BY_LABEL: MANAGED_BY,
}
SERVICE_TYPES = ("LoadBalancer", "NodePort", "ClusterIP")
# Replicas above this are refused as a typo rather than scheduled: a relay
# replica holds every other replica's link, so the pool is O(n^2) links.
MAX_REPLICAS = 64
# A drain or node upgrade evicts at most one replica at a time; with a single
# replica the budget still allows the eviction (minAvailable 1 would block
# every drain forever). Equals the old production overlay's minAvailable 2 of 3.
PDB_MAX_UNAVAILABLE = 1


class InvalidManagedRelay(ValueError):
    """spec.relay.managed asks for something the controller will not build."""


@dataclass(frozen=True)
class RelayConfig:
    """What the controller adds to the mesh spec (flags/env of the controller)."""

    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"


def wants_managed(mesh: Mesh) -> bool:
    return mesh.spec.relay.provider == "managed"


def owner_reference(mesh: Mesh) -> dict[str, Any]:
    # A cluster-scoped owner of namespaced dependents is allowed. No
    # blockOwnerDeletion: it would need delete permission on the mesh's
    # finalizers, and nothing here must outlive its mesh anyway.
    return {
        "apiVersion": API_VERSION,
        "kind": "WireKubeMesh",
        "name": mesh.metadata.name,
        "uid": mesh.metadata.uid,
        "controller": True,
    }


def _meta(name: str, mesh: Mesh, config: RelayConfig) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": config.namespace,
        "labels": dict(LABELS),
        "ownerReferences": [owner_reference(mesh)],
    }


def pool_dns(config: RelayConfig) -> str:
    return f"{POOL_SERVICE}.{config.namespace}.svc"


def _deployment(mesh: Mesh, config: RelayConfig, replicas: int, port: int) -> dict[str, Any]:
    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = {
        "name": "relay",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["wirekube-relay"],
        "env": [
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_IP", "status.podIP"),
            {"name": "WIREKUBE_RELAY_LISTEN", "value": f"0.0.0.0:{port}"},
            {"name": "WIREKUBE_RELAY_MESH_DNS", "value": pool_dns(config)},
            # The pool's members from its EndpointSlices: DNS answers are cached
            # for their TTL (30 s with kubeadm's CoreDNS), so replicas that
            # replaced a whole pool would not find each other for that long.
            {
                "name": "WIREKUBE_RELAY_MESH_ENDPOINTS",
                "value": f"{config.namespace}/{POOL_SERVICE}",
            },
            {
                "name": "WIREKUBE_RELAY_MESH_SECRET_FILE",
                "value": f"{SECRET_DIR}/{SECRET_KEY}",
            },
        ],
        "ports": [
            {"name": "relay", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            # No admin port: the relay's admin gRPC listens on loopback only
            # (docs/relay-protocol.md); kubectl port-forward reaches it.
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "metrics"},
            "initialDelaySeconds": 5,
            "periodSeconds": 20,
        },
        "volumeMounts": [{"name": "relay-mesh", "mountPath": SECRET_DIR, "readOnly": True}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            # A registered connection holds ~320 KiB of receive buffer plus up
            # to 8 MiB of queued writes under backpressure; 1Gi covers ~1000 nodes.
            "limits": {"memory": "1Gi"},
        },
    }
    pod_labels = {k: v for k, v in LABELS.items() if k != MANAGED_BY_LABEL}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(DEPLOYMENT, mesh, config),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(SELECTOR)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                    },
                },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": dict(SELECTOR)},
                                    },
                                }
                            ]
                        }
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "relay-mesh",
                            "secret": {
                                "secretName": SECRET,
                                "items": [{"key": SECRET_KEY, "path": SECRET_KEY}],
                            },
                        }
                    ],
                },
            },
        },
    }


def _service(mesh: Mesh, config: RelayConfig, service_type: str, port: int) -> dict[str, Any]:
    managed = mesh.spec.relay.managed
    external_ips = list(managed.external_ips) if managed else []
    spec: dict[str, Any] = {
        "type": service_type,
        "selector": dict(SELECTOR),
        "ports": [{"name": "relay", "port": port, "targetPort": "relay", "protocol": "TCP"}],
    }
    if service_type == "LoadBalancer":
        # The cloud load balancer health-checks nodes and sends only to those
        # with a ready replica: no second hop, and the relay sees the client.
        spec["externalTrafficPolicy"] = "Local"
    elif service_type == "NodePort":
        # Agents dial one chosen node's address (wirekube_common.relayaddress);
        # that node must forward even when it runs no replica itself.
        spec["externalTrafficPolicy"] = "Cluster"
    if external_ips:
        spec["externalIPs"] = external_ips
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(SERVICE, mesh, config),
        "spec": spec,
    }


def _pool_service(mesh: Mesh, config: RelayConfig, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(POOL_SERVICE, mesh, config),
        "spec": {
            "clusterIP": "None",
            # Peer discovery, not load balancing: a starting replica is listed
            # before it is ready, so a relay whose readiness waits on its
            # mesh links can never deadlock with its peers. Agents of a
            # managed relay dial the external Service, never this name.
            "publishNotReadyAddresses": True,
            "selector": dict(SELECTOR),
            "ports": [{"name": "relay", "port": port, "targetPort": "relay", "protocol": "TCP"}],
        },
    }


def _pdb(mesh: Mesh, config: RelayConfig) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(PDB, mesh, config),
        "spec": {
            "maxUnavailable": PDB_MAX_UNAVAILABLE,
            "selector": {"matchLabels": dict(SELECTOR)},
        },
    }


def validate(mesh: Mesh) -> None:
    """Raise ``InvalidManagedRelay`` for a spec the controller will not build
    (the CRD schema already bounds most fields; these are checked again
    because the CRD may be an older one)."""
    managed = mesh.spec.relay.managed
    if managed is None:
        return
    if managed.service_type not in SERVICE_TYPES:
        raise InvalidManagedRelay(
            f"spec.relay.managed.serviceType {managed.service_type!r}: "
            f"must be one of {', '.join(SERVICE_TYPES)}"
        )
    if not 0 <= managed.replicas <= MAX_REPLICAS:
        raise InvalidManagedRelay(f"spec.relay.managed.replicas must be 0-{MAX_REPLICAS}")
    if not 0 < managed.port < 65536:
        raise InvalidManagedRelay("spec.relay.managed.port must be 1-65535")
    if managed.port in (METRICS_PORT, ADMIN_PORT):
        raise InvalidManagedRelay(
            f"spec.relay.managed.port {managed.port} is the relay's metrics or admin port"
        )
    for ip in managed.external_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidManagedRelay(
                f"spec.relay.managed.externalIPs: {ip!r} is not an IP address"
            ) from None
    if managed.service_type == "ClusterIP" and not managed.external_ips:
        raise InvalidManagedRelay(
            "spec.relay.managed.serviceType ClusterIP needs spec.relay.managed.externalIPs: "
            "agents never use a ClusterIP"
        )


def desired(mesh: Mesh, config: RelayConfig) -> list[dict[str, Any]]:
    """The objects of the managed relay, in apply order (the Services before
    the pods that resolve them); empty when the mesh does not ask for one.
    Raises ``InvalidManagedRelay``."""
    if not wants_managed(mesh):
        return []
    validate(mesh)
    managed = mesh.spec.relay.managed
    replicas = managed.replicas if managed else 1
    port = managed.port if managed else 3478
    service_type = managed.service_type if managed else "LoadBalancer"
    objects = [
        _pool_service(mesh, config, port),
        _service(mesh, config, service_type, port),
        _pdb(mesh, config),
        _deployment(mesh, config, replicas, port),
    ]
    for obj in objects:
        obj["metadata"].setdefault("annotations", {})[APPLIED_HASH] = applied_hash(obj)
    return objects


def applied_hash(obj: Mapping[str, Any]) -> str:
    """A short digest of an object's content, its own hash annotation left out."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
    meta["annotations"] = annotations
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def mesh_secret(mesh: Mesh, config: RelayConfig, secret: bytes) -> dict[str, Any]:
    """The pool's shared secret. ``secret``: fresh random bytes from the caller,
    stored as printable text (one line, no newline) so the mounted file reads
    the same whether a relay takes it as bytes or strips it as text."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(SECRET, mesh, config),
        "type": "Opaque",
        "data": {
            SECRET_KEY: base64.b64encode(base64.urlsafe_b64encode(secret).rstrip(b"=")).decode()
        },
    }
