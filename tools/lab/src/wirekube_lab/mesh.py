"""The services step of the lab: a WireKube mesh running on a built lab.

``MeshLab`` ties a :class:`~wirekube_lab.lab.Lab` to a running
:class:`~wirekube_lab.controlplane.ControlPlane`: it writes the lab's
WireKubeMesh, registers a Node object per lab node (no kubelet here, so the
lab plays its part: InternalIP = the host's own address, ExternalIP = its
public address when it has one, labels and annotations from the topology),
and starts the real ``wirekube-agent`` as a separate process in each node's
namespace, talking to the API server as the agent's ServiceAccount with a
token bound to a stand-in Pod on that node (``podidentity``: what the kubelet
would give the agent's pod, and what the admission policy requires).

Locked-down egress (egress.py): with ``relay.external.transport: tls`` the
relay also serves TLS on 443 with a lab CA every agent trusts; ``proxy``
hosts run tinyproxy, and the nodes of their network reach the relay through
it (``HTTPS_PROXY`` + a credentials file).

It also reads the result back the way a user would: the path table from each
node's ``WireKubePeer.status.peerTransports`` and a ping matrix over node IPs.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from wirekube_lab import firstreply, podidentity
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.egress import (
    PROXY_PORT,
    RELAY_TLS_PORT,
    ProxyCredentials,
    RelayTls,
    tinyproxy_binary,
    tinyproxy_config,
)
from wirekube_lab.lab import Lab
from wirekube_lab.ping import PingResult
from wirekube_lab.processes import LabProcess

GROUP, VERSION = "wirekube.io", "v1alpha1"
RELAY_SA = ("wirekube-system", "wirekube-relay")
LOG_ENV = {"WIREKUBE_LOG_FORMAT": "text", "WIREKUBE_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}
VPN_LABEL = "wirekube.io/vpn-enabled"
# The lab never reaches EC2 metadata (it is not our address to probe) and has
# no UPnP routers; every other source is real.
LAB_ENDPOINT_SOURCES = "annotation,stun,ipv6,external-ip,internal"
# Agents poll WireGuard once a second; a few seconds covers handshake retries.
POLL_S = 0.25
# How long the first-reply watchers keep asking (they stop once all answered).
REPLY_WATCH_S = 90.0
# With several relay hosts, they form one pool (docs/relay-mesh.md).
RELAY_MESH_SECRET = "wirekube-lab-relay-pool-secret"


def peer_name(host: str) -> str:
    return f"node-{host}"


class MeshLab:
    def __init__(self, lab: Lab, cp: ControlPlane, backend: str = "userspace") -> None:
        self.lab = lab
        self.cp = cp
        self.backend = backend
        self.api = cp.api_client()
        self.core = k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.agents: dict[str, LabProcess] = {}
        self.services: dict[str, LabProcess] = {}  # relays and STUN servers by host
        self.registered: set[str] = set()  # Node objects this lab created
        self.started_at = 0.0  # time.monotonic() when the agents were started
        self.started_wall = 0.0  # the same instant, time.time()
        self.reply_watchers: dict[str, LabProcess] = {}
        self.identities: dict[str, podidentity.PodIdentity] = {}  # running agents' pods
        self._kubeconfig: Path | None = None
        self.relay_tls: RelayTls | None = None  # with relay.external.transport tls
        self.proxy_credentials = ProxyCredentials.generate()
        self.proxies: dict[str, LabProcess] = {}  # tinyproxy by host

    # -- cluster objects ---------------------------------------------------------
    def apply_mesh(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = self.lab.mesh_spec()
        for key, value in (overrides or {}).items():
            spec[key] = value
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WireKubeMesh",
            "metadata": {"name": "default"},
            "spec": spec,
        }
        try:
            current = self.custom.get_cluster_custom_object(
                GROUP, VERSION, "wirekubemeshes", "default"
            )
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.custom.replace_cluster_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, "wirekubemeshes", "default", body
            )
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
        return self.custom.create_cluster_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, "wirekubemeshes", body
        )

    def register_node(self, host: str, participate: bool = True) -> None:
        spec = self.lab.topology.host(host)
        labels = spec.labels_dict
        annotations = spec.annotations_dict
        if participate:
            labels[VPN_LABEL] = "true"
        addresses = [{"type": "InternalIP", "address": self.lab.address(host)}]
        public = self.lab.public_address(host)
        if spec.public_ip or self.lab.router_of(host) is None:
            addresses.append({"type": "ExternalIP", "address": public})
        addresses.append({"type": "Hostname", "address": host})
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": host, "labels": labels, "annotations": annotations},
        }
        try:
            self.core.create_node(body)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(host, {"metadata": {"labels": labels, "annotations": annotations}})
        self.core.patch_node_status(host, {"status": {"addresses": addresses}})
        self.registered.add(host)

    def delete_node(self, host: str) -> None:
        """What node removal does in a real cluster: the Node and (by GC) its peer go."""
        for call in (
            lambda: self.custom.delete_cluster_custom_object(
                GROUP, VERSION, "wirekubepeers", peer_name(host)
            ),
            lambda: self.core.delete_node(host),
        ):
            try:
                call()
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise
        self.registered.discard(host)

    def peer(self, host: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_cluster_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, "wirekubepeers", peer_name(host)
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- agents --------------------------------------------------------------------
    def kubeconfig(self, host: str) -> Path:
        """The agent's kubeconfig on ``host``: a token bound to a stand-in Pod there.

        One Pod per agent start; ``stop_agent`` deletes it (and so the token)."""
        if host not in self.identities:
            self.identities[host] = podidentity.issue(
                self.cp, host, lab=True, path=self.lab.host_dir(host) / "agent.kubeconfig"
            )
        return self.identities[host].kubeconfig

    def _agent_argv(self, host: str, extra: Sequence[str]) -> list[str]:
        state = self.lab.host_dir(host) / "state"
        return [
            sys.executable,
            "-m",
            "wirekube_agent",
            "--node-name",
            host,
            "--kubeconfig",
            str(self.kubeconfig(host)),
            "--state-dir",
            str(state),
            "--wireguard-backend",
            self.backend,
            "--metrics-port",
            "9090",
            "--endpoint-sources",
            LAB_ENDPOINT_SOURCES,
            *self._egress_flags(host),
            *extra,
        ]

    def start_agent(self, host: str, extra: Sequence[str] = ()) -> LabProcess:
        argv = self._agent_argv(host, extra)
        env = LOG_ENV | self._egress_env(host)
        proc = self.lab.spawn(host, argv, env=env, name="agent", private_wireguard_dir=True)
        self.agents[host] = proc
        return proc

    def start_next_agent(self, host: str, extra: Sequence[str] = ()) -> LabProcess:
        """A second agent on ``host`` beside the running one, as a surge rollout
        starts it: in the running agent's mount namespace (it sees the node's
        /run/wireguard and the wireguard-go there, which outlives an agent as
        kernel WireGuard would), with the same state dir and identity. It
        becomes the host's agent (``stop_agent`` stops it); the caller stops
        the old one (returned by ``agents`` before this call) by its handle."""
        old = self.agents[host]
        argv = ["nsenter", "-t", str(old.pid), "-m", "--", *self._agent_argv(host, extra)]
        env = LOG_ENV | self._egress_env(host)
        proc = self.lab.spawn(host, argv, env=env, name="agent")
        self.agents[host] = proc
        return proc

    def stop_agent(self, host: str) -> int | None:
        proc = self.agents.pop(host, None)
        code = proc.stop() if proc is not None else None
        identity = self.identities.pop(host, None)
        if identity is not None:
            identity.revoke(self.cp)
        return code

    @property
    def relay_admin_token_file(self) -> Path:
        """The bearer token of the lab relays' admin gRPC, which listens on the
        relay host's lab address (off loopback a relay requires one)."""
        path = self.lab.workdir / "relay-admin-token"
        if not path.exists():
            path.write_text(secrets.token_hex(16) + "\n")
            path.chmod(0o600)
        return path

    def start_relay(
        self, host: str, extra: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> LabProcess:
        """``wirekube-relay`` on ``host`` (allow-list on, admin gRPC with the
        token of ``relay_admin_token_file``); ``extra`` flags and ``env`` are
        added (a relay pool's ``--mesh-*`` flags and ``POD_IP``)."""
        kubeconfig = self.cp.kubeconfig_for_service_account(*RELAY_SA, lab=True)
        argv = [
            sys.executable,
            "-m",
            "wirekube_relay",
            "--listen",
            "0.0.0.0:3478",
            "--admin-listen",
            "0.0.0.0:9091",
            "--admin-token-file",
            str(self.relay_admin_token_file),
            "--metrics-listen",
            "0.0.0.0:9090",
            "--allowlist",
            "on",
            "--kubeconfig",
            str(kubeconfig),
            *extra,
        ]
        if self.relay_tls is not None:
            argv += [
                "--tls-listen",
                f"0.0.0.0:{RELAY_TLS_PORT}",
                "--tls-cert-file",
                str(self.relay_tls.cert_file),
                "--tls-key-file",
                str(self.relay_tls.key_file),
            ]
        proc = self.lab.spawn(host, argv, env={**LOG_ENV, **(env or {})}, name="relay")
        self.services[host] = proc
        return proc

    # -- locked-down egress ----------------------------------------------------------
    def tls_relay(self) -> bool:
        relay = self.lab.mesh_spec().get("relay") or {}
        return bool((relay.get("external") or {}).get("transport") == "tls")

    def proxy_of(self, host: str) -> str | None:
        """The proxy host of ``host``'s network, if it has one."""
        network = self.lab.topology.host(host).network
        for name in self.lab.hosts("proxy"):
            if self.lab.topology.host(name).network == network:
                return name
        return None

    def proxy_credentials_file(self, host: str) -> Path:
        return self.lab.host_dir(host) / "relay-proxy-credentials"

    def _egress_flags(self, host: str) -> list[str]:
        flags = []
        if self.relay_tls is not None:
            flags += ["--relay-ca-file", str(self.relay_tls.ca_file)]
        if self.proxy_of(host) is not None:
            path = self.proxy_credentials_file(host)
            if not path.exists():
                self.proxy_credentials.write(path)
            flags += ["--relay-proxy-credentials-file", str(path)]
        return flags

    def _egress_env(self, host: str) -> dict[str, str]:
        proxy = self.proxy_of(host)
        if proxy is None:
            return {}
        return {"HTTPS_PROXY": f"http://{self.lab.address(proxy)}:{PROXY_PORT}"}

    def start_proxy(self, host: str) -> LabProcess:
        """tinyproxy on the host's own address, for its own network only."""
        address = self.lab.address(host)
        network = self.lab.topology.host(host).network
        cidr = str(self.lab.plan.router(network).lan_cidr)
        conf = self.lab.host_dir(host) / "tinyproxy.conf"
        creds = self.proxy_credentials
        conf.write_text(tinyproxy_config(address, cidr, creds.user, creds.password))
        conf.chmod(0o600)
        proc = self.lab.spawn(host, [tinyproxy_binary(), "-d", "-c", str(conf)], name="tinyproxy")
        self.proxies[host] = proc
        return proc

    def pool_flags(self, host: str, relays: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Flags and environment that make several relay hosts one pool (a
        static peer list; the relay's own address is ``POD_IP``)."""
        if len(relays) < 2:
            return [], {}
        secret = self.lab.workdir / "relay-mesh-secret"
        secret.write_text(RELAY_MESH_SECRET + "\n")
        peers = ",".join(f"{self.lab.address(r)}:3478" for r in relays)
        flags = ["--mesh-secret-file", str(secret), "--mesh-peers", peers]
        return flags, {"POD_IP": self.lab.address(host)}

    def start_stun(self, host: str) -> LabProcess:
        addresses = self.lab.addresses(host)
        argv = [
            sys.executable,
            "-m",
            "wirekube_stunprobe",
            "--address",
            addresses[0],
            "--port",
            "3478",
            "--health-address",
            "",
            "--metrics-port",
            "9090",  # as in a cluster: Prometheus and promtool read it (tests/integration/metrics)
        ]
        if len(addresses) > 1:  # RFC 5780: a second address answers CHANGE-REQUESTs
            argv += ["--alternate-address", addresses[1], "--alternate-port", "3479"]
        proc = self.lab.spawn(host, argv, env=LOG_ENV, name="stun-probe")
        self.services[host] = proc
        return proc

    def start(self, hosts: Iterable[str] | None = None, watch_replies: bool = False) -> list[str]:
        """Everything the topology names: STUN servers and relays first, then agents.

        ``watch_replies``: every node also pings every other from the agents'
        start, for ``first_replies`` (the time-to-reachable figure)."""
        nodes = list(hosts) if hosts is not None else self.lab.hosts("node")
        self.apply_mesh()
        if self.tls_relay() and self.relay_tls is None:
            addresses = [self.lab.address(h) for h in self.lab.hosts("relay")]
            self.relay_tls = RelayTls.create(self.lab.workdir / "relay-tls", addresses)
        for host in self.lab.hosts("proxy"):
            self.start_proxy(host)
        for host in self.lab.hosts("stun"):
            self.start_stun(host)
        relays = self.lab.hosts("relay")
        for host in relays:
            self.start_relay(host, *self.pool_flags(host, relays))
        for host in nodes:
            self.register_node(host)
        # In a cluster the relay and STUN services are running before a node's
        # agent starts; wait for them here too, so that "time from agent start"
        # does not include their Python start-up on the lab's shared cores.
        for host in [*self.lab.hosts("stun"), *self.lab.hosts("relay")]:
            self.wait_until(f"{host} listening", lambda h=host: self._listening(h), 30)
        for host in self.proxies:
            self.wait_until(f"{host} proxying", lambda h=host: self._proxy_listening(h), 30)
        if watch_replies:
            for host in nodes:
                others = [self.lab.address(h) for h in nodes if h != host]
                argv = [
                    sys.executable,
                    "-m",
                    "wirekube_lab.firstreply",
                    str(REPLY_WATCH_S),
                    *others,
                ]
                self.reply_watchers[host] = self.lab.spawn(host, argv, name="firstreply")
        self.started_at, self.started_wall = time.monotonic(), time.time()
        for host in nodes:
            self.start_agent(host)
        return nodes

    def first_replies(self) -> dict[tuple[str, str], float]:
        """(from, to) -> seconds from the agents' start to the first echo reply,
        for the pairs that have answered (``start(watch_replies=True)``)."""
        by_address = {self.lab.address(h): h for h in self.reply_watchers}
        out = {}
        for host, proc in self.reply_watchers.items():
            for address, at in firstreply.first_replies(proc.log_path).items():
                if address in by_address:
                    out[(host, by_address[address])] = at - self.started_wall
        return out

    def _listening(self, host: str) -> bool:
        """The service on ``host`` has bound its port (3478; TCP or UDP)."""
        proc = self.services[host]
        if not proc.alive:
            raise RuntimeError(f"{proc.name} on {host} exited {proc.returncode}")
        out = self.lab.exec(host, ["ss", "-Hlntu", "sport = :3478"], check=False).stdout
        return bool(out.strip())

    def _proxy_listening(self, host: str) -> bool:
        proc = self.proxies[host]
        if not proc.alive:
            raise RuntimeError(f"tinyproxy on {host} exited {proc.returncode}")
        out = self.lab.exec(host, ["ss", "-Hlnt", f"sport = :{PROXY_PORT}"], check=False).stdout
        return bool(out.strip())

    def stop(self) -> None:
        """Stop every process, then delete the Nodes (and their peers) we made:
        the control plane may outlive this lab (one per test session)."""
        for host in list(self.agents):
            self.stop_agent(host)
        for proc in [
            *self.services.values(),
            *self.reply_watchers.values(),
            *self.proxies.values(),
        ]:
            proc.stop()
        self.proxies.clear()
        self.services.clear()
        self.reply_watchers.clear()
        for host in sorted(self.registered):
            self.delete_node(host)

    # -- observation -----------------------------------------------------------------
    def transports(self, host: str) -> dict[str, str]:
        peer = self.peer(host) or {}
        return dict((peer.get("status") or {}).get("peerTransports") or {})

    def path_table(self, hosts: Sequence[str]) -> dict[str, dict[str, str]]:
        """``table[a][b]``: how a's packets reach b, as a reports it (direct/relay/none)."""
        table: dict[str, dict[str, str]] = {}
        for a in hosts:
            seen = self.transports(a)
            table[a] = {b: seen.get(peer_name(b), "none") for b in hosts if b != a}
        return table

    def pair_paths(self, hosts: Sequence[str]) -> dict[str, str]:
        """``{"a/b": mode}`` for every pair; ``x|y`` when the two ends disagree."""
        table = self.path_table(hosts)
        out: dict[str, str] = {}
        for i, a in enumerate(hosts):
            for b in hosts[i + 1 :]:
                ab, ba = table[a][b], table[b][a]
                out[f"{a}/{b}"] = ab if ab == ba else f"{ab}|{ba}"
        return out

    def ping_matrix(
        self, hosts: Sequence[str], count: int = 3, interval: float = 0.2
    ) -> dict[str, dict[str, float]]:
        """``matrix[a][b]``: fraction of pings from a to b's node IP answered."""
        results = self.ping_results(hosts, count, interval)
        return {
            a: {b: r.received / r.sent if r.sent else 0.0 for b, r in row.items()}
            for a, row in results.items()
        }

    def ping_results(
        self, hosts: Sequence[str], count: int = 3, interval: float = 0.2
    ) -> dict[str, dict[str, PingResult]]:
        """Ping every node's IP from every other node, in parallel."""
        pairs = [(a, b) for a in hosts for b in hosts if a != b]

        def one(pair: tuple[str, str]) -> PingResult:
            return self.lab.ping(pair[0], self.lab.address(pair[1]), count=count, interval=interval)

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = dict(zip(pairs, pool.map(one, pairs), strict=True))
        return {a: {b: results[(a, b)] for b in hosts if b != a} for a in hosts}

    def agent_metric(self, host: str, name: str) -> float:
        """One sample of an agent's Prometheus metric (read inside its namespace)."""
        url = "http://127.0.0.1:9090/metrics"
        script = f"import urllib.request;print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        text = self.lab.exec(host, [sys.executable, "-c", script]).stdout
        for line in text.splitlines():
            if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(f"{name} not exported by the agent on {host}")

    def all_reachable(self, hosts: Sequence[str]) -> bool:
        """One ping per ordered pair, in parallel; True when every one came back."""
        results = self.ping_results(hosts, count=1, interval=0.2)
        return all(r.received for row in results.values() for r in row.values())

    def wg_bytes(self, host: str, ifname: str = "wire_kube") -> tuple[int, int]:
        """(rx, tx) bytes of the host's WireGuard interface, from the kernel."""
        out = self.lab.exec(host, ["ip", "-s", "-j", "link", "show", ifname]).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        """Poll ``predicate`` until true; returns seconds taken, raises TimeoutError."""
        start = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not reached within {timeout:.0f}s\n{self.diagnose()}")
            for host, proc in self.agents.items():
                if not proc.alive:
                    raise RuntimeError(
                        f"agent on {host} exited {proc.returncode}\n{self.diagnose()}"
                    )
            time.sleep(POLL_S)

    def full_mesh(self, hosts: Sequence[str]) -> bool:
        """Every agent reports a routed path to every other (its status)."""
        table = self.path_table(hosts)
        return all(v != "none" for row in table.values() for v in row.values())

    def working_mesh(self, hosts: Sequence[str]) -> bool:
        """Routed everywhere *and* every pair answers a ping.

        A routed path sends a node's packets into WireGuard, so the pings prove
        the tunnel (on a flat LAN they would pass unrouted too). The status can
        run ahead of the tunnel by a handshake: a peer is routed from its first
        probe answer or, on the relay, at once.
        """
        return self.full_mesh(hosts) and self.all_reachable(hosts)

    def wireguard_dump(self, hosts: Iterable[str]) -> str:
        """``wg show`` of ``hosts`` with everyone's public key: for a failure report."""
        names = {h: (self.peer(h) or {}).get("spec", {}).get("publicKey", "?") for h in self.agents}
        out = [f"keys: {names}"]
        for host in sorted(set(hosts)):
            proc = self.agents[host].exec(["wg", "show", "wire_kube", "dump"], check=False)
            out.append(f"--- wg on {host} (peer, psk, endpoint, allowed, handshake, rx, tx, ka)")
            out.extend(proc.stdout.splitlines()[1:])
            if proc.returncode != 0:
                out.append(f"wg exited {proc.returncode}: {proc.stderr.strip()}")
        return "\n".join(out)

    def diagnose(self) -> str:
        lines = []
        for host, proc in self.agents.items():
            tail = proc.log_path.read_text(errors="replace").splitlines()[-15:]
            lines.append(f"--- agent {host} (alive={proc.alive}) ---")
            lines.extend(tail)
        return "\n".join(lines)


# How long the path table must stay unchanged to count as steady. Longer than
# a probe burst and a status write interval, so an upgrade in flight shows.
STEADY_FOR_S = 6.0


class MeshDriver:
    """The ``wirekube-lab run`` driver: the real control plane and services.

    Starts its own control plane (the lab CLI runs outside pytest), then
    everything through :class:`MeshLab`; reports when every pair first had a
    working path and when the table settled.
    """

    name = "wirekube"
    note = "real kube-apiserver + wirekube-agent / wirekube-relay / wirekube-stun-probe"

    def __init__(self, control_plane: ControlPlane | None = None) -> None:
        self.cp = control_plane
        self._own_cp = control_plane is None
        self.mesh: MeshLab | None = None
        self.nodes: list[str] = []
        self.registered_after_s: float | None = None
        self.reachable_after_s: float | None = None
        self.steady_after_s: float | None = None

    def start(self, lab: Lab) -> None:
        if self.cp is None:
            from wirekube_lab.controlplane import ensure_binaries  # noqa: PLC0415 - CLI only

            log = lambda m: print(m, file=sys.stderr)  # noqa: E731
            self.cp = ControlPlane(bin_dir=ensure_binaries(), log=log)
            self.cp.start()
            self.cp.install_wirekube()
        self.mesh = MeshLab(lab, self.cp)
        self.nodes = self.mesh.start(watch_replies=True)

    def wait_steady(self, lab: Lab, timeout: float) -> bool:
        """Reachability by pings (the truth), then a path table that stopped changing."""
        assert self.mesh is not None
        mesh, nodes = self.mesh, self.nodes
        pairs = len(nodes) * (len(nodes) - 1)
        try:
            mesh.wait_until(
                "every agent registered", lambda: all(mesh.peer(h) for h in nodes), timeout
            )
            self.registered_after_s = round(time.monotonic() - mesh.started_at, 1)
            mesh.wait_until(
                "every pair answered a ping", lambda: len(mesh.first_replies()) == pairs, timeout
            )
        except TimeoutError:
            return False
        self.reachable_after_s = round(max(mesh.first_replies().values(), default=0.0), 1)
        last: dict[str, str] = {}
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            table = mesh.pair_paths(nodes)
            if table != last:
                last, since = table, time.monotonic()
            elif time.monotonic() - since >= STEADY_FOR_S and all(
                "|" not in v and v != "none" for v in table.values()
            ):
                self.steady_after_s = round(since - mesh.started_at, 1)
                self.note = (
                    f"{MeshDriver.note}; after the agents were started: all registered "
                    f"{self.registered_after_s}s, every pair answered pings "
                    f"{self.reachable_after_s}s, path table final {self.steady_after_s}s"
                )
                return True
            time.sleep(0.25)
        return False

    def paths(self, lab: Lab) -> dict[str, str] | None:
        return self.mesh.pair_paths(self.nodes) if self.mesh is not None else None

    def pings(self, lab: Lab) -> dict[str, dict[str, dict[str, Any]]] | None:
        if self.mesh is None:
            return None
        return ping_table(self.mesh.ping_results(self.nodes))

    def stop(self, lab: Lab) -> None:
        if self.mesh is not None:
            self.mesh.stop()
        if self.cp is not None and self._own_cp:
            self.cp.stop()


def ping_table(
    results: Mapping[str, Mapping[str, PingResult]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """The run document's ``pings``: per source and destination, sent, received
    and the mean round trip (ms), from ``MeshLab.ping_results``."""
    return {
        a: {
            b: {
                "sent": r.sent,
                "received": r.received,
                "rtt_avg_ms": round(sum(r.rtts_ms) / len(r.rtts_ms), 3) if r.rtts_ms else None,
            }
            for b, r in row.items()
        }
        for a, row in results.items()
    }
