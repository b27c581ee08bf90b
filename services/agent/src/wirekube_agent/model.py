"""The agent's vocabulary: validated peers, desired WireGuard state, routes, rules.

Everything here is a frozen value. CRD dicts become ``RemotePeer`` in
``k8s.translate`` (the only place that validates them); ``dataplane.desired`` turns the
remote peers plus local facts into a ``DesiredState``; ``diff`` compares that with
what the kernel reports. Keys are raw bytes, addresses are ``ipaddress``
objects, so equality is semantic, not textual.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from wirekube_common.wireguard.types import Endpoint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Transport = Literal["direct", "relay"]

# The routing table the agent owns ("WK" in ASCII) and its fwmark. The
# initContainer and `wirekube-agent cleanup` remove exactly these (rules by
# priority, so a node upgraded from the old mark is cleaned too).
ROUTE_TABLE = 0x574B  # 22347
# Only low bits: kube-proxy (iptables) masquerades every packet whose mark has
# 0x4000 set and drops 0x8000; Cilium owns 0x0F00, AWS VPC CNI 0x80, Calico and
# Tailscale the upper half. The old 0x574B had kube-proxy's 0x4000 bit, so on
# a real node every packet the agent marked -- WireGuard's to the relay bridge
# on 127.0.0.1 included -- left through MASQUERADE --random-fully: the bridge
# (a socket connected to 127.0.0.1:<listen port>) never saw a packet and no
# relayed pair could ping (found by tests/integration/kube).
FWMARK = 0x4B
# Our ip rule priorities: before the main table (32766), after the local table
# (0), and in a band no common CNI uses (Calico 0-99/32765, Cilium 9-2004,
# Kilo 1, Tailscale 5210-5270).
RULE_PRIORITY_MARKED = 31170
RULE_PRIORITY_CONTROL = 31171
RULE_PRIORITY_TABLE = 31172


@dataclass(frozen=True)
class NodeInfo:
    """What the agent knows about its own Node object."""

    name: str
    uid: str
    internal_ips: tuple[IPAddress, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=True)

    @property
    def primary_ip(self) -> IPAddress | None:
        ips = self.internal_ips or self.external_ips
        return ips[0] if ips else None


@dataclass(frozen=True)
class RemotePeer:
    """A validated WireKubePeer of another node."""

    name: str
    public_key: bytes
    endpoint: Endpoint | None
    allowed_ips: tuple[IPNetwork, ...]
    persistent_keepalive: int | None
    # RFC 3339; when two peers claim one key or prefix the older claim wins, so
    # a new (mistaken or hostile) object can never take over a working node.
    created: str = ""
    # Facts other agents publish in status, used for path selection.
    nat_type: str = ""
    nat_mapping: str = ""
    nat_filtering: str = ""
    internal_endpoint: Endpoint | None = None
    public_ip: str = ""

    @property
    def passive(self) -> bool:
        """No allowedIPs: no WireGuard peer entry and no routes (user-managed)."""
        return not self.allowed_ips


@dataclass(frozen=True)
class WgPeer:
    """One desired WireGuard peer entry."""

    public_key: bytes
    endpoint: Endpoint | None
    allowed_ips: frozenset[IPNetwork]
    persistent_keepalive: int


@dataclass(frozen=True)
class Route:
    """A route in our table; ``key`` is what the kernel identifies it by."""

    dst: IPNetwork
    oif: str
    src: IPAddress | None = None
    table: int = ROUTE_TABLE

    def key(self) -> tuple[int, IPNetwork]:
        return (self.table, self.dst)


# Linux's address family numbers (socket.AF_INET, socket.AF_INET6), spelled out
# so that the pure modules that build rules need not import ``socket``; netlink
# reports the same numbers back, so the diff compares like with like.
AF_INET = 2
AF_INET6 = 10
FAMILY_OF_VERSION = {4: AF_INET, 6: AF_INET6}


@dataclass(frozen=True)
class Rule:
    """An ip rule we own, identified by family, priority and destination."""

    priority: int
    table: int
    family: int  # AF_INET / AF_INET6, as below
    fwmark: int | None = None
    dst: IPNetwork | None = None

    def key(self) -> tuple[int, int, str]:
        return (self.family, self.priority, str(self.dst or ""))


@dataclass(frozen=True)
class DesiredState:
    interface: str
    listen_port: int
    mtu: int
    peers: dict[bytes, WgPeer]
    routes: frozenset[Route]
    rules: frozenset[Rule]
