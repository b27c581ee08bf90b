"""Where the relay links connect, as a pure function of the mesh spec. Pure.

``relay_target``: mesh spec (+ the managed relay's Service object and the
Nodes' addresses) → the relay addresses or DNS name to hold links to, how
the links leave the node, or the reason there is none. Providers:

* ``external``: ``spec.relay.external.endpoint``; a DNS name is re-resolved
  every 30 s (a headless Service for a relay pool), an IP is used as is.
* ``managed``: the relay Service's externally reachable address, chosen by
  the rule the controller also uses for the mesh's ``status.relay``
  (``wirekube_common.relayaddress``): ``spec.externalIPs``, then
  ``status.loadBalancer.ingress``, then a NodePort on a node's address —
  a node ExternalIP (the one in the mesh status while it stays valid) over
  this node's InternalIP. Never the ClusterIP: on a hybrid or NAT'd node that
  is reachable only through the mesh the relay is there to build.

How the links leave the node is decided here as configuration
(``EgressConfig``: the external relay's ``transport``, ``serverName`` and
``proxy``, and the agent's own half, ``LocalEgress``); the proxy URL is
parsed and ``NO_PROXY`` applied where the links are made
(``relaying.manager.resolve_egress``, with urllib's semantics).

``lookups`` is when to read what ``relay_target`` needs from the API (the
Service, the Node list): the reconciler reads them, this module decides when.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_agent.model import NodeInfo
from wirekube_agent.timers import RELAY_NODES_REFRESH_S, RESYNC_INTERVAL_S
from wirekube_common.crd import MeshSpec
from wirekube_common.relayaddress import NodeAddresses, choose, needs_nodes


@dataclass(frozen=True)
class LocalEgress:
    """The agent's own half of how relay links leave the node."""

    ca_file: str | None = None
    proxy_credentials_file: str | None = None
    proxy_env: tuple[tuple[str, str], ...] = ()  # the PROXY_ENV variables that are set


@dataclass(frozen=True)
class EgressConfig:
    """How the links to an external relay leave the node, as configured:
    ``transport`` (``tcp`` | ``tls``), the relay's ``host`` (the default TLS
    name; ``NO_PROXY`` is matched against it), ``server_name``, the mesh's
    explicit ``proxy`` URL and the agent's ``local`` half."""

    transport: str = "tcp"
    host: str = ""
    server_name: str | None = None
    proxy: str | None = None
    local: LocalEgress = field(default_factory=LocalEgress)


@dataclass(frozen=True)
class DnsName:
    """A DNS name whose A and AAAA records are the relay replicas (the pool
    re-resolves it), all on ``port``."""

    name: str
    port: int = 3478
    nameservers: tuple[str, ...] = ()
    nameserver_port: int = 53


@dataclass(frozen=True)
class RelayTarget:
    addresses: tuple[tuple[str, int], ...] = ()
    dns: DnsName | None = None
    reason: str = ""  # why there is no relay, when there is none
    egress: EgressConfig | None = None  # None: plain TCP, no proxy (the managed relay)

    @property
    def configured(self) -> bool:
        return bool(self.addresses) or self.dns is not None

    @property
    def static_addresses(self) -> list[tuple[str, int]] | None:
        """The fixed replica addresses (None: the replicas come from ``dns``)."""
        return list(self.addresses) if self.dns is None else None


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {hostport!r}")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def relay_target(
    mesh: MeshSpec,
    node: NodeInfo,
    service: Mapping[str, Any] | None = None,
    dns_server: str | None = None,
    nodes: Iterable[NodeAddresses] = (),
    current: str | None = None,
    local: LocalEgress | None = None,
) -> RelayTarget:
    """``nodes``: every Node (only needed for a NodePort; this node is always
    a candidate); ``current``: the host the controller chose (mesh status)."""
    relay = mesh.relay
    if relay.mode == "never":
        return RelayTarget(reason="relay mode is never")
    provider = relay.provider or ("external" if relay.external else None)
    if provider == "external":
        if relay.external is None:
            return RelayTarget(reason="provider external without external.endpoint")
        try:
            host, port = _split(relay.external.endpoint)
        except ValueError as exc:
            return RelayTarget(reason=str(exc))
        egress = EgressConfig(
            transport=relay.external.transport,
            host=host,
            server_name=relay.external.server_name,
            proxy=relay.external.proxy,
            local=local or LocalEgress(),
        )
        if _is_ip(host):
            return RelayTarget(addresses=((host, port),), egress=egress)
        servers = (dns_server,) if dns_server else ()
        return RelayTarget(dns=DnsName(host, port, servers), egress=egress)
    if provider == "managed":
        port = relay.managed.port if relay.managed else 3478
        own = NodeAddresses(
            node.name,
            tuple(str(ip) for ip in node.internal_ips),
            tuple(str(ip) for ip in node.external_ips),
        )
        others = [n for n in nodes if n.name != node.name]
        address = choose(service, [own, *others], port, local=node.name, current=current)
        if not address.found:
            return RelayTarget(reason=address.reason)
        if address.is_ip:
            return RelayTarget(addresses=((address.host, address.port),))
        return RelayTarget(dns=DnsName(address.host, address.port))
    return RelayTarget(reason="no relay provider configured")


@dataclass(frozen=True)
class Lookups:
    """When the managed relay's Service and the Node list were last read, and
    for which controller choice (the mesh status host) the Nodes were listed."""

    service_at: float = -RESYNC_INTERVAL_S
    nodes_at: float = -RELAY_NODES_REFRESH_S
    nodes_for: tuple[str | None] | None = None


def uses_service(mesh: MeshSpec) -> bool:
    """Only a managed relay in use has a Service to read."""
    return mesh.relay.provider == "managed" and mesh.relay.mode != "never"


def service_due(mesh: MeshSpec, lookups: Lookups, now: float) -> bool:
    """Read the managed relay's Service now? At the resync pace (only a read
    made moves ``service_at``: a failed one is retried on the next pass)."""
    return uses_service(mesh) and now - lookups.service_at >= RESYNC_INTERVAL_S


def nodes_due(
    service: Mapping[str, Any] | None, current: str | None, lookups: Lookups, now: float
) -> bool:
    """List the Nodes now? Only a NodePort needs them (the address may be
    another node's ExternalIP): every ``RELAY_NODES_REFRESH_S``, or at the
    resync pace once the controller's choice moved away from what we listed for."""
    age = now - lookups.nodes_at
    moved = lookups.nodes_for != (current,) and age >= RESYNC_INTERVAL_S
    return needs_nodes(service) and (moved or age >= RELAY_NODES_REFRESH_S)
