"""Lab topology files: parsed into frozen dataclasses and validated, with no I/O.

A topology describes *what* the lab looks like, never *how* it is built:

* ``networks``: private networks (VPCs, home LANs, firewall zones), each behind
  one router whose ``nat.kind`` decides how it translates and filters. The
  ``internet`` network is implicit and always present (198.18.0.0/16).
* ``hosts``: machines on one network, with a role (node, relay, stun, dns,
  plain, load-balancer), an optional fixed address, Kubernetes
  labels/annotations for nodes, and ``public_ip: true`` for a node behind a
  NAT router that has a 1:1 public address (the cloud "instance with a
  public IP"). A ``load-balancer`` (on the internet) spreads new TCP
  connections to its ``ports`` over its ``backends`` (relay hosts on the
  internet), one backend per connection, like a cloud network load balancer.
  Without ``backends`` it is the cloud's load balancer for a ``--kube``
  cluster's LoadBalancer Services (``kubelb``; ``targets`` and ``balance``).
* ``mesh``: WireKubeMesh ``spec`` overrides for this lab (test-sized timers),
  kept as plain data for the services step.
* ``expect.paths``: the expected steady-state path table, as data.

Parsing is strict: unknown keys, wrong types and references to unknown
networks or hosts raise :class:`TopologyError` naming the offending path (for
example ``hosts.node-2.network: unknown network 'vpc-z'``). Everything here is
pure so it is unit-tested without root; see ``docs/lab.md`` for the format.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

INTERNET = "internet"
INTERNET_CIDR = IPv4Network("198.18.0.0/16")
PUBLIC_POOL = IPv4Network("198.19.0.0/16")  # subnets of networks whose router does no NAT
LAB_RANGE = IPv4Network("198.18.0.0/15")  # RFC 2544: never routed on the real internet
PRIVATE_RANGES = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)

NAT_KINDS = (
    "public",
    "full-cone",
    "address-restricted",
    "port-restricted",
    "symmetric",
    "tcp-only",
    "tls-only",
)
ROLES = ("node", "relay", "stun", "dns", "plain", "load-balancer", "proxy")
LB_BALANCES = ("random", "round-robin")
# What a balancer without static backends (the lab's cloud load balancer for
# LoadBalancer Services, kubelb) sends to: node ports or the endpoints' pod IPs.
LB_TARGETS = ("instance", "ip")
LB_DEFAULT_PORTS = (3478,)
PATH_MODES = ("direct", "relay", "none")
VPN_LABEL = "wirekube.io/vpn-enabled"

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_MESH_KEYS = ("listenPort", "interfaceName", "mtu", "stunServers", "relay")


class TopologyError(ValueError):
    """A topology file is malformed; the message names the offending key."""


@dataclass(frozen=True)
class NatSpec:
    """How a router translates and filters.

    ``inbound_to_router``: unsolicited inbound packets reach the router's own
    stack (which answers ICMP port unreachable and, worse, leaves a conntrack
    entry that later clashes with a hole-punching mapping). Default off: the
    router drops them, like a home router.
    ``mapping_timeout``: seconds an idle UDP mapping survives (conntrack UDP
    timeouts and the full-cone/address-restricted mapping tables).
    """

    kind: str
    inbound_to_router: bool = False
    mapping_timeout: int = 120

    @property
    def translates(self) -> bool:
        return self.kind != "public"


@dataclass(frozen=True)
class Network:
    name: str
    nat: NatSpec
    router: str
    cidr: IPv4Network | None = None  # None: the address planner picks one

    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Host:
    name: str
    network: str
    role: str = "plain"
    address: IPv4Address | None = None
    addresses: int = 1  # how many addresses (a STUN responder needs two)
    public_ip: bool = False  # 1:1 NAT at the router (only behind a translating router)
    public_address: IPv4Address | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    # load-balancer only: TCP ports spread over the backends, and how
    backends: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    balance: str = "random"
    targets: str = "instance"  # without backends (kubelb): instance | ip

    def key(self) -> str:
        return self.name

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def annotations_dict(self) -> dict[str, str]:
        return dict(self.annotations)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Canonical, order-independent key of a node pair."""
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class Topology:
    name: str
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...]
    description: str = ""
    mesh: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    expect_paths: tuple[tuple[tuple[str, str], str], ...] = ()

    def network(self, name: str) -> Network:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def hosts_on(self, network: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.network == network)

    @property
    def nodes(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role == "node")

    @property
    def routers(self) -> tuple[str, ...]:
        return tuple(n.router for n in self.networks)

    @property
    def expected_paths(self) -> dict[tuple[str, str], str]:
        return dict(self.expect_paths)


# --------------------------------------------------------------------------- parsing


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError(f"{p}: not valid YAML: {exc}") from exc
    return parse_topology(data, default_name=p.stem)


def parse_topology(data: object, default_name: str = "lab") -> Topology:
    """Validate a topology given as plain data (the YAML document)."""
    doc = _mapping(data, "topology")
    _only(doc, "topology", ("name", "description", "networks", "hosts", "mesh", "expect"))
    name = _str(doc.get("name", default_name), "name")
    description = _str(doc.get("description", ""), "description")

    networks = tuple(
        _parse_network(key, value)
        for key, value in _mapping(doc.get("networks", {}) or {}, "networks").items()
    )
    hosts_doc = _mapping(doc.get("hosts"), "hosts")
    if not hosts_doc:
        raise TopologyError("hosts: at least one host is required")
    hosts = tuple(_parse_host(key, value) for key, value in hosts_doc.items())
    mesh = _parse_mesh(doc.get("mesh", {}) or {})
    topo = Topology(
        name=name,
        description=description,
        networks=networks,
        hosts=hosts,
        mesh=mesh,
        expect_paths=(),
    )
    _check_references(topo)
    expect = _parse_expect(doc.get("expect", {}) or {}, topo)
    return Topology(
        name=name,
        description=description,
        networks=networks,
        hosts=hosts,
        mesh=mesh,
        expect_paths=expect,
    )


def _parse_network(name: object, value: object) -> Network:
    where = f"networks.{name}"
    nm = _name(name, where)
    if nm == INTERNET:
        raise TopologyError(f"{where}: 'internet' is implicit and cannot be redefined")
    doc = _mapping(value, where)
    _only(doc, where, ("cidr", "nat", "router"))
    nat_doc = doc.get("nat")
    if isinstance(nat_doc, str):
        nat_doc = {"kind": nat_doc}
    nat_doc = _mapping(nat_doc, f"{where}.nat")
    _only(nat_doc, f"{where}.nat", ("kind", "inbound_to_router", "mapping_timeout"))
    kind = _str(nat_doc.get("kind"), f"{where}.nat.kind")
    if kind not in NAT_KINDS:
        raise TopologyError(
            f"{where}.nat.kind: unknown NAT kind {kind!r} (one of {', '.join(NAT_KINDS)})"
        )
    timeout = _int(nat_doc.get("mapping_timeout", 120), f"{where}.nat.mapping_timeout")
    if not 5 <= timeout <= 3600:
        raise TopologyError(f"{where}.nat.mapping_timeout: must be within 5..3600 seconds")
    nat = NatSpec(
        kind=kind,
        inbound_to_router=_bool(
            nat_doc.get("inbound_to_router", False), f"{where}.nat.inbound_to_router"
        ),
        mapping_timeout=timeout,
    )
    router = _name(doc.get("router", f"{nm}-gw"), f"{where}.router")
    cidr: IPv4Network | None = None
    if "cidr" in doc:
        cidr = _network(doc["cidr"], f"{where}.cidr")
        if cidr.prefixlen > 28:
            raise TopologyError(f"{where}.cidr: {cidr} is too small (at most /28)")
        if nat.translates and not any(cidr.subnet_of(r) for r in PRIVATE_RANGES):
            raise TopologyError(
                f"{where}.cidr: {cidr} must be a private (RFC 1918) range behind a NAT router"
            )
        if not nat.translates and not cidr.subnet_of(PUBLIC_POOL):
            raise TopologyError(
                f"{where}.cidr: {cidr} must lie in {PUBLIC_POOL} (the lab's public range "
                "outside the shared internet segment) for a router of kind 'public'"
            )
    return Network(name=nm, nat=nat, router=router, cidr=cidr)


def _parse_host(name: object, value: object) -> Host:
    where = f"hosts.{name}"
    nm = _name(name, where)
    doc = _mapping(value, where)
    _only(
        doc,
        where,
        (
            "network",
            "role",
            "address",
            "addresses",
            "public_ip",
            "public_address",
            "labels",
            "annotations",
            "backends",
            "ports",
            "balance",
            "targets",
        ),
    )
    network = _str(doc.get("network"), f"{where}.network")
    role = _str(doc.get("role", "plain"), f"{where}.role")
    if role not in ROLES:
        raise TopologyError(f"{where}.role: unknown role {role!r} (one of {', '.join(ROLES)})")
    address = _address(doc["address"], f"{where}.address") if "address" in doc else None
    count = _int(doc.get("addresses", 2 if role == "stun" else 1), f"{where}.addresses")
    if not 1 <= count <= 4:
        raise TopologyError(f"{where}.addresses: must be within 1..4")
    public_address = (
        _address(doc["public_address"], f"{where}.public_address")
        if "public_address" in doc
        else None
    )
    public_ip = _bool(doc.get("public_ip", public_address is not None), f"{where}.public_ip")
    if public_address is not None and not public_ip:
        raise TopologyError(f"{where}.public_address: given but public_ip is false")
    if public_address is not None and public_address not in INTERNET_CIDR:
        raise TopologyError(f"{where}.public_address: must lie in {INTERNET_CIDR}")
    labels = _str_map(doc.get("labels", {}) or {}, f"{where}.labels")
    annotations = _str_map(doc.get("annotations", {}) or {}, f"{where}.annotations")
    if role != "node" and (labels or annotations):
        raise TopologyError(f"{where}: labels and annotations are only meaningful for role node")
    if role == "node":
        labels = {VPN_LABEL: "true", **labels}
    backends, ports, balance, targets = _parse_balancer(doc, where, role)
    return Host(
        name=nm,
        network=network,
        role=role,
        address=address,
        addresses=count,
        public_ip=public_ip,
        public_address=public_address,
        labels=tuple(labels.items()),
        annotations=tuple(annotations.items()),
        backends=backends,
        ports=ports,
        balance=balance,
        targets=targets,
    )


def _parse_balancer(
    doc: Mapping[str, Any], where: str, role: str
) -> tuple[tuple[str, ...], tuple[int, ...], str, str]:
    """``backends``, ``ports``, ``balance`` and ``targets`` of a load-balancer
    (names checked later)."""
    keys = [k for k in ("backends", "ports", "balance", "targets") if k in doc]
    if role != "load-balancer":
        if keys:
            raise TopologyError(f"{where}.{keys[0]}: only meaningful for role load-balancer")
        return (), (), "random", "instance"
    balance = _str(doc.get("balance", "random"), f"{where}.balance")
    if balance not in LB_BALANCES:
        raise TopologyError(
            f"{where}.balance: unknown balance {balance!r} (one of {', '.join(LB_BALANCES)})"
        )
    if "backends" not in doc:
        # A cloud load balancer for the cluster's LoadBalancer Services: the
        # lab's controller (kubelb) gives it listeners and targets at run time.
        if "ports" in doc:
            raise TopologyError(f"{where}.ports: only meaningful with backends")
        targets = _str(doc.get("targets", "instance"), f"{where}.targets")
        if targets not in LB_TARGETS:
            raise TopologyError(
                f"{where}.targets: unknown targets {targets!r} (one of {', '.join(LB_TARGETS)})"
            )
        return (), (), balance, targets
    if "targets" in doc:
        raise TopologyError(f"{where}.targets: only meaningful without backends")
    raw = doc.get("backends")
    if not isinstance(raw, list) or not raw:
        raise TopologyError(f"{where}.backends: a list of at least one relay host is required")
    backends = tuple(_str(b, f"{where}.backends[{i}]") for i, b in enumerate(raw))
    if len(set(backends)) != len(backends):
        raise TopologyError(f"{where}.backends: a backend is listed twice")
    raw_ports = doc.get("ports", list(LB_DEFAULT_PORTS))
    if not isinstance(raw_ports, list) or not raw_ports:
        raise TopologyError(f"{where}.ports: expected a non-empty list of TCP ports")
    ports = tuple(_int(p, f"{where}.ports[{i}]") for i, p in enumerate(raw_ports))
    if any(not 1 <= p <= 65535 for p in ports):
        raise TopologyError(f"{where}.ports: ports are within 1..65535")
    if len(set(ports)) != len(ports):
        raise TopologyError(f"{where}.ports: a port is listed twice")
    return backends, ports, balance, "instance"


def _parse_mesh(value: object) -> Mapping[str, Any]:
    doc = _mapping(value, "mesh")
    for key in doc:
        if key not in _MESH_KEYS:
            raise TopologyError(
                f"mesh.{key}: not a WireKubeMesh spec field (one of {', '.join(_MESH_KEYS)})"
            )
    if "relay" in doc:
        _mapping(doc["relay"], "mesh.relay")
    return MappingProxyType(dict(doc))


def _parse_expect(value: object, topo: Topology) -> tuple[tuple[tuple[str, str], str], ...]:
    doc = _mapping(value, "expect")
    _only(doc, "expect", ("paths",))
    paths_doc = _mapping(doc.get("paths", {}) or {}, "expect.paths")
    if not paths_doc:
        return ()
    nodes = [h.name for h in topo.nodes]
    seen: dict[tuple[str, str], str] = {}
    for raw_key, raw_mode in paths_doc.items():
        where = f"expect.paths.{raw_key}"
        parts = str(raw_key).split("/")
        if len(parts) != 2 or parts[0] == parts[1]:
            raise TopologyError(f"{where}: a key is two different node names, 'a/b'")
        for part in parts:
            if part not in nodes:
                raise TopologyError(f"{where}: {part!r} is not a host with role node")
        mode = _str(raw_mode, where)
        if mode not in PATH_MODES:
            raise TopologyError(f"{where}: unknown path mode {mode!r} (one of direct, relay, none)")
        key = pair_key(parts[0], parts[1])
        if key in seen:
            raise TopologyError(f"{where}: pair listed twice")
        seen[key] = mode
    missing = [
        f"{a}/{b}"
        for i, a in enumerate(nodes)
        for b in nodes[i + 1 :]
        if pair_key(a, b) not in seen
    ]
    if missing:
        raise TopologyError(f"expect.paths: missing node pairs: {', '.join(missing)}")
    return tuple(sorted(seen.items()))


def _check_references(topo: Topology) -> None:
    names: dict[str, str] = {INTERNET: "the internet"}
    for net in topo.networks:
        if net.router in names:
            raise TopologyError(
                f"networks.{net.name}.router: name {net.router!r} already used by {names[net.router]}"
            )
        names[net.router] = f"router of {net.name}"
    for host in topo.hosts:
        if host.name in names:
            raise TopologyError(f"hosts.{host.name}: name already used by {names[host.name]}")
        names[host.name] = "a host"
    known = {INTERNET} | {n.name for n in topo.networks}
    cidrs: list[tuple[str, IPv4Network]] = []
    for net in topo.networks:
        if net.cidr is not None:
            for other, cidr in cidrs:
                if net.cidr.overlaps(cidr):
                    raise TopologyError(
                        f"networks.{net.name}.cidr: {net.cidr} overlaps network {other} ({cidr})"
                    )
            cidrs.append((net.name, net.cidr))
    fixed: dict[IPv4Address, str] = {}
    for host in topo.hosts:
        where = f"hosts.{host.name}"
        if host.network not in known:
            raise TopologyError(f"{where}.network: unknown network {host.network!r}")
        if host.network == INTERNET:
            if host.public_ip:
                raise TopologyError(f"{where}.public_ip: a host on the internet is already public")
            net_cidr: IPv4Network | None = INTERNET_CIDR
        else:
            net = topo.network(host.network)
            if host.public_ip and not net.nat.translates:
                raise TopologyError(
                    f"{where}.public_ip: network {net.name} has no NAT; its hosts are public"
                )
            net_cidr = net.cidr
        if host.address is not None:
            if net_cidr is None:
                raise TopologyError(
                    f"{where}.address: network {host.network} needs an explicit cidr "
                    "when hosts have fixed addresses"
                )
            if host.address not in net_cidr or host.address in (
                net_cidr.network_address,
                net_cidr.broadcast_address,
                next(net_cidr.hosts()),
            ):
                raise TopologyError(
                    f"{where}.address: {host.address} is not a usable host address of "
                    f"{net_cidr} (the first address belongs to the gateway)"
                )
        for addr in (host.address, host.public_address):
            if addr is None:
                continue
            if addr in fixed:
                raise TopologyError(f"{where}: address {addr} already used by {fixed[addr]}")
            fixed[addr] = host.name
    _check_balancers(topo)


def _check_balancers(topo: Topology) -> None:
    """A load-balancer sits on the internet and balances over relay hosts there
    (it forwards to their addresses directly, like a cloud NLB in the VPC)."""
    roles = {h.name: h for h in topo.hosts}
    for host in topo.hosts:
        if host.role != "load-balancer":
            continue
        where = f"hosts.{host.name}"
        if host.network != INTERNET:
            raise TopologyError(f"{where}.network: a load-balancer is on the internet")
        for name in host.backends:
            backend = roles.get(name)
            if backend is None:
                raise TopologyError(f"{where}.backends: unknown host {name!r}")
            if backend.role != "relay":
                raise TopologyError(
                    f"{where}.backends: {name!r} has role {backend.role}, not relay"
                )
            if backend.network != INTERNET:
                raise TopologyError(f"{where}.backends: {name!r} is not on the internet")


# --------------------------------------------------------------------------- scalars


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(f"{where}: expected a mapping, got {_typename(value)}")
    return {str(k): v for k, v in value.items()}


def _only(doc: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in doc:
        if key not in allowed:
            raise TopologyError(f"{where}.{key}: unknown key (allowed: {', '.join(allowed)})")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TopologyError(f"{where}: expected a string, got {_typename(value)}")
    return value


def _name(value: object, where: str) -> str:
    text = _str(value, where)
    if not _NAME_RE.match(text):
        raise TopologyError(
            f"{where}: {text!r} is not a valid name (lowercase letters, digits and '-', "
            "at most 32 characters)"
        )
    return text


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{where}: expected an integer, got {_typename(value)}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise TopologyError(f"{where}: expected true or false, got {_typename(value)}")
    return value


def _address(value: object, where: str) -> IPv4Address:
    try:
        return IPv4Address(_str(value, where))
    except ipaddress.AddressValueError as exc:
        raise TopologyError(f"{where}: not an IPv4 address: {value!r}") from exc


def _network(value: object, where: str) -> IPv4Network:
    try:
        return IPv4Network(_str(value, where), strict=True)
    except ValueError as exc:
        raise TopologyError(f"{where}: not an IPv4 network: {value!r} ({exc})") from exc


def _str_map(value: object, where: str) -> dict[str, str]:
    doc = _mapping(value, where)
    out: dict[str, str] = {}
    for key, val in doc.items():
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise TopologyError(f"{where}.{key}: expected a string value")
        out[key] = val if isinstance(val, str) else str(val)
    return out


def _typename(value: object) -> str:
    return "nothing" if value is None else type(value).__name__
