import ipaddress
import socket

from wirekube_agent.dataplane import diff
from wirekube_agent.model import DesiredState, Route, Rule, WgPeer
from wirekube_common.wireguard.types import DeviceState, PeerState

from .helpers import key

PRIV = key(1)
NET2 = ipaddress.ip_network("10.0.0.2/32")
NET3 = ipaddress.ip_network("10.0.0.3/32")


def desired(peers, routes=(), rules=()):  # type: ignore[no-untyped-def]
    return DesiredState(
        "wire_kube",
        51820,
        1420,
        {p.public_key: p for p in peers},
        frozenset(routes),
        frozenset(rules),
    )


def wgp(n, ep, nets, ka=25):  # type: ignore[no-untyped-def]
    return WgPeer(key(n), ep, frozenset(nets), ka)


def device(*peers: PeerState) -> DeviceState:
    return DeviceState(PRIV, 51820, 0x574B, {p.public_key: p for p in peers})


def test_in_sync_is_empty() -> None:
    want = desired([wgp(2, ("10.0.0.2", 51820), [NET2])])
    have = device(PeerState(key(2), ("10.0.0.2", 51820), frozenset([NET2]), 25))
    ops = diff.operations(want, have, [], [], {key(2): ("10.0.0.2", 51820)}, PRIV, 0x574B)
    assert ops.empty


def test_adding_one_peer_touches_only_that_peer() -> None:
    want = desired([wgp(2, ("10.0.0.2", 51820), [NET2]), wgp(3, ("10.0.0.3", 51820), [NET3])])
    have = device(PeerState(key(2), ("10.0.0.2", 51820), frozenset([NET2]), 25))
    ops = diff.operations(want, have, [], [], {key(2): ("10.0.0.2", 51820)}, PRIV, 0x574B)
    assert ops.wireguard is not None
    assert [p.public_key for p in ops.wireguard.peers] == [key(3)]
    (p,) = ops.wireguard.peers
    assert (p.endpoint, p.allowed_ips, p.persistent_keepalive) == (("10.0.0.3", 51820), (NET3,), 25)
    assert ops.wireguard.private_key is None and ops.wireguard.listen_port is None


def test_removed_peer_is_removed() -> None:
    have = device(PeerState(key(2), None, frozenset([NET2]), 25))
    ops = diff.operations(desired([]), have, [], [], {}, PRIV, 0x574B)
    assert ops.wireguard is not None
    assert [(p.public_key, p.remove) for p in ops.wireguard.peers] == [(key(2), True)]


def test_roamed_endpoint_is_not_fought() -> None:
    want = desired([wgp(2, ("198.18.0.2", 51820), [NET2])])
    roamed = device(PeerState(key(2), ("198.18.0.2", 40123), frozenset([NET2]), 25))
    ops = diff.operations(want, roamed, [], [], {key(2): ("198.18.0.2", 51820)}, PRIV, 0x574B)
    assert ops.empty
    # ...but a change of *our* choice is applied, alone
    want2 = desired([wgp(2, ("198.18.0.9", 51820), [NET2])])
    ops2 = diff.operations(want2, roamed, [], [], {key(2): ("198.18.0.2", 51820)}, PRIV, 0x574B)
    assert ops2.wireguard is not None
    (p,) = ops2.wireguard.peers
    assert (p.endpoint, p.allowed_ips, p.persistent_keepalive) == (
        ("198.18.0.9", 51820),
        None,
        None,
    )
    assert ops2.endpoints == {key(2): ("198.18.0.9", 51820)}


def test_device_settings_and_routes_and_rules() -> None:
    r2 = Route(NET2, "wire_kube")
    stale = Route(NET3, "wire_kube")
    rule = Rule(31172, 22347, socket.AF_INET)
    foreign_prio_rule = Rule(31170, 254, socket.AF_INET, fwmark=0x574B)
    want = desired([], routes=[r2], rules=[rule])
    have = DeviceState(None, 0, 0, {})
    ops = diff.operations(want, have, [stale], [foreign_prio_rule], {}, PRIV, 0x574B)
    assert ops.wireguard is not None
    assert (ops.wireguard.private_key, ops.wireguard.listen_port, ops.wireguard.fwmark) == (
        PRIV,
        51820,
        0x574B,
    )
    assert ops.routes_replace == (r2,) and ops.routes_delete == (stale,)
    assert ops.rules_add == (rule,) and ops.rules_delete == (foreign_prio_rule,)


def test_changed_route_source_is_replaced() -> None:
    old = Route(NET2, "wire_kube", ipaddress.ip_address("10.0.0.1"))
    new = Route(NET2, "wire_kube", ipaddress.ip_address("10.0.0.9"))
    ops = diff.operations(desired([], routes=[new]), device(), [old], [], {}, PRIV, 0x574B)
    assert ops.routes_replace == (new,) and ops.routes_delete == ()


def test_roaming_across_transports_is_corrected() -> None:
    bridge = ("127.0.0.1", 40001)
    want = desired([wgp(2, ("198.18.0.2", 51820), [NET2])])
    # we chose direct; the peer still relays, so WireGuard roamed back to the bridge
    roamed = device(PeerState(key(2), bridge, frozenset([NET2]), 25))
    ops = diff.operations(want, roamed, [], [], {key(2): ("198.18.0.2", 51820)}, PRIV, 0x574B)
    assert ops.wireguard is not None
    assert ops.wireguard.peers[0].endpoint == ("198.18.0.2", 51820)
    # and the other way round
    want_relay = desired([wgp(2, bridge, [NET2])])
    direct = device(PeerState(key(2), ("198.18.0.2", 40123), frozenset([NET2]), 25))
    ops = diff.operations(want_relay, direct, [], [], {key(2): bridge}, PRIV, 0x574B)
    assert ops.wireguard is not None and ops.wireguard.peers[0].endpoint == bridge


def test_roaming_away_from_a_chosen_site_local_address_is_corrected() -> None:
    internal = ("10.1.0.10", 51820)
    want = desired([wgp(2, internal, [NET2])])
    # the peer's packets came round through the VPC's NAT gateway (hairpin)
    hairpin = device(PeerState(key(2), ("198.18.1.1", 27059), frozenset([NET2]), 25))
    ops = diff.operations(want, hairpin, [], [], {key(2): internal}, PRIV, 0x574B)
    assert ops.wireguard is not None and ops.wireguard.peers[0].endpoint == internal
    # roaming within the site (another internal address) is left alone
    moved = device(PeerState(key(2), ("10.1.0.99", 51820), frozenset([NET2]), 25))
    assert diff.operations(want, moved, [], [], {key(2): internal}, PRIV, 0x574B).empty


def test_restart_recreates_only_that_peer() -> None:
    want = desired([wgp(2, ("198.18.0.2", 51820), [NET2]), wgp(3, ("198.18.0.3", 51820), [NET3])])
    have = device(
        PeerState(key(2), ("198.18.0.2", 51820), frozenset([NET2]), 25),
        PeerState(key(3), ("198.18.0.3", 51820), frozenset([NET3]), 25),
    )
    applied = {key(2): ("198.18.0.2", 51820), key(3): ("198.18.0.3", 51820)}
    ops = diff.operations(want, have, [], [], applied, PRIV, 0x574B, restart=[key(2), key(9)])
    assert ops.wireguard is not None
    assert [(p.public_key, p.remove) for p in ops.wireguard.peers] == [
        (key(2), True),
        (key(2), False),
    ]
    readd = ops.wireguard.peers[1]
    assert (readd.endpoint, readd.allowed_ips, readd.persistent_keepalive) == (
        ("198.18.0.2", 51820),
        (NET2,),
        25,
    )
