"""Allow-list against the real kube-apiserver: only keys published in a WireKubePeer may
register; the relay watches (with its own ServiceAccount's RBAC) and reacts to changes."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from wirekube_agent.relay.link import RelayRejected, register
from wirekube_common import wgkey

GROUP, VERSION, PLURAL = "wirekube.io", "v1alpha1", "wirekubepeers"


@pytest.fixture
def peers_api(control_plane: Any) -> Iterator[tuple[k8s.CustomObjectsApi, list[str]]]:
    created: list[str] = []
    with control_plane.api_client() as api:
        custom = k8s.CustomObjectsApi(api)
        yield custom, created
        for name in created:
            try:
                custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise


def publish(api: k8s.CustomObjectsApi, created: list[str], pub: bytes) -> str:
    name = f"node-relay-allow-{os.urandom(4).hex()}"
    api.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WireKubePeer",
            "metadata": {"name": name},
            "spec": {"publicKey": wgkey.encode(pub), "endpoint": "203.0.113.9:51820"},
        },
    )
    created.append(name)
    return name


def try_register(addr: tuple[str, int], priv: bytes) -> str:
    s = socket.create_connection(addr, timeout=5)
    try:
        register(s, priv)
        return "ok"
    except RelayRejected as exc:
        return str(exc)
    finally:
        s.close()


def eventually(fn: Any, want: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = fn()
        if got == want:
            return got
        time.sleep(0.2)
    raise AssertionError(f"wanted {want!r}, last got {got!r}")


def test_only_published_keys_register_and_removal_disconnects(
    control_plane: Any, peers_api: tuple[k8s.CustomObjectsApi, list[str]], relay_factory, nodes, h
) -> None:
    api, created = peers_api
    kubeconfig = control_plane.kubeconfig_for_service_account("wirekube-system", "wirekube-relay")
    ka, kb, kc = (wgkey.generate_private_key() for _ in range(3))
    publish(api, created, wgkey.public_key(ka))
    name_b = publish(api, created, wgkey.public_key(kb))
    relay = relay_factory("--allowlist=on", f"--kubeconfig={kubeconfig}")
    addr = relay.address

    eventually(lambda: try_register(addr, ka), "ok")  # once the first list arrived
    assert try_register(addr, kb) == "ok"
    rejected = try_register(addr, kc)
    assert "not-allowed" in rejected and "code 3" in rejected

    publish(api, created, wgkey.public_key(kc))  # the watch admits a new peer
    eventually(lambda: try_register(addr, kc), "ok")

    # a live, registered client whose WireKubePeer disappears is disconnected
    b = nodes(kb, addresses=[addr])
    assert b.bridge.pool.wait_live(1, 10)
    api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name_b)
    created.remove(name_b)
    h.wait_for(lambda: not b.bridge.pool.live_replicas(), 15, "b to be disconnected")
    assert "not-allowed" in try_register(addr, kb)
    assert "event=allowlist-synced" in relay.output()
