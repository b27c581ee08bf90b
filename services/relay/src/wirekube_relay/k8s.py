"""The only module of the relay that imports the Kubernetes client.

Feeds ``auth.AllowList`` from WireKubePeer objects, read-only: a full list
(which replaces the set and marks it ready), then a watch from that list's
resourceVersion applying ADDED/MODIFIED/DELETED. A 410 Gone (or any watch
error) relists; reconnects back off with tenacity so an API-server outage
costs no CPU, and the last known set stays in force meanwhile (registered
clients keep working).

Runs in a daemon thread: the Kubernetes client is blocking and must never
sit on the relay's event loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from tenacity import retry, wait_exponential

from wirekube_relay.auth import AllowList, peer_key

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "wirekube.io", "v1alpha1", "wirekubepeers"
WATCH_TIMEOUT = 300  # server-side watch timeout; the loop just re-watches
BACKOFF_MAX = 30.0  # upper bound of the reconnect backoff after errors


def load_api(kubeconfig: str | None) -> client.CustomObjectsApi:
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CustomObjectsApi()


class PeerKeyWatcher:
    def __init__(self, api: client.CustomObjectsApi, allowlist: AllowList) -> None:
        self.api = api
        self.allowlist = allowlist
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-key-watch", daemon=True)
        self._keys_by_name: dict[str, bytes] = {}
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._list_and_watch()
        except BaseException as exc:  # the supervisor notices is_alive() == False
            self.error = exc
            log.exception("event=allowlist-watch-died")

    @retry(wait=wait_exponential(multiplier=0.5, max=BACKOFF_MAX), reraise=True)
    def _list_and_watch(self) -> None:
        if self._stop.is_set():
            return
        try:
            listing: dict[str, Any] = self.api.list_cluster_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, PLURAL
            )
            self._keys_by_name = {}
            for obj in listing.get("items", []):
                self._apply("ADDED", obj)
            self.allowlist.replace(self._keys_by_name.values())
            rv = listing.get("metadata", {}).get("resourceVersion")
            log.info("event=allowlist-synced keys=%d", len(self.allowlist))
            w = watch.Watch()
            for ev in w.stream(
                self.api.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                resource_version=rv,
                timeout_seconds=WATCH_TIMEOUT,
            ):
                if self._stop.is_set():
                    w.stop()
                    return
                if ev.get("type") == "ERROR":
                    raise ApiException(status=ev.get("raw_object", {}).get("code", 500))
                self._apply(ev["type"], ev["object"], live=True)
        except ApiException as exc:
            if exc.status == 410:
                log.info("event=allowlist-relist reason=gone")
                return  # relist at once
            log.warning("event=allowlist-watch-error status=%s", exc.status)
            raise
        except Exception as exc:
            log.warning("event=allowlist-watch-error error=%r", exc)
            raise

    def _apply(self, kind: str, obj: dict[str, Any], live: bool = False) -> None:
        name = obj.get("metadata", {}).get("name", "")
        old = self._keys_by_name.pop(name, None)
        new = peer_key(obj) if kind != "DELETED" else None
        if new is not None:
            self._keys_by_name[name] = new
        if not live:
            return
        if new is not None and new != old:
            self.allowlist.add(new)
        if old is not None and old != new and old not in self._keys_by_name.values():
            self.allowlist.remove(old)
