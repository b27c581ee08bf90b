"""Per-interface sysctls: keep IPsec xfrm policies away from WireGuard traffic.

Nodes that also run site-to-site IPsec have xfrm policies that can match the
tunnelled packets and divert them; ``disable_xfrm=1`` and ``disable_policy=1``
on our interface opt it out. In a container /proc/sys is read-only, so the
DaemonSet mounts the host's /proc/sys/net under a root we are told about.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

SETTINGS = {"disable_xfrm": "1", "disable_policy": "1"}


def apply_interface_sysctls(root: str, interface: str) -> dict[str, str]:
    """Write the settings where they differ; returns what was changed."""
    changed: dict[str, str] = {}
    base = os.path.join(root, "net", "ipv4", "conf", interface)
    for name, value in SETTINGS.items():
        path = os.path.join(base, name)
        try:
            with open(path) as f:
                current = f.read().strip()
            if current != value:
                with open(path, "w") as f:
                    f.write(value)
                changed[name] = value
        except OSError as exc:
            log.warning("cannot set %s (%s); IPsec policies may capture tunnel traffic", path, exc)
    return changed
