"""Routes in the WireKube table (22347). We never touch any other table."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from wirekube_agent.model import ROUTE_TABLE, Route


def observed(ipr: IPRoute, table: int = ROUTE_TABLE) -> list[Route]:
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    out: list[Route] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, table=table):
            if msg.get_attr("RTA_TABLE", msg["table"]) != table:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
            src = msg.get_attr("RTA_PREFSRC")
            out.append(
                Route(
                    dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
                    oif=names.get(msg.get_attr("RTA_OIF"), "?"),
                    src=ipaddress.ip_address(src) if src else None,
                    table=table,
                )
            )
    return out


def replace(ipr: IPRoute, route: Route) -> None:
    oif = ipr.link_lookup(ifname=route.oif)
    if not oif:
        raise LookupError(f"interface {route.oif} does not exist")
    kwargs = {"dst": str(route.dst), "oif": oif[0], "table": route.table}
    if route.src is not None:
        kwargs["prefsrc"] = str(route.src)
    ipr.route("replace", **kwargs)


def delete(ipr: IPRoute, route: Route) -> None:
    try:
        ipr.route("del", dst=str(route.dst), table=route.table)
    except NetlinkError as exc:
        if exc.code != 3:  # ESRCH: already gone
            raise


def flush(ipr: IPRoute, table: int = ROUTE_TABLE) -> int:
    routes = observed(ipr, table)
    for route in routes:
        delete(ipr, route)
    return len(routes)
