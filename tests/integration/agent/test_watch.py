"""The agent's informer against the real API server: list, watch, relist on 410."""

from __future__ import annotations

import threading
import time

import pytest

from wirekube_agent.k8s.client import PEERS, KubeApi, custom_path
from wirekube_common.kube.rest import ApiException
from wirekube_common.kube.watch import Informer
from wirekube_lab.controlplane import ControlPlane

KEY = "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA="


def wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_list_watch_and_relist_after_410(control_plane: ControlPlane) -> None:
    api = KubeApi(str(control_plane.kubeconfig))
    wakeups: list[float] = []
    informer = Informer(
        "peers", api.new_rest(), custom_path(PEERS), lambda: wakeups.append(time.time())
    )
    stop = threading.Event()
    thread = threading.Thread(target=informer.run, args=(stop,), daemon=True)
    thread.start()
    name = "node-watch-test"
    body = {
        "apiVersion": "wirekube.io/v1alpha1",
        "kind": "WireKubePeer",
        "metadata": {"name": name},
        "spec": {"publicKey": KEY, "allowedIPs": ["10.250.9.1/32"]},
    }
    try:
        wait(informer.synced.is_set)
        api.create_peer(body)
        wait(lambda: informer.get(name) is not None)
        api.patch_peer(name, {"spec": {"allowedIPs": ["10.250.9.2/32"]}})
        wait(
            lambda: (
                (informer.get(name) or {}).get("spec", {}).get("allowedIPs") == ["10.250.9.2/32"]
            )
        )
        # A resourceVersion the server no longer has: 410 Gone, which run() answers by relisting.
        probe = Informer("probe", api.new_rest(), custom_path(PEERS), lambda: None)
        with pytest.raises(ApiException) as gone:
            probe._watch_from("1", threading.Event())
        assert gone.value.status == 410
        api.delete_peer(name)
        wait(lambda: informer.get(name) is None)
        assert informer.healthy and wakeups
    finally:
        stop.set()
        informer.stop()
        thread.join(5)
        api.delete_peer(name)
