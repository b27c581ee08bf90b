"""The agent's collector: what a scrape shows for a given pass, and that it is
valid exposition (``promtool check metrics``, Debian's prometheus package)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wirekube_agent.endpoint.discovery import Discovery
from wirekube_agent.metrics import AgentCollector
from wirekube_agent.model import RemotePeer
from wirekube_agent.paths.prober import Prober
from wirekube_agent.paths.rules import PathState, Target
from wirekube_agent.peerstats import PeerStats, Traffic
from wirekube_agent.reconciler import Observed
from wirekube_agent.relay.link import LinkStats
from wirekube_common import wgkey
from wirekube_common.stun.nat import Filtering, Mapping, NatReport, NatType
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import key

PRIV_A, PRIV_B = key(1), key(2)
A_PUB, B_PUB, C_PUB = wgkey.public_key(PRIV_A), wgkey.public_key(PRIV_B), key(3)
EP_A, EP_B = ("198.18.1.1", 51820), ("198.18.1.2", 51820)
BRIDGE_B = ("127.0.0.1", 40002)  # B's relay-bridge endpoint on A's node

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def remote(name: str, public_key: bytes) -> RemotePeer:
    return RemotePeer(name, public_key, None, (), None)


def probe_round(a: Prober, b: Prober, to: tuple[str, int], now: float, rtt: float) -> None:
    """One ping from ``a`` to ``b`` (sent to ``to``) and its pong, ``rtt`` apart."""
    sent_a: list[tuple[bytes, tuple[str, int]]] = []
    sent_b: list[tuple[bytes, tuple[str, int]]] = []
    a._send = lambda data, ep: sent_a.append((data, ep)) or True
    b._send = lambda data, ep: sent_b.append((data, ep)) or True
    a.tick(now)
    ping = next(d for d, ep in sent_a if ep == to)
    b.on_datagram(ping, EP_A, now)  # B sees it from A's endpoint
    pong = sent_b[-1][0]
    a.on_datagram(pong, to, now + rtt)  # and A sees the answer come from where it went


def fake_reconciler(prober: Prober, stats: PeerStats, paths: dict[str, PathState]) -> Any:
    peers = {"node-b": remote("node-b", B_PUB), "node-c": remote("node-c", C_PUB)}
    device = DeviceState(
        peers={
            B_PUB: PeerState(B_PUB, last_handshake=1000.5, rx_bytes=4000, tx_bytes=3000),
            C_PUB: PeerState(C_PUB),
        }
    )
    return SimpleNamespace(
        observed=Observed(device, peers, {"node-b": 1000.5, "node-c": 0.0}, 0.01, 7, 2),
        paths=paths,
        stats=stats,
        net=SimpleNamespace(
            prober=prober,
            netcheck=SimpleNamespace(
                report=NatReport(NatType.CONE, Mapping.ENDPOINT_INDEPENDENT, Filtering.UNKNOWN)
            ),
        ),
        discovery=Discovery(EP_A, "stun"),
        relays=SimpleNamespace(
            last_available=True,
            links={
                "198.18.0.10:3478": LinkStats(
                    True, connects=2, frames_tx=40, frames_rx=38, drops_tx=3, malformed_rx=1
                ),
                "198.18.0.11:3478": LinkStats(False),
            },
        ),
        settings=SimpleNamespace(node_name="a"),
        peer_name="node-a",
        public_key=A_PUB,
        api=SimpleNamespace(requests=12),
        informers=[SimpleNamespace(name="wirekubepeers", healthy=True)],
    )


def scrape(reconciler: Any) -> tuple[str, Samples]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(reconciler))
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def probers() -> tuple[Prober, Prober]:
    a, b = Prober(PRIV_A, lambda d, ep: True), Prober(PRIV_B, lambda d, ep: True)
    b.set_targets({A_PUB: Target()})
    return a, b


def test_a_scrape_shows_each_peer_its_path_rtt_bytes_and_the_agent() -> None:
    a, b = probers()
    a.set_targets({B_PUB: Target(candidates=(EP_B,), burst=True), C_PUB: Target()})
    probe_round(a, b, EP_B, 1000.0, 0.004)
    direct = PathState("direct", "up", 999.0, EP_B)
    relayed_down = PathState("relay", "down", 999.0, None)
    stats = PeerStats()
    paths = {"node-b": direct, "node-c": relayed_down}
    stats.update(
        {}, {"node-b": PathState("relay", "up", 990.0, None), "node-c": relayed_down}, {}, {}, 990.0
    )
    stats.update(
        {"node-b": PathState("relay", "up", 990.0, None)},
        paths,
        {"node-b": 1000.5},
        {"node-b": Traffic(990.0, 4000, 3000)},
        1001.0,
    )
    text, m = scrape(fake_reconciler(a, stats, paths))

    assert m[("wirekube_peer_connected", (("peer", "node-b"),))] == 1.0
    assert m[("wirekube_peer_connected", (("peer", "node-c"),))] == 0.0
    assert m[("wirekube_peer_path", (("path", "direct"), ("peer", "node-b")))] == 1.0
    assert m[("wirekube_peer_path", (("path", "relay"), ("peer", "node-b")))] == 0.0
    assert m[("wirekube_peer_path", (("path", "down"), ("peer", "node-c")))] == 1.0
    assert m[("wirekube_peer_transport", (("peer", "node-c"), ("transport", "relay")))] == 1.0
    assert (
        abs(m[("wirekube_peer_rtt_seconds", (("path", "direct"), ("peer", "node-b")))] - 0.004)
        < 1e-9
    )
    assert not any(n == "wirekube_peer_rtt_seconds" and ("peer", "node-c") in lb for n, lb in m)
    assert m[("wirekube_peer_last_handshake_timestamp_seconds", (("peer", "node-b"),))] == 1000.5
    assert ("wirekube_peer_last_handshake_timestamp_seconds", (("peer", "node-c"),)) not in m
    assert m[("wirekube_peer_receive_bytes_total", (("peer", "node-b"),))] == 4000.0
    assert m[("wirekube_peer_transmit_bytes_total", (("peer", "node-b"),))] == 3000.0
    assert m[("wirekube_path_changes_total", (("from", "relay"), ("to", "direct")))] == 1.0
    assert m[("wirekube_peer_time_to_direct_seconds_count", ())] == 1.0
    assert m[("wirekube_peer_time_to_direct_seconds_sum", ())] == 11.0
    assert m[("wirekube_peer_time_to_first_handshake_seconds_bucket", (("le", "+Inf"),))] == 1.0
    assert m[("wirekube_probe_rtt_seconds_bucket", (("le", "0.005"), ("path", "direct")))] == 1.0
    assert m[("wirekube_probe_rtt_seconds_count", (("path", "relay"),))] == 0.0
    nat = (("filtering", "unknown"), ("mapping", "endpoint-independent"), ("nat_type", "cone"))
    assert m[("wirekube_nat_info", nat)] == 1.0
    endpoint = (("endpoint", "198.18.1.1:51820"), ("method", "stun"))
    assert m[("wirekube_endpoint_info", endpoint)] == 1.0
    assert m[("wirekube_agent_relay_available", ())] == 1.0
    assert m[("wirekube_agent_relay_link_up", (("relay", "198.18.0.11:3478"),))] == 0.0
    assert m[("wirekube_agent_relay_link_connects_total", (("relay", "198.18.0.10:3478"),))] == 2.0
    r10 = ("relay", "198.18.0.10:3478")
    assert m[("wirekube_agent_relay_frames_total", (("direction", "tx"), r10))] == 40.0
    assert m[("wirekube_agent_relay_frames_total", (("direction", "rx"), r10))] == 38.0
    assert m[("wirekube_agent_relay_dropped_frames_total", (("reason", "link_down"), r10))] == 3.0
    assert m[("wirekube_agent_relay_dropped_frames_total", (("reason", "malformed"), r10))] == 1.0
    assert m[("wirekube_reconciles_total", ())] == 7.0

    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_rtt_is_the_path_in_use_and_measured_since_it_began() -> None:
    a, b = probers()
    a.set_targets({B_PUB: Target(via_relay=BRIDGE_B, burst=True)})
    probe_round(a, b, BRIDGE_B, 1000.0, 0.020)  # through the relay
    stats = PeerStats()
    relayed = PathState("relay", "up", 990.0, None)
    _, m = scrape(fake_reconciler(a, stats, {"node-b": relayed}))
    assert m[
        ("wirekube_peer_rtt_seconds", (("path", "relay"), ("peer", "node-b")))
    ] == pytest.approx(0.020)
    assert m[("wirekube_probe_rtt_seconds_count", (("path", "relay"),))] == 1.0
    # The relay RTT says nothing about a direct path that began later.
    _, m = scrape(fake_reconciler(a, stats, {"node-b": PathState("direct", "up", 1001.0, EP_B)}))
    assert not any(n == "wirekube_peer_rtt_seconds" for n, _ in m)
    # Nor does it describe a relay path (re)established after it was measured.
    _, m = scrape(fake_reconciler(a, stats, {"node-b": PathState("relay", "up", 1002.0, None)}))
    assert not any(n == "wirekube_peer_rtt_seconds" for n, _ in m)


def test_a_peer_that_vanished_leaves_no_series() -> None:
    a, _ = probers()
    stats = PeerStats()
    paths = {"node-b": PathState("relay", "up", 1.0, None)}
    stats.update({}, paths, {}, {"node-b": Traffic(1.0, 10, 10)}, 1.0)
    r = fake_reconciler(a, stats, paths)
    _, m = scrape(r)
    assert any(("peer", "node-b") in labels for _, labels in m)
    r.paths = {}
    r.observed = Observed()
    stats.update(paths, {}, {}, {}, 2.0)
    _, m = scrape(r)
    assert not any(dict(labels).get("peer") for _, labels in m)
