"""decide: tables of observations in, the node's decision out (no I/O).

The topology tables are the seed's (``seeds/topologies.txt``, "Deployment
Topologies"): each row is a pair of nodes and the mode the seed expects. The
first pass must already tell the two apart from the published NAT facts
alone (a burst of probes for a pair that can go direct, none for one that
cannot); the second pass shows the path once the network answered (the
lab's topology tests check the same rows against real NATs).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from wirekube_agent import decide
from wirekube_agent.model import RemotePeer
from wirekube_agent.paths.rules import LocalFacts, ProbeView
from wirekube_common.crd import MeshSpec
from wirekube_common.crd.mesh import RelaySpec
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import key, node, remote

# NAT facts as agents publish them (natType, natMapping, natFiltering).
SYMMETRIC = ("symmetric", "address-and-port-dependent", "address-and-port-dependent")
CONE = ("cone", "endpoint-independent", "address-dependent")  # a home router
PUBLIC = ("cone", "none", "endpoint-independent")  # its own public IP

# name -> (internal ip, public ip, NAT facts)
Site = tuple[str, str, tuple[str, str, str]]
TOPOLOGIES: dict[str, tuple[dict[str, Site], list[tuple[str, str, str]]]] = {
    "1 all private (cloud NAT)": (
        {
            "node-1": ("10.1.0.1", "198.18.1.1", SYMMETRIC),
            "node-2": ("10.1.0.2", "198.18.1.1", SYMMETRIC),
            "node-3": ("10.2.0.3", "198.18.2.1", SYMMETRIC),
        },
        [
            ("node-1", "node-2", "direct"),  # same VPC: no NAT between them
            ("node-1", "node-3", "relay"),  # both behind symmetric NAT
            ("node-2", "node-3", "relay"),
        ],
    ),
    "2 mixed (private + public)": (
        {
            "node-1": ("10.1.0.1", "198.18.1.1", SYMMETRIC),
            "node-2": ("10.1.0.2", "198.18.1.50", PUBLIC),
            "node-3": ("10.2.0.3", "198.18.2.1", SYMMETRIC),
        },
        [
            ("node-1", "node-2", "direct"),  # same subnet
            ("node-2", "node-3", "direct"),  # node-2 has a public IP
            ("node-1", "node-3", "relay"),  # both behind symmetric NAT
        ],
    ),
    "3 multi-cloud": (
        {
            "cloud-a": ("10.1.0.1", "198.18.1.1", SYMMETRIC),
            "cloud-b": ("10.2.0.1", "198.18.2.1", SYMMETRIC),
            "onprem-1": ("192.168.1.10", "198.18.3.1", CONE),
            "onprem-2": ("192.168.2.10", "198.18.4.1", CONE),
        },
        [
            ("cloud-a", "cloud-b", "relay"),
            ("onprem-1", "cloud-a", "direct"),  # symmetric initiates to the cone side
            ("onprem-1", "cloud-b", "direct"),
            ("onprem-1", "onprem-2", "direct"),  # cone <-> cone
        ],
    ),
    "4 home lab + cloud": (
        {
            "home-1": ("192.168.1.10", "198.18.3.1", CONE),
            "home-2": ("192.168.1.11", "198.18.3.1", CONE),
            "cloud-private": ("10.1.0.2", "198.18.1.1", SYMMETRIC),
            "cloud-public": ("10.1.0.3", "198.18.1.60", PUBLIC),
            "cloud-other-vpc": ("10.2.0.2", "198.18.2.1", SYMMETRIC),
        },
        [
            ("home-1", "cloud-private", "direct"),
            ("home-1", "cloud-public", "direct"),
            ("home-1", "home-2", "direct"),  # same LAN
            ("cloud-private", "cloud-other-vpc", "relay"),
        ],
    ),
}
ROWS = [
    pytest.param(sites, a, b, mode, id=f"{name}: {a}<->{b}")
    for name, (sites, rows) in TOPOLOGIES.items()
    for a, b, mode in rows
]
BRIDGE_PORT = 40000


def peer_of(name: str, n: int, site: Site) -> RemotePeer:
    internal, public, (nat_type, mapping, filtering) = site
    return remote(
        name,
        n,
        internal,
        endpoint=(public, 51820),
        internal_endpoint=(internal, 51820),
        public_ip=public,
        nat_type=nat_type,
        nat_mapping=mapping,
        nat_filtering=filtering,
    )


def local_of(site: Site) -> LocalFacts:
    internal, public, (nat_type, mapping, filtering) = site
    return LocalFacts(public, nat_type, mapping, filtering, internal_ip=internal)


def observe(
    sites: dict[str, Site],
    me: str,
    now: float,
    answered: dict[str, tuple[str, int]] | None = None,
    handshakes: dict[str, float] | None = None,
    mesh: MeshSpec | None = None,
    relay_available: bool = True,
) -> decide.Observation:
    """What ``me`` would observe: every other site as a peer, the prober's
    answers (peer -> the endpoint that answered, just now), the device."""
    numbers = {name: i + 1 for i, name in enumerate(sites)}
    peers = {name: peer_of(name, numbers[name], site) for name, site in sites.items() if name != me}
    answered = answered or {}
    handshakes = handshakes or {}
    internal = sites[me][0]
    return decide.Observation(
        now=now,
        node=node(me, internal),
        mesh=mesh or MeshSpec(),
        peers=peers,
        device=DeviceState(
            peers={
                p.public_key: PeerState(p.public_key, last_handshake=handshakes.get(n, 0.0))
                for n, p in peers.items()
            }
        ),
        local=local_of(sites[me]),
        views={
            p.public_key: ProbeView(((answered[n], now - 0.1),)) if n in answered else ProbeView()
            for n, p in peers.items()
        },
        learned={},
        relay_available=relay_available,
        relay_endpoints={
            p.public_key: ("127.0.0.1", BRIDGE_PORT + numbers[n]) for n, p in peers.items()
        },
    )


@pytest.mark.parametrize(("sites", "a", "b", "expected"), ROWS)
def test_seed_topologies_first_pass_relays_and_probes_only_what_can_go_direct(
    sites: dict[str, Site], a: str, b: str, expected: str
) -> None:
    for me, them in ((a, b), (b, a)):
        seen = observe(sites, me, now=100.0)
        decision = decide.decide(seen, decide.Memory())
        path = decision.paths[them]
        peer = seen.peers[them]
        # Relay first: routed through the relay from the first packet.
        assert (path.transport, path.routed) == ("relay", True)
        assert (
            decision.desired.peers[peer.public_key].endpoint
            == seen.relay_endpoints[peer.public_key]
        )
        assert any(r.dst in peer.allowed_ips for r in decision.desired.routes)
        # Probing only where the published facts say a direct path can work.
        target = decision.probe_targets[peer.public_key]
        assert target.burst == (expected == "direct"), (me, them, path.rule)
        assert path.reason == ("probing" if expected == "direct" else "predicted-relay")


@pytest.mark.parametrize(("sites", "a", "b", "expected"), ROWS)
def test_seed_topologies_second_pass_follows_the_network(
    sites: dict[str, Site], a: str, b: str, expected: str
) -> None:
    """The network answers the probes of exactly the pairs the seed calls
    direct, on the first candidate (internal address behind one NAT)."""
    first = decide.decide(observe(sites, a, now=100.0), decide.Memory())
    cands = first.probe_targets[observe(sites, a, 100.0).peers[b].public_key].candidates
    answered = {b: cands[0]} if expected == "direct" else {}
    seen = observe(sites, a, now=101.0, answered=answered)
    decision = decide.decide(seen, first.memory)
    path = decision.paths[b]
    wg = decision.desired.peers[seen.peers[b].public_key]
    assert path.transport == expected
    if expected == "direct":
        assert (path.phase, path.endpoint, wg.endpoint) == ("up", cands[0], cands[0])
        assert [e.peer for e in decision.path_changes] == [b]  # relay -> direct: an Event
    else:
        assert wg.endpoint == seen.relay_endpoints[seen.peers[b].public_key]
        assert decision.paths[b] is first.paths[b]  # nothing changed: the same object
        assert decision.path_changes == []


def test_same_nat_candidates_start_with_the_internal_address() -> None:
    sites, _ = TOPOLOGIES["1 all private (cloud NAT)"]
    decision = decide.decide(observe(sites, "node-1", 100.0), decide.Memory())
    assert decision.probe_targets[key(2)].candidates[0] == ("10.1.0.2", 51820)
    assert decision.probe_targets[key(3)].candidates[0] == ("198.18.2.1", 51820)


def test_without_a_relay_paths_are_direct_and_unrouted_until_proven() -> None:
    sites, _ = TOPOLOGIES["2 mixed (private + public)"]
    seen = observe(sites, "node-2", 100.0, relay_available=False)
    decision = decide.decide(seen, decide.Memory())
    assert {p.transport for p in decision.paths.values()} == {"direct"}
    assert not any(p.routed for p in decision.paths.values())
    assert decision.desired.routes == frozenset()
    # A handshake on the guessed endpoint proves it: routed on the next pass.
    later = observe(sites, "node-2", 102.0, handshakes={"node-3": 101.5}, relay_available=False)
    after = decide.decide(later, decision.memory)
    assert after.paths["node-3"].phase == "up"
    assert after.handshakes["node-3"] == 101.5
    assert any(r.dst == ipaddress.ip_network("10.2.0.3/32") for r in after.desired.routes)


def test_mode_always_keeps_every_peer_on_the_relay_even_when_probes_answer() -> None:
    sites, _ = TOPOLOGIES["1 all private (cloud NAT)"]
    mesh = replace(MeshSpec(), relay=RelaySpec(mode="always"))
    seen = observe(sites, "node-1", 100.0, answered={"node-2": ("10.1.0.2", 51820)}, mesh=mesh)
    decision = decide.decide(seen, decide.Memory())
    assert {p.transport for p in decision.paths.values()} == {"relay"}
    assert not any(t.burst for t in decision.probe_targets.values())


def test_accept_resolves_key_conflicts_and_adds_gateway_routes() -> None:
    me = node("node-1", "10.1.0.1")
    older = remote("node-2", 2, "10.1.0.2", created="2026-01-01T00:00:00Z")
    thief = remote("node-9", 2, "10.1.0.9", created="2026-02-01T00:00:00Z")  # same key
    own = remote("node-1-copy", 7, "10.1.0.7")
    gateway = {"node-2": [ipaddress.ip_network("192.168.50.0/24")]}
    accepted = decide.accept(
        {"node-2": older, "node-9": thief, "node-1-copy": own}, key(7), me, gateway
    )
    assert set(accepted.peers) == {"node-2"}
    assert [name for name, _ in accepted.rejected] == ["node-9"]
    assert ipaddress.ip_network("192.168.50.0/24") in accepted.peers["node-2"].allowed_ips
    assert accepted.keys == {key(2): "node-2"}
    assert accepted.gateway_problems == []


def test_the_api_server_is_never_routed_into_the_tunnel() -> None:
    sites, _ = TOPOLOGIES["1 all private (cloud NAT)"]
    seen = replace(
        observe(sites, "node-1", 100.0),
        control_destinations=(ipaddress.ip_address("10.2.0.3"),),
    )
    decision = decide.decide(seen, decide.Memory())
    control = [r for r in decision.desired.rules if r.dst == ipaddress.ip_network("10.2.0.3/32")]
    assert len(control) == 1 and control[0].table == 254  # the main table


def initiation_pass(
    memory: decide.Memory, now: float, rx_bytes: int, last_ping: float, own: int = 1
) -> decide.Decision:
    """node-1 (key ``own``) and node-2 (key 2), added at t=0, no handshake yet."""
    sites, _ = TOPOLOGIES["1 all private (cloud NAT)"]
    seen = observe({k: v for k, v in sites.items() if k != "node-3"}, "node-1", now)
    peer = key(2)
    return decide.decide(
        replace(
            seen,
            own_key=key(own),
            added_at={peer: 0.0},
            device=DeviceState(peers={peer: PeerState(peer, rx_bytes=rx_bytes)}),
            views={peer: ProbeView(last_ping=last_ping)},
        ),
        memory,
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # (now, rx_bytes, last probe from its agent) per pass -> restarts per pass
        ([(0.2, 0, 0.1), (0.7, 0, 0.6), (1.0, 0, 0.9)], [None, "silent", None]),
        ([(0.2, 0, 0.0), (3.0, 0, 0.0)], [None, None]),  # its agent never probed: wait
        (
            [(0.1, 148, 0.0), (0.6, 148, 0.5), (1.2, 148, 1.1), (2.5, 148, 2.4)],
            [None, None, "crossed", None],
        ),
        ([(0.1, 148, 0.0), (0.9, 296, 0.8), (1.5, 296, 1.4)], [None, None, None]),  # more came
    ],
)
def test_restart_to_initiate_once_per_reason(
    rows: list[tuple[float, int, float]], expected: list[str | None]
) -> None:
    memory = decide.Memory()
    got: list[str | None] = []
    for now, rx, ping in rows:
        decision = initiation_pass(memory, now, rx, ping)
        reasons = [r for _, r in decision.initiations]
        assert decision.restarts == (frozenset({key(2)}) if reasons else frozenset())
        got.append(reasons[0] if reasons else None)
        memory = decision.memory
    assert got == expected


def test_only_the_lower_key_restarts() -> None:
    memory = decide.Memory()
    for now, ping in ((0.2, 0.1), (0.7, 0.6)):
        decision = initiation_pass(memory, now, 0, ping, own=9)  # our key 9 > theirs 2
        assert decision.restarts == frozenset()
        memory = decision.memory
