"""Where agents reach the managed relay: one rule, shared by the agent (which
connects there) and the controller (which says in the mesh status what it is).

Pure: the relay Service and the Nodes (plain API dicts) in, a ``RelayAddress``
out — the host, the port, which source gave it and a sentence saying why.

Order (crd-reference.txt): the Service's ``spec.externalIPs``, then its
``status.loadBalancer.ingress``, then a NodePort on a node address. Never the
ClusterIP: a hybrid or NAT'd node reaches it only through the mesh the relay
is there to build.

For a NodePort the node matters. A node's InternalIP is usually a private
address that a node behind NAT elsewhere cannot reach, so the rule prefers a
node with an ExternalIP, cluster-wide (the Service's
``externalTrafficPolicy: Cluster`` lets any node forward to any replica):

1. ``current`` — the address in use — while it is still an ExternalIP of a
   usable node (sticky: a node joining with a name that sorts first moves
   nobody);
2. else the ExternalIP of the first usable node by (Ready before unknown,
   name); a node whose Ready condition is False is not usable (its kube-proxy
   may be gone with it);
3. no node has an ExternalIP: the caller's own node's InternalIP when there is
   a caller node (kube-proxy on it forwards locally), else the first usable
   node's InternalIP, saying that only nodes on its network can reach it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EXTERNAL_IP = "ExternalIP"
LOAD_BALANCER = "LoadBalancer"
NODE_PORT = "NodePort"


@dataclass(frozen=True)
class NodeAddresses:
    name: str
    internal: tuple[str, ...] = ()
    external: tuple[str, ...] = ()
    ready: bool | None = None  # None: the Node reports no Ready condition

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> NodeAddresses:
        """Tolerant: addresses that are not IPs are skipped."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        internal: list[str] = []
        external: list[str] = []
        for addr in status.get("addresses") or []:
            if not isinstance(addr, Mapping):
                continue
            text = str(addr.get("address", ""))
            if not _is_ip(text):
                continue
            if addr.get("type") == "InternalIP":
                internal.append(text)
            elif addr.get("type") == "ExternalIP":
                external.append(text)
        ready: bool | None = None
        for cond in status.get("conditions") or []:
            if isinstance(cond, Mapping) and cond.get("type") == "Ready":
                ready = cond.get("status") == "True"
        return cls(str(meta.get("name", "")), tuple(internal), tuple(external), ready)


@dataclass(frozen=True)
class RelayAddress:
    host: str = ""  # an IP, or a DNS name (a load balancer's hostname); "" = none
    port: int = 0
    source: str = ""  # EXTERNAL_IP, LOAD_BALANCER or NODE_PORT
    reason: str = ""  # why this address, or why there is none
    node: str = ""  # the node whose address it is (NodePort only)

    @property
    def found(self) -> bool:
        return bool(self.host)

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _service_port(spec: Mapping[str, Any], port: int) -> Mapping[str, Any] | None:
    ports = [p for p in spec.get("ports") or [] if isinstance(p, Mapping)]
    return next((p for p in ports if p.get("port") == port), ports[0] if ports else None)


def choose(
    service: Mapping[str, Any] | None,
    nodes: Iterable[NodeAddresses],
    port: int,
    *,
    local: str | None = None,
    current: str | None = None,
) -> RelayAddress:
    """The relay address for ``service`` (the managed relay's Service).

    ``port``: spec.relay.managed.port (selects the Service port); ``local``:
    the caller's node name (agents), None for the controller; ``current``: the
    host in use now, kept while still valid."""
    if not service:
        return RelayAddress(reason="the managed relay Service does not exist (yet)")
    spec = service.get("spec") or {}
    match = _service_port(spec, port)
    if match is None:
        return RelayAddress(reason="the managed relay Service has no ports")
    service_port = int(match.get("port") or port)
    ips = [str(ip) for ip in spec.get("externalIPs") or [] if _is_ip(str(ip))]
    if ips:
        return RelayAddress(
            ips[0], service_port, EXTERNAL_IP, "the Service's first spec.externalIPs entry"
        )
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for entry in ingress:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("ip"):
            return RelayAddress(
                str(entry["ip"]), service_port, LOAD_BALANCER, "the load balancer's ingress IP"
            )
        if entry.get("hostname"):
            return RelayAddress(
                str(entry["hostname"]),
                service_port,
                LOAD_BALANCER,
                "the load balancer's ingress hostname",
            )
    node_port = match.get("nodePort")
    if not isinstance(node_port, int) or not 0 < node_port < 65536:
        return RelayAddress(
            reason=f"the Service ({spec.get('type', 'ClusterIP')}) has no external IP, "
            "load-balancer ingress or NodePort; agents never use a ClusterIP"
        )
    return _node_port(list(nodes), node_port, local, current)


def _node_port(
    nodes: list[NodeAddresses], node_port: int, local: str | None, current: str | None
) -> RelayAddress:
    usable = sorted(
        (n for n in nodes if n.ready is not False),
        key=lambda n: (n.ready is not True, n.name),
    )

    # The same sentence whether the address was kept or chosen afresh, so a
    # status that says it does not change when nothing else does.
    def external(n: NodeAddresses, ip: str) -> RelayAddress:
        why = (
            f"node {n.name}'s ExternalIP: preferred over InternalIPs, which NAT'd nodes "
            "elsewhere cannot reach"
        )
        return RelayAddress(ip, node_port, NODE_PORT, why, n.name)

    for n in usable:
        if current and current in n.external:
            return external(n, current)
    for n in usable:
        if n.external:
            return external(n, n.external[0])
    own = next((n for n in usable if n.name == local), None)
    if own is not None and own.internal:
        return RelayAddress(
            own.internal[0],
            node_port,
            NODE_PORT,
            "no node has an ExternalIP: this node's own InternalIP (its kube-proxy forwards)",
            own.name,
        )
    first = next((n for n in usable if n.internal), None)
    if first is None:
        return RelayAddress(reason="the Service is a NodePort but no usable node has an address")
    return RelayAddress(
        first.internal[0],
        node_port,
        NODE_PORT,
        f"no node has an ExternalIP: node {first.name}'s InternalIP, reachable only from "
        "its own network (each agent uses its own node's InternalIP)",
        first.name,
    )


def needs_nodes(service: Mapping[str, Any] | None) -> bool:
    """Whether ``choose`` would fall through to a NodePort (and so needs the
    Nodes): callers that list Nodes on demand ask this first."""
    if not service:
        return False
    spec = service.get("spec") or {}
    if any(_is_ip(str(ip)) for ip in spec.get("externalIPs") or []):
        return False
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if any(isinstance(e, Mapping) and (e.get("ip") or e.get("hostname")) for e in ingress):
        return False
    return any(isinstance(p, Mapping) and p.get("nodePort") for p in spec.get("ports") or [])


def status_host(mesh: Mapping[str, Any] | None) -> str | None:
    """The host in a WireKubeMesh's ``status.relay.address`` (the controller's
    choice), for agents to pass as ``current``; None when there is none."""
    relay = ((mesh or {}).get("status") or {}).get("relay")
    if not isinstance(relay, Mapping) or not isinstance(relay.get("address"), str):
        return None
    host = relay["address"].rpartition(":")[0].strip("[]")
    return host or None
