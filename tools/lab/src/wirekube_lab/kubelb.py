"""The lab's cloud load balancer for Services of type LoadBalancer (``--kube``).

In a cloud, a controller gives every ``type: LoadBalancer`` Service a public
address on the provider's load balancer and writes it to
``status.loadBalancer.ingress``; in the lab nothing would, so such a Service
stays ``<pending>`` and agents find no relay. :class:`KubeLoadBalancer` is
that controller, and a topology's ``load-balancer`` host *without* static
``backends`` is the load balancer it programs:

* **Addresses.** The host's addresses (``addresses: N``) are the pool. Each
  LoadBalancer Service gets one (its ``spec.loadBalancerIP`` if that is a free
  pool address, else the first free one, oldest Service first) and keeps it
  for its life; a Service that finds none stays pending, as in a cloud out of
  quota. Services of another ``spec.loadBalancerClass`` are left to their
  controller, as every implementation does.
* **Forwarding.** The host DNATs each *new* flow (TCP or UDP) to a listener
  ``address:port`` to one target (``numgen random``, or ``inc`` with
  ``balance: round-robin``); conntrack keeps the flow there. It masquerades
  what it forwards, so replies come back through it and the targets see the
  balancer as the client (no client-address preservation).
* **Targets**, like a cloud's two kinds (the topology's ``targets``, or per
  Service the annotation ``lab.wirekube.io/lb-target-type``):
  ``instance`` — the Service port's ``nodePort`` on nodes the balancer can
  reach (on the internet, behind a ``public`` router, or with a 1:1 public
  IP); with ``externalTrafficPolicy: Local`` only those that hold a ready
  endpoint, as a cloud's health check would pass. ``ip`` — the ready
  endpoints themselves (pod IP and target port), where the lab's cloud routes
  carry the pod network to the balancer (nodes on the internet or behind a
  ``public`` router).
* **Status.** ``ingress: [{ip, ipMode: Proxy}]``. ``Proxy`` (KEP-1860), not
  ``VIP``: the nodes never own the address, the balancer rewrites it, so
  kube-proxy must not short-circuit it — every client, in-cluster ones too,
  goes through the balancer the way a client elsewhere on the internet would.

Health is read from EndpointSlices (ready endpoints), not probed. The
decisions (:func:`assign_addresses`, :func:`plan_listeners`,
:func:`balancer_ruleset`, :func:`node_reach`) are pure; the loop reads the API
every :data:`POLL_INTERVAL_S`, replaces the host's nftables table when the
plan changes and patches Service status.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Protocol

from .addressing import LabPlan
from .nftrules import TABLE
from .topology import INTERNET

# How often the loop reads Services and EndpointSlices: a relay pod that
# turns Ready is a target within this (the relay-deletion test's bound is 5 s
# from Ready to relayed pairs answering).
POLL_INTERVAL_S = 0.5
# An API call that hangs must not stall the loop for long.
API_TIMEOUT_S = 10.0
TARGET_TYPES = ("instance", "ip")
TARGET_TYPE_ANNOTATION = "lab.wirekube.io/lb-target-type"
# The class a Service may name to ask for this balancer explicitly; a Service
# without a class is ours too (we are the cluster's default implementation).
LOAD_BALANCER_CLASS = "lab.wirekube.io/kubelb"


@dataclass(frozen=True)
class Listener:
    """One Service port on the balancer: ``address:port`` -> one of ``targets`` per flow."""

    service: str  # namespace/name
    address: str
    protocol: str  # TCP | UDP
    port: int
    targets: tuple[tuple[str, int], ...]  # (address, port), sorted


@dataclass(frozen=True)
class NodeReach:
    """What the balancer, on the lab internet, can send to.

    ``addresses``: nodes whose address it reaches (name -> that address, the
    1:1 public one for a ``public_ip`` node); ``pod_routed``: nodes whose pod
    network the lab routes to it."""

    addresses: Mapping[str, str] = field(default_factory=dict)
    pod_routed: frozenset[str] = frozenset()


def node_reach(plan: LabPlan, nodes: Iterable[str]) -> NodeReach:
    """Reachability of cluster nodes (host names) from a host on the lab internet.

    Mirrors the lab's routing: the internet routes hosts on it and the
    networks behind ``public`` routers (and those networks' pod CIDRs, see
    ``kubeplan.pod_routes``); behind a translating router only a 1:1 public
    address is reachable, and never the pods."""
    addresses: dict[str, str] = {}
    pod_routed: set[str] = set()
    for name in nodes:
        host = plan.host(name)
        routed = host.network == INTERNET or not plan.router(host.network).nat.translates
        if routed:
            addresses[name] = str(host.address)
            pod_routed.add(name)
        elif plan.topology.host(name).public_ip:
            addresses[name] = str(host.public_address)  # the 1:1 address on its router
    return NodeReach(addresses, frozenset(pod_routed))


def _key(svc: Mapping[str, Any]) -> str:
    meta = svc.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def ours(svc: Mapping[str, Any]) -> bool:
    """A LoadBalancer Service this balancer serves (no class, or ours)."""
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") in (
        None,
        LOAD_BALANCER_CLASS,
    )


def assign_addresses(
    services: Sequence[Mapping[str, Any]], previous: Mapping[str, str], pool: Sequence[str]
) -> dict[str, str]:
    """``{namespace/name: ingress IP}``: kept while the Service exists; a new
    one (oldest first) takes its ``spec.loadBalancerIP`` if that is free in
    ``pool``, else the first free address; none left, none given."""
    present = {_key(s) for s in services}
    out = {k: ip for k, ip in previous.items() if k in present and ip in pool}
    ordered = sorted(
        services,
        key=lambda s: (str((s.get("metadata") or {}).get("creationTimestamp", "")), _key(s)),
    )
    for svc in ordered:
        key = _key(svc)
        if key in out:
            continue
        free = [ip for ip in pool if ip not in out.values()]
        wanted = (svc.get("spec") or {}).get("loadBalancerIP")
        if wanted:
            if wanted in free:
                out[key] = wanted
            continue  # a specific address that is taken or not ours: pending
        if free:
            out[key] = free[0]
    return out


def _ready_endpoints(
    slices: Sequence[Mapping[str, Any]], service: str
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(slice, endpoint)`` for every ready endpoint of ``namespace/name``."""
    out = []
    for sl in slices:
        meta = sl.get("metadata") or {}
        name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if f"{meta.get('namespace')}/{name}" != service or sl.get("addressType") == "IPv6":
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") and ep.get("addresses"):
                out.append((sl, ep))
    return out


def _slice_port(sl: Mapping[str, Any], name: str, protocol: str) -> int | None:
    for p in sl.get("ports") or []:
        if (p.get("name") or "") == name and p.get("protocol", "TCP") == protocol:
            return int(p["port"]) if p.get("port") else None
    return None


def target_type(svc: Mapping[str, Any], default: str) -> str:
    """The Service's annotation if it names a known type, else the balancer's."""
    wanted = ((svc.get("metadata") or {}).get("annotations") or {}).get(TARGET_TYPE_ANNOTATION)
    return wanted if wanted in TARGET_TYPES else default


def plan_listeners(
    services: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    reach: NodeReach,
    addresses: Mapping[str, str],
    default_targets: str = "instance",
) -> list[Listener]:
    """The balancer's listeners for every LoadBalancer Service given an address
    (``addresses`` from :func:`assign_addresses`). A port with no target is
    still listed (with none): the balancer then forwards nothing."""
    out: list[Listener] = []
    for svc in sorted(services, key=_key):
        spec = svc.get("spec") or {}
        key = _key(svc)
        if not ours(svc) or key not in addresses:
            continue
        ready = _ready_endpoints(slices, key)
        kind = target_type(svc, default_targets)
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol", "TCP"))
            if protocol not in ("TCP", "UDP"):
                continue
            targets: set[tuple[str, int]] = set()
            if kind == "ip":
                for sl, ep in ready:
                    target_port = _slice_port(sl, str(port.get("name") or ""), protocol)
                    if target_port and ep.get("nodeName") in reach.pod_routed:
                        targets.add((str(ep["addresses"][0]), target_port))
            elif port.get("nodePort"):
                if spec.get("externalTrafficPolicy") == "Local":
                    nodes = {str(ep.get("nodeName")) for _, ep in ready}
                else:
                    nodes = set(reach.addresses)
                targets = {
                    (reach.addresses[n], int(port["nodePort"]))
                    for n in nodes
                    if n in reach.addresses
                }
            else:
                continue  # allocateLoadBalancerNodePorts: false; nothing to send to
            out.append(
                Listener(
                    key,
                    addresses[key],
                    protocol,
                    int(port["port"]),
                    tuple(sorted(targets, key=lambda t: (ip_address(t[0]), t[1]))),
                )
            )
    return out


def balancer_ruleset(listeners: Sequence[Listener], balance: str = "random") -> str:
    """The balancer host's table, replacing any previous one (``nft -f`` input)."""
    gen = "inc" if balance == "round-robin" else "random"
    pre: list[str] = []
    for ls in listeners:
        if not ls.targets:
            continue  # no healthy target: the balancer's own stack refuses
        choice = ", ".join(f"{i} : {a} . {p}" for i, (a, p) in enumerate(ls.targets))
        pre.append(
            f"\t\tip daddr {ls.address} {ls.protocol.lower()} dport {ls.port} "
            f"dnat ip to numgen {gen} mod {len(ls.targets)} map {{ {choice} }} "
            f'comment "{ls.service}: one target per new flow ({balance})"'
        )
    body = "".join(f"{line}\n" for line in pre)
    return (
        f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        f"{body}"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\tct status dnat masquerade comment "replies come back through the balancer"\n'
        "\t}\n"
        "}\n"
    )


def wanted_status(svc: Mapping[str, Any], ip: str) -> dict[str, Any] | None:
    """The status patch a Service needs, or None when it already shows ``ip``."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if [(i.get("ip"), i.get("ipMode")) for i in ingress] == [(ip, "Proxy")]:
        return None
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "Proxy"}]}}}


def describe(listeners: Sequence[Listener]) -> str:
    """One log line: every listener and its targets."""
    return "; ".join(
        f"{ls.service} {ls.address}:{ls.port}/{ls.protocol} -> "
        + (",".join(f"{a}:{p}" for a, p in ls.targets) or "none")
        for ls in listeners
    )


class KubeApi(Protocol):
    """What the loop needs from the API server (JSON as the API serves it)."""

    def list_services(self) -> list[dict[str, Any]]: ...
    def list_endpoint_slices(self) -> list[dict[str, Any]]: ...
    def patch_service_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class ClientApi:
    """:class:`KubeApi` over a ``kubernetes.client.ApiClient`` (plain HTTP
    calls: a poll costs milliseconds, where a kubectl process costs ~0.1 s of CPU)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client as k8s  # noqa: PLC0415 - heavy import, kube mode only

        self.core = k8s.CoreV1Api(api_client)
        self.discovery = k8s.DiscoveryV1Api(api_client)

    @staticmethod
    def _items(response: Any) -> list[dict[str, Any]]:
        return list(json.loads(response.data).get("items") or [])

    def list_services(self) -> list[dict[str, Any]]:
        return self._items(
            self.core.list_service_for_all_namespaces(
                _preload_content=False, _request_timeout=API_TIMEOUT_S
            )
        )

    def list_endpoint_slices(self) -> list[dict[str, Any]]:
        return self._items(
            self.discovery.list_endpoint_slice_for_all_namespaces(
                _preload_content=False, _request_timeout=API_TIMEOUT_S
            )
        )

    def patch_service_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.core.patch_namespaced_service_status(
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            _request_timeout=API_TIMEOUT_S,
        )

    def close(self) -> None:
        self.core.api_client.close()


class KubeLoadBalancer:
    """The controller loop (see the module docstring); ``start``/``stop`` own a thread."""

    def __init__(
        self,
        api: KubeApi,
        apply_ruleset: Callable[[str], None],
        pool: Sequence[str],
        reach: NodeReach,
        *,
        targets: str = "instance",
        balance: str = "random",
        log_fn: Callable[[str], None] = lambda m: None,
    ) -> None:
        self.api = api
        self.apply_ruleset = apply_ruleset
        self.pool = list(pool)
        self.reach = reach
        self.targets = targets
        self.balance = balance
        self.log = log_fn
        self.assigned: dict[str, str] = {}
        self.listeners: list[Listener] = []
        self.errors = 0
        self.passes = 0
        self._applied: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._install(balancer_ruleset([], self.balance), [])
        self._thread = threading.Thread(target=self._run, name="kubelb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(API_TIMEOUT_S * 3)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # the loop outlives one bad pass, as a controller does
                self.errors += 1
                self.log(f"kubelb: pass failed: {exc}")
            self._stop.wait(POLL_INTERVAL_S)

    def _install(self, ruleset: str, listeners: list[Listener]) -> None:
        self.apply_ruleset(ruleset)
        self._applied = ruleset
        self.listeners = listeners

    def sync_once(self) -> None:
        services = [s for s in self.api.list_services() if ours(s)]
        self.assigned = assign_addresses(services, self.assigned, self.pool)
        slices = self.api.list_endpoint_slices() if services else []
        listeners = plan_listeners(services, slices, self.reach, self.assigned, self.targets)
        ruleset = balancer_ruleset(listeners, self.balance)
        if ruleset != self._applied:
            self._install(ruleset, listeners)
            self.log(f"kubelb: {describe(listeners) or 'no listeners'}")
        for svc in services:
            ip = self.assigned.get(_key(svc))
            patch = wanted_status(svc, ip) if ip else None
            if patch is not None:
                meta = svc["metadata"]
                self.api.patch_service_status(meta["namespace"], meta["name"], patch)
                self.log(f"kubelb: {_key(svc)} ingress {ip}")
        self.passes += 1
