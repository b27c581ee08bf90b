"""All peers' paths for one pass, and what the prober should do about them. Pure.

``paths.rules.step`` decides one peer; this module runs it over the mesh and turns
each decision into a probing ``Target``: burst every candidate while a burst
is on (and send a call-me-maybe through the relay so the peer probes back at
the same moment), keep a direct path in use proven with heartbeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wirekube_agent.model import Endpoint, RemotePeer
from wirekube_agent.paths.rules import (
    LocalFacts,
    PathPolicy,
    PathState,
    ProbeView,
    Target,
    candidates,
    step,
)


@dataclass(frozen=True)
class Plan:
    paths: dict[str, PathState]
    targets: dict[bytes, Target]


def plan(
    peers: Mapping[str, RemotePeer],
    previous: Mapping[str, PathState],
    local: LocalFacts,
    views: Mapping[bytes, ProbeView],
    learned: Mapping[bytes, tuple[Endpoint, ...]],
    handshakes: Mapping[str, float],
    policy: PathPolicy,
    relay_endpoints: Mapping[bytes, Endpoint],
    now: float,
) -> Plan:
    paths: dict[str, PathState] = {}
    targets: dict[bytes, Target] = {}
    for name, peer in peers.items():
        key = peer.public_key
        extra = learned.get(key, ())
        state = step(
            previous.get(name),
            peer,
            local,
            views.get(key, ProbeView()),
            handshakes.get(name, 0.0),
            policy,
            now,
            extra,
        )
        paths[name] = state
        direct_in_use = state.transport == "direct" and state.phase == "up"
        targets[key] = Target(
            candidates=candidates(local, peer, extra),
            burst=now < state.burst_until,
            heartbeat=state.endpoint if direct_in_use else None,
            via_relay=relay_endpoints.get(key) if state.transport == "relay" else None,
            direct=state.transport == "direct",
        )
    return Plan(paths, targets)
