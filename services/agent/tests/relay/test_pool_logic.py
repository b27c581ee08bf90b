"""Pure parts of the relay pool and bridge: address parsing, rendezvous placement, batch framing."""

from __future__ import annotations

import os

from wirekube_agent.relay.bridge import RelayBridge
from wirekube_agent.relay.pool import flow_id, parse_hostport, rendezvous_pick
from wirekube_common.relayproto import frames as f


def test_parse_hostport() -> None:
    assert parse_hostport("relay.example.com:3478") == ("relay.example.com", 3478)
    assert parse_hostport("10.0.0.1") == ("10.0.0.1", 3478)
    assert parse_hostport("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_hostport("[2001:db8::1]") == ("2001:db8::1", 3478)


def test_both_ends_of_a_flow_pick_the_same_replica() -> None:
    replicas = [f"10.0.0.{i}:3478" for i in range(1, 6)]
    for _ in range(200):
        a, b = os.urandom(32), os.urandom(32)
        assert rendezvous_pick(flow_id(a, b), replicas) == rendezvous_pick(
            flow_id(b, a), list(reversed(replicas))
        )


def test_losing_a_replica_moves_only_its_flows_and_adding_one_takes_a_fair_share() -> None:
    replicas = [f"10.0.0.{i}:3478" for i in range(1, 5)]
    flows = [flow_id(os.urandom(32), os.urandom(32)) for _ in range(2000)]
    before = {fl: rendezvous_pick(fl, replicas) for fl in flows}
    counts = {r: sum(1 for v in before.values() if v == r) for r in replicas}
    assert all(350 < c < 650 for c in counts.values()), counts  # ~500 each
    dead = replicas[0]
    after = {fl: rendezvous_pick(fl, replicas[1:]) for fl in flows}
    moved = [fl for fl in flows if before[fl] != after[fl]]
    assert moved and all(before[fl] == dead for fl in moved)
    assert all(after[fl] != dead for fl in flows)
    grown = [*replicas, "10.0.0.9:3478"]
    regrown = {fl: rendezvous_pick(fl, grown) for fl in flows}
    taken = [fl for fl in flows if regrown[fl] != before[fl]]
    assert all(regrown[fl] == "10.0.0.9:3478" for fl in taken)
    assert 250 < len(taken) < 550  # ~1/5 of the flows


def test_no_replica_no_pick() -> None:
    assert rendezvous_pick(b"x" * 64, []) is None


def test_batch_frame_written_in_place_parses() -> None:
    key = os.urandom(32)
    buf = bytearray(200)
    k = 10 + f.DATA_OVERHEAD
    for pkt in (b"hello", b"", b"wireguard"):
        buf[k] = len(pkt) >> 8
        buf[k + 1] = len(pkt) & 0xFF
        buf[k + 2 : k + 2 + len(pkt)] = pkt
        k += 2 + len(pkt)
    end = RelayBridge._close_frame(buf, 10, k, key)
    assert end == k
    p = f.FrameParser()
    p.feed(bytes(buf[10:end]))
    assert p.events() == [f.SendBatch(key, (b"hello", b"", b"wireguard"))]
    assert RelayBridge._close_frame(buf, 10, 10 + f.DATA_OVERHEAD, key) == 10  # empty: no frame
