"""The relay's only door to the Kubernetes API: the WireKubePeer allow-list feed.

Read-only, on the informer every WireKube service shares
(``wirekube_common.kube.watch``): a full list, then a watch from its
resourceVersion, relisting on 410 Gone and backing off while the API server is
away. The last known set stays in force meanwhile, so registered clients keep
working through an API-server outage. Every change replaces the allow-list
with the keys of the peers the informer holds, plus a rotated node's old key
until its switch instant (``auth.retained``; a timer drops it then); the first
sync marks it ready.

Runs in a daemon thread: the API client is blocking and must never sit on the
relay's event loop.
"""

from __future__ import annotations

import logging
import threading
import time

from wirekube_common import keyswitch
from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.rest import Rest
from wirekube_common.kube.watch import Informer
from wirekube_relay.auth import AllowList, peer_key, retained

log = logging.getLogger(__name__)

PEERS_PATH = f"/apis/{GROUP}/{VERSION}/wirekubepeers"


class PeerKeyWatcher:
    def __init__(self, kubeconfig: str | None, allowlist: AllowList) -> None:
        self.allowlist = allowlist
        self.informer = Informer(
            "wirekubepeers", Rest(Connection(kubeconfig)), PEERS_PATH, self._changed
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-key-watch", daemon=True)
        self.error: BaseException | None = None
        # Rotations in flight (auth.retained): the keys last seen per peer,
        # and the old keys still admitted. Changed by the informer's thread
        # and by the timer that ends a retention, hence the lock.
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._kept: dict[str, tuple[bytes, float]] = {}

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
            log.exception("event=allowlist-watch-died")

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
