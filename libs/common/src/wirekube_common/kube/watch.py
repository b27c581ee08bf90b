"""List + watch, level-triggered: a cache per resource and a wake-up call.

Each ``Informer`` runs in its own thread (the transport is blocking): it lists
once, then watches from the list's resourceVersion, applying events to a
name → object cache and calling ``notify`` after each change. The reconciler
never consumes events; it reads the caches when woken, so a burst of events
costs one reconcile and a missed event cannot leave state behind.

Failure handling: a 410 Gone (our resourceVersion was compacted away) means
relist; any other error waits with jittered exponential backoff and resumes
from the last resourceVersion seen. While the API server is down the caches
keep their last content, so the data plane keeps running on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from wirekube_common.kube.rest import ApiException, Rest
from wirekube_common.retry import backoff_delays

log = logging.getLogger(__name__)

# A watch that sees no event for this long is restarted (server-side timeout);
# below typical load-balancer idle timeouts of 5-10 minutes.
WATCH_TIMEOUT_S = 240
# A watch whose connection went silent (API server frozen, a NAT dropped the
# flow) is abandoned after this; bookmarks arrive about once a minute, so a
# healthy watch is never quiet for this long.
WATCH_READ_TIMEOUT_S = WATCH_TIMEOUT_S + 30.0


class Informer:
    def __init__(
        self,
        name: str,
        rest: Rest,
        path: str,
        notify: Callable[[], None],
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.name = name
        self._rest = rest
        self._path = path
        self._notify = notify
        self._query = [("fieldSelector", field_selector)] if field_selector else []
        if label_selector:
            self._query.append(("labelSelector", label_selector))
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.healthy = False

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._cache)

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._cache.get(name)

    def stop(self) -> None:
        self._rest.close()

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
                if stop.is_set():
                    return
                self._failed(f"{type(exc).__name__}: {exc}", stop, next(delays))

    def _failed(self, why: str, stop: threading.Event, delay: float) -> None:
        if self.healthy:
            log.warning("%s: watch failed (%s); keeping the last known state", self.name, why)
        self.healthy = False
        stop.wait(delay)

    def _list(self) -> str:
        result = self._rest.call("GET", self._path, self._query)
        cache = {obj["metadata"]["name"]: obj for obj in result.get("items") or []}
        with self._lock:
            # The first list always notifies: "synced, and nothing there" is news.
            changed = cache != self._cache or not self.synced.is_set()
            self._cache = cache
        self.synced.set()
        self.healthy = True
        if changed:
            self._notify()
        return str(result["metadata"]["resourceVersion"])

    def _watch_from(self, resource_version: str, stop: threading.Event) -> str:
        query = [*self._query, ("resourceVersion", resource_version)]
        for event in self._rest.watch(self._path, query, WATCH_TIMEOUT_S, WATCH_READ_TIMEOUT_S):
            if stop.is_set():
                break
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                raise ApiException(
                    status=obj.get("code") or 500, reason=str(obj.get("message", obj))
                )
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
        return resource_version


async def run_informer(informer: Informer, stop: threading.Event) -> None:
    """Run an informer's blocking loop in a thread, as a supervised task.

    When the task ends for any reason (cancelled at shutdown, or the thread
    died), every informer sharing ``stop`` is told to stop too.
    """
    try:
        await asyncio.to_thread(informer.run, stop)
    finally:
        stop.set()
        informer.stop()
