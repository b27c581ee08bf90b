"""`wirekube-agent cleanup`: remove everything a previous agent left behind.

Run by the DaemonSet's initContainer before the agent starts, after a crash or
a reboot: the interface (kernel or wireguard-go tun), every route in our
table and our ip rules. Idempotent; touches nothing it does not own.
"""

from __future__ import annotations

import logging

from pyroute2 import IPRoute

from wirekube_agent.netlink import link, routes, rules

log = logging.getLogger(__name__)


def cleanup(interface: str) -> dict[str, int]:
    with IPRoute() as ipr:
        removed = {
            "interface": int(link.delete(ipr, interface)),
            "routes": routes.flush(ipr),
            "rules": rules.delete_all_ours(ipr),
        }
    log.info(
        "cleanup: interface %s removed=%d, %d routes, %d rules",
        interface,
        removed["interface"],
        removed["routes"],
        removed["rules"],
    )
    return removed
