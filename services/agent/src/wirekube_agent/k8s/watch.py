"""List + watch, level-triggered: a cache per resource and a wake-up call.

Each ``Informer`` runs in its own thread (the kubernetes client is blocking):
it lists once, then watches from the list's resourceVersion, applying events to
a name → object cache and calling ``notify`` after each change. The reconciler
never consumes events; it reads the caches when woken, so a burst of events
costs one reconcile and a missed event cannot leave state behind.

Failure handling: a 410 Gone (our resourceVersion was compacted away) means
relist; any other error waits with jittered exponential backoff and resumes
from the last resourceVersion seen. While the API server is down the caches
keep their last content, so the data plane keeps running on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException

from wirekube_agent.timers import WATCH_TIMEOUT_S
from wirekube_common.retry import backoff_delays

log = logging.getLogger(__name__)

ToDict = Callable[[Any], dict[str, Any]]


class Informer:
    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        args: tuple[Any, ...],
        to_dict: ToDict,
        notify: Callable[[], None],
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.name = name
        self._lister = lister
        self._args = args
        self._to_dict = to_dict
        self._notify = notify
        self._selectors: dict[str, str] = {}
        if field_selector:
            self._selectors["field_selector"] = field_selector
        if label_selector:
            self._selectors["label_selector"] = label_selector
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.healthy = False
        self._watch: watch.Watch | None = None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._cache)

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._cache.get(name)

    def stop(self) -> None:
        w = self._watch
        if w is not None:
            w.stop()

    def run(self, stop: threading.Event) -> None:
        delays = backoff_delays()
        resource_version: str | None = None
        while not stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                    delays = backoff_delays()
                resource_version = self._watch_from(resource_version, stop)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s: resourceVersion expired, relisting", self.name)
                    resource_version = None
                    continue
                self._failed(f"API error {exc.status}: {exc.reason}", stop, next(delays))
            except Exception as exc:  # connection refused, TLS, timeouts, ...
                self._failed(f"{type(exc).__name__}: {exc}", stop, next(delays))

    def _failed(self, why: str, stop: threading.Event, delay: float) -> None:
        if self.healthy:
            log.warning("%s: watch failed (%s); keeping the last known state", self.name, why)
        self.healthy = False
        stop.wait(delay)

    def _list(self) -> str:
        result = self._lister(*self._args, **self._selectors)
        items, rv = _items_and_version(result, self._to_dict)
        cache = {obj["metadata"]["name"]: obj for obj in items}
        with self._lock:
            changed = cache != self._cache
            self._cache = cache
        self.synced.set()
        self.healthy = True
        if changed:
            self._notify()
        return rv

    def _watch_from(self, resource_version: str, stop: threading.Event) -> str:
        self._watch = w = watch.Watch()
        started = time.monotonic()
        for event in w.stream(
            self._lister,
            *self._args,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_S,
            allow_watch_bookmarks=True,
            **self._selectors,
        ):
            if stop.is_set():
                w.stop()
                break
            kind = event.get("type")
            raw = event.get("raw_object") or {}
            if kind == "ERROR":
                code = raw.get("code") if isinstance(raw, dict) else None
                raise ApiException(status=code or 500, reason=str(raw.get("message", raw)))
            obj = self._to_dict(event["object"])
            meta = obj.get("metadata") or {}
            resource_version = meta.get("resourceVersion", resource_version)
            if kind == "BOOKMARK":
                continue
            name = meta.get("name")
            if not name:
                continue
            with self._lock:
                if kind == "DELETED":
                    changed = self._cache.pop(name, None) is not None
                else:
                    changed = self._cache.get(name) != obj
                    self._cache[name] = obj
            self.healthy = True
            if changed:
                self._notify()
        log.debug("%s: watch ended after %.0fs", self.name, time.monotonic() - started)
        return resource_version


def _items_and_version(result: Any, to_dict: ToDict) -> tuple[list[dict[str, Any]], str]:
    if isinstance(result, dict):
        return list(result.get("items") or []), str(result["metadata"]["resourceVersion"])
    return [to_dict(i) for i in result.items], str(result.metadata.resource_version)
