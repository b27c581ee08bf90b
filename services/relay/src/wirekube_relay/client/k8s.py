"""The relay's only door to the Kubernetes API: the WireKubePeer allow-list feed.

Read-only, on the informer every WireKube service shares
(``wirekube_common.kube.watch``): a full list, then a watch from its
resourceVersion, relisting on 410 Gone and backing off while the API server is
away. The last known set stays in force meanwhile, so registered clients keep
working through an API-server outage. Every change replaces the allow-list
with the keys of the peers the informer holds; the first sync marks it ready.

Runs in a daemon thread: the API client is blocking and must never sit on the
relay's event loop.
"""

from __future__ import annotations

import logging
import threading

from wirekube_common.crd import GROUP, VERSION
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.rest import Rest
from wirekube_common.kube.watch import Informer
from wirekube_relay.client.auth import AllowList, peer_key

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
        first = not self.allowlist.ready
        keys = {peer_key(obj) for obj in self.informer.snapshot().values()}
        self.allowlist.replace(k for k in keys if k is not None)
        if first:
            log.info("event=allowlist-synced keys=%d", len(self.allowlist))
