"""Objects from an informer snapshot, parsed once per resourceVersion.

A reconcile pass sees every WireKubePeer; at 1000 peers, parsing each one on
every pass would dominate it. Only objects whose resourceVersion changed are
parsed again, and entries for deleted objects are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ParsedCache(Generic[T]):
    def __init__(self, parse: Callable[[str, Mapping[str, Any]], T | None]) -> None:
        """``parse(name, obj)``: the model, or None for an object to skip (the
        parser reports why; it runs once per version, so it reports once)."""
        self._parse = parse
        self._cache: dict[str, tuple[str, T | None]] = {}

    def update(self, objects: Mapping[str, Mapping[str, Any]]) -> dict[str, T]:
        out: dict[str, T] = {}
        for name, obj in objects.items():
            rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            cached = self._cache.get(name)
            if cached is not None and cached[0] == rv:
                model = cached[1]
            else:
                model = self._parse(name, obj)
                self._cache[name] = (rv, model)
            if model is not None:
                out[name] = model
        for name in self._cache.keys() - objects.keys():
            del self._cache[name]
        return out
