"""Address plan: where every namespace, link, address and route of a lab goes.

``plan_lab(topology, ids, control)`` is a pure function from a validated
:class:`~wirekube_lab.topology.Topology` to a :class:`LabPlan`; the builder
only executes it. Layout:

* The **internet** namespace holds bridge ``br0`` with the lab's internet
  gateway 198.18.0.1/16. Hosts on the internet get 198.18.0.10 upwards, NAT
  routers' WAN interfaces 198.18.1.1 upwards, 1:1 public addresses of nodes
  behind a NAT 198.18.2.1 upwards. Networks whose router does no NAT (kind
  ``public``) get 198.19.<n>.0/24 and a route in the internet namespace.
  The internet namespace has **no default route**: nothing leaves the lab.
* Every other network lives behind one **router** namespace: ``wan0`` plugs
  into ``br0``; bridge ``lan0`` carries the LAN gateway (the first address of
  the network) and one port per host. Private networks default to
  10.<n>.0.0/24.
* Every **host** namespace has one uplink, ``eth0``; the bridge-side end of
  that veth is its :attr:`HostPlan.uplink` (``lab.cut`` takes it down, which
  leaves the host's own addresses and routes untouched, like pulling a cable).
* The **control link** joins the root namespace to the internet namespace
  with a per-run /30 from 100.64.0.0/16 (never 100.64.0.0/30, which holds the
  apiserver's lab-wide address 100.64.0.1); see ``nftrules.internet_ruleset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .naming import RunIds
from .topology import (
    INTERNET,
    INTERNET_CIDR,
    PUBLIC_POOL,
    NatSpec,
    Topology,
    TopologyError,
)

INTERNET_GATEWAY = IPv4Address("198.18.0.1")
APISERVER_ADDRESS = IPv4Address("100.64.0.1")
CONTROL_POOL = IPv4Network("100.64.0.0/16")
_HOST_BLOCK = IPv4Network("198.18.0.0/24")
_WAN_BLOCK = IPv4Network("198.18.1.0/24")
_ONE_TO_ONE_BLOCK = IPv4Network("198.18.2.0/24")
_FIRST_HOST_OFFSET = 10


@dataclass(frozen=True)
class Port:
    """One end of a veth pair."""

    ns: str
    ifname: str
    ifindex: int = 0  # 0: the kernel picks one

    def key(self) -> tuple[str, str]:
        return (self.ns, self.ifname)


# Every veth end gets an explicit interface index, unique within the lab, so
# the two ends of a pair never share one. Why: the kernel's link watcher
# treats a carrier change of a device whose iflink equals its own ifindex as
# non-urgent and may apply it up to a second later; two fresh namespaces both
# numbering their first veth 2 made one uplink of every lab stay NO-CARRIER
# (dropping everything, ARP included) for up to a second after the build.
FIRST_IFINDEX = 10
CONTROL_IFINDEX = 9  # cp0 in the internet namespace


@dataclass(frozen=True)
class Veth:
    """A veth pair; ``b`` is enslaved to ``bridge`` (in ``b.ns``) when set."""

    a: Port
    b: Port
    bridge: str | None

    def key(self) -> tuple[str, str]:
        return self.a.key()


@dataclass(frozen=True)
class HostPlan:
    name: str
    role: str
    network: str
    ns: str
    ifname: str
    addresses: tuple[IPv4Address, ...]
    prefixlen: int
    gateway: IPv4Address
    uplink: Port
    public_address: IPv4Address

    @property
    def address(self) -> IPv4Address:
        return self.addresses[0]


@dataclass(frozen=True)
class RouterPlan:
    name: str
    network: str
    ns: str
    nat: NatSpec
    lan_cidr: IPv4Network
    lan_address: IPv4Address
    wan_address: IPv4Address
    uplink: Port
    one_to_one: tuple[tuple[IPv4Address, IPv4Address], ...]  # (private, public)
    proxies: tuple[IPv4Address, ...] = ()  # tls-only: the hosts that may open TCP 443 out
    wan_ifname: str = "wan0"
    lan_ifname: str = "lan0"


@dataclass(frozen=True)
class ControlLink:
    cidr: IPv4Network
    root_ifname: str
    inet_ifname: str = "cp0"

    @property
    def root_address(self) -> IPv4Address:
        return self.cidr.network_address + 1

    @property
    def inet_address(self) -> IPv4Address:
        return self.cidr.network_address + 2


@dataclass(frozen=True)
class LabPlan:
    ids: RunIds
    topology: Topology
    internet_ns: str
    hosts: tuple[HostPlan, ...]
    routers: tuple[RouterPlan, ...]
    veths: tuple[Veth, ...]
    control: ControlLink
    bridge: str = "br0"
    gateway: IPv4Address = INTERNET_GATEWAY

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.internet_ns, *(r.ns for r in self.routers), *(h.ns for h in self.hosts))

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def router(self, name: str) -> RouterPlan:
        for router in self.routers:
            if name in (router.name, router.network):
                return router
        raise KeyError(name)


def pick_control_subnet(used: Iterable[IPv4Network], seed: int) -> IPv4Network:
    """A free /30 of 100.64.0.0/16, never 100.64.0.0/30, starting at ``seed``.

    ``used`` are the networks of addresses already present in the root
    namespace (other lab runs' control links among them).
    """
    taken = list(used)
    slots = CONTROL_POOL.num_addresses // 4
    for step in range(slots):
        index = (seed + step) % slots
        if index == 0:
            continue
        candidate = IPv4Network((int(CONTROL_POOL.network_address) + 4 * index, 30))
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError("no free /30 left in 100.64.0.0/16 for the control link")


class _Pool:
    """Hands out addresses of a network in order, skipping reserved ones."""

    def __init__(self, cidr: IPv4Network, start: int, reserved: set[IPv4Address]) -> None:
        self.cidr = cidr
        self.reserved = reserved
        self._iter: Iterator[IPv4Address] = (
            cidr.network_address + i for i in range(start, cidr.num_addresses - 1)
        )

    def take(self, count: int, where: str) -> tuple[IPv4Address, ...]:
        out: list[IPv4Address] = []
        for addr in self._iter:
            if addr in self.reserved:
                continue
            out.append(addr)
            self.reserved.add(addr)
            if len(out) == count:
                return tuple(out)
        raise TopologyError(f"{where}: no free address left in {self.cidr}")


def _default_cidrs(topology: Topology) -> dict[str, IPv4Network]:
    """Explicit cidrs as given; others 10.<n>.0.0/24 (NAT) or 198.19.<n>.0/24 (public)."""
    explicit = [n.cidr for n in topology.networks if n.cidr is not None]
    out: dict[str, IPv4Network] = {}
    private_n = public_n = 0
    for net in topology.networks:
        if net.cidr is not None:
            out[net.name] = net.cidr
            continue
        while True:
            if net.nat.translates:
                private_n += 1
                candidate = IPv4Network(f"10.{private_n}.0.0/24")
            else:
                public_n += 1
                candidate = IPv4Network((int(PUBLIC_POOL.network_address) + 256 * public_n, 24))
            if not any(candidate.overlaps(c) for c in explicit):
                break
        out[net.name] = candidate
    return out


def _fixed_block(
    addr: IPv4Address, count: int, cidr: IPv4Network, where: str
) -> tuple[IPv4Address, ...]:
    block = tuple(addr + i for i in range(count))
    if any(a not in cidr or a == cidr.broadcast_address for a in block):
        raise TopologyError(f"{where}: {count} addresses from {addr} do not fit in {cidr}")
    return block


def plan_lab(topology: Topology, ids: RunIds, control: IPv4Network) -> LabPlan:
    """The complete, deterministic plan of a lab run."""
    cidrs = _default_cidrs(topology)
    internet_ns = ids.netns(INTERNET)

    # Reserve every fixed address first so automatic ones never collide.
    reserved: dict[str, set[IPv4Address]] = {INTERNET: {INTERNET_GATEWAY}}
    for net in topology.networks:
        reserved[net.name] = {cidrs[net.name].network_address + 1}
    fixed: dict[str, tuple[IPv4Address, ...]] = {}
    for host in topology.hosts:
        if host.address is None:
            continue
        cidr = INTERNET_CIDR if host.network == INTERNET else cidrs[host.network]
        block = _fixed_block(host.address, host.addresses, cidr, f"hosts.{host.name}.address")
        clash = reserved[host.network].intersection(block)
        if clash:
            raise TopologyError(
                f"hosts.{host.name}.address: {min(clash)} is already used in {host.network}"
            )
        reserved[host.network].update(block)
        fixed[host.name] = block
    public_fixed = {h.public_address for h in topology.hosts if h.public_address is not None}
    inet_reserved = reserved[INTERNET] | public_fixed

    inet_hosts = _Pool(_HOST_BLOCK, _FIRST_HOST_OFFSET, inet_reserved)
    wans = _Pool(_WAN_BLOCK, 1, inet_reserved)
    one_to_one = _Pool(_ONE_TO_ONE_BLOCK, 1, inet_reserved)
    pools = {
        name: _Pool(
            cidr,
            _FIRST_HOST_OFFSET if cidr.num_addresses >= 64 else 2,
            reserved[name],
        )
        for name, cidr in cidrs.items()
    }

    veths: list[Veth] = []
    port_no = 0

    def next_port(ns: str) -> Port:
        nonlocal port_no
        port_no += 1
        return Port(ns, f"p{port_no}", FIRST_IFINDEX + 2 * port_no - 1)

    def own_end(ns: str, ifname: str) -> Port:
        return Port(ns, ifname, FIRST_IFINDEX + 2 * port_no)

    routers: dict[str, RouterPlan] = {}
    for net in topology.networks:
        ns = ids.netns(net.router)
        uplink = next_port(internet_ns)
        veths.append(Veth(own_end(ns, "wan0"), uplink, "br0"))
        cidr = cidrs[net.name]
        routers[net.name] = RouterPlan(
            name=net.router,
            network=net.name,
            ns=ns,
            nat=net.nat,
            lan_cidr=cidr,
            lan_address=cidr.network_address + 1,
            wan_address=wans.take(1, f"networks.{net.name}")[0],
            uplink=uplink,
            one_to_one=(),
        )

    hosts: list[HostPlan] = []
    one_to_one_pairs: dict[str, list[tuple[IPv4Address, IPv4Address]]] = {
        n.name: [] for n in topology.networks
    }
    for host in topology.hosts:
        ns = ids.netns(host.name)
        where = f"hosts.{host.name}"
        if host.network == INTERNET:
            addrs = fixed.get(host.name) or inet_hosts.take(host.addresses, where)
            uplink = next_port(internet_ns)
            veths.append(Veth(own_end(ns, "eth0"), uplink, "br0"))
            hosts.append(
                HostPlan(
                    name=host.name,
                    role=host.role,
                    network=host.network,
                    ns=ns,
                    ifname="eth0",
                    addresses=addrs,
                    prefixlen=INTERNET_CIDR.prefixlen,
                    gateway=INTERNET_GATEWAY,
                    uplink=uplink,
                    public_address=addrs[0],
                )
            )
            continue
        router = routers[host.network]
        addrs = fixed.get(host.name) or pools[host.network].take(host.addresses, where)
        uplink = next_port(router.ns)
        veths.append(Veth(own_end(ns, "eth0"), uplink, "lan0"))
        if not router.nat.translates:
            public = addrs[0]
        elif host.public_ip:
            public = host.public_address or one_to_one.take(1, where)[0]
            one_to_one_pairs[host.network].append((addrs[0], public))
        else:
            public = router.wan_address
        hosts.append(
            HostPlan(
                name=host.name,
                role=host.role,
                network=host.network,
                ns=ns,
                ifname="eth0",
                addresses=addrs,
                prefixlen=router.lan_cidr.prefixlen,
                gateway=router.lan_address,
                uplink=uplink,
                public_address=public,
            )
        )

    router_plans = tuple(
        RouterPlan(
            name=r.name,
            network=r.network,
            ns=r.ns,
            nat=r.nat,
            lan_cidr=r.lan_cidr,
            lan_address=r.lan_address,
            wan_address=r.wan_address,
            uplink=r.uplink,
            one_to_one=tuple(one_to_one_pairs[r.network]),
            proxies=tuple(
                h.addresses[0] for h in hosts if h.network == r.network and h.role == "proxy"
            ),
        )
        for r in routers.values()
    )
    return LabPlan(
        ids=ids,
        topology=topology,
        internet_ns=internet_ns,
        hosts=tuple(hosts),
        routers=router_plans,
        veths=tuple(veths),
        control=ControlLink(cidr=control, root_ifname=ids.control_ifname),
    )
