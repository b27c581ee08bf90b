"""Peer garbage collection by two real controller processes (leader + standby).

The node-leaves-by-label case, with agents and traffic, is in
tests/integration/agent/test_leave_mesh.py; here: a deleted Node, a Node that
never existed, a peer nobody labelled (never touched), a node back in time,
and only the leader deleting (one Event per peer).
"""

from __future__ import annotations

import time
from typing import Any

from wirekube_common.kube.rest import MERGE_PATCH, ApiException

from .conftest import CRD, KEY, GatewayEnv, wait_for

GRACE_S = 3.0
VPN_LABEL = "wirekube.io/vpn-enabled"


def create_node(env: GatewayEnv, name: str, member: bool = True) -> None:
    labels = {VPN_LABEL: "true"} if member else {}
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    env._created.append(f"/api/v1/nodes/{name}")
    env.rest.call("POST", "/api/v1/nodes", body=body)


def label_node(env: GatewayEnv, name: str, value: str | None) -> None:
    env.rest.call(
        "PATCH",
        f"/api/v1/nodes/{name}",
        body={"metadata": {"labels": {VPN_LABEL: value}}},
        content_type=MERGE_PATCH,
    )


def create_labelled_peer(env: GatewayEnv, node: str | None, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if node is not None:
        meta["labels"] = {"wirekube.io/node": node}
    body = {"apiVersion": "wirekube.io/v1alpha1", "kind": "WireKubePeer", "metadata": meta,
            "spec": {"publicKey": KEY}}  # fmt: skip
    env._created.append(f"{CRD}/wirekubepeers/{name}")
    return env.rest.call("POST", f"{CRD}/wirekubepeers", body=body)


def exists(env: GatewayEnv, peer: str) -> bool:
    try:
        env.rest.call("GET", f"{CRD}/wirekubepeers/{peer}")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def gc_events(env: GatewayEnv, peer: str) -> list[dict[str, Any]]:
    return [e for e in env.events_for(peer) if e.get("reason") == "NodeLeftMesh"]


def test_the_leader_collects_peers_of_departed_nodes_after_the_grace_period(
    gateway_env: GatewayEnv,
) -> None:
    env = gateway_env
    a, b, ghost = env.name("gc-a"), env.name("gc-b"), env.name("gc-ghost")
    create_node(env, a)
    create_node(env, b)
    peer_a, peer_b, peer_ghost = f"node-{a}", f"node-{b}", f"node-{ghost}"
    handmade = env.name("node-handmade")  # no label, no Node: not ours to collect
    create_labelled_peer(env, a, peer_a)
    create_labelled_peer(env, b, peer_b)
    create_labelled_peer(env, ghost, peer_ghost)
    create_labelled_peer(env, None, handmade)

    started = time.monotonic()
    one = env.start_controller(env.name("gc-ctl-1"), "--peer-gc-grace", str(GRACE_S))
    two = env.start_controller(env.name("gc-ctl-2"), "--peer-gc-grace", str(GRACE_S))
    leader = env.leader([one, two])

    # A peer whose Node never existed goes after the grace period, not before.
    wait_for(lambda: not exists(env, peer_ghost), GRACE_S + 30, "ghost's peer collected")
    assert time.monotonic() - started >= GRACE_S

    # A node unlabelled and relabelled within the grace period keeps its peer.
    label_node(env, b, None)
    time.sleep(GRACE_S / 2)
    label_node(env, b, "true")
    # A deleted Node's peer goes after the grace period.
    env.rest.call("DELETE", f"/api/v1/nodes/{a}")
    deleted = time.monotonic()
    wait_for(lambda: not exists(env, peer_a), GRACE_S + 30, "a's peer collected")
    assert time.monotonic() - deleted >= GRACE_S
    time.sleep(GRACE_S)  # b's would have gone by now if its timer had not reset
    assert exists(env, peer_b)
    assert exists(env, handmade)

    events = wait_for(lambda: gc_events(env, peer_a) or None, 10, "a's event")
    assert len(events) == 1, events  # the standby deleted nothing
    assert events[0]["message"] == (
        f"Node {a} is gone (for {GRACE_S:g}s): deleted its WireKubePeer {peer_a}"
    )
    assert events[0]["involvedObject"]["kind"] == "WireKubePeer"
    ghost_events = gc_events(env, peer_ghost)
    assert len(ghost_events) == 1 and f"Node {ghost} is gone" in ghost_events[0]["message"]
    assert not gc_events(env, peer_b) and not gc_events(env, handmade)
    standby = two if leader is one else one
    assert "deleted its WireKubePeer" not in standby.log_text()
    assert one.alive and two.alive
