"""Peer garbage collection's pure decisions: who departed, since when, who is due."""

from __future__ import annotations

from typing import Any

import pytest

from wirekube_gateway.peergc.departed import Candidate, candidates, describe, plan

GRACE = 60.0


def peer_obj(name: str, node: Any = "", uid: str = "u1", rv: str = "7") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": rv}
    if node != "":
        meta["labels"] = {"wirekube.io/node": node}
    return {"metadata": meta, "spec": {"publicKey": "k"}}


def cand(node: str) -> Candidate:
    return Candidate(name=f"node-{node}", node=node, uid="u", resource_version="1")


def test_only_peers_that_name_their_node_are_candidates() -> None:
    found = candidates(
        {
            "node-a": peer_obj("node-a", "a", uid="ua", rv="3"),
            "node-b": peer_obj("node-b"),  # no label: hand-made, never collected
            "node-c": peer_obj("node-c", ""),  # no label value either
            "node-d": peer_obj("node-d", 42),  # hostile label type
            "broken": {"metadata": "nope"},
            "weird-name": peer_obj("weird-name", "e"),
        }
    )
    assert found == [
        Candidate("node-a", "a", "ua", "3"),
        Candidate("weird-name", "e", "u1", "7"),
    ]


def test_a_member_nodes_peer_is_never_departed() -> None:
    result = plan([cand("a"), cand("b")], {"a", "b"}, {}, now=100.0, grace_s=GRACE)
    assert result.since == {} and result.due == () and result.waiting == {}


@pytest.mark.parametrize("why", ["node gone", "label removed"])
def test_departed_waits_out_the_grace_period_then_is_due(why: str) -> None:
    # Both look the same to the plan: the node is not among the labelled Nodes.
    peers = [cand("a"), cand("b")]
    first = plan(peers, {"a"}, {}, now=100.0, grace_s=GRACE)
    assert first.since == {"node-b": 100.0}
    assert first.due == () and first.waiting == {"node-b": GRACE}
    almost = plan(peers, {"a"}, first.since, now=159.9, grace_s=GRACE)
    assert almost.due == ()
    assert almost.waiting["node-b"] == pytest.approx(0.1)
    due = plan(peers, {"a"}, almost.since, now=160.0, grace_s=GRACE)
    assert due.due == (cand("b"),) and due.waiting == {}


def test_a_node_back_in_time_keeps_its_peer_and_its_timer_starts_over() -> None:
    peers = [cand("a")]
    left = plan(peers, set(), {}, now=0.0, grace_s=GRACE)
    back = plan(peers, {"a"}, left.since, now=59.0, grace_s=GRACE)
    assert back.since == {} and back.due == ()
    again = plan(peers, set(), back.since, now=70.0, grace_s=GRACE)
    assert again.since == {"node-a": 70.0}
    assert plan(peers, set(), again.since, now=129.0, grace_s=GRACE).due == ()
    assert plan(peers, set(), again.since, now=130.0, grace_s=GRACE).due == (cand("a"),)


def test_timers_of_deleted_peers_are_forgotten() -> None:
    result = plan([], set(), {"node-gone": 1.0}, now=500.0, grace_s=GRACE)
    assert result.since == {}


def test_a_mass_departure_is_worked_off_oldest_first_in_bounded_passes() -> None:
    peers = [cand(f"n{i:02d}") for i in range(25)]
    since = {f"node-n{i:02d}": float(100 - i) for i in range(25)}  # n24 left first
    result = plan(peers, set(), since, now=1000.0, grace_s=GRACE, limit=10)
    assert [p.node for p in result.due] == [f"n{i:02d}" for i in range(24, 14, -1)]
    assert len(result.since) == 25  # the rest keep their timers


def test_zero_grace_deletes_on_first_sight() -> None:
    assert plan([cand("a")], set(), {}, now=5.0, grace_s=0.0).due == (cand("a"),)


def test_the_event_says_why() -> None:
    peer = cand("w7")
    assert describe(peer, None, GRACE) == (
        "Node w7 is gone (for 60s): deleted its WireKubePeer node-w7"
    )
    unlabelled = {"metadata": {"name": "w7", "labels": {"kubernetes.io/os": "linux"}}}
    assert describe(peer, unlabelled, 5.0) == (
        "Node w7 is not labelled wirekube.io/vpn-enabled=true (for 5s): "
        "deleted its WireKubePeer node-w7"
    )
    off = {"metadata": {"name": "w7", "labels": {"wirekube.io/vpn-enabled": "false"}}}
    assert "is labelled wirekube.io/vpn-enabled=false, not true" in describe(peer, off, 1.5)
