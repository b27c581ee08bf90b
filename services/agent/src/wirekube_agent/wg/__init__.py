"""WireGuard backends behind one interface: kernel (netlink) and userspace
(wireguard-go over its UAPI socket). The reconciler does not know which one
it drives."""

from __future__ import annotations

import logging

from wirekube_agent.netlink.link import kernel_wireguard_available
from wirekube_agent.wg.backend import Backend
from wirekube_agent.wg.kernel import KernelBackend
from wirekube_agent.wg.userspace import UserspaceBackend

__all__ = ["Backend", "KernelBackend", "UserspaceBackend", "select"]

log = logging.getLogger(__name__)


def select(setting: str, interface: str, wireguard_go: str) -> Backend:
    """``auto`` prefers the kernel module and falls back to wireguard-go."""
    if setting == "kernel":
        return KernelBackend(interface)
    if setting == "userspace":
        return UserspaceBackend(interface, wireguard_go)
    if kernel_wireguard_available():
        log.info("using kernel WireGuard")
        return KernelBackend(interface)
    log.info("kernel WireGuard unavailable; using wireguard-go")
    return UserspaceBackend(interface, wireguard_go)
