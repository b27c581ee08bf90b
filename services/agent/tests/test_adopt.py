"""wg/adopt: a new agent's first paths come from the interface it adopts."""

from __future__ import annotations

from wirekube_agent.paths.rules import PathState
from wirekube_agent.wg.adopt import adopted_paths
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import remote

NOW = 1_700_000_000.0
A = remote("node-a", 2, "10.0.0.2")
B = remote("node-b", 3, "10.0.0.3")
C = remote("node-c", 4, "10.0.0.4")
D = remote("node-d", 5, "10.0.0.5")


def test_paths_are_read_off_the_device() -> None:
    device = DeviceState(
        private_key=b"k" * 32,
        peers={
            # direct, WireGuard roamed to a NAT mapping: that endpoint is kept
            A.public_key: PeerState(A.public_key, ("198.18.4.1", 40123), last_handshake=NOW - 30),
            # through the relay bridge
            B.public_key: PeerState(B.public_key, ("127.0.0.1", 38001), last_handshake=NOW - 10),
            # a direct endpoint never proven: left to paths.step
            C.public_key: PeerState(C.public_key, ("10.0.0.4", 51820)),
        },
    )
    peers = {p.name: p for p in (A, B, C, D)}
    got = adopted_paths(device, peers, 15.0, NOW)
    assert got == {
        "node-a": PathState("direct", "up", NOW, ("198.18.4.1", 40123)),
        "node-b": PathState("relay", "up", NOW, None, next_burst=NOW + 15.0),
    }
    assert got["node-a"].routed and got["node-b"].routed


def test_a_relayed_peer_without_a_fresh_handshake_is_still_relayed() -> None:
    device = DeviceState(peers={B.public_key: PeerState(B.public_key, ("127.0.0.1", 38001))})
    got = adopted_paths(device, {"node-b": B}, 15.0, NOW)
    assert (got["node-b"].transport, got["node-b"].phase) == ("relay", "probing")
    assert got["node-b"].routed


def test_an_empty_device_adopts_nothing() -> None:
    assert adopted_paths(DeviceState(), {"node-a": A}, 15.0, NOW) == {}
