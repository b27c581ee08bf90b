"""Periodic NAT discovery from the WireGuard listen port.

Runs the STUN discovery sequence (``wirekube_common.stun.discovery``) over the
underlay's raw socket, so the mapping found is the public mapping of the
WireGuard port itself, and folds each round into the last report with
``nat.merge`` (a round where STUN servers were unreachable never erases what
was known). The reconciler reads ``report``: the endpoint to publish (the
``stun`` discovery source) and natType / natMapping / natFiltering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from wirekube_agent.endpoint.underlay import Underlay
from wirekube_agent.model import Endpoint
from wirekube_agent.netlink.addresses import local_addresses
from wirekube_common.stun.aio import resolve
from wirekube_common.stun.discovery import DiscoveryOptions, discover
from wirekube_common.stun.endpoint import Endpoint as StunEndpoint
from wirekube_common.stun.nat import NatReport, endpoint_to_publish, merge

log = logging.getLogger(__name__)

# One discovery round (parallel Binding tests, then the RFC 5780 filtering
# and mapping tests) takes 1-3 s; past this something is wedged.
ROUND_TIMEOUT_S = 20.0
QUICK = DiscoveryOptions(filtering=False, mapping_detail=False)


class Netcheck:
    def __init__(self) -> None:
        self.report = NatReport()
        self.rounds = 0

    async def run(
        self, underlay: Underlay, servers: Sequence[str], quick: bool = False
    ) -> NatReport:
        """One discovery round. ``quick``: the parallel Binding tests only (one
        round trip): the mapped endpoint and cone/symmetric, without the RFC 5780
        filtering tests, which wait out retransmissions when a NAT filters."""
        endpoints: list[StunEndpoint] = []
        for server in servers:
            try:
                endpoints += [e for e in await resolve(server) if e.family == 4]
            except (OSError, ValueError) as exc:
                log.warning("STUN server %s unusable: %s", server, exc)
        if not endpoints:
            return self.report
        # pyroute2's synchronous API runs an event loop of its own: off this one.
        local_ips = set(await asyncio.to_thread(local_addresses))
        result = await asyncio.wait_for(
            discover(
                underlay.binding,
                endpoints,
                local_ips=local_ips,
                local_port=underlay.port,
                options=QUICK if quick else DiscoveryOptions(),
            ),
            ROUND_TIMEOUT_S,
        )
        merged = merge(self.report, result.report)
        if merged != self.report:
            log.info(
                "NAT: type=%s mapping=%s filtering=%s mapped=%s",
                merged.nat_type.value or "?",
                merged.mapping.value or "?",
                merged.filtering.value or "?",
                merged.mapped,
            )
        self.report = merged
        self.rounds += 1
        return merged

    def endpoint(self, listen_port: int) -> Endpoint | None:
        ep = endpoint_to_publish(self.report, listen_port)
        return (str(ep.ip), ep.port) if ep is not None else None
