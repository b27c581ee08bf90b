"""This node's data plane: the WireGuard device, our routes and our rules.

Owns the backend and what we last applied. ``apply`` takes the desired state
and the device as just observed, asks ``diff`` for the operations and runs
them in dependency order: rules that protect WireGuard's own packets first,
stale routes out before a peer leaves WireGuard, the WireGuard change, new
routes only once their peer exists, stale rules last. Routes and rules are
re-read from the kernel whenever the desired set changed and on every full
resync (other software flushes them); in between the last applied set is
trusted, which keeps a pass cheap at 1000 peers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyroute2 import IPRoute

from wirekube_agent import diff
from wirekube_agent.model import FWMARK, DesiredState, Endpoint, Route, Rule
from wirekube_agent.netlink import routes, rules
from wirekube_agent.sysctl import apply_interface_sysctls
from wirekube_agent.timers import RESYNC_INTERVAL_S
from wirekube_agent.wg import Backend
from wirekube_common.crd import MeshSpec
from wirekube_common.wireguard.types import DeviceConfig, DeviceState

log = logging.getLogger(__name__)


class DataPlane:
    def __init__(
        self, backend_factory: Callable[[str], Backend], private_key: bytes, sysctl_root: str
    ) -> None:
        self._factory = backend_factory
        self.private_key = private_key
        self.sysctl_root = sysctl_root
        self.backend: Backend | None = None
        self._shape: tuple[str, int] | None = None
        self.applied_endpoints: dict[bytes, Endpoint | None] = {}
        self._last_routes: frozenset[Route] | None = None
        self._last_rules: frozenset[Rule] | None = None
        self._resync_due = 0.0
        self.added_at: dict[bytes, float] = {}  # when each WireGuard peer was (re)created

    def ensure(self, mesh: MeshSpec, now: float) -> Backend:
        """Create or adopt the device; re-assert link settings on every full resync."""
        if self.backend is not None and self.backend.interface != mesh.interface_name:
            log.info(
                "interface renamed to %s; replacing %s", mesh.interface_name, self.backend.interface
            )
            self.teardown()
        if self.backend is None:
            self.backend = self._factory(mesh.interface_name)
            self._shape = None
            self.applied_endpoints.clear()
            self._last_routes = self._last_rules = None
        shape = (mesh.interface_name, mesh.mtu)
        if self._shape != shape or self._resync_due <= now:
            self.backend.ensure(mesh.mtu)
            apply_interface_sysctls(self.sysctl_root, mesh.interface_name)
            self._shape = shape
        return self.backend

    def set_private_key(self, private_key: bytes) -> None:
        """Key rotation: switch the device's private key in place, at once
        (every peer, session and route stays; WireGuard re-handshakes each
        peer under the new key on its next packet)."""
        self.private_key = private_key
        if self.backend is not None:
            self.backend.apply(DeviceConfig(private_key=private_key))

    def observe(self) -> DeviceState:
        assert self.backend is not None
        return self.backend.get()

    def apply(
        self,
        desired: DesiredState,
        device: DeviceState,
        now: float,
        restart: frozenset[bytes] = frozenset(),
    ) -> diff.Operations:
        assert self.backend is not None
        full = self._resync_due <= now
        with IPRoute() as ipr:
            if full or desired.routes != self._last_routes or desired.rules != self._last_rules:
                have_routes: list[Route] = routes.observed(ipr)
                have_rules: list[Rule] = rules.observed(ipr)
            else:
                have_routes, have_rules = list(desired.routes), list(desired.rules)
            ops = diff.plan(
                desired,
                device,
                have_routes,
                have_rules,
                self.applied_endpoints,
                self.private_key,
                FWMARK,
                restart,
            )
            if full:
                self._resync_due = now + RESYNC_INTERVAL_S
            for rule in ops.rules_add:
                rules.add(ipr, rule)
            for route in ops.routes_delete:
                routes.delete(ipr, route)
            if ops.wireguard is not None:
                self.backend.apply(ops.wireguard)
                for key in (device.peers.keys() ^ desired.peers.keys()) | set(restart):
                    if key in desired.peers:
                        self.added_at[key] = now
                self.added_at = {k: t for k, t in self.added_at.items() if k in desired.peers}
                self.applied_endpoints.update(ops.endpoints)
                for key in [k for k in self.applied_endpoints if k not in desired.peers]:
                    del self.applied_endpoints[key]
            for route in ops.routes_replace:
                routes.replace(ipr, route)
            for rule in ops.rules_delete:
                rules.delete(ipr, rule)
        self._last_routes, self._last_rules = desired.routes, desired.rules
        if not ops.empty:
            log.debug(
                "applied: %d wg peer changes, +%d/-%d routes, +%d/-%d rules",
                len(ops.wireguard.peers) if ops.wireguard else 0,
                len(ops.routes_replace),
                len(ops.routes_delete),
                len(ops.rules_add),
                len(ops.rules_delete),
            )
        return ops

    def teardown(self) -> None:
        """Remove our routes, our rules and the device (leaving the mesh)."""
        with IPRoute() as ipr:
            routes.flush(ipr)
            rules.delete_all_ours(ipr)
        if self.backend is not None:
            self.backend.destroy()
        self.backend = None
        self._shape = None
