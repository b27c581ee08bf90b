"""The agent's only pyroute2 user: links, routes, rules, kernel WireGuard.

Every function here normalises what the kernel reports into the agent's model
values (``Route``, ``Rule``, ``DeviceState``) — the same form
``dataplane.desired`` produces — so the differ compares like with like and
never flaps. Callers that batch several calls on one netlink socket open it
with ``session()``, so pyroute2 stays an import of this package alone
(an import-linter contract, see docs/architecture.md).
"""

from __future__ import annotations

from pyroute2 import IPRoute


def session() -> IPRoute:
    """One rtnetlink socket for a batch of route/rule calls (a context manager)."""
    return IPRoute()
