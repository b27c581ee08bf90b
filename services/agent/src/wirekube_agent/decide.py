"""One pass's decision, as a pure function of what the pass observed. Pure.

The reconcile pass (``reconciler``) is observe → decide → apply. This module
is the middle: plain data in, plain data out, no handles, no clock, no I/O,
so a table of observations is enough to test what a node would do.

Three functions, because the pass has actuations in the middle that the
decision depends on: the relay links must hold their target before the
bridge can serve, and the bridge gives every admitted peer a local UDP
port (``relaying.manager.RelayManager.endpoints``), and WireGuard must be
pointed at that port when the peer is relayed. So:

* ``relay(RelaySeen) -> RelayTarget`` — which relay the links hold
  (``relaying.target``); first in the pass, so a new agent's bridge
  connects while the rest of its first pass runs;
* ``accept(remote peers, own key, node, gateway routes) -> Acceptance`` — which
  peers this node configures, conflicts resolved, gateway CIDRs added, and
  what to report about the ones left out; the bridge then takes exactly
  ``Acceptance.keys``;
* ``decide(Observation, Memory) -> Decision`` — every peer's path, what the
  prober should probe, the path changes worth an Event, the peers to
  re-create so WireGuard initiates now, and the desired WireGuard device,
  routes and rules (which ``dataplane.apply`` diffs against the kernel).
  ``Decision.memory`` is the next pass's ``Memory``.

  It also decides the writes to our own WireKubePeer: the registration
  (``endpoint.registration.register``: which endpoint and key to publish,
  and whether that write was already made) and the status
  (``status.peerstatus.publish``: what to publish, whether it changed
  enough, within the write budget). The reconciler performs them and, once
  one succeeded, records it in the next ``Memory``.

What stays in the reconciler: key rotation (``keys.rotation`` holds its pure
rules; another change is reworking its timing) and endpoint discovery, an
actor whose answer the pass observes (``endpoint.discovery``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from wirekube_agent.dataplane.desired import desired_state, select_peers, with_gateway_routes
from wirekube_agent.endpoint.registration import Registration, Token, register
from wirekube_agent.model import DesiredState, Endpoint, IPAddress, IPNetwork, NodeInfo, RemotePeer
from wirekube_agent.paths import initiate, plan
from wirekube_agent.paths.rules import LocalFacts, PathPolicy, PathState, ProbeView, Target
from wirekube_agent.relaying.target import LocalEgress, RelayTarget, relay_target, uses_service
from wirekube_agent.status import peerstatus
from wirekube_agent.status.events import PathEvent, changes
from wirekube_agent.status.peerstatus import Sample, StatusWrite, WriteBudget, Written
from wirekube_common import wgkey
from wirekube_common.crd import MeshSpec
from wirekube_common.gateway import GatewayDuty
from wirekube_common.relayaddress import NodeAddresses, needs_nodes
from wirekube_common.wireguard.types import DeviceState, format_endpoint


@dataclass(frozen=True)
class RelaySeen:
    """What the relay target depends on: the mesh spec, the managed relay's
    Service and the Nodes' addresses (as last read), the controller's choice
    (the mesh status host), the agent's DNS server and egress settings."""

    mesh: MeshSpec
    node: NodeInfo
    service: Mapping[str, Any] | None = None
    nodes: tuple[NodeAddresses, ...] = ()
    current: str | None = None
    dns_server: str | None = None
    local: LocalEgress = field(default_factory=LocalEgress)


def relay(seen: RelaySeen) -> RelayTarget:
    """Which relay the links hold (``relaying.target``): addresses or a DNS
    name, how the links leave the node, or why there is no relay."""
    service = seen.service if uses_service(seen.mesh) else None
    return relay_target(
        seen.mesh,
        seen.node,
        service,
        seen.dns_server,
        nodes=seen.nodes if needs_nodes(service) else (),
        current=seen.current,
        local=seen.local,
    )


@dataclass(frozen=True)
class Acceptance:
    """The peers this node configures this pass, and what was left out."""

    peers: dict[str, RemotePeer]
    rejected: list[tuple[str, str]]  # (peer name, why): an InvalidPeer Event each, once
    gateway_problems: list[str]  # gateway CIDRs that could not be added (logged)

    @property
    def keys(self) -> dict[bytes, str]:
        """Public key -> peer name (the relay bridge's and the prober's index)."""
        return {p.public_key: n for n, p in self.peers.items()}


def accept(
    remote: Mapping[str, RemotePeer],
    own_key: bytes,
    node: NodeInfo,
    gateway_routes: Mapping[str, Iterable[IPNetwork]],
) -> Acceptance:
    """Validated remote peers → the accepted ones, with gateway CIDRs added
    to the peers that carry them (``dataplane.desired``)."""
    accepted, rejected = select_peers(remote, own_key, node)
    peers, problems = with_gateway_routes(accepted, gateway_routes, node)
    return Acceptance(peers, rejected, problems)


@dataclass(frozen=True)
class Observation:
    """What one pass saw, as plain data (the reconciler's ``observe`` step)."""

    now: float
    node: NodeInfo
    mesh: MeshSpec
    peers: Mapping[str, RemotePeer]  # Acceptance.peers
    device: DeviceState  # as the backend reports it
    local: LocalFacts  # our own published NAT facts and internal address
    views: Mapping[bytes, ProbeView]  # the prober's answers, per peer key
    learned: Mapping[bytes, tuple[Endpoint, ...]]  # where peers' probes came from
    relay_available: bool
    relay_endpoints: Mapping[bytes, Endpoint]  # the bridge's port per peer
    control_destinations: tuple[IPAddress, ...] = ()  # the API server: never tunnelled
    own_key: bytes = b""  # our published public key (the lower key initiates)
    gateway_duties: tuple[GatewayDuty, ...] = ()  # as the active peer of some gateways
    added_at: Mapping[bytes, float] = field(default_factory=dict)  # when we created each peer
    # Our own WireKubePeer as our watch shows it (None: not created yet).
    own: Mapping[str, Any] | None = None
    discovered: Endpoint | None = None  # where others reach us (endpoint.discovery)
    discovered_by: str | None = None  # how: annotation, stun, ipv6, aws-imds, internal ...
    # A key rotation's own write is pending (keys.rotation): it goes first.
    rotation_pending: bool = False
    key_switched_at: float = 0.0  # our interface took a new key then (status: fresh_after)
    # The prober's latest round trips (seconds; direct, relay) per peer key.
    rtts: Mapping[bytes, tuple[float | None, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Memory:
    """What one decision hands the next: the paths and the initiation rule's
    per-peer memory (``paths.initiate``)."""

    paths: Mapping[str, PathState] = field(default_factory=dict)
    initiation: initiate.Memory = field(default_factory=initiate.Memory)
    probes: Sample = field(default_factory=lambda: Sample({}))  # the status's probe details
    # What the writes to our WireKubePeer made so far left (recorded by the
    # reconciler once a write succeeded: ``after_registration``, ``after_status``).
    registered: Token | None = None
    status_written: Written | None = None
    status_budget: WriteBudget = field(default_factory=WriteBudget)

    def after_registration(self, write: Registration) -> Memory:
        return replace(self, registered=write.token)

    def after_status(self, write: StatusWrite, now: float) -> Memory:
        return replace(
            self, status_written=write.written, status_budget=self.status_budget.spend(now)
        )


@dataclass(frozen=True)
class Decision:
    """What this node should look like after the pass."""

    handshakes: dict[str, float]  # peer name -> last WireGuard handshake (0: never)
    paths: dict[str, PathState]
    probe_targets: dict[bytes, Target]  # the prober's work until the next pass
    path_changes: list[PathEvent]  # candidates for Events (rate-limited when applied)
    desired: DesiredState
    # Peers to re-create so WireGuard initiates now (``paths.initiate``), and why.
    restarts: frozenset[bytes] = frozenset()
    initiations: list[tuple[str, initiate.Reason]] = field(default_factory=list)
    initiation: initiate.Memory = field(default_factory=initiate.Memory)
    # Forwarding and SNAT this node does as a gateway's active peer (what the
    # gateways assign it, ``gateway.cache``; ``gateway.forwarding`` applies).
    gateway_duties: tuple[GatewayDuty, ...] = ()
    probes: Sample = field(default_factory=lambda: Sample({}))
    # Writes to our own WireKubePeer (None: nothing to write this pass).
    registration: Registration | None = None
    status: StatusWrite | None = None
    previous: Memory = field(default_factory=Memory)  # the memory this pass started from

    @property
    def memory(self) -> Memory:
        """The next pass's memory, before this pass's writes are recorded."""
        return replace(
            self.previous, paths=self.paths, initiation=self.initiation, probes=self.probes
        )


def policy_of(mesh: MeshSpec, relay_available: bool) -> PathPolicy:
    return PathPolicy(
        relay_mode=mesh.relay.mode,
        relay_available=relay_available,
        handshake_timeout_s=mesh.relay.handshake_timeout_seconds,
        direct_retry_interval_s=mesh.relay.direct_retry_interval_seconds,
    )


def decide(seen: Observation, memory: Memory) -> Decision:
    """Paths, probe targets, Events, restarts and the desired device for one pass."""
    previous = memory.paths
    by_key = {p.public_key: n for n, p in seen.peers.items()}
    handshakes = {by_key[k]: s.last_handshake for k, s in seen.device.peers.items() if k in by_key}
    planned = plan.plan(
        seen.peers,
        previous,
        seen.local,
        seen.views,
        seen.learned,
        handshakes,
        policy_of(seen.mesh, seen.relay_available),
        seen.relay_endpoints,
        seen.now,
    )
    desired = desired_state(
        interface=seen.mesh.interface_name,
        listen_port=seen.mesh.listen_port,
        mtu=seen.mesh.mtu,
        node=seen.node,
        peers=seen.peers,
        paths=planned.paths,
        relay_endpoints=seen.relay_endpoints,
        control_destinations=list(seen.control_destinations),
    )
    restarts, initiations, initiation = initiate.restarts(
        memory.initiation,
        {n: p.public_key for n, p in seen.peers.items()},
        seen.device.peers,
        seen.added_at,
        seen.views,
        seen.own_key,
        seen.now,
    )
    probes = peerstatus.sample(
        memory.probes,
        planned.paths != previous,
        by_key,
        planned.targets,
        seen.views,
        seen.rtts,
        seen.now,
    )
    return Decision(
        handshakes=handshakes,
        paths=planned.paths,
        probe_targets=planned.targets,
        path_changes=changes(previous, planned.paths),
        desired=desired,
        restarts=restarts,
        initiations=initiations,
        initiation=initiation,
        gateway_duties=seen.gateway_duties,
        probes=probes,
        registration=_registration(seen, memory),
        status=peerstatus.publish(
            seen.own,
            planned.paths,
            handshakes,
            peerstatus.local_report(seen.local, seen.discovered_by, seen.mesh.listen_port),
            probes.probes,
            memory.status_written,
            memory.status_budget,
            seen.now,
            fresh_after=seen.key_switched_at,
        ),
        previous=memory,
    )


def _registration(seen: Observation, memory: Memory) -> Registration | None:
    """Our WireKubePeer's create or patch (``endpoint.registration``); none
    while a key rotation's own write is pending (it goes first), and none
    without a key of ours to publish."""
    if seen.rotation_pending or not seen.own_key:
        return None
    return register(
        seen.own,
        seen.node,
        wgkey.encode(seen.own_key),
        format_endpoint(seen.discovered) if seen.discovered else None,
        memory.registered,
    )
