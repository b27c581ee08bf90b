"""Table-driven NAT classification and the merge rule."""

from __future__ import annotations

import ipaddress

import pytest

from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.nat import (
    Filtering,
    FilteringObservation,
    Mapping,
    MappingObservation,
    NatReport,
    NatType,
    classify_filtering,
    classify_mapping,
    consensus_mapped,
    endpoint_to_publish,
    merge,
)

E = Endpoint.parse
LOCAL_IPS = {ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("2001:db8:1::2")}
LOCAL_PORT = 51820
S1, S1_ALT_PORT, S1_ALT_IP, S1_ALT = (
    E("198.51.100.1:3478"),
    E("198.51.100.1:3479"),
    E("198.51.100.2:3478"),
    E("198.51.100.2:3479"),
)
S2 = E("203.0.113.1:3478")


def obs(*pairs: tuple[Endpoint, str | None]) -> list[MappingObservation]:
    return [MappingObservation(d, E(m) if m else None) for d, m in pairs]


MAPPING_CASES = [
    ("no answers", obs((S1, None), (S2, None)), NatType.UNKNOWN, Mapping.UNKNOWN),
    ("one answer", obs((S1, "1.1.1.1:5"), (S2, None)), NatType.UNKNOWN, Mapping.UNKNOWN),
    (
        "same server twice is one destination",
        obs((S1, "1.1.1.1:5"), (S1, "1.1.1.1:5")),
        NatType.UNKNOWN,
        Mapping.UNKNOWN,
    ),
    ("cone", obs((S1, "1.1.1.1:5"), (S2, "1.1.1.1:5")), NatType.CONE, Mapping.ENDPOINT_INDEPENDENT),
    (
        "cone, port-preserving",
        obs((S1, "1.1.1.1:51820"), (S2, "1.1.1.1:51820")),
        NatType.CONE,
        Mapping.ENDPOINT_INDEPENDENT,
    ),
    (
        "no NAT, one answer suffices",
        obs((S1, "10.0.0.2:51820"), (S2, None)),
        NatType.CONE,
        Mapping.NONE,
    ),
    (
        "no NAT ipv6",
        obs((E("[2001:db8::9]:3478"), "[2001:db8:1::2]:51820")),
        NatType.CONE,
        Mapping.NONE,
    ),
    (
        "local IP but other port is a NAT",
        obs((S1, "10.0.0.2:6000"), (S2, "10.0.0.2:6000")),
        NatType.CONE,
        Mapping.ENDPOINT_INDEPENDENT,
    ),
    (
        "symmetric, kind unproven",
        obs((S1, "1.1.1.1:5"), (S2, "1.1.1.1:6")),
        NatType.SYMMETRIC,
        Mapping.UNKNOWN,
    ),
    (
        "symmetric, different public IPs",
        obs((S1, "1.1.1.1:5"), (S2, "1.1.1.2:5")),
        NatType.SYMMETRIC,
        Mapping.UNKNOWN,
    ),
    (
        "address-and-port-dependent (RFC 5780 test III differs)",
        obs((S1, "1.1.1.1:5"), (S1_ALT_IP, "1.1.1.1:6"), (S1_ALT, "1.1.1.1:7")),
        NatType.SYMMETRIC,
        Mapping.ADDRESS_AND_PORT_DEPENDENT,
    ),
    (
        "address-dependent (same IP other port keeps mapping)",
        obs((S1, "1.1.1.1:5"), (S1_ALT_IP, "1.1.1.1:6"), (S1_ALT, "1.1.1.1:6")),
        NatType.SYMMETRIC,
        Mapping.ADDRESS_DEPENDENT,
    ),
    (
        "port change alone differs",
        obs((S1, "1.1.1.1:5"), (S1_ALT_PORT, "1.1.1.1:6")),
        NatType.SYMMETRIC,
        Mapping.ADDRESS_AND_PORT_DEPENDENT,
    ),
    (
        "EIM with RFC 5780 detail",
        obs((S1, "1.1.1.1:5"), (S1_ALT_IP, "1.1.1.1:5"), (S1_ALT, "1.1.1.1:5"), (S2, "1.1.1.1:5")),
        NatType.CONE,
        Mapping.ENDPOINT_INDEPENDENT,
    ),
    (
        "family mismatch ignored",
        obs((S1, "[2001:db8::5]:5"), (S2, "1.1.1.1:5")),
        NatType.UNKNOWN,
        Mapping.UNKNOWN,
    ),
]


@pytest.mark.parametrize(
    ("name", "observations", "nat_type", "mapping"),
    MAPPING_CASES,
    ids=[c[0] for c in MAPPING_CASES],
)
def test_classify_mapping(
    name: str, observations: list[MappingObservation], nat_type: NatType, mapping: Mapping
) -> None:
    verdict = classify_mapping(observations, LOCAL_IPS, LOCAL_PORT)
    assert (verdict.nat_type, verdict.mapping) == (nat_type, mapping)


FILTER_CASES = [
    (None, True, Filtering.UNKNOWN),
    (None, False, Filtering.BLOCKED),
    (FilteringObservation(True), True, Filtering.ENDPOINT_INDEPENDENT),
    (FilteringObservation(False, True), True, Filtering.ADDRESS_DEPENDENT),
    (FilteringObservation(False, False), True, Filtering.ADDRESS_AND_PORT_DEPENDENT),
    (FilteringObservation(False, None), True, Filtering.UNKNOWN),
    (FilteringObservation(None, None), True, Filtering.UNKNOWN),
]


@pytest.mark.parametrize(("observation", "any_answer", "expected"), FILTER_CASES)
def test_classify_filtering(
    observation: FilteringObservation | None, any_answer: bool, expected: Filtering
) -> None:
    assert classify_filtering(observation, any_answer=any_answer) is expected


CONE = NatReport(
    NatType.CONE, Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT, E("1.1.1.1:5")
)
SYM = NatReport(
    NatType.SYMMETRIC,
    Mapping.ADDRESS_AND_PORT_DEPENDENT,
    Filtering.ADDRESS_AND_PORT_DEPENDENT,
    E("1.1.1.1:9"),
)
EMPTY = NatReport()

MERGE_CASES = [
    ("unknown never overwrites known", CONE, EMPTY, CONE),
    ("known replaces unknown", EMPTY, SYM, SYM),
    ("known replaces known (network changed)", CONE, SYM, SYM),
    (
        "type known, kind unknown keeps same-type kind",
        SYM,
        NatReport(NatType.SYMMETRIC, Mapping.UNKNOWN, Filtering.UNKNOWN, None),
        SYM,
    ),
    (
        "type change drops the old kind",
        CONE,
        NatReport(NatType.SYMMETRIC, Mapping.UNKNOWN),
        NatReport(NatType.SYMMETRIC, Mapping.UNKNOWN, Filtering.ADDRESS_DEPENDENT, E("1.1.1.1:5")),
    ),
    (
        "filtering alone updates",
        CONE,
        NatReport(filtering=Filtering.ENDPOINT_INDEPENDENT),
        NatReport(
            NatType.CONE,
            Mapping.ENDPOINT_INDEPENDENT,
            Filtering.ENDPOINT_INDEPENDENT,
            E("1.1.1.1:5"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"), MERGE_CASES, ids=[c[0] for c in MERGE_CASES]
)
def test_merge(name: str, old: NatReport, new: NatReport, expected: NatReport) -> None:
    assert merge(old, new) == expected


def test_status_fields() -> None:
    assert SYM.status() == {
        "natType": "symmetric",
        "natMapping": "address-and-port-dependent",
        "natFiltering": "address-and-port-dependent",
    }
    assert EMPTY.status() == {"natType": "", "natMapping": "", "natFiltering": ""}
    assert NatReport(NatType.CONE, Mapping.NONE).status()["natMapping"] == "none"


def test_publish_and_consensus() -> None:
    assert endpoint_to_publish(CONE, 51820) == E("1.1.1.1:5")
    assert endpoint_to_publish(SYM, 51820) == E("1.1.1.1:51820")
    assert endpoint_to_publish(EMPTY, 51820) is None
    o = obs((S1, "1.1.1.1:5"), (S2, "1.1.1.1:6"), (S1_ALT, "1.1.1.1:6"), (S1_ALT_IP, None))
    assert consensus_mapped(o) == E("1.1.1.1:6")
    assert consensus_mapped([]) is None
