"""A new agent's first paths, read off the interface its predecessor left. Pure.

The interface outlives the agent (kernel WireGuard lives in the host's
network namespace; the userspace backend adopts a running wireguard-go), and
with it every peer's endpoint, session and route. A new agent that started
every path from scratch would move each peer through ``paths.step``'s
start-up state: relayed first where a relay is up, or direct but unrouted
until a probe answers — routes withdrawn, endpoints rewritten, pings lost,
for paths that were working a second ago. So the first pass takes each
peer's path from what the device shows:

* endpoint on the loopback (the relay bridge's socket): relayed, as before;
* any other endpoint and a fresh handshake: direct and up, on the endpoint
  WireGuard uses now (which may be a NAT mapping it roamed to);
* anything else (no endpoint, no fresh handshake): left to ``paths.step``.

From there ``paths.step`` carries on as for any path: a direct path stays up
while its heartbeats are answered and falls back after the usual timeout.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from wirekube_agent.model import RemotePeer
from wirekube_agent.paths.rules import PathState
from wirekube_agent.timers import HANDSHAKE_FRESH_S
from wirekube_common.wireguard.types import DeviceState


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def adopted_paths(
    device: DeviceState,
    peers: Mapping[str, RemotePeer],
    retry_interval_s: float,
    now: float,
) -> dict[str, PathState]:
    """``now`` and the device's handshake times are wall-clock seconds."""
    out: dict[str, PathState] = {}
    for name, peer in peers.items():
        have = device.peers.get(peer.public_key)
        if have is None or have.endpoint is None:
            continue
        fresh = have.last_handshake > 0 and now - have.last_handshake < HANDSHAKE_FRESH_S
        if _loopback(have.endpoint[0]):
            phase = "up" if fresh else "probing"
            out[name] = PathState("relay", phase, now, None, next_burst=now + retry_interval_s)
        elif fresh:
            out[name] = PathState("direct", "up", now, have.endpoint)
    return out
