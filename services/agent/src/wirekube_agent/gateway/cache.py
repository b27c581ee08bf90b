"""What the WireKubeGateways ask of this node, from the agent's caches.

Two answers per reconcile pass, both computed by ``wirekube_common.gateway``
(shared with the controller, so both sides agree exactly):

* as a **client**: which gateway CIDRs go into which WireGuard peer's
  AllowedIPs (the gateway's ``status.activePeer``); ``dataplane.desired`` adds them to
  the accepted peers, so they get routes exactly when that peer's path is
  routed, like its /32;
* as an **active gateway peer**: its duties (forward, SNAT), which
  ``gateway.forwarding`` turns into IP forwarding and nftables rules.

``GatewayCache`` holds the parsed gateways. The gateway informer's thread
feeds it on every change (``update``), so a malformed object is logged once
per version rather than once per pass, and the health reporter is fed from the
same parse. ``assignment`` is memoised on the gateways' version and the peers'
resourceVersions: a cluster without gateways pays nothing, and one with
gateways recomputes only when a peer or gateway object changed.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_agent.k8s.parsed import ParsedCache
from wirekube_agent.model import IPNetwork
from wirekube_common import gateway as gwlib
from wirekube_common.crd import Gateway, InvalidObject, Peer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayAssignment:
    # WireGuard peer name -> extra AllowedIPs (this node as a client)
    routes: Mapping[str, tuple[IPNetwork, ...]] = field(default_factory=dict)
    # What this node does as the active peer of some gateways
    duties: tuple[gwlib.GatewayDuty, ...] = ()


EMPTY = GatewayAssignment()


def assign(
    peer_name: str, gateways: Iterable[Gateway], peers: Mapping[str, Peer]
) -> GatewayAssignment:
    """This node's client routes and gateway duties. Pure."""
    gateways = list(gateways)
    if not gateways or peer_name not in peers:
        return EMPTY
    routes = {
        via: tuple(ipaddress.ip_network(c) for c in cidrs)
        for via, cidrs in gwlib.extra_allowed_ips(peer_name, gateways, peers).items()
    }
    return GatewayAssignment(routes, tuple(gwlib.duties_for(peer_name, gateways, peers)))


def parse_gateways(
    objects: Mapping[str, Mapping[str, Any]], rejected: dict[str, str]
) -> list[Gateway]:
    """Gateway objects → models; a malformed one is skipped and logged once
    per resourceVersion (``rejected``: name -> resourceVersion, updated)."""
    out: list[Gateway] = []
    for name, obj in sorted(objects.items()):
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        try:
            out.append(Gateway.from_dict(obj))
        except InvalidObject as exc:
            if rejected.get(name) != rv:
                log.warning("ignoring malformed WireKubeGateway %s: %s", name, exc)
            rejected[name] = rv
            continue
        rejected.pop(name, None)
    for name in rejected.keys() - objects.keys():
        del rejected[name]
    return out


class GatewayCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gateways: tuple[Gateway, ...] = ()
        self._version = 0
        self._rejected: dict[str, str] = {}
        self._peers = ParsedCache(self._peer_model)
        self._memo: tuple[object, GatewayAssignment] | None = None
        self.last: GatewayAssignment = EMPTY  # the latest assignment (for metrics)

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        with self._lock:
            return self._gateways

    def update(self, objects: Mapping[str, Mapping[str, Any]]) -> list[Gateway]:
        """Called with the informer's snapshot after each change (any thread)."""
        with self._lock:
            parsed = parse_gateways(objects, self._rejected)
            if tuple(parsed) != self._gateways:
                self._gateways = tuple(parsed)
                self._version += 1
        return parsed

    def assignment(
        self, peer_name: str, peer_objects: Callable[[], Mapping[str, Mapping[str, Any]]]
    ) -> GatewayAssignment:
        """``peer_objects``: the WireKubePeer cache (ours included), read only
        when some gateway exists."""
        with self._lock:
            gateways, version = self._gateways, self._version
        if not gateways:
            self._memo = None
            self.last = EMPTY
            return EMPTY
        objects = peer_objects()
        versions = tuple(
            sorted(
                (n, str((o.get("metadata") or {}).get("resourceVersion", "")))
                for n, o in objects.items()
            )
        )
        key = (version, peer_name, versions)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        peers = self._peers.update(objects)
        result = assign(peer_name, gateways, peers)
        self._memo = (key, result)
        self.last = result
        return result

    @staticmethod
    def _peer_model(name: str, obj: Mapping[str, Any]) -> Peer | None:
        try:
            return Peer.from_dict(obj)
        except InvalidObject:
            return None  # the reconciler reports bad peers already
