"""Classification of STUN observations, and the expected behaviour of each kind."""

from __future__ import annotations

import pytest

from wirekube_lab.natbehaviour import (
    AD,
    APD,
    EI,
    EXPECTED,
    NONE,
    NatBehaviour,
    Observations,
    classify,
    mismatches,
)
from wirekube_lab.topology import NAT_KINDS

LOCAL = ("10.1.0.10", 40000)
PUB = "198.18.1.1"


def obs(**kw: object) -> Observations:
    base: dict[str, object] = {
        "local": LOCAL,
        "primary": (PUB, 40000),
        "alt_address": (PUB, 40000),
        "alt_port": (PUB, 40000),
        "filter_primary": (PUB, 40001),
        "change_both": False,
        "change_port": False,
        "tcp": (PUB, 50000),
    }
    base.update(kw)
    return Observations(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("o", "mapping", "filtering"),
    [
        (
            obs(
                primary=LOCAL, alt_address=LOCAL, alt_port=LOCAL, change_both=True, change_port=True
            ),
            NONE,
            EI,
        ),
        (obs(change_both=True, change_port=True), EI, EI),
        (obs(change_port=True), EI, AD),
        (obs(), EI, APD),
        (obs(alt_address=(PUB, 40100)), AD, APD),
        (obs(alt_address=(PUB, 40100), alt_port=(PUB, 40200)), APD, APD),
        (obs(alt_port=(PUB, 40200)), APD, APD),
    ],
)
def test_classify(o: Observations, mapping: str, filtering: str) -> None:
    seen = classify(o)
    assert (seen.udp, seen.mapping, seen.filtering) == (True, mapping, filtering)


def test_port_preservation_and_public_ip() -> None:
    seen = classify(obs(alt_address=(PUB, 1), alt_port=(PUB, 2), primary=(PUB, 3)))
    assert seen.port_preserved is False
    assert seen.public_ip == PUB
    assert classify(obs()).port_preserved is True


def test_udp_blocked() -> None:
    seen = classify(obs(primary=None, alt_address=None, alt_port=None, filter_primary=None))
    assert seen == NatBehaviour(
        udp=False, tcp=True, mapping=None, filtering=None, public_ip=PUB, port_preserved=None
    )
    assert mismatches("tcp-only", seen, PUB) == []
    assert "udp blocked, expected works" in mismatches("port-restricted", seen, PUB)


def test_every_kind_has_an_expectation() -> None:
    assert set(NAT_KINDS) <= set(EXPECTED)


def test_mismatches_name_each_difference() -> None:
    seen = classify(obs(change_port=True))  # address-restricted behaviour
    assert mismatches("address-restricted", seen, PUB) == []
    assert mismatches("port-restricted", seen, PUB) == [
        "filtering address-dependent, expected address-and-port-dependent"
    ]
    assert mismatches("address-restricted", seen, "198.18.1.9") == [
        "public address 198.18.1.1, expected 198.18.1.9"
    ]


def test_json_roundtrip() -> None:
    o = obs(tcp=None)
    assert Observations.from_json(o.to_json()) == o
