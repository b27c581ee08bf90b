"""HA failover end to end: gateway peers b1 and b2 in a lab network next to the
health-check target, each running the agent-side health checker in its own
network namespace (the agent's ServiceAccount, through the lab's door to the
API server), and two gateway controllers (their own ServiceAccount).

What is shown, with measured times:
* the first peerRef is active and the status is complete;
* b1 alone losing the target (a firewall on b1's path) fails over to b2;
* b1 recovering gets the role back only after the failback hold;
* the target itself going down keeps the active peer (fail static, not ready);
* b1's agent dying fails over once its report goes stale;
* ICMP targets work the same way, from a raw socket on b1 and a ping socket on b2.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab

from .conftest import HEALTH_NS, GatewayEnv, ready_condition, wait_for

INTERVAL, TIMEOUT, THRESHOLD = 5, 1, 1
TTL = max(INTERVAL, TIMEOUT) * (THRESHOLD + 1) + TIMEOUT  # report_ttl_s: 11 s
HOLD = 2 * THRESHOLD * INTERVAL  # failback hold: 10 s
PORT = 8443

TOPOLOGY = {
    "name": "gwfailover",
    "networks": {"vpcb": {"nat": {"kind": "port-restricted"}}},
    "hosts": {"b1": {"network": "vpcb"}, "b2": {"network": "vpcb"}, "target": {"network": "vpcb"}},
}


class Scenario:
    def __init__(self, env: GatewayEnv, lab: Lab, cp: ControlPlane, tmp: Path) -> None:
        self.env, self.lab = env, lab
        self.p1, self.p2 = env.name("node-b1"), env.name("node-b2")
        self.client = env.name("node-a1")
        self.target = lab.address("target")
        self.cidr = str(ipaddress.ip_network(f"{self.target}/24", strict=False))
        env.create_peer(self.p1, f"{lab.address('b1')}/32")
        env.create_peer(self.p2, f"{lab.address('b2')}/32")
        env.create_peer(self.client, "10.250.0.1/32")
        self.agent_kubeconfig = cp.kubeconfig_for_service_account(
            "wirekube-system", "wirekube-agent", lab=True, path=tmp / "agent-lab.kubeconfig"
        )
        self.reporters: dict[str, Any] = {}

    def start_reporter(self, host: str, peer: str) -> Any:
        proc = self.lab.spawn(
            host,
            [sys.executable, "-m", "wirekube_common.gwhealth", "--peer", peer,
             "--kubeconfig", str(self.agent_kubeconfig)],
            env={"WIREKUBE_LOG_FORMAT": "text"},
            name="gwhealth",
        )  # fmt: skip
        self.reporters[host] = proc
        return proc

    def start_target(self) -> Any:
        argv = [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0"]
        return self.lab.spawn("target", argv, name="http")

    def gateway(self, name: str, target: str) -> str:
        gw = self.env.name(name)
        self.env.create_gateway(
            gw,
            {
                "peerRefs": [self.p1, self.p2],
                "routes": [{"cidr": self.cidr, "description": "VPC-B"}],
                "snat": {"enabled": True},
                "healthCheck": {"enabled": True, "target": target, "intervalSeconds": INTERVAL,
                                "timeoutSeconds": TIMEOUT, "failureThreshold": THRESHOLD},
            },
        )  # fmt: skip
        return gw

    def wait_status(self, gw: str, timeout: float, what: str, **want: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.env.status(gw)
            for key, value in want.items():
                if key == "health":
                    if status.get("peerHealth") != value:
                        return None
                elif key == "reason":
                    if ready_condition(status).get("reason") != value:
                        return None
                elif status.get(key) != value:
                    return None
            return status

        return wait_for(check, timeout, what, every=0.1)


@pytest.fixture
def scenario(
    gateway_env: GatewayEnv, lab_factory: Any, control_plane: ControlPlane, tmp_path: Path
) -> Scenario:
    return Scenario(gateway_env, lab_factory(TOPOLOGY), control_plane, tmp_path)


def test_tcp_failover_failback_fail_static_and_dead_agent(scenario: Scenario) -> None:
    s, env, lab = scenario, scenario.env, scenario.lab
    http = s.start_target()
    s.start_reporter("b1", s.p1)
    s.start_reporter("b2", s.p2)
    a = env.start_controller(env.name("ctl-a"))
    b = env.start_controller(env.name("ctl-b"))
    gw = s.gateway("vpc-b", f"{s.target}:{PORT}")
    both_healthy = {s.p1: "healthy", s.p2: "healthy"}

    # 1. The first peerRef is active; everything in status is right.
    status = s.wait_status(
        gw, 40, "b1 active and ready", activePeer=s.p1, ready=True, health=both_healthy
    )
    obj = env.gateway(gw)
    assert status["routesInjected"] == 1
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert "lastHealthCheck" in status
    cond = ready_condition(status)
    assert (cond["status"], cond["reason"]) == ("True", "Active")
    assert f"{s.p1} is active, carrying 1 route(s) for 1 client(s)" in cond["message"]
    leases = env.rest.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{HEALTH_NS}/leases")
    holders = {
        item["spec"]["holderIdentity"]
        for item in leases["items"]
        if item["metadata"]["annotations"].get("gateway-health.wirekube.io/gateway") == gw
    }
    assert holders == {s.p1, s.p2}
    leader = env.leader([a, b])

    # 2. Only b1 loses the target: failover to b2.
    reject = [
        "-p",
        "tcp",
        "-d",
        s.target,
        "--dport",
        str(PORT),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]
    lab.exec("b1", ["iptables", "-I", "OUTPUT", *reject])
    cut = time.monotonic()
    status = s.wait_status(gw, INTERVAL + 10, "failover to b2", activePeer=s.p2)
    failover_s = time.monotonic() - cut
    assert status["peerHealth"] == {s.p1: "unhealthy", s.p2: "healthy"}
    assert status["ready"] is True
    assert failover_s <= INTERVAL + 4, failover_s  # one probe period + write + tick
    assert any(
        e["reason"] == "ActivePeerChanged" and e["type"] == "Warning" and "failover" in e["message"]
        for e in env.events_for(gw)
    )

    # 3. b1 recovers: it gets the role back only after the failback hold.
    lab.exec("b1", ["iptables", "-D", "OUTPUT", *reject])
    status = s.wait_status(gw, INTERVAL + 10, "b1 healthy again", health=both_healthy)
    recovered = time.monotonic()
    assert status["activePeer"] == s.p2, "failback must wait for the hold"
    s.wait_status(gw, HOLD + 10, "failback to b1", activePeer=s.p1)
    failback_s = time.monotonic() - recovered
    assert HOLD - 2 <= failback_s <= HOLD + 4, failback_s

    # 4. The target itself goes down: nobody is healthy, the active peer stays
    # (fail static), not ready. Which one that is depends on whose probe failed
    # first: if b1's did, b2 (still healthy then) took over until its own
    # probe failed too.
    http.stop()
    status = s.wait_status(
        gw, INTERVAL + 10, "both unhealthy", health={s.p1: "unhealthy", s.p2: "unhealthy"}
    )
    kept = status["activePeer"]
    assert kept in (s.p1, s.p2) and status["ready"] is False
    assert ready_condition(status)["reason"] == "NoHealthyPeer"
    time.sleep(INTERVAL + 1)
    assert env.status(gw)["activePeer"] == kept
    s.start_target()
    s.wait_status(gw, INTERVAL + 10, "ready again", ready=True, health=both_healthy)
    s.wait_status(gw, HOLD + 10, "b1 active again", activePeer=s.p1)

    # 5. b1's agent dies: its report goes stale after the TTL and b2 takes over.
    s.reporters["b1"].signal(signal.SIGKILL)
    died = time.monotonic()
    status = s.wait_status(
        gw, TTL + INTERVAL + 10, "failover after b1's agent died", activePeer=s.p2
    )
    stale_s = time.monotonic() - died
    assert status["peerHealth"][s.p1] == "unhealthy"
    assert "stopped reporting" in ready_condition(status)["message"]
    assert stale_s <= TTL + INTERVAL + 3, stale_s

    # Only the leader ever wrote.
    standby = b if leader is a else a
    assert standby.metric("wirekube_gateway_status_writes_total") == 0
    assert a.alive and b.alive
    print(
        f"failover {failover_s:.1f}s (interval {INTERVAL}s), failback {failback_s:.1f}s "
        f"(hold {HOLD}s), dead agent {stale_s:.1f}s (ttl {TTL}s)"
    )


def test_icmp_target_failover(scenario: Scenario) -> None:
    s, env, lab = scenario, scenario.env, scenario.lab
    # b2 may use an unprivileged ping socket; b1 (namespace default) needs a raw one.
    lab.exec("b2", ["sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"])
    s.start_reporter("b1", s.p1)
    s.start_reporter("b2", s.p2)
    env.start_controller(env.name("ctl"))
    gw = s.gateway("icmp", s.target)
    both = {s.p1: "healthy", s.p2: "healthy"}
    s.wait_status(gw, 40, "b1 active", activePeer=s.p1, ready=True, health=both)
    details = {
        item["spec"]["holderIdentity"]: item["metadata"]["annotations"][
            "gateway-health.wirekube.io/detail"
        ]
        for item in env.rest.call(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{HEALTH_NS}/leases"
        )["items"]
        if item["metadata"]["annotations"].get("gateway-health.wirekube.io/gateway") == gw
    }
    assert "(raw socket)" in details[s.p1] and "(ping socket)" in details[s.p2], details

    # Echo requests from b1 are dropped at the target: timeouts, failover.
    lab.exec(
        "target", ["iptables", "-I", "INPUT", "-p", "icmp", "-s", lab.address("b1"), "-j", "DROP"]
    )
    status = s.wait_status(gw, INTERVAL + TIMEOUT + 10, "icmp failover", activePeer=s.p2)
    assert status["peerHealth"] == {s.p1: "unhealthy", s.p2: "healthy"}
    assert "no reply within 1s" in ready_condition(status)["message"]
