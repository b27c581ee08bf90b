"""The lab's Python API: build a topology, run things in it, always tear it down.

::

    with Lab("lab/topologies/topology-1-all-private.yaml", workdir=tmp) as lab:
        agent = lab.spawn("node-1", ["wirekube-agent"], env={...},
                          private_wireguard_dir=True, name="agent")
        result = lab.ping("node-1", lab.address("node-3"), count=5, interval=0.2)

Names: every host, router and network name of the topology, plus
``internet``, is accepted wherever a ``host`` is expected (a network name
means its router). The object is small on purpose: everything else a test
needs is a command run with :meth:`Lab.exec` or a process from
:meth:`Lab.spawn`.

Lifecycle: ``__enter__`` sweeps leftovers of dead runs, then plans and builds
(timings in :attr:`Lab.timings`); ``__exit__`` / :meth:`close` stops every
spawned process by PID, kills any other process still in the run's
namespaces, and deletes the namespaces. Teardown also runs at interpreter
exit and on SIGTERM/SIGHUP (:mod:`~wirekube_lab.lifecycle`), and is
idempotent.
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import lifecycle, netops
from .addressing import APISERVER_ADDRESS, HostPlan, LabPlan, RouterPlan, plan_lab
from .naming import RunIds
from .ping import PingResult, parse_ping
from .processes import LabProcess, netns_argv, run_checked, spawn
from .topology import INTERNET, Topology, load_topology, parse_topology

log = logging.getLogger(__name__)

TopologySource = Topology | str | Path | Mapping[str, Any]


def coerce_topology(source: TopologySource) -> Topology:
    if isinstance(source, Topology):
        return source
    if isinstance(source, str | Path):
        return load_topology(source)
    return parse_topology(dict(source))


class Lab:
    """A running lab (see the module docstring)."""

    apiserver_address: str = str(APISERVER_ADDRESS)

    def __init__(
        self,
        topology: TopologySource,
        workdir: str | Path | None = None,
        *,
        sweep: bool = True,
    ) -> None:
        self.topology = coerce_topology(topology)
        self.ids = RunIds.new()
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"wklab-{self.ids.run}-"))
            if workdir is None
            else Path(workdir)
        )
        self._sweep = sweep
        self._plan: LabPlan | None = None
        self.processes: list[LabProcess] = []
        self.timings: dict[str, float] = {}
        self._closed = False
        self._cut: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        t0 = time.monotonic()
        if self._sweep:
            netops.sweep()
        t1 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        lifecycle.register(id(self), self.close)
        try:
            with netops.control_link_lock():
                control = netops.allocate_control_subnet(self.ids)
                self._plan = plan_lab(self.topology, self.ids, control)
                netops.create_root(self._plan)
            netops.configure_namespaces(self._plan)
        except BaseException:
            self.close()
            raise
        t2 = time.monotonic()
        self.timings.update(sweep_s=round(t1 - t0, 3), build_s=round(t2 - t1, 3))
        log.info(
            "lab %s up: %d namespaces in %.2fs", self.ids.run, len(self._plan.namespaces), t2 - t1
        )

    def close(self) -> None:
        """Stop processes and delete every namespace of this run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        for proc in self.processes:
            proc.signal(15)
        for proc in self.processes:
            proc.stop(grace=3.0)
        names = [n for n in netops.list_namespaces() if n.startswith(self.ids.prefix)]
        errors = netops.destroy(names)
        lifecycle.unregister(id(self))
        self.timings["teardown_s"] = round(time.monotonic() - t0, 3)
        for msg in errors:
            log.warning("teardown: %s", msg)
        if errors:
            raise netops.NetopsError("; ".join(errors))

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ lookups

    @property
    def plan(self) -> LabPlan:
        if self._plan is None:
            raise RuntimeError("the lab is not started")
        return self._plan

    def _host(self, name: str) -> HostPlan | None:
        try:
            return self.plan.host(name)
        except KeyError:
            return None

    def _router(self, name: str) -> RouterPlan | None:
        try:
            return self.plan.router(name)
        except KeyError:
            return None

    def _unknown(self, name: str) -> KeyError:
        known = [h.name for h in self.plan.hosts] + [r.name for r in self.plan.routers]
        return KeyError(f"no host or router {name!r} in this lab (known: {', '.join(known)})")

    def netns(self, host: str) -> str:
        """Network namespace name of a host, router (or network name), or ``internet``."""
        if host == INTERNET:
            return self.plan.internet_ns
        h = self._host(host)
        if h is not None:
            return h.ns
        r = self._router(host)
        if r is not None:
            return r.ns
        raise self._unknown(host)

    def address(self, host: str) -> str:
        """A host's own (first) address; for a router its WAN address."""
        h = self._host(host)
        if h is not None:
            return str(h.address)
        r = self._router(host)
        if r is not None:
            return str(r.wan_address)
        raise self._unknown(host)

    def addresses(self, host: str) -> list[str]:
        h = self._host(host)
        if h is None:
            raise self._unknown(host)
        return [str(a) for a in h.addresses]

    def public_address(self, host: str) -> str:
        """What the internet sees as the host's source address (NAT, 1:1 NAT or its own)."""
        h = self._host(host)
        if h is not None:
            return str(h.public_address)
        r = self._router(host)
        if r is not None:
            return str(r.wan_address)
        raise self._unknown(host)

    def router_of(self, host: str) -> str | None:
        """Name of the router in front of a host (None on the internet)."""
        h = self._host(host)
        if h is None:
            raise self._unknown(host)
        if h.network == INTERNET:
            return None
        return self.plan.router(h.network).name

    def hosts(self, role: str | None = None) -> list[str]:
        return [h.name for h in self.plan.hosts if role is None or h.role == role]

    def wireguard_ifname(self, host: str) -> str:
        """A WireGuard interface name unique to this host and run (``wk<run><n>``)."""
        names = [h.name for h in self.plan.hosts]
        if host not in names:
            raise self._unknown(host)
        return self.ids.wireguard_ifname(names.index(host))

    def host_dir(self, host: str) -> Path:
        self.netns(host)
        path = self.workdir / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mesh_spec(self) -> dict[str, Any]:
        """The topology's ``mesh`` overrides with lab defaults filled in.

        ``stunServers`` defaults to port 3478 on the addresses of the first
        ``stun`` host; ``relay.external.endpoint`` (when the provider is
        ``external``) to port 3478 of the first ``load-balancer`` host, else
        of the first ``relay`` host.
        """
        spec = copy.deepcopy(dict(self.topology.mesh))
        stun = self.hosts("stun")
        if "stunServers" not in spec and stun:
            spec["stunServers"] = [f"{a}:3478" for a in self.addresses(stun[0])]
        relay = spec.get("relay")
        # A balancer without static backends is kubelb's (LoadBalancer Services), not a relay's.
        balancers = [h for h in self.hosts("load-balancer") if self.topology.host(h).backends]
        relays = balancers or self.hosts("relay")
        if isinstance(relay, dict) and relay.get("provider") == "external" and relays:
            external = relay.setdefault("external", {})
            port = 443 if external.get("transport") == "tls" else 3478  # the relay's TLS port
            external.setdefault("endpoint", f"{self.address(relays[0])}:{port}")
        return spec

    # ------------------------------------------------------------------ actions

    def exec(
        self,
        host: str,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a host's namespace and wait; output captured as text."""
        return run_checked(netns_argv(self.netns(host), argv), check, timeout, input)

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        private_wireguard_dir: bool = False,
    ) -> LabProcess:
        """Start a tracked background process in a host (logs to workdir/<host>/<name>.log)."""
        ns = self.netns(host)
        base = name or Path(argv[0]).name
        taken = {p.name for p in self.processes if p.host == host}
        unique, n = base, 1
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        proc = spawn(
            host,
            ns,
            argv,
            log_path=self.host_dir(host) / f"{unique}.log",
            name=unique,
            env=env,
            private_wireguard_dir=private_wireguard_dir,
            cwd=self.host_dir(host),
        )
        self.processes.append(proc)
        return proc

    def ping(
        self, src: str, dst_ip: str, count: int = 3, interval: float = 0.2, wait: float = 1.0
    ) -> PingResult:
        """``ping`` from a host; ``dst_ip`` may also be a host name (its own address).

        iputils waits ``wait`` seconds only while no reply has come; after the
        last request it then waits just twice the largest RTT seen so far. On a
        loaded host, replies to the last requests that come later than that
        count as lost. (``-w`` would wait, but it also keeps sending until then,
        which floods a cut host's ARP and changes what a test of loss measures.)
        """
        if self._host(dst_ip) is not None:
            dst_ip = self.address(dst_ip)
        argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait), dst_ip]
        proc = self.exec(src, argv, check=False, timeout=count * interval + wait + 10)
        return parse_ping(dst_ip, proc.stdout)

    def _uplink(self, name: str) -> tuple[str, str]:
        h = self._host(name)
        if h is not None:
            return h.uplink.ns, h.uplink.ifname
        r = self._router(name)
        if r is not None:
            return r.uplink.ns, r.uplink.ifname
        raise self._unknown(name)

    def cut(self, host: str) -> None:
        """Unplug a host's (or a router's WAN) cable: its bridge-side port goes down."""
        ns, ifname = self._uplink(host)
        netops.run(["ip", "-n", ns, "link", "set", ifname, "down"])
        self._cut.add(host)

    def restore(self, host: str) -> None:
        ns, ifname = self._uplink(host)
        netops.run(["ip", "-n", ns, "link", "set", ifname, "up"])
        self._cut.discard(host)

    def flush_conntrack(self, router: str) -> None:
        """Forget every NAT mapping of a router: conntrack and its dynamic mapping tables."""
        r = self._router(router)
        if r is None:
            raise self._unknown(router)
        self.exec(router, ["conntrack", "-F"], check=False)
        if r.nat.kind in ("full-cone", "address-restricted"):
            self.exec(router, ["nft", "flush", "map", "ip", "wklab", "udp_mappings"])
            self.exec(router, ["nft", "flush", "map", "ip", "wklab", "udp_eim"])
            self.exec(router, ["nft", "flush", "set", "ip", "wklab", "udp_taken"])
        if r.nat.kind == "address-restricted":
            self.exec(router, ["nft", "flush", "set", "ip", "wklab", "udp_contacted"])

    def write_etc(self, host: str, filename: str, text: str) -> Path:
        """A per-host ``/etc/<filename>`` (e.g. ``hosts``, ``resolv.conf``).

        ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/<file>`` over
        ``/etc/<file>`` for processes started *afterwards*.
        """
        path = netops.ETC_NETNS_DIR / self.netns(host) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def describe(self) -> dict[str, Any]:
        """The lab as built, as JSON-ready data (the CLI's ``topology`` key)."""
        plan = self.plan
        return {
            "name": self.topology.name,
            "run": self.ids.run,
            "apiserver_address": self.apiserver_address,
            "control_link": str(plan.control.cidr),
            "networks": [
                {
                    "name": r.network,
                    "router": r.name,
                    "nat": r.nat.kind,
                    "cidr": str(r.lan_cidr),
                    "wan_address": str(r.wan_address),
                    "netns": r.ns,
                }
                for r in plan.routers
            ],
            "hosts": [
                {
                    "name": h.name,
                    "role": h.role,
                    "network": h.network,
                    "netns": h.ns,
                    "addresses": [str(a) for a in h.addresses],
                    "public_address": str(h.public_address),
                }
                for h in plan.hosts
            ],
        }
