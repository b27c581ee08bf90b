"""Per-peer path state: which transport carries a peer's packets, and whether
the path works. Pure functions of (previous state, observation, policy, now).

A path is ``up`` once WireGuard has completed a handshake over it and stays up
while handshakes stay fresh; only an ``up`` path (or a relay path, which works
from the first packet) gets routes, so a peer that cannot be reached never
black-holes traffic that the main routing table could still deliver. WireGuard
keeps trying a ``probing`` peer on its own: the persistent keepalive triggers
handshake initiations without any routed traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wirekube_agent.model import Endpoint, RemotePeer, Transport
from wirekube_agent.timers import HANDSHAKE_FRESH_S

Phase = Literal["probing", "up", "down"]


@dataclass(frozen=True)
class PathPolicy:
    relay_mode: str  # auto | always | never
    relay_available: bool
    handshake_timeout_s: float
    direct_retry_interval_s: float


@dataclass(frozen=True)
class LocalFacts:
    """What this node publishes about itself, for choosing the peer's address."""

    public_ip: str = ""
    internal_ip: str = ""


@dataclass(frozen=True)
class PathState:
    transport: Transport
    phase: Phase
    since: float  # when this transport/phase began
    endpoint: Endpoint | None  # the direct endpoint in use (None when unknown)

    @property
    def routed(self) -> bool:
        return self.phase == "up" or (self.transport == "relay" and self.phase != "down")


def direct_endpoint(local: LocalFacts, peer: RemotePeer) -> Endpoint | None:
    """Where to send a peer's packets directly.

    Two nodes behind the same public address are behind the same NAT, so they
    share a network and must use internal addresses (hairpinning through the
    NAT is unreliable and slower).
    """
    if peer.internal_endpoint is not None and local.public_ip and peer.public_ip == local.public_ip:
        return peer.internal_endpoint
    return peer.endpoint


def step(
    prev: PathState | None,
    peer: RemotePeer,
    local: LocalFacts,
    last_handshake: float,
    policy: PathPolicy,
    now: float,
) -> PathState:
    """Advance one peer's path. Returns ``prev`` itself when nothing changed."""
    endpoint = direct_endpoint(local, peer)
    fresh = last_handshake > 0 and now - last_handshake < HANDSHAKE_FRESH_S
    phase: Phase = "up" if fresh else "probing"
    if prev is not None and (prev.transport, prev.phase, prev.endpoint) == (
        "direct",
        phase,
        endpoint,
    ):
        return prev
    since = prev.since if prev is not None and prev.phase == phase else now
    return PathState("direct", phase, since, endpoint)
