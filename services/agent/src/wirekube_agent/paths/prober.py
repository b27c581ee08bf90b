"""Path probing: sends disco pings, answers them, remembers what came back.

Sans-IO in the h11 sense: the prober owns no socket and no timer. It is handed
a ``send(payload, endpoint)`` that transmits from the WireGuard port (the raw
socket's owner provides it), fed received probes through ``on_datagram``, and
driven by ``tick(now)``. What to probe comes from the path state machine as
``Target``s (``paths.rules``); what was learned goes back as ``ProbeView``.

Probes to a peer's relay-bridge endpoint (127.0.0.1) travel through the relay:
that is how we ask a relayed peer to probe us back at the same moment
("call me maybe"), which is what opens two port-restricted NATs at once.
A probe that arrives from 127.0.0.1 therefore came through the relay.

Every answered ping is a round-trip time measurement of the path it took
(direct, or through the relay): the latest one per peer and path, and an
agent-wide histogram per path, are read by the metrics collector.

Thread-safety: ``set_targets`` is called from the reconcile thread, the rest
from the event loop; one lock guards the shared maps (all work under it is
a few dict operations).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from wirekube_agent.model import Endpoint
from wirekube_agent.paths import disco
from wirekube_agent.paths.rules import ProbeView, Target
from wirekube_agent.peerstats import Histogram
from wirekube_agent.timers import HEARTBEAT_S, LEARNED_ENDPOINT_TTL_S, PROBE_INTERVAL_S
from wirekube_common import wgkey

log = logging.getLogger(__name__)

SendFn = Callable[[bytes, Endpoint], bool]
# Outstanding pings are forgotten after this: a pong later than that would not
# describe the path as it is now anyway.
PING_TTL_S = 5.0
MAX_OUTSTANDING = 4096
# Round trips of path probes: a LAN answers in well under a millisecond, a
# continent in ~0.1 s, a relay across oceans ~0.3 s; a pong later than
# PING_TTL_S is not matched at all.
RTT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Rtt:
    """The latest round trip of a probe on one path, and when it came back."""

    seconds: float
    at: float


@dataclass
class _Peer:
    mac_key: bytes
    target: Target = field(default_factory=Target)
    last_burst_ping: float = 0.0
    last_heartbeat: float = 0.0
    view: ProbeView = field(default_factory=ProbeView)
    learned: dict[Endpoint, float] = field(default_factory=dict)
    rtt: Rtt | None = None  # the latest direct round trip
    relay_rtt: Rtt | None = None  # the latest round trip through the relay


@dataclass
class Counters:
    """Probes received: NetTasks reads them to tell whether the raw socket
    hears anything (``endpoint.tasks``)."""

    pings_received: int = 0
    pongs_received: int = 0


class Prober:
    def __init__(self, private_key: bytes, send: SendFn) -> None:
        self._private = private_key
        self.public_key = wgkey.public_key(private_key)
        self._send = send
        self._lock = threading.Lock()
        self._peers: dict[bytes, _Peer] = {}
        self._outstanding: dict[bytes, tuple[bytes, Endpoint, float]] = {}
        self.counters = Counters()
        self._rtt_histograms = {
            "direct": Histogram(RTT_BUCKETS_S),
            "relay": Histogram(RTT_BUCKETS_S),
        }

    # -- control (reconcile thread) ---------------------------------------------
    def set_targets(self, targets: Mapping[bytes, Target]) -> None:
        with self._lock:
            for key in self._peers.keys() - targets.keys():
                del self._peers[key]
            for key, target in targets.items():
                peer = self._peers.get(key)
                if peer is None:
                    secret = wgkey.shared_secret(self._private, key)
                    peer = self._peers[key] = _Peer(disco.mac_key(secret))
                peer.target = target

    def set_private_key(self, private_key: bytes) -> None:
        """Our key rotated: sign with the new one from now on. What each peer
        answered so far stays (the paths are the same machines)."""
        with self._lock:
            self._private = private_key
            self.public_key = wgkey.public_key(private_key)
            for key, peer in self._peers.items():
                peer.mac_key = disco.mac_key(wgkey.shared_secret(private_key, key))

    def peer_rotated(self, old: bytes, new: bytes) -> None:
        """A peer's key rotated: carry what it answered over to its new key,
        so a direct path in use is not taken for a new, unproven one."""
        with self._lock:
            peer = self._peers.pop(old, None)
            if peer is None or new in self._peers:
                return
            peer.mac_key = disco.mac_key(wgkey.shared_secret(self._private, new))
            self._peers[new] = peer
            for txid, (key, ep, at) in list(self._outstanding.items()):
                if key == old:
                    self._outstanding[txid] = (new, ep, at)

    def view(self, key: bytes) -> ProbeView:
        with self._lock:
            peer = self._peers.get(key)
            return peer.view if peer is not None else ProbeView()

    def learned(self, key: bytes, now: float) -> tuple[Endpoint, ...]:
        with self._lock:
            peer = self._peers.get(key)
            if peer is None:
                return ()
            return tuple(ep for ep, t in peer.learned.items() if now - t < LEARNED_ENDPOINT_TTL_S)

    def rtt(self, key: bytes, path: str = "direct") -> Rtt | None:
        """The latest round trip to the peer on ``path`` (direct or relay)."""
        with self._lock:
            peer = self._peers.get(key)
            if peer is None:
                return None
            return peer.relay_rtt if path == "relay" else peer.rtt

    def rtts(self, keys: Iterable[bytes]) -> dict[bytes, tuple[float | None, float | None]]:
        """The latest round trip (seconds) to each of ``keys``, direct and
        through the relay, under one lock (read every pass: ``decide`` samples
        them into the status)."""
        with self._lock:
            out: dict[bytes, tuple[float | None, float | None]] = {}
            for key in keys:
                peer = self._peers.get(key)
                if peer is not None:
                    out[key] = (
                        peer.rtt.seconds if peer.rtt is not None else None,
                        peer.relay_rtt.seconds if peer.relay_rtt is not None else None,
                    )
            return out

    def rtt_histograms(self) -> dict[str, Histogram]:
        """Every round trip measured so far, per path (copies)."""
        with self._lock:
            return {path: h.copy() for path, h in self._rtt_histograms.items()}

    # -- timers (event loop) -------------------------------------------------------
    def tick(self, now: float) -> None:
        sends: list[tuple[bytes, Endpoint, bytes, int]] = []
        with self._lock:
            for key, peer in self._peers.items():
                t = peer.target
                flags = disco.FLAG_DIRECT if t.direct else 0
                if t.burst and now - peer.last_burst_ping >= PROBE_INTERVAL_S:
                    peer.last_burst_ping = now
                    for ep in t.candidates:
                        sends.append((key, ep, peer.mac_key, flags))
                    if t.via_relay is not None:
                        sends.append((key, t.via_relay, peer.mac_key, flags))
                elif t.heartbeat is not None and now - peer.last_heartbeat >= HEARTBEAT_S:
                    peer.last_heartbeat = now
                    sends.append((key, t.heartbeat, peer.mac_key, flags))
            for txid in [x for x, (_, _, at) in self._outstanding.items() if now - at > PING_TTL_S]:
                del self._outstanding[txid]
        for key, ep, mac_key, flags in sends:
            txid = os.urandom(disco.TXID_LEN)
            if len(self._outstanding) < MAX_OUTSTANDING:
                self._outstanding[txid] = (key, ep, now)
            self._send(disco.encode_ping(self.public_key, txid, mac_key, flags), ep)

    # -- input (event loop) --------------------------------------------------------
    def on_datagram(self, data: bytes, src: Endpoint, now: float) -> None:
        try:
            sender = disco.peek_sender(data)
            with self._lock:
                peer = self._peers.get(sender)
                mac_key = peer.mac_key if peer is not None else None
            if mac_key is None:
                raise disco.DiscoError("probe from an unknown key")
            message = disco.decode(data, mac_key)
        except disco.DiscoError as exc:
            log.debug("dropped probe from %s: %s", src, exc)
            return
        via_relay = ipaddress.ip_address(src[0]).is_loopback
        if isinstance(message, disco.Ping):
            self.counters.pings_received += 1
            with self._lock:
                p = self._peers.get(sender)
                if p is not None:
                    p.view = ProbeView(p.view.answered, now)
                    if not via_relay:
                        p.learned[src] = now
            pong = disco.encode_pong(self.public_key, message.txid, src, mac_key)
            self._send(pong, src)
            return
        self.counters.pongs_received += 1
        with self._lock:
            sent = self._outstanding.pop(message.txid, None)
            p = self._peers.get(sender)
            if sent is None or sent[0] != sender or p is None:
                return
            rtt = Rtt(max(0.0, now - sent[2]), now)
            self._rtt_histograms["relay" if via_relay else "direct"].observe(rtt.seconds)
            if via_relay:
                p.relay_rtt = rtt
                return  # the relay path answers: good to know, but not a direct path
            p.rtt = rtt
            answered = dict(p.view.answered)
            answered[src] = now
            p.view = ProbeView(tuple(answered.items()), p.view.last_ping)
