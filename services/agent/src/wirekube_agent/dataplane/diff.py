"""Desired state vs what the kernel reports → the operations to apply. Pure.

The operations touch only what differs, so adding, changing or removing one peer
never disturbs the others (no interface restart, unlike wg-quick down/up).

Endpoints are special: WireGuard roams — when a peer's packets arrive from a
new address (its NAT rebound the port, it moved networks), WireGuard updates
the endpoint itself, and that learned address is better than the published
one. So an endpoint is written only when *our* choice changes (tracked in
``applied_endpoints``) or the peer is new, never merely because the kernel's
view drifted from it — with one exception: roaming *across transports* (from
the relay bridge on 127.0.0.1 to a public address or back) is ours to decide,
so such a drift is corrected; and so is roaming *away* from a site-local
address we chose (RFC 1918, ULA) to one that is not: there is no NAT between
two nodes of one network to rebind, so packets from elsewhere came the long
way round (a VPC's NAT gateway hairpinning a public address) while the
peer's path was still settling, and the network's own path is the one to keep.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wirekube_agent.model import DesiredState, Endpoint, Route, Rule
from wirekube_common.wireguard.types import DeviceConfig, DeviceState, PeerConfig


@dataclass(frozen=True)
class Operations:
    """What to change. Peers are only ever removed, added or updated one by one;
    a *restart* (remove + add in one request) makes WireGuard initiate a
    handshake at once; ``initiate`` decides when that is safe."""

    wireguard: DeviceConfig | None = None
    routes_delete: tuple[Route, ...] = ()
    routes_replace: tuple[Route, ...] = ()
    rules_add: tuple[Rule, ...] = ()
    rules_delete: tuple[Rule, ...] = ()
    # The endpoints these operations set, to be merged into `applied_endpoints` once
    # the WireGuard change succeeded.
    endpoints: Mapping[bytes, Endpoint | None] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.wireguard
            or self.routes_delete
            or self.routes_replace
            or self.rules_add
            or self.rules_delete
        )


def operations(
    desired: DesiredState,
    observed: DeviceState,
    observed_routes: Iterable[Route],
    observed_rules: Iterable[Rule],
    applied_endpoints: Mapping[bytes, Endpoint | None],
    private_key: bytes,
    fwmark: int,
    restart: Iterable[bytes] = (),
) -> Operations:
    """``restart``: peers to remove and re-add at once (see ``Operations``)."""
    peer_ops: list[PeerConfig] = []
    endpoints: dict[bytes, Endpoint | None] = {}
    restarts = {k for k in restart if k in desired.peers and k in observed.peers}
    for key in sorted(desired.peers):
        want = desired.peers[key]
        have = observed.peers.get(key)
        if key in restarts:
            # A peer that never completed a handshake, re-created: WireGuard
            # sends a fresh initiation at once instead of after its 5 s retry
            # timer. Nothing is lost: there is no session to lose.
            peer_ops.append(PeerConfig(public_key=key, remove=True))
            have = None
        new = have is None
        endpoint_changed = (
            new
            or applied_endpoints.get(key) != want.endpoint
            or _crossed_transport(want.endpoint, have.endpoint if have else None)
            or _left_the_site(want.endpoint, have.endpoint if have else None)
        )
        allowed_changed = new or have.allowed_ips != want.allowed_ips
        keepalive_changed = new or have.persistent_keepalive != want.persistent_keepalive
        if (
            not (endpoint_changed and want.endpoint)
            and not allowed_changed
            and not keepalive_changed
        ):
            if endpoint_changed:
                endpoints[key] = want.endpoint
            continue
        peer_ops.append(
            PeerConfig(
                public_key=key,
                endpoint=want.endpoint if endpoint_changed else None,
                allowed_ips=tuple(sorted(want.allowed_ips, key=str)) if allowed_changed else None,
                persistent_keepalive=want.persistent_keepalive if keepalive_changed else None,
            )
        )
        if endpoint_changed:
            endpoints[key] = want.endpoint
    # Peers that go, after the ones that come: a peer swapped for a new key
    # (key rotation) hands its allowedIPs to its successor first (WireGuard
    # moves an allowed IP to the peer that is given it), so no packet finds
    # the prefix without a peer while the old entry is being torn down.
    for key in sorted(observed.peers.keys() - desired.peers.keys()):
        peer_ops.append(PeerConfig(public_key=key, remove=True))
    device_changed = (
        observed.private_key != private_key
        or observed.listen_port != desired.listen_port
        or observed.fwmark != fwmark
    )
    wireguard = None
    if peer_ops or device_changed:
        wireguard = DeviceConfig(
            private_key=private_key if observed.private_key != private_key else None,
            listen_port=desired.listen_port
            if observed.listen_port != desired.listen_port
            else None,
            fwmark=fwmark if observed.fwmark != fwmark else None,
            peers=tuple(peer_ops),
        )

    have_routes = {r.key(): r for r in observed_routes}
    want_routes = {r.key(): r for r in desired.routes}
    routes_delete = tuple(r for k, r in sorted(have_routes.items(), key=_k) if k not in want_routes)
    routes_replace = tuple(
        r for k, r in sorted(want_routes.items(), key=_k) if have_routes.get(k) != r
    )

    have_rules = {r.key(): r for r in observed_rules}
    want_rules = {r.key(): r for r in desired.rules}
    rules_add = tuple(r for k, r in sorted(want_rules.items(), key=_k) if have_rules.get(k) != r)
    rules_delete = tuple(r for k, r in sorted(have_rules.items(), key=_k) if want_rules.get(k) != r)
    return Operations(wireguard, routes_delete, routes_replace, rules_add, rules_delete, endpoints)


def _crossed_transport(want: Endpoint | None, have: Endpoint | None) -> bool:
    """True when WireGuard roamed between the relay bridge and a direct address."""
    if want is None or have is None:
        return False
    return _is_loopback(want[0]) != _is_loopback(have[0])


_SITE_LOCAL = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _left_the_site(want: Endpoint | None, have: Endpoint | None) -> bool:
    """True when WireGuard roamed from the site-local address we chose to an
    address outside the site-local ranges (not the relay bridge)."""
    if want is None or have is None or want == have or _is_loopback(have[0]):
        return False
    return _site_local(want[0]) and not _site_local(have[0])


def _site_local(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in _SITE_LOCAL if net.version == addr.version)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _k(item: tuple[object, object]) -> str:
    return str(item[0])
