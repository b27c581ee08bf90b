"""The active gateway node's side of a WireKubeGateway: forwarding and SNAT.

``ensure(duties)`` runs on every reconcile pass with what this node must do as
the active peer of some gateways (``wirekube_common.gateway.duties_for``):

* IP forwarding on (``net.ipv4.ip_forward`` through the sysctl root), only
  while there is at least one duty;
* our nftables rules (``gateway.natrules``) for exactly those duties; with no duty the
  table is deleted.

Like the data plane, the rules are applied only when the desired set changed,
and re-read from the kernel on every full resync (someone may have flushed the
ruleset); each pass in between costs nothing — no ``nft`` process is started.

IP forwarding. Turning it on is safe here: on a Kubernetes node it is already
on (kube-proxy and every CNI need it; kubeadm's preflight refuses a node
without it), so in practice we change nothing; and forwarding only moves
packets that routing hands to another interface — the node gains no route
from it, so it forwards only what its own table (ours: the mesh /32s) and
its LAN already direct, and the gateway duty is exactly that. We remember the
value we found and put it back when the node stops being an active gateway, so
a node that only ever served briefly is left as it was. (After an agent
restart the value found is our own "1": it is then left on. ``cleanup`` does
not touch it either — it cannot know who set it.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from wirekube_agent.gateway import natrules
from wirekube_agent.netlink import nft
from wirekube_agent.timers import RESYNC_INTERVAL_S
from wirekube_common.gateway import GatewayDuty

log = logging.getLogger(__name__)

IP_FORWARD = os.path.join("net", "ipv4", "ip_forward")


class Forwarding:
    def __init__(self, sysctl_root: str) -> None:
        self.sysctl_root = sysctl_root
        self.applied: frozenset[natrules.NftRule] | None = None
        self._resync_due = 0.0
        self._restore_forwarding: str | None = None  # the value we found, if we changed it
        self._problems: tuple[str, ...] = ()
        self.gateways: tuple[str, ...] = ()  # the gateways this node serves now
        self._failed: frozenset[natrules.NftRule] | None = None

    def ensure(self, duties: Iterable[GatewayDuty], interface: str, now: float) -> None:
        duties = list(duties)
        desired, problems = natrules.rules_for(duties, interface)
        if tuple(problems) != self._problems:
            for problem in problems:
                log.warning("%s", problem)
            self._problems = tuple(problems)
        serving = tuple(sorted(d.gateway for d in duties))
        if serving != self.gateways:
            if serving:
                log.info("active gateway for %s: forwarding%s", ", ".join(serving), _snat(duties))
            else:
                log.info("no longer an active gateway (was: %s)", ", ".join(self.gateways))
            self.gateways = serving
        if not serving and self.applied is not None and not self.applied:
            # Nothing wanted and, as checked once, nothing there: most nodes
            # never serve a gateway and never start an nft process again.
            return
        full = now >= self._resync_due
        if desired == self.applied and not full:
            return
        if desired == self._failed and now < self._resync_due:
            return  # the same change failed: retry on the next resync, not every pass
        self._resync_due = now + RESYNC_INTERVAL_S
        if serving:
            self._forwarding_on()
        try:
            self._apply(desired)
        except nft.NftError as exc:
            log.warning(
                "cannot apply the gateway rules (retrying in %.0fs): %s", RESYNC_INTERVAL_S, exc
            )
            self._failed = desired
            return
        self._failed = None
        if not serving:
            self._forwarding_restore()

    def teardown(self) -> None:
        """The node left the mesh: no gateway duty survives it."""
        if self.applied:
            log.info("removing the gateway rules (leaving the mesh)")
        try:
            nft.delete_table()
        except nft.NftError as exc:
            log.warning("cannot remove the gateway rules: %s", exc)
        self._forwarding_restore()
        self.applied = None
        self.gateways = ()
        self._resync_due = 0.0

    # -- nftables ----------------------------------------------------------------
    def _apply(self, desired: frozenset[natrules.NftRule]) -> None:
        """Diff against the kernel's table and run one transaction if needed
        (the first call also removes a table left behind by an earlier run)."""
        script = natrules.script(desired, nft.observed())
        if script is not None:
            nft.apply(script)
            log.info(
                "gateway rules: %d in table %s %s", len(desired), natrules.FAMILY, natrules.TABLE
            )
        self.applied = desired

    # -- ip forwarding -------------------------------------------------------------
    def _path(self) -> str:
        return os.path.join(self.sysctl_root, IP_FORWARD)

    def _forwarding_on(self) -> None:
        try:
            with open(self._path()) as f:
                current = f.read().strip()
            if current != "1":
                with open(self._path(), "w") as f:
                    f.write("1")
                if self._restore_forwarding is None:
                    self._restore_forwarding = current
                log.info("IP forwarding turned on (it was %s)", current)
        except OSError as exc:
            log.warning("cannot turn on IP forwarding at %s: %s", self._path(), exc)

    def _forwarding_restore(self) -> None:
        if self._restore_forwarding is None:
            return
        try:
            with open(self._path(), "w") as f:
                f.write(self._restore_forwarding)
            log.info("IP forwarding restored to %s", self._restore_forwarding)
        except OSError as exc:
            log.warning("cannot restore IP forwarding at %s: %s", self._path(), exc)
        self._restore_forwarding = None


def _snat(duties: Iterable[GatewayDuty]) -> str:
    sources = sorted({d.snat_source or "masquerade" for d in duties if d.snat})
    return f", SNAT to {', '.join(sources)}" if sources else ", no SNAT"
