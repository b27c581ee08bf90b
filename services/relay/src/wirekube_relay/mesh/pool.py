"""The replica mesh: one authenticated link to every other replica of the pool.

Why: agents behind a load balancer register with whichever replica it hands
them. A frame for a key registered on another replica goes over the link to
that replica, which delivers it to its client with the original sender's key
already stamped (the sending replica stamped it, as for a local receiver).
Frames that came from a replica are only ever delivered locally: at most one
extra hop, no loops. Wire format and handshake: ``mesh.proto``; who holds
which key: ``presence``; design and operations: ``docs/relay-mesh.md``.

Pieces:

* ``mesh.link.MeshLink``: one replica link, a ``forwarder.RelayConnection``
  reusing the client connections' bounded queues and backpressure, so a slow
  or dead replica link can hold up only the senders writing to it, for at
  most the stall limit, and never the forwarding between local clients.
* ``Mesh``: finds the replicas (``--mesh-peers`` static list; the ready
  endpoints of the pool's headless Service, watched through the API with
  ``--mesh-endpoints`` (``k8s.PoolMembersWatcher``), which then stand in for
  DNS; or the ``--mesh-dns`` name re-resolved every
  ``MESH_RESOLVE_INTERVAL``, whose answers trail by the DNS cache's TTL),
  dials every address it has no link for (with
  backoff), adopts replica connections arriving on the relay port (first
  byte ``MESH_HELLO``), keeps one link per replica (two replicas that
  dialled each other keep the link dialled by the smaller id), announces
  this replica's registrations and applies the others', pings, and closes
  dead links. ``route`` is what the forwarder asks on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wirekube_relay import timers
from wirekube_relay.mesh import proto as mp
from wirekube_relay.mesh.link import MeshLink
from wirekube_relay.mesh.presence import Presence, PresenceFull

if TYPE_CHECKING:
    from wirekube_relay.forwarder import Context, RelayConnection

log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True)
class MeshConfig:
    """What ``--mesh-*`` and ``POD_IP`` say (see ``__main__``)."""

    secret: bytes
    static_peers: tuple[Address, ...] = ()
    dns_name: str | None = None
    self_hosts: tuple[str, ...] = ()  # our own addresses (POD_IP): never dialled


class Mesh:
    """Discovery, links and presence of this replica (see the module docstring)."""

    def __init__(
        self,
        ctx: Context,
        secret: bytes,
        name: str,
        port: int,
        static_peers: Sequence[Address] = (),
        dns_name: str | None = None,
        self_addresses: Sequence[Address] = (),
    ) -> None:
        self.ctx = ctx
        self.secret = secret
        self.name = name
        self.port = port
        self.node_id = os.urandom(mp.ID_LEN)
        self.static_peers = list(static_peers)
        self.dns_name = dns_name
        self.self_addresses = set(self_addresses)
        self.presence: Presence[str] = Presence(
            max_keys=ctx.limits.max_connections, max_replicas=timers.MESH_MAX_REPLICAS
        )
        self.links: dict[str, MeshLink] = {}  # replica id -> its link in use
        self.pending: set[MeshLink] = set()  # handshaking, both directions
        self.wanted: list[Address] = list(static_peers)
        # The pool's ready replicas as the API says (``set_members``); once
        # known, DNS is no longer asked: its answers may be 30 s old.
        self.members: list[Address] | None = None
        self.address_peer: dict[Address, str] = {}  # dialled address -> id ("self": us)
        self.next_dial: dict[Address, float] = {}
        self.backoff: dict[Address, float] = {}
        self.connecting: set[Address] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self.next_resolve = 0.0
        self._task: asyncio.Task[None] | None = None
        ctx.mesh = self
        ctx.registry.listener = self

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-mesh")

    async def wait_closed(self) -> None:
        assert self._task is not None
        await self._task

    def stop(self) -> None:
        for link in [*self.links.values(), *self.pending]:
            link.close("shutdown", mp.CLOSE_SHUTTING_DOWN, "relay shutting down")
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.dns_name and self.members is None and now >= self.next_resolve:
                found_others = await self._resolve()
                unlinked = any(not self.covered(addr) for addr in self.wanted)
                self.next_resolve = now + resolve_delay(found_others, unlinked)
            self.dial_missing(now)
            self.tick(now)
            await asyncio.sleep(timers.MESH_TICK)

    async def _resolve(self) -> bool:
        """Refresh ``wanted`` from DNS; True when it names a replica other than us."""
        assert self.dns_name is not None
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(self.dns_name, self.port, type=socket.SOCK_STREAM),
                timers.MESH_RESOLVE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("event=mesh-resolve-failed name=%s error=%s", self.dns_name, exc)
            return False  # keep the replicas we know
        found = sorted({(str(info[4][0]), int(info[4][1])) for info in infos})
        if found != self.wanted:
            log.info(
                "event=mesh-resolved name=%s replicas=%s",
                self.dns_name,
                ",".join(f"{h}:{p}" for h, p in found),
            )
        self.wanted = found
        return any(addr not in self.self_addresses for addr in found)

    def set_members(self, members: Sequence[Address]) -> None:
        """The API's list of the pool's ready replicas (on the event loop):
        dial a new one at once rather than at the next tick."""
        self.members = sorted(set(members))
        wanted = sorted({*self.static_peers, *self.members})
        if wanted != self.wanted:
            log.info(
                "event=mesh-members source=api replicas=%s",
                ",".join(f"{h}:{p}" for h, p in wanted),
            )
        for addr in set(wanted) - set(self.wanted):
            # Just turned ready: an earlier failed dial's backoff (the same
            # address reused by a new pod) must not delay this one.
            self.next_dial.pop(addr, None)
            self.backoff.pop(addr, None)
        self.wanted = wanted
        if self._task is not None:
            self.dial_missing(self.ctx.loop.time())

    # --- dialling ------------------------------------------------------------------------

    def covered(self, addr: Address) -> bool:
        """A link to the replica at ``addr`` exists or is being made (or it is us)."""
        if addr in self.self_addresses or addr in self.connecting:
            return True
        peer = self.address_peer.get(addr)
        if peer == "self" or (peer is not None and peer in self.links):
            return True
        return any(link.dialed == addr for link in self.pending)

    def dial_missing(self, now: float) -> None:
        for addr in self.wanted:
            if not self.covered(addr) and now >= self.next_dial.get(addr, 0.0):
                self.connecting.add(addr)
                task = asyncio.create_task(self._dial(addr), name=f"mesh-dial-{addr[0]}:{addr[1]}")
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)

    async def _dial(self, addr: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: MeshLink(self.ctx, self, addr), addr[0], addr[1]),
                timers.MESH_CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.info("event=mesh-dial-failed address=%s:%d error=%s", addr[0], addr[1], exc)
            self.retry_later(addr)
        finally:
            self.connecting.discard(addr)

    def retry_later(self, addr: Address) -> None:
        delay = min(
            self.backoff.get(addr, timers.MESH_BACKOFF_MIN / 2) * 2, timers.MESH_BACKOFF_MAX
        )
        self.backoff[addr] = delay
        self.next_dial[addr] = self.ctx.loop.time() + delay

    def found_self(self, addr: Address) -> None:
        self.address_peer[addr] = "self"
        log.info("event=mesh-self address=%s:%d", addr[0], addr[1])

    # --- accepting: a replica connection arrived on the relay port ------------------------

    def adopt(self, conn: RelayConnection) -> None:
        """Take over a connection whose first byte is MESH_HELLO."""
        ctx = self.ctx
        transport = conn.transport
        assert transport is not None
        rest = bytes(conn.mv[conn.start : conn.end])
        ctx.connections.discard(conn)
        ctx.pending -= 1
        conn.release_source()  # replica links have their own bounds, below
        conn.closing = True
        conn.start = conn.end = 0
        from_there = sum(1 for link in self.pending if link.ip == conn.ip and not link.dialed)
        if (
            len(self.pending) >= timers.MESH_MAX_PENDING
            or from_there >= timers.MESH_MAX_PENDING_PER_SOURCE
        ):
            ctx.stats.mesh_auth_failures["overloaded"] += 1
            transport.write(mp.encode_close(mp.CLOSE_OVERLOADED, "too many replica handshakes"))
            transport.close()
            return
        link = MeshLink(ctx, self, None)
        transport.set_protocol(link)
        link.connection_made(transport)
        link.feed(rest)

    # --- link state ----------------------------------------------------------------------

    def link_up(self, link: MeshLink) -> None:
        self.pending.discard(link)
        if link.dialed is not None:
            self.address_peer[link.dialed] = link.peer
            self.backoff.pop(link.dialed, None)
            self.next_dial.pop(link.dialed, None)
        existing = self.links.get(link.peer)
        if existing is not None and existing is not link and not existing.closing:
            loser = link if existing.dialer_id <= link.dialer_id else existing
            loser.close("duplicate", mp.CLOSE_DUPLICATE, "duplicate replica link")
            if loser is link:
                return
        elif link.peer not in self.links:
            if len(self.links) >= timers.MESH_MAX_REPLICAS:
                link.close("overloaded", mp.CLOSE_OVERLOADED, "too many replicas")
                return
            self.ctx.stats.mesh_links_established += 1  # a replica joined (not a swap)
        self.links[link.peer] = link
        log.info(
            "event=mesh-link-up peer=%s id=%s remote=%s dialed=%s",
            link.peer_name,
            link.peer[:8],
            link.remote,
            link.dialed is not None,
        )
        link.send_control(mp.encode_presence_reset())
        for frame in mp.encode_presence(mp.PRESENCE_ADD, self.presence.local_entries()):
            link.send_control(frame)

    def link_closed(self, link: MeshLink) -> None:
        self.pending.discard(link)
        if link.up and self.links.get(link.peer) is link:
            del self.links[link.peer]
            self.presence.reset(link.peer)
            log.info("event=mesh-link-down peer=%s id=%s", link.peer_name, link.peer[:8])
            # A replica went away: the pool may have been replaced (all pods
            # deleted at once). Ask the name again soon rather than at the
            # regular interval, which an answer naming only that replica (or
            # terminating ones still linked then) had set.
            soon = self.ctx.loop.time() + timers.MESH_RESOLVE_RETRY
            self.next_resolve = min(self.next_resolve, soon)
        if link.dialed is not None and self.address_peer.get(link.dialed) != "self":
            self.retry_later(link.dialed)

    def on_presence(
        self, link: MeshLink, ev: mp.PresenceReset | mp.PresenceAdd | mp.PresenceDel
    ) -> None:
        if self.links.get(link.peer) is not link:
            return  # a duplicate link on its way out
        presence = self.presence
        try:
            if isinstance(ev, mp.PresenceReset):
                presence.reset(link.peer)
            elif isinstance(ev, mp.PresenceAdd):
                for key, version in ev.entries:
                    presence.add(link.peer, key, version)
            else:
                for key, version in ev.entries:
                    presence.remove(link.peer, key, version)
        except PresenceFull as exc:
            link.fail("presence-full", mp.CLOSE_OVERLOADED, str(exc))

    # --- the registry's listener: this replica's own registrations ---------------------

    def registered(self, key: bytes) -> None:
        version = self.presence.register_local(key, time.time_ns() // 1000)
        self._broadcast(mp.encode_presence(mp.PRESENCE_ADD, [(key, version)]))

    def unregistered(self, key: bytes) -> None:
        version = self.presence.unregister_local(key)
        if version is not None:
            self._broadcast(mp.encode_presence(mp.PRESENCE_DEL, [(key, version)]))

    def _broadcast(self, frames: list[bytes]) -> None:
        for link in self.links.values():
            for frame in frames:
                link.send_control(frame)

    # --- the hot path's question ----------------------------------------------------------

    def route(self, key: bytes, local: RelayConnection | None) -> RelayConnection | None:
        """Where frames for ``key`` go when it is not registered here (``local`` None)
        or its local connection has gone quiet: the link to the replica with the
        newest registration, else ``local``."""
        presence = self.presence
        rid = presence.route(key) if local is None else presence.superseded(key)
        if rid is None:
            return local
        return self.links.get(rid) or local

    # --- housekeeping (once a second) -------------------------------------------------------

    def tick(self, now: float) -> None:
        for link in list(self.pending):
            if now - link.created > timers.MESH_HANDSHAKE_DEADLINE:
                self.ctx.stats.mesh_auth_failures["deadline"] += 1
                link.fail("auth:deadline", mp.CLOSE_TIMEOUT, "replica handshake deadline passed")
        for link in list(self.links.values()):
            if link.rx_reads != link.last_seen_reads:
                link.last_seen_reads = link.rx_reads
                link.idle_since = now
            if now - link.idle_since >= timers.MESH_DEAD_AFTER:
                link.fail(
                    "dead", mp.CLOSE_TIMEOUT, f"nothing received for {now - link.idle_since:.0f}s"
                )
                continue
            if now - link.last_ping >= timers.MESH_PING_INTERVAL:
                link.last_ping = now
                link.send_control(mp.encode_ping(os.urandom(mp.PING_LEN)))
            link.stage.trim()

    # --- introspection ------------------------------------------------------------------------

    def links_up(self) -> int:
        return len(self.links)


def resolve_delay(found_others: bool, unlinked: bool = False) -> float:
    """When to resolve the pool name again: the regular interval once it named
    another replica and we hold a link (or a dial) to every replica it named;
    soon otherwise. A pool whose replicas all start together: the headless
    Service lists a replica only once it is ready, so the first answers are
    empty or name only ourselves. A pool whose replicas were all replaced at
    once (``kubectl delete pod -l ...``): the first answers still name the
    old, terminating replicas and not yet the new ones, and with the 30 s
    interval the new replicas had no links to each other for up to 30 s
    (measured behind a load balancer: relayed pairs split over replicas back
    31.7 s after the first new replica was Ready, with every link down then)."""
    if found_others and not unlinked:
        return timers.MESH_RESOLVE_INTERVAL
    return timers.MESH_RESOLVE_RETRY


def parse_peers(text: str, default_port: int) -> list[Address]:
    """``host:port,host:port`` (port optional) -> addresses; '' -> []."""
    out: list[Address] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or "]" in port:
            host, port = item, str(default_port)
        out.append((host.strip("[]"), int(port)))
    return out
