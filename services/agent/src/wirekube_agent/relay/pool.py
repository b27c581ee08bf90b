"""RelayPool: a registered link to every relay replica, and which one carries each flow.

Addresses come from an explicit ``host:port`` list or from a DNS name that is
re-resolved every ``RESOLVE_INTERVAL`` (``resolver``; the DNS server's address
is configurable so a lab DNS server can be used). Finding *which* relay
address to use (external endpoint, Service ExternalIP / LB ingress /
NodePort) is the caller's job; the pool receives addresses.

Flow placement is rendezvous (highest-random-weight) hashing over the *live*
replicas with the unordered pair of WireGuard keys as the flow id:

    score(replica) = BLAKE2b(min(a, b) | max(a, b) | "ip:port")

Both ends of a flow therefore pick the same replica without talking to each
other, a flow never moves while its replica lives (no reordering), removing a
replica moves only the flows it carried, and a new replica (seen at the next
resolve) takes over only the flows for which it scores highest. Every link
is connected and registered whichever flows it carries, so a frame sent
through any replica reaches us.

A watchdog thread pings every live link each ``PING_INTERVAL``, declares a
link dead after ``DEAD_AFTER`` of silence or a PING unanswered for
``PONG_TIMEOUT`` (``link.dead_reason``; flows move at the next pick; the
link reconnects with backoff), and re-resolves the DNS name.

``pure`` helpers (``rendezvous_pick``, ``parse_hostport``) are unit-tested.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wirekube_agent.relay import timers
from wirekube_agent.relay.egress import Egress
from wirekube_agent.relay.link import BatchHandler, FrameHandler, RelayLink, split_batch

if TYPE_CHECKING:
    from wirekube_agent.relay.resolver import Resolver

log = logging.getLogger(__name__)


def parse_hostport(text: str, default_port: int = 3478) -> tuple[str, int]:
    """'h:p', '[v6]:p', 'h' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def flow_id(a: bytes, b: bytes) -> bytes:
    return min(a, b) + max(a, b)


def rendezvous_score(flow: bytes, replica: str) -> bytes:
    return hashlib.blake2b(flow + replica.encode(), digest_size=8).digest()


def rendezvous_pick(flow: bytes, replicas: Iterable[str]) -> str | None:
    best, best_score = None, b""
    for r in replicas:
        s = rendezvous_score(flow, r)
        if best is None or s > best_score or (s == best_score and r < best):
            best, best_score = r, s
    return best


@dataclass(frozen=True)
class DnsSource:
    """Resolve ``name`` (A and AAAA) every RESOLVE_INTERVAL; all replicas use ``port``."""

    name: str
    port: int = 3478
    nameservers: Sequence[str] = ()
    nameserver_port: int = 53


class RelayPool:
    """Links to every replica. ``pick(peer_key)`` is safe from any thread."""

    def __init__(
        self,
        private_key: bytes,
        addresses: Sequence[tuple[str, int]] | None = None,
        dns_source: DnsSource | None = None,
        resolve_interval: float = timers.RESOLVE_INTERVAL,
        fwmark: int | None = None,
        egress: Egress | None = None,
    ) -> None:
        if (addresses is None) == (dns_source is None):
            raise ValueError("give exactly one of addresses or dns_source")
        from wirekube_common import wgkey  # noqa: PLC0415 - keep module import light

        self.private_key = private_key
        self.fwmark = fwmark
        self.egress = egress or Egress()  # TLS / proxy, the same for every replica
        self.public_key = wgkey.public_key(private_key)
        self.static = list(addresses) if addresses is not None else None
        self.dns = dns_source
        self.resolve_interval = resolve_interval
        self.links: dict[str, RelayLink] = {}
        self.generation = 0  # bumped whenever the set of live links changes
        self._live: tuple[str, ...] = ()
        self._on_frame: FrameHandler = _drop
        self._on_batch: BatchHandler = split_batch(_drop)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="relay-pool", daemon=True)
        self._next_resolve = 0.0
        self._resolver: Resolver | None = None
        self._source_gen = 0  # bumped by retarget
        self.on_change: Callable[[], None] | None = None
        self.retiring = False  # links do not reconnect (RelayLink.retiring)

    # --- lifecycle ---------------------------------------------------------------

    def start(self, on_frame: FrameHandler, on_batch: BatchHandler | None = None) -> None:
        """Connect to every replica; ``on_frame(src_key, packet)`` and
        ``on_batch(src_key, entries)`` (default: ``on_frame`` per packet) run
        on link threads."""
        self._on_frame = on_frame
        self._on_batch = on_batch or split_batch(on_frame)
        self._refresh_addresses()
        self._next_resolve = time.monotonic() + self.resolve_interval
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            links = list(self.links.values())
            self.links.clear()
        for link in links:
            link.stop()
        for link in links:
            link.join(2.0)
        if self._watchdog.is_alive():
            self._watchdog.join(2.0)

    def rekey(self, private_key: bytes) -> None:
        """Every link re-registers under a new key (key rotation)."""
        from wirekube_common import wgkey  # noqa: PLC0415 - as in __init__

        with self._lock:
            self.private_key = private_key
            self.public_key = wgkey.public_key(private_key)
            links = list(self.links.values())
        for link in links:
            link.rekey(private_key)

    def retire(self, on: bool) -> None:
        """Handing over to a new agent: links the relay closes stay closed
        (``False``: the handover failed, reconnect)."""
        with self._lock:
            self.retiring = on
            links = list(self.links.values())
        for link in links:
            link.retire(on)

    def retarget(
        self,
        addresses: Sequence[tuple[str, int]] | None = None,
        dns_source: DnsSource | None = None,
    ) -> None:
        """Take replica addresses from a new source, keeping every link whose
        address is still wanted (a relay endpoint rewritten from its IP to a
        DNS name that resolves to it keeps its connection and its flows)."""
        if (addresses is None) == (dns_source is None):
            raise ValueError("give exactly one of addresses or dns_source")
        with self._lock:
            self.static = list(addresses) if addresses is not None else None
            self.dns = dns_source
            self._resolver = None  # the name server may have changed with the source
            self._source_gen += 1
        if self.static is not None:
            self._refresh_addresses()
        else:
            self._next_resolve = 0.0  # the watchdog resolves on its next tick, not us

    # --- placement -----------------------------------------------------------------

    def pick(self, peer_key: bytes) -> RelayLink | None:
        """The live link that carries the flow between us and ``peer_key`` (None: no relay up)."""
        live = self._live
        name = rendezvous_pick(flow_id(self.public_key, peer_key), live)
        return self.links.get(name) if name is not None else None

    def live_replicas(self) -> tuple[str, ...]:
        return self._live

    def wait_live(self, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._live) >= count:
                return True
            time.sleep(0.02)
        return False

    # --- internals --------------------------------------------------------------------

    def _link_state(self, _link: RelayLink) -> None:
        with self._lock:
            live = tuple(sorted(n for n, lk in self.links.items() if lk.up))
            changed = live != self._live
            self._live = live
            if changed:
                self.generation += 1
        if changed:
            log.info("event=relay-pool-live replicas=%s", ",".join(live) or "-")
            if self.on_change:
                self.on_change()

    def _refresh_addresses(self) -> None:
        source_gen = self._source_gen
        if self.static is not None:
            wanted = list(self.static)
        else:
            try:
                wanted = self._resolve()
            except Exception as exc:  # ResolveError, a DNS library error, OSError
                log.warning("event=relay-resolve-failed error=%s", exc)
                return  # keep the links we have
        names = {f"{h}:{p}": (h, p) for h, p in wanted}
        with self._lock:
            if source_gen != self._source_gen:
                return  # retargeted meanwhile: these addresses are from the old source
            added = [n for n in names if n not in self.links]
            removed = [n for n in self.links if n not in names]
            gone = [self.links.pop(n) for n in removed]
            for n in added:
                self.links[n] = RelayLink(
                    names[n],
                    self.private_key,
                    self._deliver,
                    on_state=self._link_state,
                    fwmark=self.fwmark,
                    on_batch=self._deliver_batch,
                    egress=self.egress,
                )
                self.links[n].retiring = self.retiring
            new_links = [self.links[n] for n in added]
        for link in gone:
            log.info("event=relay-replica-removed relay=%s", link.name)
            link.stop()
        for link in new_links:
            log.info("event=relay-replica-added relay=%s", link.name)
            link.start()
        if gone:
            self._link_state(gone[0])

    def _deliver(self, src: memoryview, packet: memoryview) -> None:
        self._on_frame(src, packet)

    def _deliver_batch(self, src: memoryview, entries: memoryview) -> tuple[int, int]:
        return self._on_batch(src, entries)

    def _resolve(self) -> list[tuple[str, int]]:
        assert self.dns is not None
        if self._resolver is None:
            from wirekube_agent.relay.resolver import Resolver  # noqa: PLC0415 - see resolver

            self._resolver = Resolver(
                self.dns.nameservers, self.dns.nameserver_port, timers.RESOLVE_TIMEOUT
            )
        with self._lock:
            known = [lk.address for lk in self.links.values()]
        return self._resolver.resolve(self.dns.name, self.dns.port, known)

    def _watch(self) -> None:
        while not self._stop.wait(timers.WATCHDOG_TICK):
            now = time.monotonic()
            if self.dns is not None and now >= self._next_resolve:
                self._next_resolve = now + self.resolve_interval
                self._refresh_addresses()
            for link in list(self.links.values()):
                if not link.up:
                    continue
                if (why := link.dead_reason(now)) is not None:
                    log.warning(
                        "event=relay-dead relay=%s reason=%s silent=%.1fs",
                        link.name,
                        why,
                        now - link.last_rx,
                    )
                    link.up = False
                    self._link_state(link)
                    link.kill()
                elif now - link.last_ping >= timers.PING_INTERVAL:
                    link.ping(now)


def _drop(src: memoryview, packet: memoryview) -> None:
    return None
