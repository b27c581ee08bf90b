"""Local addresses, for endpoint discovery (global IPv6) and NAT detection."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from wirekube_agent.model import IPAddress


def local_addresses() -> list[IPAddress]:
    with IPRoute() as ipr:
        return [ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()]


def global_ipv6() -> list[ipaddress.IPv6Address]:
    """Globally routable IPv6 addresses (not link-local, ULA, or loopback)."""
    return [a for a in local_addresses() if isinstance(a, ipaddress.IPv6Address) and a.is_global]
