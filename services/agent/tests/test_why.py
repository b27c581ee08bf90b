"""Why a path is what it is: the rule and reason ``paths.step`` records with its
decision, the ``peerPaths`` status they become, and path-change Events."""

from __future__ import annotations

import pytest

from wirekube_agent.paths.rules import (
    LocalFacts,
    NatFacts,
    PathPolicy,
    PathState,
    ProbeView,
    classify,
    predict,
    step,
)
from wirekube_agent.status import events
from wirekube_agent.status import peerstatus as status
from wirekube_common.crd import PeerStatus

from .helpers import remote
from .test_paths import (
    ADDR_RESTRICTED,
    FULL_CONE,
    PORT_RESTRICTED,
    PUBLIC,
    SYMMETRIC,
    SYMMETRIC_B,
    TCP_ONLY,
    UNKNOWN,
)

AUTO = PathPolicy("auto", True, handshake_timeout_s=5, direct_retry_interval_s=15)
PONG = ("198.18.3.1", 51820)


@pytest.mark.parametrize(
    ("a", "b", "rule"),
    [
        (SYMMETRIC, NatFacts(SYMMETRIC.public_ip, "symmetric"), "same-network"),
        (PUBLIC, SYMMETRIC, "public"),
        (PUBLIC, TCP_ONLY, "tcp-only"),
        (PORT_RESTRICTED, ADDR_RESTRICTED, "cone-cone"),
        (ADDR_RESTRICTED, SYMMETRIC, "cone-symmetric"),
        (FULL_CONE, SYMMETRIC, "cone-symmetric"),
        (PORT_RESTRICTED, SYMMETRIC, "symmetric-port-restricted"),
        (SYMMETRIC, SYMMETRIC_B, "symmetric-symmetric"),
        (UNKNOWN, SYMMETRIC, "unknown"),
    ],
)
def test_classify_names_the_rule_predict_follows(a: NatFacts, b: NatFacts, rule: str) -> None:
    assert classify(a, b) == classify(b, a) == rule
    assert predict(a, b) in ("direct", "relay", "unknown")


def _peer(facts: NatFacts):  # type: ignore[no-untyped-def]
    return remote(
        "node-b",
        2,
        "10.0.0.2",
        endpoint=PONG,
        public_ip=facts.public_ip,
        nat_type=facts.nat_type,
        nat_mapping=facts.mapping,
        nat_filtering=facts.filtering,
    )


def _local(facts: NatFacts) -> LocalFacts:
    return LocalFacts(facts.public_ip, facts.nat_type, facts.mapping, facts.filtering)


def test_reason_follows_the_decision_through_upgrade_failure_and_retry() -> None:
    peer, local = _peer(SYMMETRIC), _local(ADDR_RESTRICTED)
    s = step(None, peer, local, ProbeView(), 0.0, AUTO, 100.0)
    assert (s.transport, s.rule, s.reason) == ("relay", "cone-symmetric", "probing")
    s = step(s, peer, local, ProbeView(answered=((PONG, 100.9),)), 0.0, AUTO, 101.0)
    assert (s.transport, s.reason) == ("direct", "probe-answered")
    s = step(s, peer, local, ProbeView(answered=((PONG, 100.9),)), 0.0, AUTO, 107.5)
    assert (s.transport, s.reason, s.failures) == ("relay", "direct-failed", 1)
    assert s.next_burst == pytest.approx(107.5 + 15)


def test_reason_for_hopeless_pairs_and_modes() -> None:
    sym = step(None, _peer(SYMMETRIC_B), _local(SYMMETRIC), ProbeView(), 0.0, AUTO, 100.0)
    assert (sym.transport, sym.rule, sym.reason) == (
        "relay",
        "symmetric-symmetric",
        "predicted-relay",
    )
    tcp = step(None, _peer(PUBLIC), _local(TCP_ONLY), ProbeView(), 0.0, AUTO, 100.0)
    assert (tcp.rule, tcp.reason) == ("tcp-only", "predicted-relay")
    peer, local = _peer(PUBLIC), _local(ADDR_RESTRICTED)
    always = step(None, peer, local, ProbeView(), 0.0, PathPolicy("always", True, 5, 15), 100.0)
    assert (always.transport, always.reason) == ("relay", "mode-always")
    never = step(None, peer, local, ProbeView(), 0.0, PathPolicy("never", True, 5, 15), 100.0)
    assert (never.transport, never.reason) == ("direct", "mode-never")
    alone = step(None, peer, local, ProbeView(), 0.0, PathPolicy("auto", False, 5, 15), 100.0)
    assert (alone.transport, alone.reason) == ("direct", "no-relay")


def test_unchanged_why_keeps_the_same_object() -> None:
    peer, local = _peer(SYMMETRIC_B), _local(SYMMETRIC)
    s = step(None, peer, local, ProbeView(), 0.0, AUTO, 100.0)
    s = step(s, peer, local, ProbeView(), 0.0, AUTO, 100.5)
    assert step(s, peer, local, ProbeView(), 0.0, AUTO, 100.6) is s


def _status(paths: dict[str, PathState], probes: dict[str, status.PeerProbe], now: float):  # type: ignore[no-untyped-def]
    return status.derive(paths, {}, status.LocalReport(), PeerStatus(), now, probes)


def test_peer_paths_and_ready_condition() -> None:
    direct = PathState("direct", "up", 100.0, PONG, rule="cone-cone", reason="probe-answered")
    relayed = PathState(
        "relay",
        "up",
        90.0,
        None,
        next_burst=130.0,
        failures=2,
        rule="symmetric-symmetric",
        reason="direct-failed",
    )
    probe = status.PeerProbe((PONG, ("10.0.0.2", 51820)), ((PONG, 119.0),), 0.00125)
    new = _status({"node-b": direct, "node-c": relayed}, {"node-b": probe}, 120.0)
    b, c = new.peer_paths["node-b"], new.peer_paths["node-c"]
    assert (b.transport, b.rule, b.reason, b.endpoint, b.rtt_ms) == (
        "direct",
        "cone-cone",
        "probe-answered",
        "198.18.3.1:51820",
        1.25,
    )
    assert [(x.endpoint, x.last_answer) for x in b.candidates] == [
        ("198.18.3.1:51820", status.rfc3339(119.0)),
        ("10.0.0.2:51820", None),
    ]
    assert (c.failures, c.next_attempt, c.endpoint) == (2, status.rfc3339(130.0), None)
    through = status.peer_path(relayed, status.PeerProbe(rtt=0.001, relay_rtt=0.0123))
    assert through.rtt_ms == 12.3  # the RTT on the path in use
    ready = next(x for x in new.conditions if x["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "SomePeersRelayed")
    assert ready["message"] == "2 peers: 1 direct, 1 relayed"
    # round trip through the API's shape
    assert PeerStatus.from_dict(new.to_dict()) == new
    down = PathState("direct", "probing", 100.0, PONG)
    worse = status.derive({"node-b": down}, {}, status.LocalReport(), new, 121.0)
    cond = next(x for x in worse.conditions if x["type"] == "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "PeersUnreachable")
    assert cond["lastTransitionTime"] == status.rfc3339(121.0)
    same = status.derive({"node-b": down}, {}, status.LocalReport(), worse, 500.0)
    assert next(x for x in same.conditions if x["type"] == "Ready") == cond  # no transition


def test_details_ride_along_and_the_why_is_written_at_once() -> None:
    direct = PathState("direct", "up", 100.0, PONG, rule="cone-cone", reason="probe-answered")
    first = _status({"node-b": direct}, {"node-b": status.PeerProbe((PONG,), (), 0.001)}, 120.0)
    second = _status({"node-b": direct}, {"node-b": status.PeerProbe((PONG,), (), 0.002)}, 120.0)
    budget = status.WriteBudget().spend(120.0)
    # a new RTT alone: never a write (a quiet mesh writes nothing), however long
    assert not status.should_write(first, second, budget, 130.0)
    assert not status.should_write(first, second, budget, 120.0 + 3600)
    moved = PathState("relay", "up", 130.0, None, rule="cone-cone", reason="direct-failed")
    third = _status({"node-b": moved}, {}, 130.0)
    assert status.should_write(first, third, budget, 131.0)  # a transport change: at once
    assert third.peer_paths["node-b"].reason == "direct-failed"  # and the why with it
    # the why itself (rule, reason, failures) is no detail: written at once
    known = PathState("direct", "up", 100.0, PONG, rule="cone-symmetric", reason="probe-answered")
    fourth = _status({"node-b": known}, {"node-b": status.PeerProbe((PONG,), (), 0.001)}, 120.0)
    assert status.should_write(first, fourth, budget, 121.0)


def test_path_events_are_rate_limited_and_count_what_was_left_out() -> None:
    before = {f"node-{i}": PathState("direct", "up", 0.0, PONG) for i in range(15)}
    after = {
        n: PathState("relay", "up", 5.0, None, failures=1, rule="cone-cone", reason="direct-failed")
        for n in before
    }
    found = events.changes(before, after)
    assert len(found) == 15 and all(e.warning for e in found)
    assert "direct -> relay" in found[0].message and "direct-failed" in found[0].message
    budget, admitted = events.admit(events.EventBudget(), found, 10.0)
    assert len(admitted) == int(events.EVENT_BURST)
    assert budget.suppressed == 15 - len(admitted)
    back = events.changes(after, before)
    budget, admitted = events.admit(budget, back, 10.0 + events.EVENT_REFILL_S)
    assert len(admitted) == 1
    assert "5 earlier path changes not recorded" in admitted[0].message
    assert not admitted[0].warning
    assert events.changes(before, before) == []
    assert events.changes({}, after) == []  # new peers are not changes


def test_an_unproven_direct_guess_given_up_is_no_failure_and_no_event() -> None:
    """Start-up before the relay is up: the peer starts direct-only, unproven;
    once the relay comes it moves there at once. Nothing died."""
    peer, local = _peer(SYMMETRIC_B), _local(SYMMETRIC)
    guess = step(None, peer, local, ProbeView(), 0.0, PathPolicy("auto", False, 5, 15), 100.0)
    assert (guess.transport, guess.phase, guess.reason) == ("direct", "probing", "no-relay")
    moved = step(guess, peer, local, ProbeView(), 0.0, AUTO, 101.0)
    assert (moved.transport, moved.failures, moved.reason) == ("relay", 0, "predicted-relay")
    assert events.changes({"node-b": guess}, {"node-b": moved}) == []


def test_peer_paths_of_a_full_mesh_fit_one_object() -> None:
    """4096 peers (the CRD's bound), the largest entries: inside etcd's
    1.5 MiB request limit; candidates are left out beyond 256 peers."""
    import json  # noqa: PLC0415

    relayed = PathState(
        "relay",
        "up",
        1e9,
        None,
        next_burst=1e9 + 15,
        failures=3,
        rule="symmetric-port-restricted",
        reason="direct-failed",
    )
    probe = status.PeerProbe(tuple((f"198.51.100.{i}", 51820) for i in range(8)), (), 0.012345)
    paths = {f"node-worker-{i:05d}": relayed for i in range(4096)}
    probes = dict.fromkeys(paths, probe)
    big = _status(paths, probes, 1e9 + 1)
    size = len(json.dumps(big.to_dict()))
    assert size < 1.25 * 1024 * 1024, size  # etcd takes 1.5 MiB; the rest of the object is small
    assert not next(iter(big.peer_paths.values())).candidates
    small = _status(dict(list(paths.items())[:10]), probes, 1e9 + 1)
    assert len(next(iter(small.peer_paths.values())).candidates) == 4
