"""One pass's decision, as a pure function of what the pass observed. Pure.

The reconcile pass (``reconciler``) is observe → decide → apply. This module
is the middle: plain data in, plain data out, no handles, no clock, no I/O,
so a table of observations is enough to test what a node would do.

Two functions, because the pass has one actuation in the middle that the
decision depends on: the relay bridge gives every admitted peer a local UDP
port (``relaying.RelayManager.endpoints``), and WireGuard must be pointed at
that port when the peer is relayed. So:

* ``accept(remote peers, own key, node, gateway routes) -> Acceptance`` — which
  peers this node configures, conflicts resolved, gateway CIDRs added, and
  what to report about the ones left out; the bridge then takes exactly
  ``Acceptance.keys``;
* ``decide(Observation, Memory) -> Decision`` — every peer's path, what the
  prober should probe, the path changes worth an Event, the peers to
  re-create so WireGuard initiates now, and the desired WireGuard device,
  routes and rules (which ``dataplane.apply`` diffs against the kernel).
  ``Decision.memory`` is the next pass's ``Memory``.

What stays in the reconciler: actors with memory of their own that this
slice has not yet turned into data (key rotation, endpoint discovery and
registration, status-write budgets). Their pure rules live in
``keys.rotation``, ``endpoint.*`` and ``status.*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wirekube_agent.dataplane.desired import desired_state, select_peers, with_gateway_routes
from wirekube_agent.model import DesiredState, Endpoint, IPAddress, IPNetwork, NodeInfo, RemotePeer
from wirekube_agent.paths import initiate, plan
from wirekube_agent.paths.rules import LocalFacts, PathPolicy, PathState, ProbeView, Target
from wirekube_agent.status.events import PathEvent, changes
from wirekube_common.crd import MeshSpec
from wirekube_common.gateway import GatewayDuty
from wirekube_common.wireguard.types import DeviceState


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


@dataclass(frozen=True)
class Memory:
    """What one decision hands the next: the paths and the initiation rule's
    per-peer memory (``paths.initiate``)."""

    paths: Mapping[str, PathState] = field(default_factory=dict)
    initiation: initiate.Memory = field(default_factory=initiate.Memory)


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

    @property
    def memory(self) -> Memory:
        return Memory(self.paths, self.initiation)

    def paths_changed(self, previous: Mapping[str, PathState]) -> bool:
        return self.paths != previous


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
    )
