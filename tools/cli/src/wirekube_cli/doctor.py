"""``wirekubectl doctor [NODE]``: what usually breaks a mesh, each finding with
its fix.

``findings`` is pure (the mesh view plus what the probes saw, ``now``);
``probe`` does the little I/O the checks need, and only ever to addresses the
cluster names: the STUN servers of the mesh spec (one Binding request each)
and the relay's published endpoint (a TCP connect), plus the API server's
clock (its Date header).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from wirekube_cli.kube import CRDS
from wirekube_cli.mesh import MeshView
from wirekube_cli.render import table
from wirekube_cli.term import PLAIN, SEVERITY_COLOURS, Style
from wirekube_cli.why import ago, ts
from wirekube_common.stun import codec

Severity = Literal["ok", "info", "warning", "error"]
# Clocks further apart than this break certificate validity and make every
# published time (handshakes, retries) misleading.
MAX_SKEW_S = 5.0
# A peer whose agent has published no handshake for this long while other
# nodes are up is likely a node that is gone (its agent would keep it fresh).
STALE_AFTER_S = 600.0
# One STUN Binding request, retransmitted once: a live server answers well
# within this; the check must not keep the user waiting on a dead one.
STUN_TIMEOUT_S = 1.0
STUN_TRIES = 2
RELAY_CONNECT_TIMEOUT_S = 3.0
# WireGuard adds 60 bytes over IPv4 (80 over IPv6) to a 1500-byte underlay.
MAX_MTU_IPV4 = 1440
MIN_MTU = 1280


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    subject: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeResults:
    crds_missing: list[str] = field(default_factory=list)
    stun: dict[str, str | None] = field(default_factory=dict)  # server -> error (None: answered)
    relay: dict[str, str | None] = field(default_factory=dict)  # endpoint -> error
    skew_s: float | None = None


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or host.endswith(":"):
        return text.strip("[]"), default_port
    return host.strip("[]"), int(port)


def stun_check(server: str, timeout: float = STUN_TIMEOUT_S) -> str | None:
    """One Binding request to ``server`` (host:port from the mesh spec); None
    when a matching response came back, else what went wrong."""
    host, port = split_host_port(server, 3478)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    family, _, _, _, address = infos[0]
    request = codec.binding_request()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for _ in range(STUN_TRIES):
            try:
                sock.sendto(codec.encode(request), address)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    data = sock.recv(2048)
                    with contextlib.suppress(codec.StunDecodeError):
                        if codec.decode(data).transaction_id == request.transaction_id:
                            return None
            except TimeoutError:
                continue
            except OSError as exc:
                return str(exc)
    return f"no answer within {STUN_TIMEOUT_S * STUN_TRIES:g} s"


def relay_check(endpoint: str, timeout: float = RELAY_CONNECT_TIMEOUT_S) -> str | None:
    host, port = split_host_port(endpoint, 3478)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def findings(
    view: MeshView, probes: ProbeResults, now: float, node: str | None = None
) -> list[Finding]:
    out: list[Finding] = []
    add = out.append
    # -- the cluster ---------------------------------------------------------------------
    if probes.crds_missing:
        add(Finding("crds", "error", "cluster", f"CRDs missing: {', '.join(probes.crds_missing)}",
                    "kubectl apply -k deploy/kustomize/base"))  # fmt: skip
    else:
        add(Finding("crds", "ok", "cluster", f"CRDs installed ({', '.join(CRDS)})"))
    if view.mesh is None:
        add(Finding("mesh", "warning", "WireKubeMesh default",
                    "no WireKubeMesh named default: agents run on built-in defaults (no relay, no STUN)",
                    "create it: kubectl apply -f deploy/kustomize/base/mesh-default.yaml (or your own)"))  # fmt: skip
    else:
        add(Finding("mesh", "ok", "WireKubeMesh default", f"relay mode {view.spec.relay.mode}"))
    if probes.skew_s is not None:
        if abs(probes.skew_s) > MAX_SKEW_S:
            add(Finding("clock", "warning", "this machine",
                        f"clock differs from the API server's by {probes.skew_s:+.1f} s",
                        "run NTP (chrony/systemd-timesyncd) here and on the nodes"))  # fmt: skip
        else:
            add(
                Finding(
                    "clock",
                    "ok",
                    "this machine",
                    f"clock within {MAX_SKEW_S:g} s of the API server's",
                )
            )
    # -- STUN and relay --------------------------------------------------------------------
    if not view.spec.stun_servers:
        add(Finding("stun", "warning", "WireKubeMesh default", "no STUN servers: nodes behind NAT "
                    "cannot learn their public endpoint or NAT type, so most pairs end up relayed",
                    "set spec.stunServers (e.g. the wirekube-stun-probe Service)"))  # fmt: skip
    for server in view.spec.stun_servers:
        error = probes.stun.get(server)
        if server not in probes.stun:
            continue
        if error is None:
            add(Finding("stun", "ok", f"STUN {server}", "answers a Binding request"))
        else:
            add(Finding("stun", "warning", f"STUN {server}", f"no answer from here ({error}); "
                        "nodes that cannot reach it report an unknown NAT type",
                        f"check that UDP {server} is reachable from the nodes (wirekubectl status: NAT column)"))  # fmt: skip
    for endpoint, error in probes.relay.items():
        if error is None:
            add(Finding("relay", "ok", f"relay {endpoint}", "accepts TCP connections"))
        else:
            add(Finding("relay", "error", f"relay {endpoint}", f"cannot connect ({error}): relayed pairs are down",
                        "check the relay runs and its port is open from the nodes (wirekubectl relays)"))  # fmt: skip
    if (
        view.spec.relay.mode != "never"
        and view.spec.relay.external is None
        and view.spec.relay.provider != "managed"
    ):
        add(Finding("relay", "warning", "WireKubeMesh default", "no relay configured: pairs that cannot "
                    "go direct (symmetric <-> symmetric, TCP-only) have no path",
                    "set spec.relay (external endpoint or provider: managed)"))  # fmt: skip
    mtu = view.spec.mtu
    if mtu > MAX_MTU_IPV4:
        add(Finding("mtu", "warning", "WireKubeMesh default", f"mtu {mtu} leaves less than WireGuard's 60 "
                    "bytes of overhead on a 1500-byte underlay: large packets fragment or vanish",
                    f"set spec.mtu to {MAX_MTU_IPV4} or less (1420 also fits IPv6 underlays)"))  # fmt: skip
    elif mtu < MIN_MTU:
        add(Finding("mtu", "warning", "WireKubeMesh default", f"mtu {mtu} is below IPv6's minimum {MIN_MTU}",
                    "set spec.mtu to 1280 or more"))  # fmt: skip
    # -- peers ----------------------------------------------------------------------------------
    have = {n.node for n in view.nodes}
    for name in view.labelled_nodes:
        if name not in have and (node is None or node == name):
            add(Finding("peers", "error", f"node {name}", "labelled wirekube.io/vpn-enabled=true but has no WireKubePeer: its agent is not running or cannot write",
                        f"kubectl -n wirekube-system get pods -o wide --field-selector spec.nodeName={name}; then its logs"))  # fmt: skip
    for name, error in view.invalid:
        add(
            Finding(
                "peers",
                "error",
                name,
                f"invalid object: {error}",
                f"fix or delete it: kubectl delete wirekubepeer {name}",
            )
        )
    keys: dict[str, list[str]] = {}
    endpoints: dict[str, list[str]] = {}
    for n in view.nodes:
        keys.setdefault(n.public_key, []).append(n.node)
        if n.endpoint:
            endpoints.setdefault(n.endpoint, []).append(n.node)
    for key, owners in keys.items():
        if len(owners) > 1:
            add(Finding("duplicates", "error", ", ".join(owners), f"share the public key {key[:12]}...: only the oldest claim is used",
                        "give each node its own key: delete the newer WireKubePeer and restart its agent"))  # fmt: skip
    for ep, owners in endpoints.items():
        if len(owners) > 1:
            add(Finding("duplicates", "warning", ", ".join(owners), f"publish the same endpoint {ep}",
                        "set a distinct endpoint per node (annotation wirekube.io/endpoint or port forwards)"))  # fmt: skip
    labelled = set(view.labelled_nodes)
    up = [n for n in view.nodes if n.connected]
    for n in view.nodes:
        if node is not None and n.node != node:
            continue
        if labelled and n.node not in labelled:
            add(Finding("stale", "warning", f"node {n.node}", "has a WireKubePeer but no labelled Node: a node that left the mesh",
                        f"kubectl delete wirekubepeer {n.peer}"))  # fmt: skip
        hs = ts(n.last_handshake)
        if up and (hs is None or now - hs > STALE_AFTER_S) and not n.connected:
            seen = f"last handshake {ago(now - hs)} ago" if hs else "never had a handshake"
            add(Finding("stale", "warning", f"node {n.node}", f"{seen} while other nodes are up",
                        f"wirekubectl why {n.node} <other node>; is its agent running?"))  # fmt: skip
        if not n.nat_type and n.nat_filtering != "blocked" and n.nat_mapping != "none":
            add(Finding("nat", "warning", f"node {n.node}", "NAT type unknown: STUN has not answered it",
                        "check UDP from the node to spec.stunServers"))  # fmt: skip
        ready = n.ready or {}
        if ready.get("status") == "False":
            add(Finding("ready", "error", f"node {n.node}", f"{ready.get('reason')}: {ready.get('message')}",
                        f"wirekubectl why {n.node} <peer> for each peer named"))  # fmt: skip
    for p in view.pairs():
        if node is not None and node not in (p.a.node, p.b.node):
            continue
        if p.state == "down":
            add(Finding("pairs", "error", f"{p.a.node} <-> {p.b.node}", "no working path",
                        f"wirekubectl why {p.a.node} {p.b.node}"))  # fmt: skip
    if node is not None and node not in have:
        add(
            Finding(
                "peers",
                "error",
                f"node {node}",
                "has no WireKubePeer",
                "is the node labelled and its agent running?",
            )
        )
    return out


MANAGED_SERVICE = ("wirekube-system", "wirekube-relay")


def managed_endpoint(service: Mapping[str, Any] | None, port: int) -> tuple[str | None, str]:
    """The managed relay Service's address for nodes outside the cluster
    network (external IP, then load-balancer ingress) and what was found."""
    if service is None:
        return None, "the managed relay Service wirekube-system/wirekube-relay does not exist"
    spec = service.get("spec") or {}
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    hosts = [*(spec.get("externalIPs") or []), *(i.get("ip") or i.get("hostname") for i in ingress)]
    hosts = [h for h in hosts if h]
    if not hosts:
        if spec.get("type") == "NodePort":
            return None, ""  # agents use a node's address: nothing to check from here
        kind = spec.get("type", "ClusterIP")
        return None, f"the managed relay Service has no external or load-balancer address ({kind})"
    return f"{hosts[0]}:{port}", ""


def probe(
    view: MeshView,
    crds_missing: Sequence[str],
    server_time: float | None,
    now: float,
    network: bool = True,
    service: Mapping[str, Any] | None = None,
) -> ProbeResults:
    """The checks' I/O (see the module docstring); ``network=False`` sends
    nothing to the STUN servers and the relay. ``service``: the managed relay
    Service, when the mesh uses one."""
    results = ProbeResults(crds_missing=list(crds_missing))
    relay = view.spec.relay
    if relay.provider == "managed" and relay.mode != "never":
        port = relay.managed.port if relay.managed else 3478
        endpoint, problem = managed_endpoint(service, port)
        if endpoint is None and problem:
            results.relay["managed relay"] = problem
        elif network:
            results.relay[endpoint] = relay_check(endpoint)
    if server_time is not None:
        results.skew_s = round(now - server_time, 1)
    if not network:
        return results
    for server in view.spec.stun_servers:
        results.stun[server] = stun_check(server)
    external = view.spec.relay.external
    if external is not None and view.spec.relay.mode != "never":
        results.relay[external.endpoint] = relay_check(external.endpoint)
    return results


def exit_problems(found: Sequence[Finding]) -> bool:
    return any(f.severity == "error" for f in found)


def render(found: Sequence[Finding], style: Style = PLAIN) -> str:
    rows, colours = [], []
    for f in found:
        rows.append([f.severity.upper(), f.check, f.subject, f.message])
        colours.append([SEVERITY_COLOURS[f.severity], None, None, None])
    text = table(["", "CHECK", "SUBJECT", "FINDING"], rows, style, colours)
    fixes = [f for f in found if f.fix and f.severity in ("warning", "error")]
    if fixes:
        text += "\nfixes:\n" + "".join(f"  {f.subject}: {f.fix}\n" for f in fixes)
    errors = sum(1 for f in found if f.severity == "error")
    warnings = sum(1 for f in found if f.severity == "warning")
    text += f"\n{errors} errors, {warnings} warnings\n"
    return text
