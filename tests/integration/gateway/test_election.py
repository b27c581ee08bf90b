"""Two real controller processes, the controller's own ServiceAccount, one Lease:
only one leads and acts; a killed leader is replaced within the lease duration;
a terminated one hands over at once."""

from __future__ import annotations

import signal
import time
from typing import Any

from .conftest import GatewayEnv, ready_condition, wait_for

LEASE_DURATION_S = 15.0  # the controller's default (timers.LEASE_DURATION_S)
RETRY_PERIOD_S = 2.0


def simple_gateway(env: GatewayEnv) -> tuple[str, str, str]:
    p1, p2, client = env.name("node-gw1"), env.name("node-gw2"), env.name("node-client")
    env.create_peer(p1, "10.77.0.1/32")
    env.create_peer(p2, "10.77.0.2/32")
    env.create_peer(client, "10.78.0.1/32")
    gw = env.name("gw")
    env.create_gateway(gw, {"peerRefs": [p1, p2], "routes": [{"cidr": "172.31.0.0/16"}]})
    return gw, p1, p2


def active_is(env: GatewayEnv, gw: str, peer: str) -> dict[str, Any] | None:
    status = env.status(gw)
    return status if status.get("activePeer") == peer else None


def test_one_leader_acts_and_a_killed_leader_is_replaced(gateway_env: GatewayEnv) -> None:
    env = gateway_env
    a = env.start_controller(env.name("ctl-a"))
    b = env.start_controller(env.name("ctl-b"))
    leader = env.leader([a, b])
    standby = b if leader is a else a
    assert env.lease_spec()["holderIdentity"] == leader.identity

    gw, p1, p2 = simple_gateway(env)
    status = wait_for(lambda: active_is(env, gw, p1), 15, "first peerRef active")
    assert status["ready"] is True and status["routesInjected"] == 1
    assert ready_condition(status)["reason"] == "Active"
    # Only the leader writes; the standby computes the same thing silently.
    time.sleep(2)
    assert standby.metric("wirekube_gateway_status_writes_total") == 0
    assert (leader.metric("wirekube_gateway_status_writes_total") or 0) >= 1
    assert standby.metric("wirekube_gateway_active_peer", gateway=gw, peer=p1) == 1.0
    assert not standby.is_leader()

    # SIGKILL: no release. The standby takes over within the lease duration
    # (counted from the leader's last renewal, at most one retry period before the kill).
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(standby.is_leader, LEASE_DURATION_S + 10, "standby takes over")
    handover = time.monotonic() - killed
    # The standby counts the lease duration from when *it* saw the last
    # renewal (at most one of its retry periods before the kill), then needs
    # one more retry to notice; 2 s of slack for a loaded machine.
    assert handover <= LEASE_DURATION_S + RETRY_PERIOD_S * 1.2 + 2.0, handover
    spec = env.lease_spec()
    assert spec["holderIdentity"] == standby.identity and spec["leaseTransitions"] >= 1
    print(f"handover after SIGKILL: {handover:.1f}s")

    # The new leader acts: the active peer disappears, the next one takes over.
    env.delete_peer(p1)
    status = wait_for(lambda: active_is(env, gw, p2), 10, "failover to the second peerRef")
    assert status["peerHealth"] == {p1: "unhealthy", p2: "healthy"}
    assert status["ready"] is True
    events = env.events_for(gw)
    assert any(
        e["reason"] == "ActivePeerChanged" and p2 in e["message"] and e["type"] == "Warning"
        for e in events
    ), events


def test_sigterm_releases_the_lease_for_an_immediate_handover(gateway_env: GatewayEnv) -> None:
    env = gateway_env
    a = env.start_controller(env.name("ctl-a"))
    b = env.start_controller(env.name("ctl-b"))
    leader = env.leader([a, b])
    standby = b if leader is a else a
    transitions = env.lease_spec().get("leaseTransitions", 0)

    leader.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert leader.proc.wait(10) == 0, leader.log_text()
    assert "released the lease" in leader.log_text()
    wait_for(standby.is_leader, 10, "standby takes over")
    handover = time.monotonic() - stopped
    # Far below the 15 s lease duration: one standby retry period (+jitter).
    assert handover <= RETRY_PERIOD_S * 1.2 + 2.0, handover
    spec = env.lease_spec()
    assert spec["holderIdentity"] == standby.identity
    assert spec["leaseTransitions"] == transitions + 1
    print(f"handover after SIGTERM: {handover:.1f}s")


def test_status_is_written_only_on_change(gateway_env: GatewayEnv) -> None:
    env = gateway_env
    ctl = env.start_controller(env.name("ctl"))
    env.leader([ctl])
    gw, p1, _ = simple_gateway(env)
    wait_for(lambda: active_is(env, gw, p1), 15, "first peerRef active")
    time.sleep(1.5)
    before = env.gateway(gw)["metadata"]["resourceVersion"]
    writes = ctl.metric("wirekube_gateway_status_writes_total")
    time.sleep(6)  # six reconcile ticks, nothing changes
    assert env.gateway(gw)["metadata"]["resourceVersion"] == before
    assert ctl.metric("wirekube_gateway_status_writes_total") == writes
    assert (ctl.metric("wirekube_gateway_controller_passes_total") or 0) >= 6
