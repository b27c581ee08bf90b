from __future__ import annotations

import datetime as dt
import re

import pytest

from wirekube_common.crd import GatewayHealthCheck
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import (
    LABEL_SELECTOR,
    HealthReport,
    InvalidReport,
    check_fingerprint,
    from_lease,
    lease_name,
    report_ttl_s,
    to_lease,
)

UTC = dt.UTC
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def report(**kw: object) -> HealthReport:
    base: dict[str, object] = {
        "gateway": "vpc-b-gateway",
        "peer": "node-b1",
        "check": "172.20.1.254:443 every 30s timeout 5s threshold 3",
        "state": State.HEALTHY,
        "consecutive_failures": 0,
        "probed_at": dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "detail": "tcp connect in 1.0 ms",
        "since": dt.datetime(2025, 1, 2, 3, 0, 0, tzinfo=UTC),
    }
    base.update(kw)
    return HealthReport(**base)  # type: ignore[arg-type]


def test_round_trip() -> None:
    r = report()
    lease = to_lease(r, ttl_s=125, gateway_uid="uid-1", acquired_at=r.since)
    assert lease["spec"] == {
        "holderIdentity": "node-b1",
        "leaseDurationSeconds": 125,
        "renewTime": "2025-01-02T03:04:05.678901Z",
        "acquireTime": "2025-01-02T03:00:00.000000Z",
    }
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    key, value = LABEL_SELECTOR.split("=")
    assert lease["metadata"]["labels"][key] == value
    assert from_lease(lease) == r


def test_fractional_ttl_rounds_up_and_no_owner_without_uid() -> None:
    lease = to_lease(report(since=None), ttl_s=10.2)
    assert lease["spec"]["leaseDurationSeconds"] == 11
    assert "ownerReferences" not in lease["metadata"]
    assert from_lease(lease).since is None


def test_lease_names_are_valid_and_distinct() -> None:
    assert lease_name("a.b", "c") != lease_name("a", "b.c")
    long = "x" * 200 + "-" + "y" * 52
    for gw, peer in [("vpc-b-gateway", "node-b1"), (long, long), ("a-" * 60, "b." * 60 + "c")]:
        name = lease_name(gw, peer)
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name


def test_ttl_covers_threshold_periods_plus_one_plus_timeout() -> None:
    assert report_ttl_s(GatewayHealthCheck(True, "t", 30, 5, 3)) == 30 * 4 + 5
    assert report_ttl_s(GatewayHealthCheck(True, "t", 5, 1, 1)) == 5 * 2 + 1
    # A timeout longer than the interval stretches the period.
    assert report_ttl_s(GatewayHealthCheck(True, "t", 5, 8, 2)) == 8 * 3 + 8


def test_fingerprint_changes_with_every_field() -> None:
    base = GatewayHealthCheck(True, "10.0.0.1:80", 30, 5, 3)
    variants = [
        GatewayHealthCheck(True, "10.0.0.2:80", 30, 5, 3),
        GatewayHealthCheck(True, "10.0.0.1:80", 31, 5, 3),
        GatewayHealthCheck(True, "10.0.0.1:80", 30, 6, 3),
        GatewayHealthCheck(True, "10.0.0.1:80", 30, 5, 4),
    ]
    assert len({check_fingerprint(c) for c in [base, *variants]}) == 5


@pytest.mark.parametrize(
    "mutate",
    [
        lambda lease: lease["metadata"].update(name="someone-else"),
        lambda lease: lease["metadata"]["annotations"].pop("gateway-health.wirekube.io/peer"),
        lambda lease: lease["metadata"]["annotations"].update(
            {"gateway-health.wirekube.io/state": "great"}
        ),
        lambda lease: lease["metadata"]["annotations"].update(
            {"gateway-health.wirekube.io/consecutive-failures": "-1"}
        ),
        lambda lease: lease["spec"].pop("renewTime"),
        lambda lease: lease["spec"].update(renewTime="yesterday"),
        lambda lease: lease.update(metadata="x"),
        lambda lease: lease["metadata"].update(annotations=[]),
    ],
)
def test_malformed_leases_raise_invalid_report(mutate: object) -> None:
    lease = to_lease(report(), ttl_s=10)
    mutate(lease)  # type: ignore[operator]
    with pytest.raises(InvalidReport):
        from_lease(lease)
