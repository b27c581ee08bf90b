"""The interface every WireGuard backend implements."""

from __future__ import annotations

from typing import Protocol

from wirekube_common.wireguard.types import DeviceConfig, DeviceState


class Backend(Protocol):
    name: str
    interface: str

    def ensure(self, mtu: int) -> None:
        """Create or adopt the device, set its MTU and bring it up."""

    def get(self) -> DeviceState: ...

    def apply(self, config: DeviceConfig) -> None: ...

    def destroy(self) -> None:
        """Remove the device (and for wireguard-go, its daemon)."""
