"""The relay in the real mesh: lab + real apiserver + real agents, relays and bridges.

Issue 4's end-to-end tests. One lab for the module (see conftest.py): rm-a and
rm-b behind two different symmetric NATs, rm-t in a tcp-only zone, two relay
replicas, a STUN server, a DNS server for the relay pool and a plain host
(rm-x) from which the relays' metrics and admin API are read and attacked.

Proof that packets went *through the relay* is always the relay's own
counters (Prometheus ``wirekube_relay_bytes_forwarded`` and per-key
``ListPeers`` frames), never only the agents' status.

The tests run in file order and each one sets the mesh's relay mode it needs
(the agents follow the WireKubeMesh live); ``never`` and the pool come last.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

# ping's default 56-byte payload: 84-byte IP packet, padded to 96 and sealed by
# WireGuard (+32) = 128 bytes on the relay, before any relay framing.
MIN_RELAYED_BYTES_PER_PING = 128


def _peers(stats: dict[str, Any], relay: str) -> dict[str, Any]:
    return stats[relay].get("peers", {})  # type: ignore[no-any-return]


def _frames_in(stats: dict[str, Any], relay: str, key: str) -> int:
    return int(_peers(stats, relay).get(key, {}).get("frames_in", 0))


def _check_relayed_pings(rm: Any, a: str, b: str, relay: str = "rm-relay1", count: int = 20) -> None:
    """``count`` pings a -> b all answered, and the relay carried them both ways."""
    before = rm.stats(relay)
    result = rm.lab.ping(a, b, count=count, interval=0.05, wait=2.0)
    after = rm.stats(relay)
    assert result.ok, f"{a} -> {b}: {result.received}/{result.sent} answered"
    forwarded = (
        after[relay]["metrics"]["wirekube_relay_bytes_forwarded_total"]
        - before[relay]["metrics"]["wirekube_relay_bytes_forwarded_total"]
    )
    assert forwarded >= 2 * count * MIN_RELAYED_BYTES_PER_PING, forwarded
    for host in (a, b):  # each side sent at least one frame per echo (request / reply)
        key = rm.key(host)
        sent = _frames_in(after, relay, key) - _frames_in(before, relay, key)
        assert sent >= count, f"{host} sent {sent} frames through {relay} for {count} pings"
    print(
        f"{a}->{b}: {count}/{count} pings via {relay}, rtt avg {result.rtt_avg_ms:.2f} ms, "
        f"relay forwarded {forwarded:.0f} B meanwhile"
    )


def test_auto_symmetric_nats_use_the_relay(relay_mesh: Any) -> None:
    """Mode auto from a fresh start: relay first, direct probing fails, the relay stays."""
    rm = relay_mesh
    rm.wait_relayed("rm-a", "rm-b")
    took = time.monotonic() - rm.mesh.started_at
    # Past the handshake timeout the direct attempt has failed; still relay.
    time.sleep(max(0.0, rm.mesh.started_at + 8 - time.monotonic()))
    assert rm.transport("rm-a", "rm-b") == rm.transport("rm-b", "rm-a") == "relay"
    _check_relayed_pings(rm, "rm-a", "rm-b")
    for host, other in (("rm-a", "rm-b"), ("rm-b", "rm-a")):
        assert f"path to node-{other}: relay" in rm.agent_log(host)
        peer = rm.mesh.peer(host) or {}
        assert (peer.get("status") or {}).get("natType") == "symmetric"
    print(f"rm-a<->rm-b relayed and answering {took:.1f}s after the agents started")


def test_tcp_only_zone_reaches_the_mesh_through_the_relay(relay_mesh: Any) -> None:
    """rm-t can send no UDP at all: both its peers are reached over the TCP relay."""
    rm = relay_mesh
    for other in ("rm-a", "rm-b"):
        rm.wait_relayed("rm-t", other)
        _check_relayed_pings(rm, "rm-t", other)
    # its own view: every peer relayed (status.transportMode)
    status = (rm.mesh.peer("rm-t") or {}).get("status") or {}
    assert status.get("transportMode") == "relay", status
