"""A WireKubeGateway end to end: a mesh node reaches a private service in
another VPC through the active gateway peer, and again after a failover.

Real kube-apiserver, real agents with wireguard-go, the real gateway
controller, a lab with NATs (see conftest.py for the picture). The tests run
in order and share the lab:

1. the nft adapter against a real kernel (round trip, diff, removal);
2. the client reaches 172.20.1.200 through b1, SNAT-ed to b1's address; only
   the client got the route, only b1 forwards (nft counters prove the path);
3. b1's cable is cut: the controller fails over to b2 once b1's health report
   goes stale, the CIDR moves to b2 on the client, and the client reaches the
   service again (measured from the cut); b1, reconnected, drops its rules;
4. SNAT off: b2 only forwards, and with a route back on the service host the
   service sees the client's own address;
5. ``wirekube-agent cleanup`` removes the gateway table.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
from typing import Any

import pytest

from wirekube_lab.mesh import peer_name

ROUND_TRIP = """
import json
from wirekube_agent.gateway import natrules
from wirekube_agent.netlink import nft
from wirekube_common.gateway import GatewayDuty

out = {}
snat = GatewayDuty("rt", ("172.30.0.0/16",), True, "172.20.1.200", ())
rules, _ = natrules.rules_for([snat], "wire_kube")
out["before"] = nft.observed().table
nft.apply(natrules.script(rules, nft.observed()))
observed = nft.observed()
out["keys_match"] = set(observed.rules) == {r.key() for r in rules}
out["again"] = natrules.script(rules, observed)
masq = GatewayDuty("rt", ("172.30.0.0/16",), True, None, ())
rules2, _ = natrules.rules_for([masq], "wire_kube")
out["change"] = natrules.script(rules2, observed)
nft.apply(out["change"])
out["keys_match2"] = set(nft.observed().rules) == {r.key() for r in rules2}
out["counters"] = sorted(nft.rule_counters())
out["deleted"] = nft.delete_table()
out["deleted_again"] = nft.delete_table()
print(json.dumps(out))
"""


def lines_since(text: str, t0: float) -> list[tuple[float, str, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and float(parts[0]) >= t0:
            out.append((float(parts[0]), parts[1], parts[2]))
    return out


def test_nft_adapter_round_trip_on_a_real_kernel(gwmesh: Any) -> None:
    gm = gwmesh
    out = gm.lab.exec(gm.SVC, [sys.executable, "-c", ROUND_TRIP])
    result = json.loads(out.stdout)
    assert result["before"] is False
    assert result["keys_match"] and result["keys_match2"]
    assert result["again"] is None  # what nft reports back is what we render: no flapping
    change = result["change"].splitlines()
    assert len(change) == 2
    assert change[0].startswith("delete rule ip wirekube postrouting handle ")
    assert "counter masquerade comment" in change[1]
    assert len(result["counters"]) == 3
    assert (result["deleted"], result["deleted_again"]) == (True, False)
    assert gm.nft_rules(gm.SVC) is None


def test_client_reaches_the_private_service_through_the_active_gateway(gwmesh: Any) -> None:
    gm = gwmesh
    mesh = gm.mesh
    took = mesh.wait_until(
        "every pair answers pings", lambda: mesh.all_reachable(list(gm.NODES)), gm.START_TIMEOUT_S
    )
    print(f"mesh of 3 reachable {took:.1f}s after the wait began")
    assert gm.connect(1.0) is None  # no gateway yet: VPC B is out of reach
    assert {gm.ip_forward(h) for h in gm.NODES} == {"0"}
    gm.create_gateway()
    t0 = time.monotonic()
    b1 = peer_name(gm.B1)
    try:
        mesh.wait_until("b1 active", lambda: gm.active_peer() == b1, 60)
        mesh.wait_until("service reached", lambda: gm.connect(1.0) is not None, 60)
    except TimeoutError:
        print(gm.diagnose())
        raise
    print(f"gateway created -> client reached the service in {time.monotonic() - t0:.1f}s")

    # SNAT on: the service sees b1's own address and needs no route back.
    assert gm.connect() == gm.lab.address(gm.B1)
    # The client: the CIDR rides in b1's AllowedIPs (only b1's), routed via wire_kube.
    allowed = gm.wg_allowed_ips(gm.CLIENT)
    assert gm.CIDR in allowed[gm.public_key(gm.B1)]
    assert gm.CIDR not in allowed[gm.public_key(gm.B2)]
    assert gm.CIDR in gm.routes(gm.CLIENT)
    # Gateway peers are not clients: neither gets the route.
    for host in (gm.B1, gm.B2):
        assert gm.CIDR not in gm.routes(host)
        assert all(gm.CIDR not in nets for nets in gm.wg_allowed_ips(host).values())
    # Only b1 forwards, and its counters saw our connections.
    rules = gm.nft_rules(gm.B1)
    assert rules is not None
    snat = f"wirekube gateway gm-vpc-b: snat wire_kube -> {gm.CIDR} to {gm.lab.address(gm.B1)}"
    forward = f"wirekube gateway gm-vpc-b: forward wire_kube -> {gm.CIDR}"
    replies = f"wirekube gateway gm-vpc-b: replies {gm.CIDR} -> wire_kube"
    assert set(rules) == {snat, forward, replies}
    # >= 2 connections went through: the NAT rule sees each one's first packet,
    # the forward rules every packet (SYN, ACK, FIN, ... each way).
    assert rules[snat] >= 2 and rules[forward] >= 6 and rules[replies] >= 4, rules
    assert gm.ip_forward(gm.B1) == "1"
    # New network namespaces start with forwarding off: only the gateway turned it on.
    assert gm.nft_rules(gm.B2) is None and gm.ip_forward(gm.B2) == "0"
    assert gm.nft_rules(gm.CLIENT) is None and gm.ip_forward(gm.CLIENT) == "0"
    # Ready follows the peers' first health reports (the route went in before:
    # the active peer is chosen optimistically, readiness is confirmed).
    mesh.wait_until("gateway ready", lambda: gm.status().get("ready") is True, 30)
    status = gm.status()
    assert status.get("ready") is True and status.get("routesInjected") == 1, status
    assert "active gateway for gm-vpc-b: forwarding, SNAT to" in gm.agent_log(gm.B1)
    # The same, as Prometheus sees it.
    assert mesh.agent_metric(gm.B1, "wirekube_gateway_active") == 1.0
    assert mesh.agent_metric(gm.B1, "wirekube_gateway_packets_total") >= 6  # forward rule
    assert mesh.agent_metric(gm.CLIENT, "wirekube_gateway_client_routes") == 1.0
    assert mesh.agent_metric(gm.B2, "wirekube_gateway_health_reports_total") >= 1
    with pytest.raises(KeyError):
        mesh.agent_metric(gm.B2, "wirekube_gateway_active")


def test_failover_to_b2_when_b1_goes_dark(gwmesh: Any) -> None:
    gm = gwmesh
    mesh = gm.mesh
    b1, b2 = peer_name(gm.B1), peer_name(gm.B2)
    assert gm.active_peer() == b1
    prober = gm.lab.spawn(gm.CLIENT, [sys.executable, "-c", gm.PROBER], name="prober")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        mesh.wait_until(
            "prober connects via b1",
            lambda: any(s == "ok" for _, s, _ in lines_since(prober.log_text(), 0)),
            20,
        )
        # Meanwhile the client pings b2's node address: the failover moves a
        # CIDR between two WireGuard peers and must not disturb anything else.
        pinging = pool.submit(gm.lab.ping, gm.CLIENT, gm.lab.address(gm.B2), 75, 0.2)
        time.sleep(0.5)
        t_cut = time.time()
        gm.lab.cut(gm.B1)
        try:
            mesh.wait_until("b2 active", lambda: gm.active_peer() == b2, gm.REPORT_TTL_S + 40)
            t_switch = time.time()
            via_b2 = gm.lab.address(gm.B2)
            mesh.wait_until(
                "prober connects via b2",
                lambda: any(
                    s == "ok" and seen == via_b2
                    for _, s, seen in lines_since(prober.log_text(), t_cut)
                ),
                30,
            )
        except TimeoutError:
            print(gm.diagnose())
            raise
        pings = pinging.result(timeout=60)
    finally:
        prober.stop()
        pool.shutdown(wait=True)
    log = lines_since(prober.log_text(), t_cut - 5)
    last_before = max(t for t, s, seen in log if s == "ok" and t < t_cut)
    first_after = min(t for t, s, seen in log if s == "ok" and t > t_cut)
    outage = first_after - t_cut
    print(
        f"failover: b1 cut -> activePeer b2 after {t_switch - t_cut:.1f}s "
        f"(report TTL {gm.REPORT_TTL_S}s); the client reached the service via b2 "
        f"{outage:.1f}s after the cut (last success via b1 {t_cut - last_before:.1f}s before it)"
    )
    # Bound: the report goes stale after the TTL, plus a controller pass, the
    # watch to the agents, a reconcile and a TCP attempt; generous for 2 cores.
    assert outage < gm.REPORT_TTL_S + 25, log
    print(f"client -> b2 pings across the failover: {pings.received}/{pings.sent}")
    assert pings.sent == 75 and pings.received == 75
    assert all(seen == gm.lab.address(gm.B2) for t, s, seen in log if s == "ok" and t > t_cut)

    allowed = gm.wg_allowed_ips(gm.CLIENT)
    assert gm.CIDR in allowed[gm.public_key(gm.B2)]
    assert gm.CIDR not in allowed[gm.public_key(gm.B1)]
    assert gm.CIDR in gm.routes(gm.CLIENT)
    assert gm.ip_forward(gm.B2) == "1"
    rules = gm.nft_rules(gm.B2)
    assert rules is not None
    assert (
        f"wirekube gateway gm-vpc-b: snat wire_kube -> {gm.CIDR} to {gm.lab.address(gm.B2)}"
        in rules
    )

    # b1 comes back: it is not the active peer any more (failback is off), so
    # its agent removes its rules and puts IP forwarding back as it found it.
    gm.lab.restore(gm.B1)
    try:
        mesh.wait_until("b1 stood down", lambda: gm.nft_rules(gm.B1) is None, 60)
        mesh.wait_until("b1 forwarding off", lambda: gm.ip_forward(gm.B1) == "0", 10)
    except TimeoutError:
        print(gm.diagnose())
        raise
    assert gm.active_peer() == b2
    assert "no longer an active gateway (was: gm-vpc-b)" in gm.agent_log(gm.B1)
    assert gm.connect() == gm.lab.address(gm.B2)


def test_snat_off_needs_a_route_back_and_shows_the_clients_address(gwmesh: Any) -> None:
    gm = gwmesh
    mesh = gm.mesh
    assert gm.active_peer() == peer_name(gm.B2)
    gm.patch_gateway({"snat": {"enabled": False}})
    forward_only = {
        f"wirekube gateway gm-vpc-b: forward wire_kube -> {gm.CIDR}",
        f"wirekube gateway gm-vpc-b: replies {gm.CIDR} -> wire_kube",
    }
    mesh.wait_until("b2 forwards only", lambda: set(gm.nft_rules(gm.B2) or {}) == forward_only, 30)
    # Without SNAT the service answers the client's own address, which VPC B
    # does not route: no connection.
    assert gm.connect(1.0) is None
    client_ip = gm.lab.address(gm.CLIENT)
    route = ["ip", "route", "add", f"{client_ip}/32", "via", gm.lab.address(gm.B2)]
    gm.lab.exec(gm.SVC, route)
    try:
        mesh.wait_until("service reached", lambda: gm.connect(1.0) is not None, 20)
        assert gm.connect() == client_ip  # the service sees the client itself
    finally:
        gm.lab.exec(gm.SVC, ["ip", "route", "del", f"{client_ip}/32"], check=False)
        gm.patch_gateway({"snat": {"enabled": True}})


def test_cleanup_removes_the_gateway_table(gwmesh: Any) -> None:
    gm = gwmesh
    mesh = gm.mesh
    mesh.wait_until("b2 snat again", lambda: len(gm.nft_rules(gm.B2) or {}) == 3, 30)
    assert mesh.stop_agent(gm.B2) == 0
    # A stopped agent leaves the data plane (and the gateway rules) in place...
    assert gm.nft_rules(gm.B2) is not None
    argv = [sys.executable, "-m", "wirekube_agent", "cleanup", "--interface", "wire_kube"]
    for _ in range(2):  # idempotent
        gm.lab.exec(gm.B2, argv)
    # ...and cleanup removes it with the rest.
    assert gm.nft_rules(gm.B2) is None
    assert gm.routes(gm.B2) == set()
