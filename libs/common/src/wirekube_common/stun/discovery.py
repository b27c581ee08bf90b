"""The NAT discovery sequence: which Binding tests to run, in which order.

Runs over any ``BindingFn`` -- an awaitable "send one Binding request to
this server, with these CHANGE-REQUEST flags, under this retransmission
policy" -- so it works over an ordinary socket (``aio.UdpStunSocket``) or the
raw socket sharing the WireGuard port (``rawudp``). The decisions themselves
are in ``nat`` (pure); the choices here are:

1. **Test I** to every configured server in parallel (same local endpoint).
2. **Filtering** (RFC 5780 4.4), *before* anything else is sent to the
   alternate address: once we have sent to the alternate IP, an
   address-dependent filter would let the "changed" reply in and the NAT
   would look endpoint-independent. We therefore pick an RFC 5780 server
   (one that returned OTHER-ADDRESS on a different IP and port) whose
   alternate IP none of our destinations used, ask it to answer from its
   alternate IP and port, then (if that fails) from its alternate port only.
   "No answer" is the result there, so these use the short filter policy.
3. **Mapping detail** (RFC 5780 4.3), sequential as the RFC orders it: a
   Binding request to the alternate IP with the primary port; the same
   mapping as test I means endpoint-independent and we stop. Only if it
   differs, a request to the alternate IP *and* port tells address-dependent
   from address-and-port-dependent. Stopping early matters on routers that
   let unsolicited packets reach their own stack: filtering test II's reply
   from (alternate IP, alternate port) then leaves a conntrack entry for
   exactly that remote endpoint and the public port, so a later mapping to
   that endpoint cannot reuse the port (a "conntrack clash") and an
   endpoint-independent NAT would look symmetric. (The same clash can turn
   an address-dependent verdict into address-and-port-dependent; NAT type
   is unaffected.)

The result carries every raw ``BindingResult`` so callers can log or export
what was seen, plus the ``NatReport``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Container, Sequence
from dataclasses import dataclass
from typing import Protocol

from wirekube_common.stun.client import BindingResult
from wirekube_common.stun.endpoint import Endpoint, IPAddress
from wirekube_common.stun.nat import (
    FilteringObservation,
    MappingObservation,
    NatReport,
    classify_filtering,
    classify_mapping,
    consensus_mapped,
)
from wirekube_common.stun.timers import DISCOVERY_POLICY, FILTER_TEST_POLICY, RetransmitPolicy


class BindingFn(Protocol):
    def __call__(
        self,
        server: Endpoint,
        *,
        change_ip: bool = ...,
        change_port: bool = ...,
        policy: RetransmitPolicy | None = ...,
    ) -> Awaitable[BindingResult]: ...


@dataclass(frozen=True)
class DiscoveryOptions:
    filtering: bool = True
    mapping_detail: bool = True
    policy: RetransmitPolicy = DISCOVERY_POLICY
    filter_policy: RetransmitPolicy = FILTER_TEST_POLICY


@dataclass(frozen=True)
class Discovery:
    report: NatReport
    results: tuple[BindingResult, ...]
    rfc5780_server: Endpoint | None = None


def pick_rfc5780_server(results: Sequence[BindingResult]) -> BindingResult | None:
    """An answered test I whose OTHER-ADDRESS is usable and untouched by our probes.

    Usable: a different IP *and* port from the server, same family. Untouched:
    no destination we already sent to shares its IP (see the module docstring).
    """
    contacted = {r.server.ip for r in results}
    for r in results:
        other = r.other_address
        if (
            r.ok
            and other is not None
            and other.family == r.server.family
            and other.ip != r.server.ip
            and other.port != r.server.port
            and other.ip not in contacted
        ):
            return r
    return None


def changed_answer(result: BindingResult, *, want_ip_change: bool) -> bool | None:
    """Did a CHANGE-REQUEST test get a genuine answer?

    True: answered from a changed source; False: timed out; None:
    inconclusive (error response, or answered from the unchanged address).
    """
    if result.timed_out:
        return False
    if not result.ok or result.source is None:
        return None
    src, srv = result.source, result.server
    if src.port == srv.port or (want_ip_change and src.ip == srv.ip):
        return None
    return True


async def discover(
    binding: BindingFn,
    servers: Sequence[Endpoint],
    *,
    local_ips: Container[IPAddress],
    local_port: int,
    options: DiscoveryOptions = DiscoveryOptions(),
) -> Discovery:
    """Run the sequence against ``servers`` from one local endpoint."""
    first = list(await asyncio.gather(*(binding(s, policy=options.policy) for s in servers)))
    results: list[BindingResult] = list(first)
    chosen = pick_rfc5780_server(first)
    filtering_obs: FilteringObservation | None = None
    if chosen is not None and options.filtering:
        test2 = await binding(
            chosen.server, change_ip=True, change_port=True, policy=options.filter_policy
        )
        results.append(test2)
        answered2 = changed_answer(test2, want_ip_change=True)
        answered3: bool | None = None
        if answered2 is False:
            test3 = await binding(chosen.server, change_port=True, policy=options.filter_policy)
            results.append(test3)
            answered3 = changed_answer(test3, want_ip_change=False)
        filtering_obs = FilteringObservation(answered2, answered3)
    if chosen is not None and chosen.other_address is not None and options.mapping_detail:
        other = chosen.other_address
        alt_ip = await binding(Endpoint(other.ip, chosen.server.port), policy=options.policy)
        results.append(alt_ip)
        if alt_ip.ok and alt_ip.mapped != chosen.mapped:
            # Only a mapping that changed with the IP needs the port test.
            results.append(await binding(other, policy=options.policy))
    mapping_obs = [MappingObservation(r.server, r.mapped) for r in results if r.change is None]
    verdict = classify_mapping(mapping_obs, local_ips, local_port)
    # Error responses are answers too: only total silence means UDP is blocked.
    any_answer = not first or any(not r.timed_out for r in first)
    filtering = classify_filtering(filtering_obs, any_answer=any_answer)
    report = NatReport(
        nat_type=verdict.nat_type,
        mapping=verdict.mapping,
        filtering=filtering,
        mapped=consensus_mapped(MappingObservation(r.server, r.mapped) for r in first),
    )
    return Discovery(report, tuple(results), chosen.server if chosen else None)
