import ipaddress

import pytest

from wirekube_agent import endpoint
from wirekube_agent.settings import SettingsError, build_parser, from_args

from .helpers import node

ALL = ("annotation", "stun", "ipv6", "aws-imds", "external-ip", "internal")


def test_annotation_beats_everything_and_sources_are_asked_lazily() -> None:
    asked: list[str] = []

    def stun() -> tuple[str, int]:
        asked.append("stun")
        return ("198.18.0.1", 40000)

    n = node(annotations={"wirekube.io/endpoint": "203.0.113.5:51820"})
    found = endpoint.discover(n, 51820, ALL, stun=stun)
    assert (found.endpoint, found.method) == (("203.0.113.5", 51820), "annotation")
    assert asked == []


def test_priority_order_and_malformed_annotation() -> None:
    n = node(
        annotations={"wirekube.io/endpoint": "not-an-endpoint"},
        external_ips=(ipaddress.ip_address("203.0.113.9"),),
    )
    order = ("annotation", "stun", "ipv6", "external-ip", "internal")
    assert endpoint.discover(n, 51820, order, stun=lambda: None).method == "external-ip"
    v6 = endpoint.discover(
        n, 51820, order, global_ipv6=lambda: [ipaddress.ip_address("2001:db8::1")]
    )
    assert (v6.endpoint, v6.method) == (("2001:db8::1", 51820), "ipv6")
    stun = endpoint.discover(n, 51820, order, stun=lambda: ("198.18.0.1", 1))
    assert stun.method == "stun"
    internal = endpoint.discover(node(), 51820, order)
    assert (internal.endpoint, internal.method) == (("10.0.0.1", 51820), "internal")


def test_node_name_is_required() -> None:
    args = build_parser().parse_args(["--node-name", ""])
    with pytest.raises(SettingsError, match="NODE_NAME"):
        from_args(args)


def test_unknown_endpoint_source_is_rejected() -> None:
    args = build_parser().parse_args(["--node-name", "a", "--endpoint-sources", "stun,magic"])
    with pytest.raises(SettingsError, match="magic"):
        from_args(args)
