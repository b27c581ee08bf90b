"""Our ip rules: identified by priority within our band, never anyone else's."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from wirekube_agent.model import (
    RULE_PRIORITY_CONTROL,
    RULE_PRIORITY_MARKED,
    RULE_PRIORITY_TABLE,
    Rule,
)

OUR_PRIORITIES = frozenset({RULE_PRIORITY_MARKED, RULE_PRIORITY_CONTROL, RULE_PRIORITY_TABLE})


def observed(ipr: IPRoute) -> list[Rule]:
    out: list[Rule] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_rules(family=family):
            priority = msg.get_attr("FRA_PRIORITY")
            if priority not in OUR_PRIORITIES:
                continue
            dst = msg.get_attr("FRA_DST")
            out.append(
                Rule(
                    priority=priority,
                    table=msg.get_attr("FRA_TABLE") or msg["table"],
                    family=family,
                    fwmark=msg.get_attr("FRA_FWMARK"),
                    dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}") if dst else None,
                )
            )
    return out


def _request(rule: Rule) -> dict[str, object]:
    """The rule as pyroute2 asks for it (the same form for add and delete)."""
    kwargs: dict[str, object] = {
        "family": rule.family,
        "priority": rule.priority,
        "table": rule.table,
    }
    if rule.fwmark is not None:
        kwargs["fwmark"] = rule.fwmark
        kwargs["fwmask"] = 0xFFFFFFFF
    if rule.dst is not None:
        kwargs["dst"] = str(rule.dst.network_address)
        kwargs["dst_len"] = rule.dst.prefixlen
    return kwargs


def add(ipr: IPRoute, rule: Rule) -> None:
    try:
        ipr.rule("add", **_request(rule))
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST
            raise


def delete(ipr: IPRoute, rule: Rule) -> None:
    try:
        ipr.rule("del", **_request(rule))
    except NetlinkError as exc:
        if exc.code not in (2, 3):  # ENOENT / ESRCH: already gone
            raise


def delete_all_ours(ipr: IPRoute) -> int:
    rules = observed(ipr)
    for rule in rules:
        delete(ipr, rule)
    return len(rules)
