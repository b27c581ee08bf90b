from __future__ import annotations

import pytest

from wirekube_common.gwhealth.target import InvalidTarget, ProbeTarget, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("172.20.1.254:443", ProbeTarget("172.20.1.254", 443)),
        ("172.20.1.254", ProbeTarget("172.20.1.254")),
        ("db.internal:5432", ProbeTarget("db.internal", 5432)),
        ("db.internal", ProbeTarget("db.internal")),
        ("[fd00::1]:443", ProbeTarget("fd00::1", 443)),
        ("[fd00::1]", ProbeTarget("fd00::1")),
        ("fd00::1", ProbeTarget("fd00::1")),
        ("  10.0.0.1:80 ", ProbeTarget("10.0.0.1", 80)),
    ],
)
def test_parse(text: str, expected: ProbeTarget) -> None:
    target = parse_target(text)
    assert target == expected
    assert target.kind == ("icmp" if expected.port is None else "tcp")
    assert parse_target(str(target)) == target


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.1:",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "10.0.0.1:http",
        ":443",
        "[fd00::1",
        "[x]:1",
        "[fd00::1]443",
        "fd00::zz",
        "a b:1",
        "10.0.0.0/8",
    ],
)
def test_reject(text: str) -> None:
    with pytest.raises(InvalidTarget):
        parse_target(text)
