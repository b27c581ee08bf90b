"""The agent's control loop: observe → desired state → diff → apply.

One synchronous ``reconcile()`` pass runs at a time in a worker thread (all its
I/O is blocking: UAPI, netlink, the kubernetes client). The asyncio side only
decides *when*: right after a watch event (debounced), every tick to follow
WireGuard handshakes, and a full resync that re-reads routes and rules from the
kernel, because other software flushes them.

Each pass is level-triggered and idempotent. Failures of one step are logged
and retried on the next pass; the API server being away only stops the steps
that write to it — the data plane keeps its last configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_agent import decide
from wirekube_agent.cleanup import cleanup
from wirekube_agent.dataplane.apply import DataPlane
from wirekube_agent.endpoint import registration
from wirekube_agent.endpoint.discovery import Discovery, discover
from wirekube_agent.endpoint.tasks import NetTasks
from wirekube_agent.gateway.cache import GatewayCache
from wirekube_agent.gateway.forwarding import Forwarding
from wirekube_agent.k8s import translate
from wirekube_agent.k8s.client import (
    GATEWAYS,
    MESHES,
    PEERS,
    ApiException,
    KubeApi,
    custom_path,
    nodes_path,
)
from wirekube_agent.k8s.parsed import ParsedCache
from wirekube_agent.keys import rotation as keyrotation
from wirekube_agent.keys import store as keys
from wirekube_agent.model import Endpoint, NodeInfo, RemotePeer
from wirekube_agent.netlink import addresses
from wirekube_agent.paths import initiate
from wirekube_agent.paths import rules as paths
from wirekube_agent.peerstats import PeerStats, Traffic
from wirekube_agent.relaying.manager import RelayManager, local_egress
from wirekube_agent.relaying.target import (
    Lookups,
    RelayTarget,
    nodes_due,
    service_due,
    uses_service,
)
from wirekube_agent.settings import Settings
from wirekube_agent.status import peerstatus as status
from wirekube_agent.status.events import REASON as PATH_CHANGED
from wirekube_agent.status.events import EventBudget, PathEvent, admit
from wirekube_agent.timers import (
    ENDPOINT_RECHECK_INTERVAL_S,
    RECONCILE_DEBOUNCE_S,
)
from wirekube_agent.wg import Backend, select
from wirekube_agent.wg.adopt import adopted_paths
from wirekube_common import keyswitch, wgkey
from wirekube_common.crd import Mesh, MeshSpec, peer_name_for_node
from wirekube_common.gwhealth.reporter import GatewayHealthReporter, KubeLeaseWriter
from wirekube_common.kube.watch import Informer
from wirekube_common.relayaddress import NodeAddresses, status_host
from wirekube_common.stun.nat import NatReport
from wirekube_common.wakeup import Wakeup
from wirekube_common.wireguard.types import DeviceState, format_endpoint

log = logging.getLogger(__name__)

# Between full resyncs the loop still wakes this often to follow WireGuard
# handshakes (a new path becomes routable within a tick of its handshake).
TICK_S = 1.0
WHY: dict[initiate.Reason, str] = {
    "silent": "its agent probes us but its initiation never came",
    "crossed": "our initiations crossed and neither completed",
}


@dataclass
class Observed:
    """What the last pass saw and did; read by metrics and the status writer."""

    device: DeviceState = field(default_factory=DeviceState)
    peers: dict[str, RemotePeer] = field(default_factory=dict)
    handshakes: dict[str, float] = field(default_factory=dict)
    reconcile_seconds: float = 0.0
    reconciles: int = 0
    api_writes: int = 0
    synced_at: float | None = None  # monotonic; read by health.py
    last_pass_at: float | None = None
    last_pass_ok: bool = False
    key_rotations: int = 0  # our own key pair replaced (keyrotation)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        api: KubeApi,
        private_key: bytes,
        clock: Callable[[], float] = time.time,
        backend_factory: Callable[[str], Backend] | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self.clock = clock
        # The key we publish; ``_active_key`` is the one the interface, the
        # prober and the relay links use. They differ only during a rotation,
        # until the switch instant published with the new key (``keys.rotation``).
        self.private_key = private_key
        self.public_key = wgkey.public_key(private_key)
        self._active_key = private_key
        self._rotation_patch: dict[str, Any] | None = None  # written, not yet accepted
        self._switch_at: float | None = None  # the published instant of our switch
        self._key_switched_at = 0.0
        # Other nodes' rotations: when we first saw each new key (keyrotation.hold_swaps).
        self._swap_seen: dict[tuple[str, bytes], float] = {}
        self._swapping: dict[str, float | None] = {}  # swapped this pass -> their instant
        self._wakes: set[float] = set()  # instants a timer wakes the loop at
        self._rekeyed: dict[bytes, float] = {}  # keyrotation.reinitiate's changed_at
        self.peer_name = peer_name_for_node(settings.node_name)
        self.wake = Wakeup()
        self.stop_threads = threading.Event()
        self.dataplane = DataPlane(
            backend_factory
            or (lambda iface: select(settings.backend, iface, settings.wireguard_go)),
            private_key,
            settings.sysctl_root,
        )
        self.net = NetTasks(private_key, self.wake.set)
        self.relays = RelayManager(private_key, state_dir=settings.state_dir)
        # What the relay target needs from the API, as last read, and when.
        self._relay_service: dict[str, Any] | None = None
        self._relay_nodes: tuple[NodeAddresses, ...] = ()
        self._relay_lookups = Lookups()
        self.paths: dict[str, paths.PathState] = {}
        self._probes = status.Sample({})  # for status.peerPaths (decide samples them)
        self._event_budget = EventBudget()
        self._initiation = initiate.Memory()  # decide's restart-to-initiate memory
        self._direct_rx: dict[bytes, tuple[int, float]] = {}  # rx_bytes, when it last grew
        self.discovery = Discovery(None, None)
        self._discovered_at = 0.0
        self._discovered_for: tuple[NodeInfo, int, int] | None = None
        # What our writes to our own WireKubePeer left (the registration made,
        # the status written, the write budget): decide's Memory, its writes part.
        self._writes = decide.Memory()
        self._rejected: dict[str, str] = {}  # peer name -> the problem last reported
        self._translated = ParsedCache(self._translate)
        self.observed = Observed()
        self.stats = PeerStats()  # what metrics cannot read off one pass
        self.participating = False
        self._adopted = False  # the first pass took its paths from the device (wg/adopt.py)
        # The last pass saw our Node gone or without the vpn-enabled label: on
        # shutdown the agent then removes everything of the mesh from the node.
        self.left_mesh = False
        # Handover to a new agent on this node (wirekube_agent.handover): while
        # frozen no pass runs (no device, route, status or key change);
        # retired, the new agent has the node and ours does nothing on exit.
        self.frozen = False
        self.retired = False
        self._pass_lock = threading.Lock()

        notify = self.wake.set
        self.peers_informer = Informer("wirekubepeers", api.new_rest(), custom_path(PEERS), notify)
        self.mesh_informer = Informer(
            "wirekubemesh",
            api.new_rest(),
            custom_path(MESHES),
            notify,
            field_selector=f"metadata.name={settings.mesh_name}",
        )
        self.node_informer = Informer(
            "node",
            api.new_rest(),
            nodes_path(),
            notify,
            field_selector=f"metadata.name={settings.node_name}",
        )
        # WireKubeGateways (read-only): clients route their CIDRs to the active
        # peer, the active peer forwards (``gateway.cache``, ``gateway.forwarding``), and a
        # gateway peer health-checks its targets (a supervisor task fed here).
        self.gateways = GatewayCache()
        self.forwarding = Forwarding(settings.sysctl_root)
        self.gateway_health = GatewayHealthReporter(self.peer_name, KubeLeaseWriter(api.new_rest()))
        self._gateway_problems: tuple[str, ...] = ()
        self.gateways_informer = Informer(
            "wirekubegateways", api.new_rest(), custom_path(GATEWAYS), self._gateways_changed
        )
        self.informers = (
            self.peers_informer,
            self.mesh_informer,
            self.node_informer,
            self.gateways_informer,
        )

    # -- scheduling ------------------------------------------------------------
    def _gateways_changed(self) -> None:
        """The gateway informer's thread, after each change: parse once, feed
        the health reporter (thread-safe), wake the loop."""
        self.gateway_health.update(self.gateways.update(self.gateways_informer.snapshot()))
        self.wake.set()

    async def run(self) -> None:
        await asyncio.to_thread(self._wait_synced)
        self.observed.synced_at = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._pass)
                self.observed.last_pass_ok = True
            except Exception:
                self.observed.last_pass_ok = False
                log.exception("reconcile failed; retrying on the next tick")
            self.observed.last_pass_at = time.monotonic()
            self.observed.reconcile_seconds = self.observed.last_pass_at - started
            self.observed.reconciles += 1
            try:
                await asyncio.wait_for(self.wake.wait(), TICK_S)
                await asyncio.sleep(RECONCILE_DEBOUNCE_S)
            except TimeoutError:
                pass
            self.wake.clear()

    def _pass(self) -> None:
        with self._pass_lock:
            if not self.frozen:
                self.reconcile()

    def freeze(self) -> None:
        """No pass from now on (the one running finishes first)."""
        self.frozen = True
        with self._pass_lock:
            pass

    def unfreeze(self) -> None:
        self.frozen = False
        self.wake.set()

    def _wait_synced(self) -> None:
        for informer in self.informers:
            while not informer.synced.wait(1.0):
                if self.stop_threads.is_set():
                    return
                log.info("waiting for the API server (%s)", informer.name)

    # -- one pass ----------------------------------------------------------------
    def reconcile(self) -> None:
        now = self.clock()
        node_obj = self.node_informer.get(self.settings.node_name)
        if node_obj is None:
            log.warning("Node %s not found; waiting", self.settings.node_name)
            self.left_mesh = True
            return
        node = translate.node_from_object(node_obj)
        left = not translate.node_participates(node)
        if left and not self.left_mesh and not self.participating:
            log.info(
                "node %s is not labelled %s=true; not taking part in the mesh",
                node.name,
                translate.VPN_LABEL,
            )
        self.left_mesh = left
        if left:
            self._withdraw(node)
            return
        self.participating = True
        mesh = self._mesh()
        self.dataplane.ensure(mesh, now)
        # Our own key switch first thing: the other agents swap our peer entry
        # a moment after the instant (keyswitch.SWAP_DELAY_S), at the end of
        # their pass, and the switch must come before that.
        self._switch_key(now)
        # The relay links first: a new agent's bridge reconnects while the rest
        # of its first pass runs (relayed peers' packets wait for it).
        self.relays.ensure(self._relay_target(mesh, node, now), mesh.listen_port)
        self.net.configure(
            mesh.listen_port,
            mesh.stun_servers if "stun" in self.settings.endpoint_sources else (),
        )
        self._rotate_key(node, mesh, now)
        self._discover(node, mesh, now)
        # -- which peers (pure: decide.accept) ----------------------------------
        assignment = self.gateways.assignment(self.peer_name, self.peers_informer.snapshot)
        remote = self._hold_swaps(self._remote_peers(), now)
        accepted = decide.accept(remote, self.public_key, node, assignment.routes)
        for name, why in accepted.rejected:
            self._reject_once(name, why)
        self._note_rotated_peers(accepted.peers)
        self._log_gateway_problems(accepted.gateway_problems)
        peers, by_key = accepted.peers, accepted.keys

        # -- observe ---------------------------------------------------------------
        device = self.dataplane.observe()
        if not self._adopted:
            self._adopt(device, peers, mesh, now)
        # Every peer keeps its bridge socket while a relay is configured
        # (the links' target was set at the top of the pass): fallback is
        # then instant and call-me-maybe probes can reach it.
        relay_endpoints: dict[bytes, Endpoint] = self.relays.endpoints(by_key)
        nat = self.net.netcheck.report
        prober = self.net.prober
        api_ip = self.api.server_address()
        self._direct_rx = {k: v for k, v in self._direct_rx.items() if k in by_key}
        own = self.peers_informer.get(self.peer_name)
        seen = decide.Observation(
            now=now,
            node=node,
            mesh=mesh,
            peers=peers,
            device=device,
            local=self._local_facts(node, nat),
            views={k: self._with_wireguard_rx(k, prober.view(k), device, now) for k in by_key},
            learned={k: prober.learned(k, now) for k in by_key},
            relay_available=self.relays.available,
            relay_endpoints=relay_endpoints,
            control_destinations=(api_ip,) if api_ip else (),
            own_key=self.public_key,
            gateway_duties=assignment.duties,
            added_at=self.dataplane.added_at,
            own=own,
            discovered=self.discovery.endpoint,
            discovered_by=self.discovery.method,
            rotation_pending=self._rotation_patch is not None,
            key_switched_at=self._key_switched_at,
            rtts=prober.rtts(by_key),
        )

        # -- decide (pure) -----------------------------------------------------------
        decision = decide.decide(
            seen,
            dataclasses.replace(
                self._writes, paths=self.paths, initiation=self._initiation, probes=self._probes
            ),
        )

        # -- apply -------------------------------------------------------------------
        # Our WireKubePeer first: the other nodes wait for it.
        if decision.registration is not None:
            self._register(decision.registration)
        handshakes = decision.handshakes
        self.observed.device, self.observed.handshakes, self.observed.peers = (
            device,
            handshakes,
            peers,
        )
        self._record_path_events(decision.path_changes, now)
        self._log_path_changes(decision.paths)
        traffic = {
            by_key[k]: Traffic(self.dataplane.added_at.get(k), s.rx_bytes, s.tx_bytes)
            for k, s in device.peers.items()
            if k in by_key
        }
        self.stats.update(self.paths, decision.paths, handshakes, traffic, now)
        self.paths = decision.paths
        self._probes = decision.probes
        prober.set_targets(decision.probe_targets)
        desired = decision.desired
        self._initiation = decision.initiation
        for name, reason in decision.initiations:
            log.info("re-creating WireGuard peer %s to initiate now (%s)", name, WHY[reason])
        restarts = decision.restarts | self._rotation_restarts(device, now)
        self.dataplane.apply(desired, device, now, restarts)
        self._log_swaps()
        try:
            self.forwarding.ensure(decision.gateway_duties, mesh.interface_name, now)
        except Exception:
            log.exception("gateway forwarding failed; retrying on the next pass")
        if decision.status is not None:
            self._write_status(decision.status, now)

    def _with_wireguard_rx(
        self, key: bytes, view: paths.ProbeView, device: DeviceState, now: float
    ) -> paths.ProbeView:
        """``view`` plus when WireGuard last received from the peer on a direct
        endpoint (``ProbeView.wireguard_rx``): a direct path whose peer agent
        is restarting answers no probes but still carries the traffic."""
        state = device.peers.get(key)
        if state is None or state.endpoint is None or _loopback(state.endpoint[0]):
            self._direct_rx.pop(key, None)
            return view
        seen = self._direct_rx.get(key)
        if seen is None or seen[0] != state.rx_bytes:
            # The first sight proves nothing: growth since then does.
            seen = self._direct_rx[key] = (state.rx_bytes, 0.0 if seen is None else now)
        return dataclasses.replace(view, wireguard_rx=seen[1]) if seen[1] else view

    def _adopt(
        self, device: DeviceState, peers: Mapping[str, RemotePeer], mesh: MeshSpec, now: float
    ) -> None:
        """The first pass: take the paths the interface shows (wg/adopt.py), so
        a restart rewrites no endpoint and withdraws no route that works."""
        self._adopted = True
        if self.paths:
            return
        self.paths = adopted_paths(device, peers, mesh.relay.direct_retry_interval_seconds, now)
        if any(p.transport == "relay" for p in self.paths.values()):
            self.relays.assume_live()
        if self.paths:
            log.info(
                "adopted %s: %d direct, %d relayed peers",
                mesh.interface_name,
                sum(p.transport == "direct" for p in self.paths.values()),
                sum(p.transport == "relay" for p in self.paths.values()),
            )

    def _log_gateway_problems(self, problems: list[str]) -> None:
        if tuple(problems) != self._gateway_problems:
            for problem in problems:
                log.warning("%s", problem)
            self._gateway_problems = tuple(problems)

    def _log_path_changes(self, new: dict[str, paths.PathState]) -> None:
        for name, path in new.items():
            before = self.paths.get(name)
            if before is not None and before.transport == "direct" and path.transport == "relay":
                # A direct path died: perhaps our NAT mapping changed under us.
                self.net.request_recheck()
            if before is None or (before.transport, before.phase, before.endpoint) != (
                path.transport,
                path.phase,
                path.endpoint,
            ):
                # An unrouted peer with no relay to fall back to is unreachable
                # until a direct path answers: say so, and why there is no relay.
                why = (
                    f" (unreachable until a direct path answers; no relay: {self.relays.reason})"
                    if not path.routed and self.relays.reason
                    else ""
                )
                log.info(
                    "path to %s: %s %s%s%s",
                    name,
                    path.transport,
                    path.phase,
                    f" via {format_endpoint(path.endpoint)}"
                    if path.transport == "direct" and path.endpoint
                    else "",
                    why,
                )

    def _record_path_events(self, found: list[PathEvent], now: float) -> None:
        """Path changes (``decide``) as Events on our own WireKubePeer, within
        the Event budget (``status.events``)."""
        self._event_budget, admitted = admit(self._event_budget, found, now)
        if not admitted:
            return
        own = self.peers_informer.get(self.peer_name) or {}
        uid = str((own.get("metadata") or {}).get("uid", ""))
        for event in admitted:
            try:
                self.api.record_event(
                    "WireKubePeer",
                    self.peer_name,
                    uid,
                    PATH_CHANGED,
                    event.message,
                    warning=event.warning,
                )
                self.observed.api_writes += 1
            except Exception as exc:  # events are best effort
                log.debug("cannot record event: %s", exc)

    def _local_facts(self, node: NodeInfo, nat: NatReport) -> paths.LocalFacts:
        return paths.LocalFacts(
            public_ip=self._public_ip(),
            nat_type=nat.nat_type.value,
            mapping=nat.mapping.value,
            filtering=nat.filtering.value,
            internal_ip=str(node.primary_ip or ""),
        )

    def _relay_target(self, mesh: MeshSpec, node: NodeInfo, now: float) -> RelayTarget:
        """Read what the relay target needs when ``relaying.target`` says it
        is due (the managed relay's Service; the Nodes, for a NodePort whose
        address may be another node's ExternalIP), then ``decide.relay``."""
        lookups = self._relay_lookups
        if service_due(mesh, lookups, now):
            namespace, _, name = self.settings.relay_service.partition("/")
            try:
                self._relay_service = self.api.get_service(namespace, name)
                lookups = dataclasses.replace(lookups, service_at=now)
            except Exception as exc:
                log.warning("cannot read relay Service %s: %s", self.settings.relay_service, exc)
        service = self._relay_service if uses_service(mesh) else None
        current = status_host(self.mesh_informer.get(self.settings.mesh_name))
        if nodes_due(service, current, lookups, now):
            # A failed list is retried at the resync pace.
            lookups = dataclasses.replace(lookups, nodes_at=now)
            try:
                self._relay_nodes = tuple(
                    NodeAddresses.from_object(n) for n in self.api.list_nodes()
                )
                lookups = dataclasses.replace(lookups, nodes_for=(current,))
            except Exception as exc:
                log.warning("cannot list Nodes for the relay's NodePort: %s", exc)
        self._relay_lookups = lookups
        return decide.relay(
            decide.RelaySeen(
                mesh,
                node,
                service,
                self._relay_nodes,
                current,
                self.settings.dns_server,
                local_egress(self.settings),
            )
        )

    def _mesh(self) -> MeshSpec:
        obj = self.mesh_informer.get(self.settings.mesh_name)
        if obj is None:
            return MeshSpec()
        try:
            return Mesh.from_dict(obj).spec
        except ValueError as exc:
            log.error(
                "WireKubeMesh %s is invalid (%s); using defaults", self.settings.mesh_name, exc
            )
            return MeshSpec()

    def _public_ip(self) -> str:
        ep = self.discovery.endpoint
        if ep is None or self.discovery.method == "internal":
            return ""
        return ep[0]

    def _discover(self, node: NodeInfo, mesh: MeshSpec, now: float) -> None:
        # A changed annotation or address shows up at once (the Node watch
        # changes `node`); otherwise re-check only periodically.
        fresh = now - self._discovered_at < ENDPOINT_RECHECK_INTERVAL_S
        key = (node, mesh.listen_port, self.net.netcheck.rounds)
        if fresh and self.discovery.endpoint and self._discovered_for == key:
            return
        self._discovered_for = key
        self._discovered_at = now
        found = discover(
            node,
            mesh.listen_port,
            self.settings.endpoint_sources,
            stun=lambda: self.net.netcheck.endpoint(mesh.listen_port),
            global_ipv6=addresses.global_ipv6,
        )
        if found != self.discovery:
            log.info(
                "endpoint %s (via %s)",
                format_endpoint(found.endpoint) if found.endpoint else None,
                found.method,
            )
        self.discovery = found

    # -- key rotation (keys/rotation.py) --------------------------------------------
    def _rotate_key(self, node: NodeInfo, mesh: MeshSpec, now: float) -> None:
        """Make and publish a new key pair when asked or due, with the instant
        we switch to it (``keyswitch``); ``_switch_key`` switches then."""
        existing = self.peers_informer.get(self.peer_name)
        if existing is None:
            return  # nothing published yet: the first key is new anyway
        if self._rotation_patch is None:
            if self._active_key != self.private_key:
                return  # the previous rotation is not in effect yet
            facts = keyrotation.facts(
                node.annotations,
                existing,
                mesh.key_rotation_interval_hours,
                self.peers_informer.snapshot(),
            )
            reason = keyrotation.due(facts, now)
            if reason is None:
                return
            new = keys.rotate(self.settings.state_dir)
            self.private_key, self.public_key = new, wgkey.public_key(new)
            self._rotation_patch = {
                "metadata": {"annotations": keyrotation.record(facts, now)},
                "spec": {"publicKey": wgkey.encode(self.public_key)},
            }
            log.info(
                "rotating the WireGuard key pair (%s)",
                f"request {facts.requested!r}" if reason == "requested" else "periodic",
                extra={"public_key": wgkey.encode(self.public_key)},
            )
        # The instant counts from this attempt: a retried write announces a
        # new one, so every agent still gets the whole lead.
        switch_at, announcement = keyswitch.announce(self.clock())
        self._rotation_patch["metadata"]["annotations"].update(announcement)
        try:
            self.api.patch_peer(self.peer_name, self._rotation_patch)
        except Exception as exc:
            log.warning("cannot publish the new public key (retrying): %s", exc)
            return
        self._rotation_patch = None
        self._switch_at = switch_at
        self._wake_at(switch_at)
        self.observed.api_writes += 1
        self.observed.key_rotations += 1
        log.info(
            "published the new public key; switching at %s",
            keyswitch.format_time(switch_at),
            extra={"public_key": wgkey.encode(self.public_key)},
        )

    def _switch_key(self, now: float) -> None:
        """At the published instant, move the interface, the prober and the
        relay links to the new key (a write that returned after the instant
        switches at once). The relay admits the new key by then: it saw the
        write a lead before."""
        if self._active_key == self.private_key or self._rotation_patch is not None:
            return
        if not keyrotation.switch_due(self._switch_at, now):
            if self._switch_at is not None:
                self._wake_at(self._switch_at)
            return
        instant = self._switch_at or now
        self._active_key = self.private_key
        self._switch_at = None
        self._key_switched_at = now
        # WireGuard first: its switch is what must come before the other
        # agents' swap. The relay links make before they break (the old
        # registration serves until the new one is up), so they can follow.
        self.dataplane.set_private_key(self.private_key)
        late = self.clock() - instant
        self.relays.rekey(self.private_key)
        self.net.prober.set_private_key(self.private_key)
        self._expect_handshakes([p.public_key for p in self.observed.peers.values()], now)
        log.info(
            "switched to the new WireGuard key (%.3fs after the instant)",
            late,
            extra={"public_key": wgkey.encode(self.public_key)},
        )

    def _hold_swaps(self, remote: dict[str, RemotePeer], now: float) -> dict[str, RemotePeer]:
        """Peers whose key changed keep their entry's key until just after
        their switch instant (``keyrotation.hold_swaps``); a timer wakes the
        pass that swaps them."""
        configured = {n: p.public_key for n, p in self.observed.peers.items()}
        announced = {
            name: keyswitch.switch_at(self.peers_informer.get(name) or {})
            for name, peer in remote.items()
            if configured.get(name, peer.public_key) != peer.public_key
        }
        if not announced and not self._swap_seen:
            return remote
        held = keyrotation.hold_swaps(remote, configured, announced, self._swap_seen, now)
        before = {n for n, _ in self._swap_seen}
        for name in held.held - before:
            log.info("peer %s published a new key; swapping it in at its switch instant", name)
        self._swapping = {name: announced.get(name) for name in before - held.held}
        self._swap_seen = held.first_seen
        if held.wake_at is not None:
            self._wake_at(held.wake_at)
        return held.peers

    def _log_swaps(self) -> None:
        """Once the data plane has it: how long after its instant each peer
        that rotated was swapped in (the order needs keyswitch.SWAP_DELAY_S)."""
        for name, instant in self._swapping.items():
            log.info(
                "swapped in peer %s's new key (%s)",
                name,
                f"{self.clock() - instant:.3f}s after its switch instant"
                if instant
                else "no instant",
            )
        self._swapping = {}

    def _wake_at(self, when: float) -> None:
        """A pass at ``when`` (wall clock), on a timer: a key switch or swap
        happens at its instant, not at whichever pass comes next."""
        if when in self._wakes:
            return
        self._wakes.add(when)

        def fire() -> None:
            self._wakes.discard(when)
            self.wake.set()

        # A hair late rather than early: a pass before the instant does nothing.
        timer = threading.Timer(max(0.0, when - self.clock()) + 0.002, fire)
        timer.daemon = True
        timer.start()

    def _note_rotated_peers(self, peers: Mapping[str, RemotePeer]) -> None:
        """Another node rotated its key: its probe history moves to the new
        key (the path in use stays in use); ``diff`` swaps the WireGuard peer
        entry (old key out, new key in, same allowedIPs and endpoint)."""
        for name, peer in peers.items():
            before = self.observed.peers.get(name)
            if before is not None and before.public_key != peer.public_key:
                log.info(
                    "peer %s rotated its key",
                    name,
                    extra={"public_key": wgkey.encode(peer.public_key)},
                )
                self.net.prober.peer_rotated(before.public_key, peer.public_key)
                self._expect_handshakes([peer.public_key], self.clock())

    def _expect_handshakes(self, peer_keys: list[bytes], now: float) -> None:
        """These peers need a handshake under new keys: follow them up
        (``_rotation_restarts``), with a pass when the follow-up is due."""
        for key in peer_keys:
            self._rekeyed[key] = now
        timer = threading.Timer(keyrotation.REINITIATE_AFTER_S + 0.05, self.wake.set)
        timer.daemon = True
        timer.start()

    def _rotation_restarts(self, device: DeviceState, now: float) -> frozenset[bytes]:
        if not self._rekeyed:
            return frozenset()
        handshakes = {k: s.last_handshake for k, s in device.peers.items()}
        restart, self._rekeyed = keyrotation.reinitiate(
            self._rekeyed, handshakes, self.public_key, now
        )
        for key in restart:
            log.info(
                "re-creating WireGuard peer %s to initiate now (no handshake since a key rotation)",
                wgkey.encode(key),
            )
        return restart

    def _register(self, write: registration.Registration) -> None:
        """Make ``decide``'s write to our WireKubePeer (``registration.register``)."""
        try:
            if write.create:
                self.api.create_peer(write.body)
                log.info("registered WireKubePeer %s", self.peer_name)
            else:
                self.api.patch_peer(self.peer_name, write.body)
                log.info(
                    "updated WireKubePeer %s: %s",
                    self.peer_name,
                    sorted(write.body.get("spec", {})),
                )
            self.observed.api_writes += 1
            self._writes = self._writes.after_registration(write)
        except ApiException as exc:
            if exc.status == 409:  # created already; the watch has not caught up
                self._writes = self._writes.after_registration(write)
            else:
                log.warning("cannot register %s: %s %s", self.peer_name, exc.status, exc.reason)
        except Exception as exc:
            log.warning("cannot register %s: %s", self.peer_name, exc)

    def _remote_peers(self) -> dict[str, RemotePeer]:
        return self._translated.update(self.peers_informer.snapshot())

    def _translate(self, name: str, obj: Mapping[str, Any]) -> RemotePeer | None:
        if name == self.peer_name:
            return None
        try:
            return translate.peer_from_object(obj)
        except translate.PeerRejected as exc:
            self._reject_once(name, str(exc), obj)
            return None

    def _reject_once(self, name: str, why: str, obj: Mapping[str, Any] | None = None) -> None:
        """Log and record an Event once per distinct problem, not once per pass."""
        if self._rejected.get(name) == why:
            return
        self._rejected[name] = why
        log.warning("skipping WireKubePeer %s: %s", name, why)
        uid = str(((obj or {}).get("metadata") or {}).get("uid", ""))
        try:
            self.api.record_event(
                "WireKubePeer",
                name,
                uid,
                "InvalidPeer",
                f"{self.settings.node_name}: {why}",
                warning=True,
            )
        except Exception as exc:  # events are best effort
            log.debug("cannot record event: %s", exc)

    def _write_status(self, write: status.StatusWrite, now: float) -> None:
        """Make ``decide``'s status write (``status.publish``); only a write
        made spends the budget and becomes the next baseline."""
        try:
            self.api.patch_peer_status(self.peer_name, write.patch)
        except Exception as exc:
            log.warning("cannot write status: %s", exc)
            return
        self.observed.api_writes += 1
        self._writes = self._writes.after_status(write, now)

    def clean_up_after_leaving(self) -> None:
        """At shutdown, when our node has left the mesh: remove the interface,
        our routes, rules and nftables table (what ``wirekube-agent cleanup``
        removes), so nothing of the mesh outlives the agent on a node that is
        no longer in it. A node still in the mesh keeps its data plane across
        an agent restart."""
        interface = self._mesh().interface_name
        log.info("node %s left the mesh; removing %s", self.settings.node_name, interface)
        try:
            cleanup(interface)
        except Exception:
            log.exception("cleanup after leaving the mesh failed")

    def _withdraw(self, node: NodeInfo) -> None:
        """The node left the mesh (label removed): take our data plane down."""
        if not self.participating:
            return
        # Our WireKubePeer stays: the agent may not delete peers (RBAC); the
        # gateway controller's peer GC deletes it after its grace period, so a
        # label put back in time keeps the node's identity and paths.
        log.info(
            "node %s is no longer labelled %s=true; leaving the mesh "
            "(the controller deletes %s after its grace period)",
            node.name,
            translate.VPN_LABEL,
            self.peer_name,
        )
        self.dataplane.teardown()
        self.forwarding.teardown()
        self.relays.stop()
        self.paths.clear()
        # No more path probes or STUN rounds from a node outside the mesh:
        # no targets, and port 0 closes the raw socket (both come back on rejoin).
        self.net.prober.set_targets({})
        self.net.configure(0, ())
        self.participating = False


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
