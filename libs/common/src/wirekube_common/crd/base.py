"""Shared pieces of the CRD models: group/version, metadata, field readers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

GROUP = "wirekube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

T = TypeVar("T")


class InvalidObject(ValueError):
    """A custom resource whose shape does not match the contract."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    resource_version: str = ""
    generation: int = 0
    uid: str = ""
    creation_timestamp: str = ""  # RFC 3339 as the API stores it; sorts chronologically
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ObjectMeta:
        meta = section(obj, "metadata", "metadata")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidObject("metadata.name", "missing")
        return cls(
            name=name,
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation", 0) or 0),
            uid=str(meta.get("uid", "")),
            creation_timestamp=str(meta.get("creationTimestamp", "") or ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.resource_version:
            out["resourceVersion"] = self.resource_version
        return out


def section(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidObject(path, f"expected an object, got {type(value).__name__}")
    return value


def get(obj: Mapping[str, Any], key: str, kind: type[T], default: T, path: str) -> T:
    """Read an optional scalar field; ``bool`` is not accepted as an ``int``."""
    value = obj.get(key)
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        raise InvalidObject(f"{path}.{key}", "expected an integer, got a boolean")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise InvalidObject(
            f"{path}.{key}", f"expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def get_required(obj: Mapping[str, Any], key: str, kind: type[T], path: str) -> T:
    if obj.get(key) is None:
        raise InvalidObject(f"{path}.{key}", "required")
    return get(obj, key, kind, None, path)  # type: ignore[arg-type,return-value]


def get_str_list(obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidObject(f"{path}.{key}", "expected a list of strings")
    return tuple(value)


def get_str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidObject(f"{path}.{key}", "expected a map of strings")
    return dict(value)


def get_conditions(d: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], ...]:
    """``status.conditions``: a list of objects (standard Kubernetes Conditions)."""
    conditions = d.get("conditions") or []
    if not isinstance(conditions, list) or not all(isinstance(c, Mapping) for c in conditions):
        raise InvalidObject(f"{path}.conditions", "expected a list of objects")
    return tuple(dict(c) for c in conditions)


def object_dict(
    kind: str, metadata: ObjectMeta, spec: dict[str, Any], status: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A whole object as the API stores it; an empty status is left out."""
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata.to_dict(),
        "spec": spec,
    }
    if status:
        out["status"] = status
    return out


def prune(d: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None (unset optional fields)."""
    return {k: v for k, v in d.items() if v is not None}
