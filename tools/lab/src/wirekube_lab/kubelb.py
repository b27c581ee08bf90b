"""The lab's cloud load-balancer controller for Services of type LoadBalancer.

In a cloud, a controller gives every ``type: LoadBalancer`` Service an
address on a load balancer and writes it to ``status.loadBalancer.ingress``;
nothing does that in the lab, so such a Service stays pending and agents find
no relay. :class:`KubeLoadBalancer` plays that controller with a topology's
``load-balancer`` host that has no static ``backends``: every Service of type
LoadBalancer gets one of that host's addresses (on the lab internet; give the
host ``addresses: N`` for N Services, first come first served, kept for the
Service's life) as its ingress IP, and the host DNATs each *new* TCP or UDP
flow to that address and a Service port to the port's ``nodePort`` on one
backend node (``numgen random``; conntrack keeps the flow there), masquerading
it so the replies come back through it. A Service that finds no free address
stays pending, as in a cloud out of quota.

Backends are the nodes a cloud balancer's health check would pass: with
``externalTrafficPolicy: Local`` only nodes that hold a ready endpoint of the
Service answer, so only those are picked (all reachable nodes for
``Cluster``). A node is reachable when the balancer, on the internet, can
reach its address (a node on the internet, or one with a 1:1 public IP).

The decision (:func:`plan_listeners`, :func:`balancer_ruleset`) is pure; the
loop only reads the API with kubectl, replaces the host's nftables table and
patches the Service status.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .nftrules import TABLE

# How often the loop reads Services and EndpointSlices: a relay pod that turns
# Ready is a backend within this (the relay-deletion test's bound is 5 s).
POLL_INTERVAL_S = 1.0
# A kubectl call that hangs must not stall the loop for long.
KUBECTL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Listener:
    """One Service port on the balancer: ``address:port`` -> ``node_port`` on ``backends``."""

    service: str  # namespace/name
    address: str
    protocol: str  # TCP | UDP
    port: int
    node_port: int
    backends: tuple[str, ...]  # node addresses, sorted


def _ready_nodes_by_service(slices: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """``{namespace/service: {nodeName with a ready endpoint}}`` from EndpointSlices."""
    out: dict[str, set[str]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not svc:
            continue
        nodes = out.setdefault(f"{meta.get('namespace')}/{svc}", set())
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") and ep.get("nodeName"):
                nodes.add(str(ep["nodeName"]))
    return out


def assign_addresses(
    services: Sequence[Mapping[str, Any]], previous: Mapping[str, str], pool: Sequence[str]
) -> dict[str, str]:
    """``{namespace/name: ingress IP}``: kept while the Service exists, new ones
    (oldest first) take the first free address of ``pool``; none left, none given."""
    present = {_key(s) for s in services}
    out = {k: ip for k, ip in previous.items() if k in present and ip in pool}
    free = [ip for ip in pool if ip not in out.values()]
    ordered = sorted(
        services,
        key=lambda s: (str((s.get("metadata") or {}).get("creationTimestamp", "")), _key(s)),
    )
    for svc in ordered:
        if _key(svc) not in out and free:
            out[_key(svc)] = free.pop(0)
    return out


def plan_listeners(
    services: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    node_addresses: Mapping[str, str],
    addresses: Mapping[str, str],
) -> list[Listener]:
    """The balancer's listeners for every LoadBalancer Service given an address.

    ``node_addresses`` holds the nodes the balancer can reach; ``addresses``
    comes from :func:`assign_addresses`.
    """
    ready = _ready_nodes_by_service(slices)
    out: list[Listener] = []
    for svc in sorted(services, key=_key):
        spec = svc.get("spec") or {}
        key = _key(svc)
        if spec.get("type") != "LoadBalancer" or key not in addresses:
            continue
        if spec.get("externalTrafficPolicy") == "Local":
            nodes = ready.get(key, set())
        else:
            nodes = set(node_addresses)
        backends = tuple(sorted(node_addresses[n] for n in nodes if n in node_addresses))
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol", "TCP"))
            if protocol not in ("TCP", "UDP") or not port.get("nodePort"):
                continue
            out.append(
                Listener(
                    key,
                    addresses[key],
                    protocol,
                    int(port["port"]),
                    int(port["nodePort"]),
                    backends,
                )
            )
    return out


def _key(svc: Mapping[str, Any]) -> str:
    meta = svc.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def balancer_ruleset(listeners: Sequence[Listener]) -> str:
    """The balancer host's table, replacing any previous one (``nft -f`` input)."""
    pre: list[str] = []
    for ls in listeners:
        if not ls.backends:
            continue  # no healthy backend: the balancer's own stack refuses
        choice = ", ".join(f"{i} : {b} . {ls.node_port}" for i, b in enumerate(ls.backends))
        proto = ls.protocol.lower()
        pre.append(
            f"\t\tip daddr {ls.address} {proto} dport {ls.port} "
            f"dnat ip to numgen random mod {len(ls.backends)} "
            f'map {{ {choice} }} comment "{ls.service}: one backend per new flow"'
        )
    body = "\n".join(pre)
    return (
        f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        f"{body}\n"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\tct status dnat masquerade comment "replies come back through the balancer"\n'
        "\t}\n"
        "}\n"
    )


def wanted_status(svc: Mapping[str, Any], ip: str) -> dict[str, Any] | None:
    """The status patch a Service needs, or None when it already has ``ip``."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if [i.get("ip") for i in ingress] == [ip]:
        return None
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}


class KubeLoadBalancer:
    """The polling loop (see the module docstring); ``start``/``stop`` own a thread."""

    def __init__(
        self,
        kubectl: Callable[..., Any],
        apply_ruleset: Callable[[str], None],
        addresses: Sequence[str],
        node_addresses: Mapping[str, str],
        log_fn: Callable[[str], None] = lambda m: None,
    ) -> None:
        self.kubectl = kubectl
        self.apply_ruleset = apply_ruleset
        self.pool = list(addresses)
        self.assigned: dict[str, str] = {}
        self.node_addresses = dict(node_addresses)
        self.log = log_fn
        self.listeners: list[Listener] = []
        self.errors = 0
        self._applied: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.apply_ruleset(balancer_ruleset([]))
        self._thread = threading.Thread(target=self._run, name="kubelb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(KUBECTL_TIMEOUT_S * 3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # the loop outlives one bad pass, as a controller does
                self.errors += 1
                self.log(f"kubelb: pass failed: {exc}")
            self._stop.wait(POLL_INTERVAL_S)

    def _list(self, kind: str) -> list[dict[str, Any]]:
        proc = self.kubectl("get", kind, "-A", "-o", "json", timeout=KUBECTL_TIMEOUT_S)
        return list(json.loads(proc.stdout).get("items") or [])

    def sync_once(self) -> None:
        services = [
            s for s in self._list("services") if (s.get("spec") or {}).get("type") == "LoadBalancer"
        ]
        if not services:
            return
        self.assigned = assign_addresses(services, self.assigned, self.pool)
        listeners = plan_listeners(
            services, self._list("endpointslices"), self.node_addresses, self.assigned
        )
        ruleset = balancer_ruleset(listeners)
        if ruleset != self._applied:
            self.apply_ruleset(ruleset)
            self._applied = ruleset
            self.listeners = listeners
            self.log(
                "kubelb: "
                + "; ".join(
                    f"{ls.service} {ls.address}:{ls.port}/{ls.protocol} -> "
                    f"{','.join(ls.backends) or 'none'} :{ls.node_port}"
                    for ls in listeners
                )
            )
        for svc in services:
            if _key(svc) not in self.assigned:
                continue
            patch = wanted_status(svc, self.assigned[_key(svc)])
            if patch is None:
                continue
            meta = svc["metadata"]
            self.kubectl(
                "patch",
                "service",
                meta["name"],
                "-n",
                meta["namespace"],
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(patch),
                timeout=KUBECTL_TIMEOUT_S,
            )
