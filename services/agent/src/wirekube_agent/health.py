"""The agent's /livez and /readyz answers (served by wirekube_common.metrics).

Liveness is about the control loop only: it fails when the loop has not
finished a pass for ``LIVENESS_PASS_STALL_S`` (a wedged pass, a dead event
loop), so the kubelet restarts the container. Waiting for the API server is
not a wedge: until the informers have synced there is nothing to reconcile and
a restart would not help, so the clock starts at the sync. A pass that raised
still counts as finished (the loop is turning; readiness reports the error).

Readiness: the informers have synced (peers are known), the last pass
succeeded, this node participates, and the WireGuard interface is up.

``liveness`` and ``readiness`` are pure; ``interface_up`` asks the kernel
with one ioctl (no netlink socket, no /sys: it answers for the process's own
network namespace wherever /sys was mounted).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wirekube_agent.timers import LIVENESS_PASS_STALL_S
from wirekube_common.metrics import Check

if TYPE_CHECKING:
    from wirekube_agent.reconciler import Reconciler

_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFREQ = "16sH22x"


@dataclass(frozen=True)
class LoopFacts:
    synced_at: float | None  # when every informer had synced (monotonic)
    last_pass_at: float | None  # when the last pass finished (monotonic)
    last_pass_ok: bool
    participating: bool
    interface: str | None
    interface_up: bool


def liveness(
    facts: LoopFacts, now: float, bound: float = LIVENESS_PASS_STALL_S
) -> tuple[bool, str]:
    if facts.synced_at is None:
        return True, "waiting for the API server (informers not synced)"
    since = facts.last_pass_at if facts.last_pass_at is not None else facts.synced_at
    age = now - since
    if age > bound:
        what = "the last pass" if facts.last_pass_at is not None else "sync, with no pass yet"
        return False, f"control loop stalled: {age:.0f}s since {what} (bound {bound:.0f}s)"
    return True, f"ok: last pass {age:.1f}s ago"


def readiness(facts: LoopFacts) -> tuple[bool, str]:
    if facts.synced_at is None:
        return False, "peers not synced (informers waiting for the API server)"
    if facts.last_pass_at is None:
        return False, "no reconcile pass finished yet"
    if not facts.participating:
        return False, "this node does not participate in the mesh"
    if not facts.last_pass_ok:
        return False, "the last reconcile pass failed (see the log)"
    if facts.interface is None or not facts.interface_up:
        return False, f"WireGuard interface {facts.interface or '(none yet)'} is not up"
    return True, f"ok: {facts.interface} up, peers synced"


def interface_up(name: str) -> bool:
    """Is ``name`` administratively up in this network namespace?"""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            res = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack(_IFREQ, name.encode()[:15], 0))
    except OSError:
        return False  # no such device
    return bool(struct.unpack(_IFREQ, res)[1] & _IFF_UP)


def checks(reconciler: Reconciler) -> tuple[Check, Check]:
    """The (livez, readyz) callables for the metrics server's thread: they only
    read what the loop recorded (``Observed``) and one ioctl."""

    def facts() -> LoopFacts:
        o = reconciler.observed
        backend = reconciler.dataplane.backend
        iface = backend.interface if backend is not None else None
        return LoopFacts(
            synced_at=o.synced_at,
            last_pass_at=o.last_pass_at,
            last_pass_ok=o.last_pass_ok,
            participating=reconciler.participating,
            interface=iface,
            interface_up=iface is not None and interface_up(iface),
        )

    # The bound is looked up per call (a test harness may lower it).
    return (
        (lambda: liveness(facts(), time.monotonic(), LIVENESS_PASS_STALL_S)),
        (lambda: readiness(facts())),
    )
