"""The WireGuard network interface itself: create (kernel), MTU, up, delete."""

from __future__ import annotations

import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError


def index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def kernel_wireguard_available() -> bool:
    """True when the kernel can create wireguard links (module built in or loadable)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    name = f"wkprobe{os.getpid() % 100000}"
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="wireguard")
        except NetlinkError:
            return False
        ipr.link("del", ifname=name)
    return True


def create_kernel(ipr: IPRoute, name: str) -> None:
    if index(ipr, name) is None:
        ipr.link("add", ifname=name, kind="wireguard")


def kind(ipr: IPRoute, name: str) -> str | None:
    idx = index(ipr, name)
    if idx is None:
        return None
    (msg,) = ipr.get_links(idx)
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def set_up(ipr: IPRoute, name: str, mtu: int) -> None:
    idx = index(ipr, name)
    if idx is None:
        raise LookupError(f"interface {name} does not exist")
    (msg,) = ipr.get_links(idx)
    if msg.get_attr("IFLA_MTU") != mtu:
        ipr.link("set", index=idx, mtu=mtu)
    if not msg["flags"] & 1:  # IFF_UP
        ipr.link("set", index=idx, state="up")


def delete(ipr: IPRoute, name: str) -> bool:
    idx = index(ipr, name)
    if idx is None:
        return False
    ipr.link("del", index=idx)
    return True
