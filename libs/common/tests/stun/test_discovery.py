"""The discovery sequence against a simulated NAT and RFC 5780 server (no sockets).

The simulation is a model of RFC 4787 behaviours, written here independently
of ``nat.py``, so these tests check the *sequence* (order of tests, choice of
server, taint avoidance) end to end.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

import pytest

from wirekube_common.stun.client import BindingResult
from wirekube_common.stun.codec import ChangeRequest
from wirekube_common.stun.discovery import DiscoveryOptions, discover
from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.nat import Filtering, Mapping, NatType
from wirekube_common.stun.timers import RetransmitPolicy

E = Endpoint.parse
LOCAL = E("10.0.0.2:51820")
A_P, A_Q, B_P, B_Q = (
    E("198.51.100.1:3478"),
    E("198.51.100.1:3479"),
    E("198.51.100.2:3478"),
    E("198.51.100.2:3479"),
)
OTHER = E("203.0.113.1:3478")


@dataclass
class SimNat:
    mapping: str  # "none" | "eim" | "adm" | "apdm"
    filtering: str  # "eif" | "adf" | "apdf"
    udp_blocked: bool = False
    rfc5780: bool = True
    public_ip: str = "192.0.2.50"
    ports: dict[object, int] = field(default_factory=dict)
    contacted: set[Endpoint] = field(default_factory=set)
    log: list[tuple[Endpoint, bool, bool]] = field(default_factory=list)

    def _mapped(self, dst: Endpoint) -> Endpoint:
        if self.mapping == "none":
            return LOCAL
        key: object = {"eim": (), "adm": dst.ip, "apdm": dst}[self.mapping]
        port = self.ports.setdefault(key, 40000 + len(self.ports))
        return Endpoint(ipaddress.ip_address(self.public_ip), port)

    def _admits(self, src: Endpoint) -> bool:
        if self.filtering == "eif":
            return True
        if self.filtering == "adf":
            return any(c.ip == src.ip for c in self.contacted)
        return src in self.contacted

    async def binding(
        self,
        server: Endpoint,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        policy: RetransmitPolicy | None = None,
    ) -> BindingResult:
        self.log.append((server, change_ip, change_port))
        change = ChangeRequest(change_ip, change_port) if change_ip or change_port else None
        if self.udp_blocked:
            return BindingResult(server, change, timed_out=True, transmissions=3)
        mapped = self._mapped(server)
        self.contacted.add(server)
        five780 = self.rfc5780 and server in (A_P, A_Q, B_P, B_Q)
        if change and not five780:
            return BindingResult(server, change, timed_out=True)
        ip = server.ip
        port = server.port
        if change_ip:
            ip = (B_P if server.ip == A_P.ip else A_P).ip
        if change_port:
            port = 3479 if server.port == 3478 else 3478
        source = Endpoint(ip, port)
        if not self._admits(source):
            return BindingResult(server, change, timed_out=True, transmissions=3)
        other = None
        if five780:
            other = Endpoint(
                B_P.ip if server.ip == A_P.ip else A_P.ip, 3479 if server.port == 3478 else 3478
            )
        return BindingResult(
            server,
            change,
            mapped=mapped,
            source=source,
            other_address=other,
            rtt=0.001,
            transmissions=1,
        )


CASES = [
    # mapping, filtering, expected type, mapping, filtering
    ("none", "eif", NatType.CONE, Mapping.NONE, Filtering.ENDPOINT_INDEPENDENT),
    ("none", "apdf", NatType.CONE, Mapping.NONE, Filtering.ADDRESS_AND_PORT_DEPENDENT),
    ("eim", "eif", NatType.CONE, Mapping.ENDPOINT_INDEPENDENT, Filtering.ENDPOINT_INDEPENDENT),
    ("eim", "adf", NatType.CONE, Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT),
    (
        "eim",
        "apdf",
        NatType.CONE,
        Mapping.ENDPOINT_INDEPENDENT,
        Filtering.ADDRESS_AND_PORT_DEPENDENT,
    ),
    ("adm", "adf", NatType.SYMMETRIC, Mapping.ADDRESS_DEPENDENT, Filtering.ADDRESS_DEPENDENT),
    (
        "apdm",
        "apdf",
        NatType.SYMMETRIC,
        Mapping.ADDRESS_AND_PORT_DEPENDENT,
        Filtering.ADDRESS_AND_PORT_DEPENDENT,
    ),
]


@pytest.mark.parametrize(
    ("mapping", "filtering", "nat_type", "want_mapping", "want_filtering"), CASES
)
def test_discovery_sequence(
    mapping: str,
    filtering: str,
    nat_type: NatType,
    want_mapping: Mapping,
    want_filtering: Filtering,
) -> None:
    nat = SimNat(mapping, filtering)
    result = asyncio.run(
        discover(nat.binding, [A_P, OTHER], local_ips={LOCAL.ip}, local_port=LOCAL.port)
    )
    report = result.report
    assert (report.nat_type, report.mapping, report.filtering) == (
        nat_type,
        want_mapping,
        want_filtering,
    )
    assert result.rfc5780_server == A_P
    # Filtering tests ran before anything touched the alternate IP.
    first_alt = next(i for i, (s, _, _) in enumerate(nat.log) if s.ip == B_P.ip)
    change_tests = [i for i, (_, ci, cp) in enumerate(nat.log) if ci or cp]
    assert change_tests and max(change_tests) < first_alt
    # RFC 5780 order: the alternate IP+port is probed only when the mapping
    # already changed with the IP (avoids the conntrack clash, see discovery).
    assert (B_Q in [s for s, _, _ in nat.log]) == (
        want_mapping not in (Mapping.NONE, Mapping.ENDPOINT_INDEPENDENT)
    )


def test_alternate_already_contacted_is_not_used_for_filtering() -> None:
    nat = SimNat("eim", "adf")
    # The server list itself contains A's alternate IP: a filtering test through A
    # would be tainted, so B (whose alternate is A) is not usable either.
    result = asyncio.run(
        discover(nat.binding, [A_P, B_P], local_ips={LOCAL.ip}, local_port=LOCAL.port)
    )
    assert result.rfc5780_server is None
    assert result.report.filtering is Filtering.UNKNOWN
    assert result.report.nat_type is NatType.CONE


def test_plain_servers_only() -> None:
    nat = SimNat("apdm", "apdf", rfc5780=False)
    result = asyncio.run(
        discover(nat.binding, [A_P, OTHER], local_ips={LOCAL.ip}, local_port=LOCAL.port)
    )
    assert result.report.nat_type is NatType.SYMMETRIC
    assert result.report.mapping is Mapping.UNKNOWN
    assert result.report.filtering is Filtering.UNKNOWN


def test_blocked() -> None:
    nat = SimNat("eim", "eif", udp_blocked=True)
    result = asyncio.run(
        discover(nat.binding, [A_P, OTHER], local_ips={LOCAL.ip}, local_port=LOCAL.port)
    )
    assert result.report.status() == {"natType": "", "natMapping": "", "natFiltering": "blocked"}
    assert result.report.mapped is None


def test_options_disable_extra_tests() -> None:
    nat = SimNat("eim", "eif")
    asyncio.run(
        discover(
            nat.binding,
            [A_P, OTHER],
            local_ips={LOCAL.ip},
            local_port=LOCAL.port,
            options=DiscoveryOptions(filtering=False, mapping_detail=False),
        )
    )
    assert [s for s, _, _ in nat.log] == [A_P, OTHER]
