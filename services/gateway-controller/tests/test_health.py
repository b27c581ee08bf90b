"""Per-peer verdicts from heartbeat reports, on a fake monotonic clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from wirekube_common.crd import Gateway, Peer
from wirekube_common.gwhealth.checker import State
from wirekube_common.gwhealth.report import HealthReport, check_fingerprint
from wirekube_gateway.gateways.health import Reason, ReportClock, evaluate

KEY = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="
T0 = 1_700_000_000.0  # wall clock at monotonic 0 in these tests


def peer(name: str, *allowed: str) -> Peer:
    spec: dict[str, Any] = {"publicKey": KEY, "allowedIPs": list(allowed)}
    return Peer.from_dict({"metadata": {"name": name}, "spec": spec})


PEERS = {
    "b1": peer("b1", "172.20.1.10/32"),
    "b2": peer("b2", "172.20.1.11/32"),
    "idle": peer("idle"),
}


def gateway(
    check: str = "enabled: true, target: '172.20.1.254:443', intervalSeconds: 5, timeoutSeconds: 1, failureThreshold: 2",
) -> Gateway:
    return Gateway.from_dict(
        yaml.safe_load(f"""
metadata: {{name: gw}}
spec:
  peerRefs: [b1, b2, idle, gone]
  routes: [{{cidr: 172.20.0.0/16}}]
  healthCheck: {{{check}}}
""")
    )


GW = gateway()
FP = check_fingerprint(GW.spec.health_check)  # type: ignore[arg-type]
TTL = 5 * 3 + 1  # report_ttl_s for interval 5, threshold 2, timeout 1


def report(peer: str, state: State, probed_wall: float, check: str = FP) -> HealthReport:
    return HealthReport(
        "gw", peer, check, state, 0, dt.datetime.fromtimestamp(probed_wall, dt.UTC), "d"
    )


def verdicts(
    reports: list[HealthReport], clock: ReportClock, now: float, seen_for: float
) -> dict[str, Any]:
    clock.observe(reports, now, T0 + now)
    by_key = {r.key(): r for r in reports}
    return {
        p: (v.state, v.reason) for p, v in evaluate(GW, PEERS, by_key, clock, seen_for, now).items()
    }


def test_missing_and_passive_peers_are_unhealthy_whatever_the_reports() -> None:
    got = verdicts([report("idle", State.HEALTHY, T0)], ReportClock(), 0.0, 0.0)
    assert got["idle"] == (State.UNHEALTHY, Reason.PEER_PASSIVE)
    assert got["gone"] == (State.UNHEALTHY, Reason.PEER_NOT_FOUND)


def test_no_report_is_unknown_for_one_ttl_then_unhealthy() -> None:
    clock = ReportClock()
    assert verdicts([], clock, 0.0, TTL - 1)["b1"] == (State.UNKNOWN, Reason.AWAITING_REPORT)
    assert verdicts([], clock, 0.0, TTL + 1)["b1"] == (State.UNHEALTHY, Reason.NO_REPORT)


def test_report_for_another_check_counts_as_no_report() -> None:
    old = report("b1", State.HEALTHY, T0, check="10.0.0.1:80 every 5s timeout 1s threshold 2")
    assert verdicts([old], ReportClock(), 0.0, 0.0)["b1"] == (State.UNKNOWN, Reason.AWAITING_REPORT)


def test_fresh_reports_give_their_verdict_and_go_stale_without_renewal() -> None:
    clock = ReportClock()
    got = verdicts(
        [report("b1", State.HEALTHY, T0), report("b2", State.UNHEALTHY, T0)], clock, 0.0, 100.0
    )
    assert got["b1"] == (State.HEALTHY, Reason.PROBE)
    assert got["b2"] == (State.UNHEALTHY, Reason.PROBE)
    # b1 keeps renewing every 5 s; b2's agent dies.
    for t in range(5, 30, 5):
        got = verdicts(
            [report("b1", State.HEALTHY, T0 + t), report("b2", State.UNHEALTHY, T0)],
            clock,
            float(t),
            100.0,
        )
    assert got["b1"] == (State.HEALTHY, Reason.PROBE)
    assert got["b2"] == (State.UNHEALTHY, Reason.REPORT_STALE)


def test_staleness_is_judged_on_our_clock_not_the_agents() -> None:
    """An agent whose clock is an hour behind is fresh while it renews;
    one whose clock is ahead cannot keep a dead report alive."""
    clock = ReportClock()
    behind = T0 - 3600
    # First sighting trusts the wall-clock age: an hour old is stale at once...
    assert (
        verdicts([report("b1", State.HEALTHY, behind)], clock, 0.0, 100.0)["b1"][1]
        is Reason.REPORT_STALE
    )
    # ...but every renewal we observe counts as fresh from then on.
    assert verdicts([report("b1", State.HEALTHY, behind + 5)], clock, 5.0, 100.0)["b1"] == (
        State.HEALTHY,
        Reason.PROBE,
    )
    # A report dated in the future, never renewed again, still expires one TTL after we saw it.
    clock2 = ReportClock()
    future = T0 + 3600
    assert (
        verdicts([report("b1", State.HEALTHY, future)], clock2, 0.0, 100.0)["b1"][1] is Reason.PROBE
    )
    assert (
        verdicts([report("b1", State.HEALTHY, future)], clock2, TTL + 0.5, 100.0)["b1"][1]
        is Reason.REPORT_STALE
    )


def test_checks_disabled_every_existing_peer_is_healthy() -> None:
    gw = gateway("enabled: false, target: x")
    got = evaluate(gw, PEERS, {}, ReportClock(), 0.0, 0.0)
    assert got["b1"].state is State.HEALTHY and got["b1"].reason is Reason.NOT_CHECKED
    assert got["gone"].reason is Reason.PEER_NOT_FOUND
