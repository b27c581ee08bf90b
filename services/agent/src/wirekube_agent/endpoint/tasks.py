"""The agent's event-loop side: the raw socket on the WireGuard port, path
probes and NAT discovery.

The reconcile thread publishes what these tasks need (listen port, STUN
servers) as plain attributes; they publish back the NAT report and the
prober's observations, and wake the reconciler when something changed that
could move a path (an answered probe, a new NAT verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from wirekube_agent.endpoint.netcheck import Netcheck
from wirekube_agent.endpoint.underlay import Underlay
from wirekube_agent.model import Endpoint
from wirekube_agent.netlink.addresses import local_addresses
from wirekube_agent.paths.prober import Prober
from wirekube_agent.timers import ENDPOINT_RECHECK_INTERVAL_S
from wirekube_common.wakeup import Wakeup

log = logging.getLogger(__name__)

# The prober's clock tick: probes are due at 0.5 s (burst) or 1 s (heartbeat)
# intervals; 50 ms keeps their jitter negligible at negligible cost.
PROBE_TICK_S = 0.05
# After a failed or impossible raw-socket setup, try again this often
# (capabilities do not change, but the listen port or interface might).
UNDERLAY_RETRY_S = 30.0
# Until the first discovery answered, retry soon: at start-up the STUN
# servers may still be unreachable (routes converging, the lab starting).
NETCHECK_RETRY_S = 5.0
# Local addresses are compared this often; a change (DHCP renewal, a moved
# laptop, a new uplink) means our public mapping may have changed: re-discover.
ADDRESS_POLL_S = 5.0


class NetTasks:
    def __init__(self, private_key: bytes, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.prober = Prober(private_key, self._send)
        self.netcheck = Netcheck()
        self.underlay: Underlay | None = None
        # Set by the reconcile thread every pass (``configure``).
        self.listen_port = 0
        self.stun_servers: tuple[str, ...] = ()
        self.recheck = Wakeup()  # set (from any thread) to force a NAT discovery round
        self._underlay_failed_at = -UNDERLAY_RETRY_S

    def configure(self, listen_port: int, stun_servers: tuple[str, ...]) -> None:
        """The mesh's port and STUN servers (reconcile thread, every pass). A
        change starts a discovery round at once: at start-up the first round
        must not wait out a retry interval for the first pass to arrive."""
        changed = (listen_port, stun_servers) != (self.listen_port, self.stun_servers)
        self.listen_port, self.stun_servers = listen_port, stun_servers
        if changed:
            self.recheck.set()

    def _send(self, payload: bytes, endpoint: Endpoint) -> bool:
        underlay = self.underlay
        return underlay.send(payload, endpoint) if underlay is not None else False

    def _on_probe(self, data: bytes, src: Endpoint, now: float) -> None:
        before = self.prober.counters.pongs_received, self.prober.counters.pings_received
        self.prober.on_datagram(data, src, now)
        if before != (self.prober.counters.pongs_received, self.prober.counters.pings_received):
            self.wake()

    def _ensure_underlay(self) -> Underlay | None:
        port = self.listen_port
        if self.underlay is not None and self.underlay.port == port:
            return self.underlay
        if self.underlay is not None:
            self.underlay.close()
            self.underlay = None
        now = time.monotonic()
        if not port or now - self._underlay_failed_at < UNDERLAY_RETRY_S:
            return None
        try:
            self.underlay = Underlay(port, self._on_probe)
        except OSError as exc:
            self._underlay_failed_at = now
            log.error(
                "cannot open a raw socket on port %d (%s): no STUN and no direct-path "
                "probing; grant CAP_NET_RAW",
                port,
                exc,
            )
        return self.underlay

    async def probe_loop(self) -> None:
        while True:
            if self._ensure_underlay() is not None:
                self.prober.tick(time.time())
            await asyncio.sleep(PROBE_TICK_S)

    def request_recheck(self) -> None:
        """Ask for a NAT discovery round now (thread-safe)."""
        self.recheck.set()

    async def address_watch_loop(self) -> None:
        """Network change detection: a new set of local addresses triggers netcheck."""
        last: set[object] | None = None
        while True:
            # pyroute2's synchronous API runs an event loop of its own: off this one.
            current = set(await asyncio.to_thread(local_addresses))
            if last is not None and current != last:
                log.info("local addresses changed; re-checking the NAT mapping")
                self.recheck.set()
            last = current
            await asyncio.sleep(ADDRESS_POLL_S)

    async def netcheck_loop(self) -> None:
        while True:
            underlay = self._ensure_underlay()
            servers = self.stun_servers
            answered = False
            # Nothing known yet (start-up): a quick round publishes the mapped
            # endpoint after one round trip; the full round follows at once.
            quick = self.netcheck.report.mapped is None
            if underlay is not None and servers:
                before = self.netcheck.report
                try:
                    report = await self.netcheck.run(underlay, servers, quick=quick)
                    answered = report.mapped is not None
                except (TimeoutError, OSError) as exc:
                    log.warning("NAT discovery failed: %s", exc)
                except Exception:
                    # A bug in one round must not take the data plane down
                    # with it; the next round may well succeed.
                    log.exception("NAT discovery round crashed")
                if self.netcheck.report != before:
                    self.wake()
            self.recheck.clear()
            if quick and answered:
                continue
            interval = ENDPOINT_RECHECK_INTERVAL_S if answered else NETCHECK_RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recheck.wait(), interval)

    def close(self) -> None:
        if self.underlay is not None:
            self.underlay.close()
            self.underlay = None
