"""NAT classification from STUN observations. Pure: no I/O, no clock.

Vocabulary (RFC 4787 / RFC 5780):

* **mapping** -- how the NAT picks the public endpoint for one local
  endpoint: ``endpoint-independent`` (the same for every destination: a
  "cone"), ``address-dependent`` (new per destination IP),
  ``address-and-port-dependent`` (new per destination IP and port), or
  ``none`` when the mapped address is our own interface address and port.
* **filtering** -- which inbound packets the NAT lets through to a mapping:
  ``endpoint-independent`` (anyone), ``address-dependent`` (IPs we sent to),
  ``address-and-port-dependent`` (exact endpoints we sent to), ``blocked``
  (no STUN server answered at all: UDP does not get out).

Rules implemented here:

* Mapping needs at least two *answered* destinations. All mapped endpoints
  equal → endpoint-independent. Different → "symmetric"; the finer kind is
  named only when the observations prove it: two destinations on the same IP
  with different ports and different mappings → address-and-port-dependent;
  same IP and different ports giving the same mapping while different IPs do
  not → address-dependent. Otherwise the mapping kind stays "" while the NAT
  type is still ``symmetric`` (we never guess).
* A mapped endpoint equal to a local interface address *and* the local port
  means no NAT; one answer is enough for that.
* Filtering from the RFC 5780 tests against a server that has an alternate
  address: the change-IP-and-port request answered → endpoint-independent;
  only the change-port request answered → address-dependent; neither →
  address-and-port-dependent. A "changed" answer that came from the address
  we sent to proves nothing (the server ignored CHANGE-REQUEST).
* ``merge`` folds a new report into the last published one and never
  replaces a known value with an undetermined one (a flaky STUN round must
  not erase what we know). NAT type and mapping kind are merged as a unit so
  the result is never "symmetric" with an endpoint-independent mapping.

``NatReport.status()`` gives the CRD status fields: ``natType``
(cone/symmetric/""), ``natMapping`` and ``natFiltering``.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from wirekube_common.stun.endpoint import Endpoint, IPAddress


class NatType(StrEnum):
    CONE = "cone"
    SYMMETRIC = "symmetric"
    UNKNOWN = ""


class Mapping(StrEnum):
    NONE = "none"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = ""


class Filtering(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    BLOCKED = "blocked"
    UNKNOWN = ""


@dataclass(frozen=True)
class MappingObservation:
    """One Binding answer (or its absence) from one local endpoint."""

    destination: Endpoint
    mapped: Endpoint | None

    def key(self) -> tuple[object, ...]:
        return (self.destination.key(), self.mapped.key() if self.mapped else None)


@dataclass(frozen=True)
class FilteringObservation:
    """RFC 5780 section 4.4 test outcomes; None = test not run or inconclusive."""

    change_ip_and_port: bool | None
    change_port: bool | None = None


@dataclass(frozen=True)
class MappingVerdict:
    nat_type: NatType
    mapping: Mapping


def classify_mapping(
    observations: Iterable[MappingObservation],
    local_ips: Container[IPAddress],
    local_port: int,
) -> MappingVerdict:
    """NAT type and mapping kind from Binding answers sent from one local endpoint."""
    answered: dict[Endpoint, Endpoint] = {}
    for obs in observations:
        if obs.mapped is None or obs.mapped.family != obs.destination.family:
            continue
        if obs.mapped.ip in local_ips and obs.mapped.port == local_port:
            return MappingVerdict(NatType.CONE, Mapping.NONE)
        # The first answer per destination counts; a later different answer
        # from the same destination would be a mapping that changed mid-test.
        answered.setdefault(obs.destination, obs.mapped)
    if len(answered) < 2:
        return MappingVerdict(NatType.UNKNOWN, Mapping.UNKNOWN)
    if len(set(answered.values())) == 1:
        return MappingVerdict(NatType.CONE, Mapping.ENDPOINT_INDEPENDENT)
    items = list(answered.items())
    same_ip_same_map = same_ip_diff_map = diff_ip_diff_map = False
    for i, (dest_a, map_a) in enumerate(items):
        for dest_b, map_b in items[i + 1 :]:
            if dest_a.ip == dest_b.ip:
                if map_a == map_b:
                    same_ip_same_map = True
                else:
                    same_ip_diff_map = True
            elif map_a != map_b:
                diff_ip_diff_map = True
    if same_ip_diff_map:
        return MappingVerdict(NatType.SYMMETRIC, Mapping.ADDRESS_AND_PORT_DEPENDENT)
    if same_ip_same_map and diff_ip_diff_map:
        return MappingVerdict(NatType.SYMMETRIC, Mapping.ADDRESS_DEPENDENT)
    return MappingVerdict(NatType.SYMMETRIC, Mapping.UNKNOWN)


def classify_filtering(obs: FilteringObservation | None, *, any_answer: bool) -> Filtering:
    """Filtering from the RFC 5780 tests; ``any_answer`` is False when no server answered."""
    if not any_answer:
        return Filtering.BLOCKED
    if obs is None or obs.change_ip_and_port is None:
        return Filtering.UNKNOWN
    if obs.change_ip_and_port:
        return Filtering.ENDPOINT_INDEPENDENT
    if obs.change_port is None:
        return Filtering.UNKNOWN
    if obs.change_port:
        return Filtering.ADDRESS_DEPENDENT
    return Filtering.ADDRESS_AND_PORT_DEPENDENT


@dataclass(frozen=True)
class NatReport:
    """What one discovery round concluded; ``mapped`` is the public endpoint seen."""

    nat_type: NatType = NatType.UNKNOWN
    mapping: Mapping = Mapping.UNKNOWN
    filtering: Filtering = Filtering.UNKNOWN
    mapped: Endpoint | None = None

    def key(self) -> tuple[str, str, str, tuple[int, int, int] | None]:
        return (
            self.nat_type,
            self.mapping,
            self.filtering,
            self.mapped.key() if self.mapped else None,
        )

    def status(self) -> dict[str, str]:
        """The WireKubePeer status fields."""
        return {
            "natType": self.nat_type.value,
            "natMapping": self.mapping.value,
            "natFiltering": self.filtering.value,
        }


def merge(previous: NatReport, new: NatReport) -> NatReport:
    """Fold ``new`` into ``previous`` without ever forgetting a known value."""
    merged = previous
    if new.nat_type is not NatType.UNKNOWN:
        mapping = new.mapping
        if mapping is Mapping.UNKNOWN and new.nat_type is previous.nat_type:
            mapping = previous.mapping
        merged = replace(merged, nat_type=new.nat_type, mapping=mapping)
    if new.filtering is not Filtering.UNKNOWN:
        merged = replace(merged, filtering=new.filtering)
    if new.mapped is not None:
        merged = replace(merged, mapped=new.mapped)
    return merged


def consensus_mapped(observations: Iterable[MappingObservation]) -> Endpoint | None:
    """The mapped endpoint most destinations agree on (first seen wins a tie)."""
    counts: dict[Endpoint, int] = {}
    for obs in observations:
        if obs.mapped is not None:
            counts[obs.mapped] = counts.get(obs.mapped, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    return next(ep for ep, n in counts.items() if n == best)


def endpoint_to_publish(report: NatReport, listen_port: int) -> Endpoint | None:
    """The endpoint a node should publish for its WireGuard port.

    Cone / no NAT / undetermined: the mapped endpoint itself (it is what peers
    can reach). Symmetric: the public IP with the configured listen port, as
    the CRD reference specifies -- the mapped port is per-destination and
    meaningless to other peers.
    """
    if report.mapped is None:
        return None
    if report.nat_type is NatType.SYMMETRIC:
        return Endpoint(report.mapped.ip, listen_port)
    return report.mapped
