"""Render a :class:`~wirekube_lab.addressing.LabPlan` into the commands that build it.

Pure text generation, so the exact commands are unit-tested without root:

* :func:`root_batch` is one ``ip -batch`` run in the root namespace that
  creates every namespace and every veth pair. Both ends of a pair are
  created directly inside their target namespaces (``link add NAME netns A
  type veth peer name PEER netns B``), so no temporary name ever appears in
  the shared root namespace.
* :func:`control_batch` creates this run's control link (root <-> internet).
* :func:`namespace_script` is one ``sh -e`` script per namespace: sysctls
  (written to ``/proc/sys``, which follows the caller's network namespace),
  then an ``ip -batch`` here-document (bridges, addresses, routes), then
  ``nft -f`` with the namespace's ruleset. One process per namespace keeps
  building a lab to a few tens of milliseconds per namespace.

IPv6 is disabled in lab namespaces: the lab is IPv4-only, and this avoids
duplicate address detection delays and link-local noise.
"""

from __future__ import annotations

from .addressing import CONTROL_IFINDEX, LabPlan
from .nftrules import balancer_ruleset, internet_ruleset, router_ruleset
from .topology import INTERNET_CIDR


def root_batch(plan: LabPlan) -> list[str]:
    lines = [f"netns add {ns}" for ns in plan.namespaces]
    for veth in plan.veths:
        lines.append(
            f"link add {veth.a.ifname} netns {veth.a.ns}{_index(veth.a.ifindex)} type veth "
            f"peer name {veth.b.ifname} netns {veth.b.ns}{_index(veth.b.ifindex)}"
        )
    return lines


def _index(ifindex: int) -> str:
    return f" index {ifindex}" if ifindex else ""


def control_batch(plan: LabPlan) -> list[str]:
    cp = plan.control
    return [
        f"link add {cp.root_ifname} type veth peer name {cp.inet_ifname} "
        f"netns {plan.internet_ns} index {CONTROL_IFINDEX}",
        f"address add {cp.root_address}/{cp.cidr.prefixlen} dev {cp.root_ifname}",
        f"link set {cp.root_ifname} up",
    ]


def _sysctl(key: str, value: int) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    return f"if [ -w {path} ]; then echo {value} > {path}; fi"


_COMMON_SYSCTLS = (
    # A new namespace inherits IPv4 settings from the root namespace, where a
    # container runtime (podman, containerd) turns forwarding on: a lab host must
    # start as a plain host whatever this machine ran before. Forwarders turn it
    # back on below (their sysctls come after these).
    ("net.ipv4.ip_forward", 0),
    ("net.ipv6.conf.all.disable_ipv6", 1),
    ("net.ipv6.conf.default.disable_ipv6", 1),
)
_FORWARDER_SYSCTLS = (
    ("net.ipv4.ip_forward", 1),
    ("net.ipv4.conf.all.send_redirects", 0),
    ("net.ipv4.conf.default.send_redirects", 0),
    # Bridged frames must not traverse the IP hooks of the namespace that
    # holds the bridge (br_netfilter is loaded on this machine).
    ("net.bridge.bridge-nf-call-iptables", 0),
    ("net.bridge.bridge-nf-call-arptables", 0),
    ("net.bridge.bridge-nf-call-ip6tables", 0),
)


def _script(sysctls: list[tuple[str, int]], ip_lines: list[str], nft: str | None) -> str:
    parts = ["set -e"]
    parts += [_sysctl(k, v) for k, v in sysctls]
    parts.append("ip -batch - <<'WKLAB_IP'\n" + "\n".join(ip_lines) + "\nWKLAB_IP")
    if nft is not None:
        parts.append("nft -f - <<'WKLAB_NFT'\n" + nft + "WKLAB_NFT")
    return "\n".join(parts) + "\n"


def namespace_script(plan: LabPlan, ns: str) -> str:
    """The set-up script of one namespace of the plan."""
    if ns == plan.internet_ns:
        return _internet_script(plan)
    for router in plan.routers:
        if router.ns == ns:
            return _router_script(plan, router.name)
    for host in plan.hosts:
        if host.ns == ns:
            return _host_script(plan, host.name)
    raise KeyError(ns)


def _ports(plan: LabPlan, ns: str, bridge: str) -> list[str]:
    lines: list[str] = []
    for veth in plan.veths:
        if veth.b.ns == ns and veth.bridge == bridge:
            lines.append(f"link set {veth.b.ifname} master {bridge}")
            lines.append(f"link set {veth.b.ifname} up")
    return lines


def _internet_script(plan: LabPlan) -> str:
    ns = plan.internet_ns
    cp = plan.control
    lines = [
        "link set lo up",
        f"link add {plan.bridge} type bridge",
        f"link set {plan.bridge} up",
        *_ports(plan, ns, plan.bridge),
        f"address add {plan.gateway}/{INTERNET_CIDR.prefixlen} dev {plan.bridge}",
        f"address add {cp.inet_address}/{cp.cidr.prefixlen} dev {cp.inet_ifname}",
        f"link set {cp.inet_ifname} up",
    ]
    for router in plan.routers:
        if not router.nat.translates:
            lines.append(f"route add {router.lan_cidr} via {router.wan_address}")
    sysctls = list(_COMMON_SYSCTLS + _FORWARDER_SYSCTLS)
    return _script(sysctls, lines, internet_ruleset(cp))


def _router_script(plan: LabPlan, name: str) -> str:
    router = plan.router(name)
    lines = [
        "link set lo up",
        f"address add {router.wan_address}/{INTERNET_CIDR.prefixlen} dev {router.wan_ifname}",
    ]
    lines += [f"address add {public}/32 dev {router.wan_ifname}" for _, public in router.one_to_one]
    lines += [
        f"link set {router.wan_ifname} up",
        f"link add {router.lan_ifname} type bridge",
        f"link set {router.lan_ifname} up",
        *_ports(plan, router.ns, router.lan_ifname),
        f"address add {router.lan_address}/{router.lan_cidr.prefixlen} dev {router.lan_ifname}",
        f"route add default via {plan.gateway}",
    ]
    timeout = router.nat.mapping_timeout
    sysctls = [
        *_COMMON_SYSCTLS,
        *_FORWARDER_SYSCTLS,
        ("net.netfilter.nf_conntrack_udp_timeout", min(30, timeout)),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", timeout),
    ]
    return _script(sysctls, lines, router_ruleset(router))


def _host_script(plan: LabPlan, name: str) -> str:
    host = plan.host(name)
    lines = ["link set lo up"]
    lines += [f"address add {a}/{host.prefixlen} dev {host.ifname}" for a in host.addresses]
    lines += [
        f"link set {host.ifname} up",
        f"route add default via {host.gateway}",
    ]
    if host.role == "load-balancer":
        spec = plan.topology.host(name)
        if not spec.backends:  # kubelb installs its listeners later
            return _script(list(_COMMON_SYSCTLS + _FORWARDER_SYSCTLS), lines, None)
        backends = [plan.host(b).address for b in spec.backends]
        ruleset = balancer_ruleset(host.address, backends, spec.ports, spec.balance)
        return _script(list(_COMMON_SYSCTLS + _FORWARDER_SYSCTLS), lines, ruleset)
    return _script(list(_COMMON_SYSCTLS), lines, None)
