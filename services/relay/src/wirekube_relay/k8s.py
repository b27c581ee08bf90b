"""The relay's doors to the Kubernetes API, both read-only: the WireKubePeer
allow-list feed, and the pool's EndpointSlices (which replicas exist).

Both run on the informer every WireKube service shares
(``wirekube_common.kube.watch``): a full list, then a watch from its
resourceVersion, relisting on 410 Gone and backing off while the API server is
away. The last known set stays in force meanwhile, so registered clients keep
working through an API-server outage. Every change replaces the allow-list
with the keys of the peers the informer holds, plus a rotated node's old key
until its switch instant (``auth.retained``; a timer drops it then); the first
sync marks it ready.

The pool's members come from the EndpointSlices of its headless Service
rather than from DNS alone: cluster DNS answers carry a TTL (kubeadm's
CoreDNS: ``ttl 30`` and ``cache 30``), so after a pool is replaced at once
the new replicas are told the old replicas' addresses for up to 30 s and
cannot find each other (measured on the kubelet lab: relayed pairs split
over new replicas back ~30 s after the first was Ready in half the runs).
The watch sees a replica the moment it turns ready.

Each watcher runs in a daemon thread: the API client is blocking and must
never sit on the relay's event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wirekube_common import keyswitch
from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.rest import Rest
from wirekube_common.kube.watch import Informer
from wirekube_relay.client.auth import AllowList, peer_key, retained

log = logging.getLogger(__name__)

PEERS_PATH = f"/apis/{GROUP}/{VERSION}/wirekubepeers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Address = tuple[str, int]


def ready_addresses(slices: Iterable[Mapping[str, Any]], port: int) -> list[Address]:
    """The addresses of the ready endpoints of ``slices``, each with ``port``
    (the relay port: every replica listens on the same one). Pure.

    ``ready`` absent counts as ready (the API's own reading); a terminating
    endpoint is never ready, so a replica on its way out is not dialled."""
    found: set[Address] = set()
    for eps in slices:
        for ep in eps.get("endpoints") or ():
            if not isinstance(ep, Mapping):
                continue
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for address in ep.get("addresses") or ():
                if isinstance(address, str) and address:
                    found.add((address, port))
    return sorted(found)


class _Watcher:
    """One informer in a daemon thread; ``error`` says why it died."""

    def __init__(self, name: str, informer: Informer) -> None:
        self.informer = informer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.informer.stop()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.informer.run(self._stop)
        except BaseException as exc:  # the supervisor notices is_alive() == False
            self.error = exc
            log.exception("event=watch-died watch=%s", self.informer.name)


class PeerKeyWatcher(_Watcher):
    def __init__(self, kubeconfig: str | None, allowlist: AllowList) -> None:
        self.allowlist = allowlist
        # Rotations in flight (auth.retained): the keys last seen per peer,
        # and the old keys still admitted. Changed by the informer's thread
        # and by the timer that ends a retention, hence the lock.
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._kept: dict[str, tuple[bytes, float]] = {}
        informer = Informer(
            "wirekubepeers", Rest(Connection(kubeconfig)), PEERS_PATH, self._changed
        )
        super().__init__("peer-key-watch", informer)

    def _changed(self) -> None:
        with self._lock:
            self._update()

    def _update(self) -> None:
        first = not self.allowlist.ready
        now = time.time()
        snapshot = self.informer.snapshot()
        current = {n: k for n, obj in snapshot.items() if (k := peer_key(obj)) is not None}
        announced = {
            n: keyswitch.switch_at(snapshot[n])
            for n, k in current.items()
            if self._keys.get(n, k) != k
        }
        kept = retained(self._keys, current, announced, self._kept, now)
        for name in kept.keys() - self._kept.keys():
            log.info("event=rotation-old-key-kept peer=%s for=%.2fs", name, kept[name][1] - now)
        self._kept = kept
        self._keys = current
        self.allowlist.moved = {old: current[n] for n, (old, _) in self._kept.items()}
        self.allowlist.replace([*current.values(), *(k for k, _ in self._kept.values())])
        if self._kept:
            # Drop each old key when its time is up (and close what still uses it).
            ends = min(until for _, until in self._kept.values())
            timer = threading.Timer(max(0.0, ends - now) + 0.01, self._changed)
            timer.daemon = True
            timer.start()
        if first:
            log.info("event=allowlist-synced keys=%d", len(self.allowlist))


class PoolMembersWatcher(_Watcher):
    """The ready replicas of the pool's headless Service ``namespace/service``:
    ``on_members(addresses)`` after the first list and on every change (from
    the watcher's thread: the caller hands it to its event loop)."""

    def __init__(
        self,
        kubeconfig: str | None,
        namespace: str,
        service: str,
        port: int,
        on_members: Callable[[list[Address]], None],
    ) -> None:
        self.port = port
        self.on_members = on_members
        self._last: list[Address] | None = None
        informer = Informer(
            "endpointslices",
            Rest(Connection(kubeconfig)),
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            self._changed,
            label_selector=f"{SERVICE_NAME_LABEL}={service}",
        )
        super().__init__("pool-members-watch", informer)

    def _changed(self) -> None:
        members = ready_addresses(self.informer.snapshot().values(), self.port)
        if members != self._last:
            self._last = members
            self.on_members(members)


def parse_service(text: str) -> tuple[str, str]:
    """``namespace/service`` -> (namespace, service); ValueError otherwise."""
    namespace, sep, service = text.strip().partition("/")
    if not (sep and namespace and service) or "/" in service:
        raise ValueError(f"not namespace/service: {text!r}")
    return namespace, service
