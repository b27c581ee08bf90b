"""The health report wire format: one coordination.k8s.io Lease per
(gateway, gateway peer), written by that peer's agent after every probe.

Why Leases: they are the Kubernetes heartbeat object (kubelets renew theirs in
``kube-node-lease`` for the same reason). A report is rewritten every
``intervalSeconds`` even when nothing changed, because its freshness *is* the
signal that the peer's node and agent are alive. Only the gateway controller
watches these objects; writing the same heartbeat into a WireKubePeer would
wake every agent in the cluster (they all watch peers) on every probe.

They live in their own namespace (``NAMESPACE``), like ``kube-node-lease``, so
agents may write them without being able to touch the controller's
leader-election Lease in ``wirekube-system``. Each Lease has an
ownerReference to its WireKubeGateway: deleting the gateway garbage-collects
its reports.

Layout (everything else is metadata for humans and ``kubectl``)::

    metadata.name          <gateway>.<peer>.<digest>  (see ``lease_name``)
    metadata.labels        app.kubernetes.io/component=gateway-health
    metadata.annotations   gateway-health.wirekube.io/{gateway,peer,check,state,
                           consecutive-failures,detail,since}
    spec.holderIdentity    the peer
    spec.renewTime         when the last probe finished (the heartbeat)
    spec.leaseDurationSeconds  ``report_ttl_s``: after this without a renewal
                           the report is stale and the peer counts as unhealthy

``check`` fingerprints the healthCheck spec the agent probed with; the
controller ignores reports made under another spec (a changed target must not
inherit the old target's verdict). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_common.crd import API_VERSION as WIREKUBE_API_VERSION
from wirekube_common.crd import GatewayHealthCheck
from wirekube_common.gwhealth.checker import State
from wirekube_common.kube.times import format_micro_time, format_time, parse_time

NAMESPACE = "wirekube-gateway-health"
LEASE_API_VERSION = "coordination.k8s.io/v1"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "gateway-health"
LABEL_SELECTOR = f"{COMPONENT_LABEL}={COMPONENT}"
MANAGED_BY = "wirekube-agent"
ANNOTATION = "gateway-health.wirekube.io/"


class InvalidReport(ValueError):
    pass


def leases_path(namespace: str = NAMESPACE, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def lease_name(gateway: str, peer: str) -> str:
    """Readable and collision-free: names may contain dots, so the digest of
    the pair keeps ("a.b", "c") and ("a", "b.c") apart; each part is cut so the
    whole stays within the 253 characters of a DNS subdomain."""
    digest = hashlib.sha256(f"{gateway}\0{peer}".encode()).hexdigest()[:10]

    def part(name: str) -> str:
        return name[:115].rstrip("-.") or "x"

    return f"{part(gateway)}.{part(peer)}.{digest}"


def check_fingerprint(check: GatewayHealthCheck) -> str:
    return (
        f"{check.target.strip()} every {check.interval_seconds}s"
        f" timeout {check.timeout_seconds}s threshold {check.failure_threshold}"
    )


def probe_period_s(check: GatewayHealthCheck) -> float:
    """Probes run one at a time: a probe that takes its whole timeout delays the next."""
    return float(max(check.interval_seconds, check.timeout_seconds))


def report_ttl_s(check: GatewayHealthCheck) -> float:
    """How long a report stays valid: ``failureThreshold`` probe periods (as
    long as a reachable agent takes to declare a dead target) plus one more
    period so one lost write is tolerated, plus the probe timeout."""
    return probe_period_s(check) * (check.failure_threshold + 1) + check.timeout_seconds


@dataclass(frozen=True)
class HealthReport:
    gateway: str
    peer: str
    check: str
    state: State
    consecutive_failures: int
    probed_at: dt.datetime
    detail: str = ""
    since: dt.datetime | None = None

    def key(self) -> tuple[str, str]:
        return (self.gateway, self.peer)


def to_lease(
    report: HealthReport,
    *,
    ttl_s: float,
    gateway_uid: str = "",
    namespace: str = NAMESPACE,
    acquired_at: dt.datetime | None = None,
) -> dict[str, Any]:
    annotations = {
        ANNOTATION + "gateway": report.gateway,
        ANNOTATION + "peer": report.peer,
        ANNOTATION + "check": report.check,
        ANNOTATION + "state": str(report.state),
        ANNOTATION + "consecutive-failures": str(report.consecutive_failures),
        ANNOTATION + "detail": report.detail[:512],
    }
    if report.since is not None:
        annotations[ANNOTATION + "since"] = format_time(report.since)
    metadata: dict[str, Any] = {
        "name": lease_name(report.gateway, report.peer),
        "namespace": namespace,
        "labels": {COMPONENT_LABEL: COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY},
        "annotations": annotations,
    }
    if gateway_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": WIREKUBE_API_VERSION,
                "kind": "WireKubeGateway",
                "name": report.gateway,
                "uid": gateway_uid,
            }
        ]
    spec: dict[str, Any] = {
        "holderIdentity": report.peer,
        "leaseDurationSeconds": math.ceil(ttl_s),
        "renewTime": format_micro_time(report.probed_at),
    }
    if acquired_at is not None:
        spec["acquireTime"] = format_micro_time(acquired_at)
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


def _annotation(annotations: Mapping[str, Any], key: str) -> str:
    value = annotations.get(ANNOTATION + key)
    if not isinstance(value, str) or not value:
        raise InvalidReport(f"annotation {ANNOTATION}{key} missing")
    return value


def from_lease(obj: Mapping[str, Any]) -> HealthReport:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise InvalidReport("not a Lease")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise InvalidReport("bad annotations")
    gateway = _annotation(annotations, "gateway")
    peer = _annotation(annotations, "peer")
    if meta.get("name") != lease_name(gateway, peer):
        raise InvalidReport(f"name {meta.get('name')!r} does not belong to {gateway}/{peer}")
    try:
        state = State(_annotation(annotations, "state"))
    except ValueError as exc:
        raise InvalidReport(f"bad state: {exc}") from exc
    failures_text = _annotation(annotations, "consecutive-failures")
    if not failures_text.isdigit():
        raise InvalidReport(f"bad consecutive-failures {failures_text!r}")
    renew = spec.get("renewTime")
    if not isinstance(renew, str):
        raise InvalidReport("spec.renewTime missing")
    try:
        probed_at = parse_time(renew)
        since_text = annotations.get(ANNOTATION + "since")
        since = parse_time(since_text) if isinstance(since_text, str) and since_text else None
    except ValueError as exc:
        raise InvalidReport(f"bad time: {exc}") from exc
    detail = annotations.get(ANNOTATION + "detail")
    return HealthReport(
        gateway=gateway,
        peer=peer,
        check=_annotation(annotations, "check"),
        state=state,
        consecutive_failures=int(failures_text),
        probed_at=probed_at,
        detail=detail if isinstance(detail, str) else "",
        since=since,
    )
