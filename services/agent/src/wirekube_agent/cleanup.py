"""`wirekube-agent cleanup`: remove everything a previous agent left behind.

Run by the DaemonSet's initContainer before the agent starts, after a crash or
a reboot: the interface (kernel or wireguard-go tun), every route in our
table, our ip rules and our nftables table (``table ip wirekube``, the
gateway's forward/SNAT rules). Idempotent; touches nothing it does not own.
IP forwarding is left as it is: cleanup cannot know who turned it on.
"""

from __future__ import annotations

import logging

from pyroute2 import IPRoute

from wirekube_agent.netlink import link, nft, routes, rules

log = logging.getLogger(__name__)


def cleanup(interface: str) -> dict[str, int]:
    with IPRoute() as ipr:
        removed = {
            "interface": int(link.delete(ipr, interface)),
            "routes": routes.flush(ipr),
            "rules": rules.delete_all_ours(ipr),
        }
    try:
        removed["nft_table"] = int(nft.delete_table())
    except nft.NftError as exc:  # no nft binary: there can be no table of ours either
        log.warning("cleanup: cannot remove the nftables table: %s", exc)
        removed["nft_table"] = 0
    log.info(
        "cleanup: interface %s removed=%d, %d routes, %d rules, nft table removed=%d",
        interface,
        removed["interface"],
        removed["routes"],
        removed["rules"],
        removed["nft_table"],
    )
    return removed
