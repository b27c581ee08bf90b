"""Client selection and route assignment for WireKubeGateways (pure)."""

from __future__ import annotations

from typing import Any

import yaml

from wirekube_common.crd import Gateway, Peer
from wirekube_common.gateway import (
    GatewayDuty,
    InjectedRoute,
    active_routes_for,
    clients_for,
    duties_for,
    extra_allowed_ips,
    invalid_routes,
    is_same_cidr,
    route_networks,
    routes_injected,
    usable_active_peer,
)

KEY = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="


def peer(name: str, *allowed: str, passive: bool = False) -> Peer:
    spec: dict[str, Any] = {"publicKey": KEY}
    if not passive:
        spec["allowedIPs"] = list(allowed)
    return Peer.from_dict({"metadata": {"name": name}, "spec": spec})


def gateway(text: str) -> Gateway:
    return Gateway.from_dict(yaml.safe_load(text))


MESH = {
    p.name: p
    for p in [
        peer("node-a1", "10.0.0.1/32"),
        peer("node-a2", "10.0.0.2/32"),
        peer("node-b1", "172.20.1.10/32"),
        peer("node-b2", "172.20.1.11/32"),
        peer("node-b3", "172.20.1.12/32"),  # in VPC-B, not a gateway: same-CIDR peer
        peer("node-c1", "192.168.5.1/32"),
        peer("node-idle", passive=True),
    ]
}

VPC_B = """
metadata: {name: vpc-b-gateway}
spec:
  peerRefs: [node-b1, node-b2]
  routes:
    - {cidr: 172.20.0.0/16, description: VPC-B subnet}
  snat: {enabled: true, sourceIP: ""}
status: {activePeer: node-b1}
"""


def test_empty_client_refs_means_every_peer_but_gateway_same_cidr_and_passive_ones() -> None:
    assert clients_for(gateway(VPC_B), MESH) == {"node-a1", "node-a2", "node-c1"}
    # Iterable of peers works as well as a mapping.
    assert clients_for(gateway(VPC_B), list(MESH.values())) == {"node-a1", "node-a2", "node-c1"}


def test_explicit_client_refs_are_honoured_minus_impossible_clients() -> None:
    gw = gateway(
        VPC_B.replace(
            "peerRefs: [node-b1, node-b2]",
            "peerRefs: [node-b1, node-b2]\n  clientRefs: [node-a1, node-b2, node-b3, node-idle, node-gone]",
        )
    )
    assert clients_for(gw, MESH) == {"node-a1"}


def test_same_cidr_is_any_overlap_in_either_direction() -> None:
    nets = route_networks(gateway(VPC_B))
    assert is_same_cidr(peer("x", "172.20.9.9/32"), nets)
    assert is_same_cidr(peer("x", "10.0.0.9/32", "172.16.0.0/12"), nets)  # advertises a supernet
    assert not is_same_cidr(peer("x", "172.21.0.1/32"), nets)
    assert not is_same_cidr(peer("x", "fd00::1/128"), nets)  # other family never overlaps


def test_routes_are_normalised_and_deduplicated_in_order() -> None:
    gw = gateway(
        VPC_B.replace(
            "- {cidr: 172.20.0.0/16, description: VPC-B subnet}",
            "- {cidr: 172.20.3.4/16}\n    - {cidr: 10.9.0.0/24}\n    - {cidr: 172.20.0.0/16}\n    - {cidr: 300.1.1.1/8}",
        )
    )
    assert [str(n) for n in route_networks(gw)] == ["172.20.0.0/16", "10.9.0.0/24"]
    assert invalid_routes(gw) == ["300.1.1.1/8"]


def test_client_gets_the_routes_via_the_active_peer() -> None:
    gw = gateway(VPC_B)
    assert active_routes_for("node-a1", [gw], MESH) == [
        InjectedRoute("172.20.0.0/16", "node-b1", "vpc-b-gateway")
    ]
    assert extra_allowed_ips("node-a1", [gw], MESH) == {"node-b1": ("172.20.0.0/16",)}
    # Gateway peers, same-CIDR peers, passive and unknown peers get nothing.
    for name in ("node-b1", "node-b2", "node-b3", "node-idle", "node-unknown"):
        assert active_routes_for(name, [gw], MESH) == []


def test_no_routes_without_a_usable_active_peer() -> None:
    no_active = gateway(VPC_B.replace("status: {activePeer: node-b1}", "status: {}"))
    missing = gateway(VPC_B.replace("activePeer: node-b1", "activePeer: node-zz"))
    passive = gateway(VPC_B.replace("activePeer: node-b1", "activePeer: node-idle"))
    for gw in (no_active, missing, passive):
        assert usable_active_peer(gw, MESH) is None
        assert active_routes_for("node-a1", [gw], MESH) == []
        assert routes_injected(gw, [gw], MESH) == 0


def test_same_cidr_from_two_gateways_goes_to_the_first_by_name_per_client() -> None:
    first = gateway(VPC_B.replace("vpc-b-gateway", "a-first"))
    second = gateway(
        VPC_B.replace("vpc-b-gateway", "b-second")
        .replace("[node-b1, node-b2]", "[node-c1]")
        .replace("activePeer: node-b1", "activePeer: node-c1")
    )
    routes = active_routes_for("node-a1", [second, first], MESH)
    assert routes == [InjectedRoute("172.20.0.0/16", "node-b1", "a-first")]
    assert routes_injected(first, [first, second], MESH) == 1
    assert routes_injected(second, [first, second], MESH) == 0
    # When the first gateway serves only node-a2, the second still carries the
    # CIDR for node-a1 (conflicts are per client).
    narrowed = gateway(
        VPC_B.replace("vpc-b-gateway", "a-first").replace(
            "peerRefs: [node-b1, node-b2]", "peerRefs: [node-b1, node-b2]\n  clientRefs: [node-a2]"
        )
    )
    assert routes_injected(second, [narrowed, second], MESH) == 1
    assert active_routes_for("node-a1", [narrowed, second], MESH) == [
        InjectedRoute("172.20.0.0/16", "node-c1", "b-second")
    ]


def test_overlapping_but_different_cidrs_coexist() -> None:
    wide = gateway(VPC_B.replace("vpc-b-gateway", "wide"))
    narrow = gateway(
        VPC_B.replace("vpc-b-gateway", "narrow")
        .replace("172.20.0.0/16", "172.20.5.0/24")
        .replace("[node-b1, node-b2]", "[node-c1]")
        .replace("activePeer: node-b1", "activePeer: node-c1")
    )
    got = {(r.cidr, r.via) for r in active_routes_for("node-a1", [wide, narrow], MESH)}
    assert got == {("172.20.0.0/16", "node-b1"), ("172.20.5.0/24", "node-c1")}


def test_a_route_equal_to_a_mesh_peers_address_is_never_injected() -> None:
    gw = gateway(
        VPC_B.replace(
            "- {cidr: 172.20.0.0/16, description: VPC-B subnet}",
            "- {cidr: 172.20.0.0/16}\n    - {cidr: 192.168.5.1/32}",
        ).replace(
            "peerRefs: [node-b1, node-b2]", "peerRefs: [node-b1, node-b2]\n  clientRefs: [node-a1]"
        )
    )
    assert [r.cidr for r in active_routes_for("node-a1", [gw], MESH)] == ["172.20.0.0/16"]
    assert routes_injected(gw, [gw], MESH) == 1


def test_routes_injected_counts_distinct_cidrs_the_active_peer_carries() -> None:
    gw = gateway(
        VPC_B.replace(
            "- {cidr: 172.20.0.0/16, description: VPC-B subnet}",
            "- {cidr: 172.20.0.0/16}\n    - {cidr: 172.20.0.0/16}\n    - {cidr: 10.50.0.0/16}",
        )
    )
    assert routes_injected(gw, [gw], MESH) == 2
    lonely = gateway(
        VPC_B.replace(
            "peerRefs: [node-b1, node-b2]", "peerRefs: [node-b1]\n  clientRefs: [node-gone]"
        )
    )
    assert routes_injected(lonely, [lonely], MESH) == 0  # no client: nothing carried


def test_duties_of_the_active_gateway_peer() -> None:
    gw = gateway(VPC_B)
    assert duties_for("node-b1", [gw], MESH) == [
        GatewayDuty(
            gateway="vpc-b-gateway",
            cidrs=("172.20.0.0/16",),
            snat=True,
            snat_source="172.20.1.10",
            client_sources=("10.0.0.1/32", "10.0.0.2/32", "192.168.5.1/32"),
        )
    ]
    assert duties_for("node-b2", [gw], MESH) == []
    explicit = gateway(VPC_B.replace('sourceIP: ""', "sourceIP: 172.20.1.200"))
    assert duties_for("node-b1", [explicit], MESH)[0].snat_source == "172.20.1.200"
    no_snat = gateway(VPC_B.replace('  snat: {enabled: true, sourceIP: ""}\n', ""))
    duty = duties_for("node-b1", [no_snat], MESH)[0]
    assert (duty.snat, duty.snat_source) == (False, None)
