"""The pool's ready replicas from its EndpointSlices (k8s.ready_addresses), and the flag."""

from __future__ import annotations

import pytest

from wirekube_relay.k8s import parse_service, ready_addresses


def test_only_ready_endpoints_with_the_relay_port() -> None:
    slices = [
        {
            "endpoints": [
                {"addresses": ["10.1.0.5"], "conditions": {"ready": True}},
                {"addresses": ["10.1.0.6"]},  # no conditions: ready, as the API reads it
                {"addresses": ["10.1.0.7"], "conditions": {"ready": False, "terminating": True}},
                {"addresses": ["10.1.0.8"], "conditions": {"ready": False}},  # starting
            ]
        },
        {"endpoints": [{"addresses": ["10.1.0.5", "10.1.0.9"], "conditions": {"ready": True}}]},
        {"endpoints": None},  # a slice with no endpoints yet
        {},
    ]
    assert ready_addresses(slices, 3478) == [
        ("10.1.0.5", 3478),
        ("10.1.0.6", 3478),
        ("10.1.0.9", 3478),
    ]


def test_garbage_in_a_slice_is_skipped() -> None:
    slices = [{"endpoints": ["x", {"addresses": [None, "", 7, "10.1.0.5"]}]}]
    assert ready_addresses(slices, 4000) == [("10.1.0.5", 4000)]


def test_the_flag_names_namespace_and_service() -> None:
    assert parse_service("wirekube-system/wirekube-relay-pool") == (
        "wirekube-system",
        "wirekube-relay-pool",
    )
    for bad in ("wirekube-relay-pool", "/svc", "ns/", "a/b/c", ""):
        with pytest.raises(ValueError, match="namespace/service"):
            parse_service(bad)
