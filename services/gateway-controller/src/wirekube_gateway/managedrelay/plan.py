"""Desired vs observed objects → the operations that reconcile them (pure).

An object is (re)applied when it is missing, when its desired content changed
since it was last applied (the ``APPLIED_HASH`` annotation differs), or when
it drifted: some field the controller sets has another value in the cluster
(someone edited or scaled it). Comparison is "desired is contained in
observed", so fields the API server defaults or allocates (nodePorts,
clusterIP, probe timeouts) never count as drift and nothing flaps.

``kubectl scale`` of the relay Deployment is drift like any other: the mesh
spec wins (``spec.relay.managed.replicas`` is the one place the pool size is
decided, and agents and humans read it there), the controller scales back
and records a ``ScaleReverted`` Warning Event on the WireKubeMesh saying
where to change the size instead.

Objects this controller owns (its labels, ``desired.OWNED_SELECTOR``) that are
not desired any more — the mesh was deleted or its provider changed — are
deleted, with their uid as a precondition so a re-created object is never
deleted by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wirekube_gateway.managedrelay.desired import APPLIED_HASH

Key = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Apply:
    obj: Mapping[str, Any]
    why: str


@dataclass(frozen=True)
class Delete:
    kind: str
    name: str
    uid: str
    why: str


@dataclass(frozen=True)
class Note:
    """An Event on the WireKubeMesh."""

    reason: str
    message: str
    warning: bool = False


Operation = Apply | Delete | Note


def key(obj: Mapping[str, Any]) -> Key:
    return str(obj.get("kind", "")), str((obj.get("metadata") or {}).get("name", ""))


def drift(want: Any, have: Any, path: str = "") -> str | None:
    """The first path where ``have`` does not contain ``want`` (None: it does).

    Mappings: every key of ``want`` must be in ``have`` with a contained value.
    Lists: same length, element by element (the API server keeps the order of
    containers, ports, env and volumes as written)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return path or "."
        for k, v in want.items():
            found = drift(v, have.get(k), f"{path}.{k}")
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return path or "."
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            found = drift(w, h, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if want == have else (path or ".")


def _compared(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an object the controller decides (not status, not the
    metadata the server fills in)."""
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "metadata": {
            "labels": meta.get("labels") or {},
            "ownerReferences": meta.get("ownerReferences") or [],
        }
    }
    for field in ("spec", "data", "type"):
        if field in obj:
            out[field] = obj[field]
    return out


def _hash(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)


def _replicas(obj: Mapping[str, Any]) -> Any:
    return (obj.get("spec") or {}).get("replicas")


def plan(
    desired: Sequence[Mapping[str, Any]], observed: Mapping[Key, Mapping[str, Any]]
) -> list[Operation]:
    """Operations in order: applies in ``desired`` order, then deletions."""
    ops: list[Operation] = []
    wanted = {key(obj) for obj in desired}
    for obj in desired:
        k = key(obj)
        have = observed.get(k)
        if have is None:
            ops.append(Apply(obj, "missing"))
            continue
        if _hash(have) != _hash(obj):
            ops.append(Apply(obj, "the mesh spec changed"))
            continue
        where = drift(_compared(obj), _compared(have))
        if where is None:
            continue
        if k[0] == "Deployment" and where == ".spec.replicas":
            ops.append(Apply(obj, f"scaled to {_replicas(have)} outside the mesh spec"))
            ops.append(
                Note(
                    "ScaleReverted",
                    f"Deployment {k[1]} was scaled to {_replicas(have)}; "
                    f"spec.relay.managed.replicas is {_replicas(obj)} and wins. "
                    "Change the relay pool's size in the WireKubeMesh "
                    "(kubectl patch wkm ... spec.relay.managed.replicas).",
                    warning=True,
                )
            )
        else:
            ops.append(Apply(obj, f"changed outside the controller at {where}"))
    for k, have in sorted(observed.items()):
        if k not in wanted:
            uid = str((have.get("metadata") or {}).get("uid", ""))
            ops.append(Delete(k[0], k[1], uid, "not part of the managed relay any more"))
    return ops
