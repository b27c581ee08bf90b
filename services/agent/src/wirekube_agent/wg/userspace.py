"""Userspace WireGuard: wireguard-go, configured over its UAPI socket.

A wireguard-go already serving the interface (its UAPI socket in
``/var/run/wireguard/<iface>.sock`` answers) is adopted, never replaced: one
the node runs outside the agent's pod (the lab's kubelet nodes do, standing
in for kernel WireGuard: docs/lab.md), or one a previous agent process
started. Otherwise the agent starts one daemonised (it forks and detaches):
it outlives an agent *process* restart, but inside a container it dies with
the pod, and the next agent starts a new one.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import tempfile
import time

from wirekube_agent.netlink import link, session
from wirekube_agent.timers import USERSPACE_START_TIMEOUT_S
from wirekube_common.wireguard.types import DeviceConfig, DeviceState
from wirekube_common.wireguard.uapi import UapiClient, UapiError

log = logging.getLogger(__name__)


class UserspaceBackend:
    name = "userspace"

    def __init__(self, interface: str, wireguard_go: str = "wireguard-go") -> None:
        self.interface = interface
        self.binary = wireguard_go
        self.uapi = UapiClient(interface)

    def _alive(self) -> bool:
        """Is a daemon serving the interface? Only a missing socket or one
        nobody listens on says no: a daemon that is merely slow to answer (a
        busy node) keeps running, since replacing it drops every peer and
        session it holds."""
        if not self.uapi.exists():
            return False
        try:
            self.uapi.get()
        except UapiError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            log.warning("wireguard-go did not answer (%s); leaving it running", exc)
        return True

    def ensure(self, mtu: int) -> None:
        with session() as ipr:
            if not self._alive():
                existing = link.kind(ipr, self.interface)
                if existing is not None:
                    # A link without a live daemon behind it (kernel device from
                    # a previous backend, or a tun whose daemon died) is useless.
                    log.warning("removing stale %s link %s", existing, self.interface)
                    link.delete(ipr, self.interface)
                self._start()
            link.set_up(ipr, self.interface, mtu)

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "WG_PROCESS_FOREGROUND"}
        # Output goes to a file, never a pipe: the daemonised child inherits the
        # descriptor, and a Go program writing to a closed pipe on fd 2 dies of
        # SIGPIPE the moment it logs anything.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [self.binary, self.interface],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=USERSPACE_START_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                out.seek(0)
                raise RuntimeError(f"wireguard-go exited {result.returncode}: {out.read()[-2000:]}")
        deadline = time.monotonic() + USERSPACE_START_TIMEOUT_S
        while not self._alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go did not open {self.uapi.path}")
            time.sleep(0.02)
        log.info("started wireguard-go", extra={"interface": self.interface})

    def get(self) -> DeviceState:
        return self.uapi.get()

    def apply(self, config: DeviceConfig) -> None:
        self.uapi.set(config)

    def destroy(self) -> None:
        # Deleting the tun makes wireguard-go exit and remove its socket.
        with session() as ipr:
            link.delete(ipr, self.interface)
        deadline = time.monotonic() + USERSPACE_START_TIMEOUT_S
        while self.uapi.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
