"""Kernel WireGuard: the link and its configuration over netlink."""

from __future__ import annotations

from wirekube_agent.netlink import link, session, wireguard
from wirekube_common.wireguard.types import DeviceConfig, DeviceState


class KernelBackend:
    name = "kernel"

    def __init__(self, interface: str) -> None:
        self.interface = interface

    def ensure(self, mtu: int) -> None:
        with session() as ipr:
            existing = link.kind(ipr, self.interface)
            if existing not in (None, "wireguard"):
                # e.g. a tun left by wireguard-go after switching backends
                link.delete(ipr, self.interface)
            link.create_kernel(ipr, self.interface)
            link.set_up(ipr, self.interface, mtu)

    def get(self) -> DeviceState:
        return wireguard.get(self.interface)

    def apply(self, config: DeviceConfig) -> None:
        wireguard.apply(self.interface, config)

    def destroy(self) -> None:
        with session() as ipr:
            link.delete(ipr, self.interface)
