from __future__ import annotations

import ipaddress

import pytest

from wirekube_common.stun.endpoint import Endpoint, split_host_port


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("1.2.3.4:51820", None, ("1.2.3.4", 51820)),
        ("[2001:db8::1]:3478", None, ("2001:db8::1", 3478)),
        ("stun.example:19302", None, ("stun.example", 19302)),
        ("stun.example", 3478, ("stun.example", 3478)),
        ("2001:db8::1", 3478, ("2001:db8::1", 3478)),
        ("[2001:db8::1]", 3478, ("2001:db8::1", 3478)),
    ],
)
def test_split(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize(
    "bad", ["", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:70000", "[::1", "[::1]x", "a:b", ":80"]
)
def test_split_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(bad)


def test_endpoint_normalises_mapped_v4_and_formats() -> None:
    a = Endpoint.from_sockaddr(("::ffff:10.0.0.1", 5, 0, 0))
    assert a == Endpoint.parse("10.0.0.1:5") and str(a) == "10.0.0.1:5" and a.family == 4
    b = Endpoint(ipaddress.IPv6Address("2001:db8::1"), 7)
    assert str(b) == "[2001:db8::1]:7" and Endpoint.parse(str(b)) == b
    assert len({a, Endpoint.parse("10.0.0.1:5")}) == 1
    with pytest.raises(ValueError):
        Endpoint(ipaddress.IPv4Address("1.1.1.1"), 70000)
