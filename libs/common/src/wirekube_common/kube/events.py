"""Kubernetes Events about our (cluster-scoped) custom resources.

Events for cluster-scoped objects live in the ``default`` namespace, as
kubectl expects when it describes them. Best effort by design: callers log a
failed write and go on — an Event is never worth failing a reconcile for.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.rest import Rest
from wirekube_common.kube.times import format_time

EVENT_NAMESPACE = "default"
MAX_MESSAGE = 1024  # the API server's limit for Event messages


def event_body(
    kind: str, name: str, uid: str, reason: str, message: str, warning: bool, component: str
) -> dict[str, Any]:
    now = format_time(dt.datetime.now(dt.UTC))
    involved: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "name": name}
    if uid:
        involved["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}."},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
    }


def record_event(rest: Rest, body: dict[str, Any], timeout: float) -> None:
    rest.call("POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", body=body, timeout=timeout)
