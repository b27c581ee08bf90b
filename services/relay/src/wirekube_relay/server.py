"""RelayServer: the TCP listener, the housekeeping sweep, and shutdown.

The forwarding itself lives in forwarder.py; this module owns the listening
socket and everything that happens on a timer rather than per read:

* registration deadline for connections that have not proven a key,
* keepalive PINGs to registered connections that have been silent for
  ``keepalive`` seconds and closing of those silent for ``dead_timeout``
  (activity is a per-read counter bumped by the forwarder, so the hot path
  never reads the clock),
* closing receivers that stayed stalled (reading nothing) for
  ``STALLED_CLOSE`` (marking them stalled is the forwarder's own timer),
* ending the refusal-log interval and forgetting refilled per-source buckets,
* closing connections of keys removed from the allow-list.

``snapshot()`` gives a consistent copy of the peer table for the admin API;
it must run on the loop (admin/service.py schedules it there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass

from wirekube_common.relayproto import frames as f
from wirekube_relay import timers
from wirekube_relay.admin.stats import RelayStats
from wirekube_relay.client.auth import Authenticator
from wirekube_relay.forwarder import Context, RelayConnection
from wirekube_relay.limits import bounds as limits
from wirekube_relay.limits.bounds import Limits
from wirekube_relay.mesh.pool import Mesh, MeshConfig

log = logging.getLogger(__name__)


def listen(sock: socket.socket) -> None:
    """Give a listening socket, already served by ``loop.create_server(...,
    backlog=ACCEPT_BATCH)``, the kernel queue of LISTEN_BACKLOG: asyncio uses
    its ``backlog`` both for ``listen()`` and as the accepts per loop turn,
    and here the two must differ. Linux takes a second ``listen`` as a resize."""
    sock.listen(limits.LISTEN_BACKLOG)


@dataclass(frozen=True)
class PeerInfo:
    key: bytes
    remote: str
    connected_seconds: float
    frames_in: int
    bytes_in: int
    frames_out: int
    bytes_out: int


class RelayServer:
    def __init__(
        self,
        auth: Authenticator,
        stats: RelayStats,
        limits: Limits,
        host: str = "0.0.0.0",
        port: int = 3478,
        mesh_config: MeshConfig | None = None,
    ) -> None:
        self.auth = auth
        self.stats = stats
        self.limits = limits
        self.host = host
        self.port = port
        self.ctx: Context | None = None
        self.mesh_config = mesh_config
        self.mesh: Mesh | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self.ctx is not None
        return self.ctx.loop

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.ctx = ctx = Context(loop, self.auth, self.stats, self.limits)
        self.auth.allowlist.on_removed = self._keys_removed_threadsafe
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._server = await loop.create_server(
            lambda: RelayConnection(ctx), sock=sock, backlog=limits.ACCEPT_BATCH
        )
        listen(sock)
        self.port = sock.getsockname()[1]
        if self.mesh_config is not None:
            cfg = self.mesh_config
            own = {*cfg.self_hosts, *([self.host] if self.host not in ("0.0.0.0", "::") else [])}
            self.mesh = Mesh(
                ctx,
                cfg.secret,
                self.auth.relay_id,
                self.port,
                static_peers=cfg.static_peers,
                dns_name=cfg.dns_name,
                self_addresses=[(h, self.port) for h in own],
            )
            self.mesh.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="relay-sweeper")
        log.info(
            "event=listening address=%s:%d relay_id=%s", self.host, self.port, self.auth.relay_id
        )
        return self.port

    @property
    def listening(self) -> bool:
        """Is the listening socket accepting? (Read by /readyz from another thread.)"""
        return self._server is not None and self._server.is_serving()

    async def wait_closed(self) -> None:
        """Runs until the sweeper dies (a bug) or the server is stopped."""
        assert self._sweeper is not None
        await self._sweeper

    async def mesh_closed(self) -> None:
        """Runs until the replica mesh task dies (a bug); forever without a mesh."""
        if self.mesh is None:
            await asyncio.Event().wait()
        else:
            await self.mesh.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.mesh is not None:
            self.mesh.stop()
        if self.ctx is not None:
            for conn in list(self.ctx.connections):
                conn.close("shutdown", f.CLOSE_SHUTTING_DOWN, "relay shutting down")
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.sleep(0)

    # --- housekeeping ----------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(timers.SWEEP_INTERVAL)
            self.sweep(self.loop.time())

    def sweep(self, now: float) -> None:
        ctx = self.ctx
        assert ctx is not None
        lim = self.limits
        ctx.refusals.roll(now)
        ctx.sources.prune(now)
        expired: list[RelayConnection] = []
        for conn in list(ctx.connections):
            if conn.closing:
                continue
            if conn.key is None:
                if now - conn.created > lim.registration_deadline:
                    expired.append(conn)
                continue
            conn.stage.trim()
            if conn.rx_reads != conn.last_seen_reads:
                conn.last_seen_reads = conn.rx_reads
                conn.idle_since = now
                conn.pinged = False
            idle = now - conn.idle_since
            conn.quiet = idle >= timers.QUIET_AFTER
            if idle >= lim.dead_timeout:
                conn.fail("dead", f.CLOSE_TIMEOUT, f"nothing received for {idle:.0f}s")
                continue
            if idle >= lim.keepalive and not conn.pinged:
                conn.pinged = True
                conn.send_control(f.encode_ping(os.urandom(8)))
            if conn.stalled and now - conn.write_paused_at > timers.STALLED_CLOSE:
                stuck = now - conn.write_paused_at
                conn.fail("too-slow", f.CLOSE_TOO_SLOW, f"read nothing for {stuck:.0f}s")

        self._expire(expired)

    def _expire(self, conns: list[RelayConnection]) -> None:
        """Close connections past their registration deadline, a chunk at a
        time (limits.EXPIRE_CHUNK, EXPIRE_PACE apart): thousands accepted
        together expire together, and closing them in one go stalled the loop
        (and every honest pair) for 180-500 ms."""
        ctx = self.ctx
        assert ctx is not None
        for conn in conns[: limits.EXPIRE_CHUNK]:
            if not conn.closing:
                ctx.stats.auth_failures["deadline"] += 1
                conn.fail("auth:deadline", f.CLOSE_TIMEOUT, "registration deadline passed")
        if len(conns) > limits.EXPIRE_CHUNK:
            self.loop.call_later(limits.EXPIRE_PACE, self._expire, conns[limits.EXPIRE_CHUNK :])

    def _keys_removed_threadsafe(self, keys: set[bytes]) -> None:
        self.loop.call_soon_threadsafe(self._close_keys, keys)

    def _close_keys(self, keys: set[bytes]) -> None:
        assert self.ctx is not None
        for key in keys:
            conn = self.ctx.registry.get(key)
            if conn is not None:
                conn.close("not-allowed", f.CLOSE_NOT_ALLOWED, "key removed from allow-list")

    # --- introspection (call on the loop) --------------------------------------

    def snapshot(self) -> list[PeerInfo]:
        assert self.ctx is not None
        now = self.loop.time()
        return [
            PeerInfo(
                key,
                c.remote,
                now - c.registered_at,
                c.frames_in,
                c.bytes_in,
                c.frames_out,
                c.bytes_out,
            )
            for key, c in self.ctx.registry.snapshot()
        ]

    def counts(self) -> tuple[int, int]:
        """(open connections, registered peers); safe to call from any thread."""
        if self.ctx is None:
            return 0, 0
        return len(self.ctx.connections), len(self.ctx.registry)
