"""Relay pool with several real replicas: failover within 5 s, reuse of a returning
replica, and discovery of replicas through a (lab) DNS server re-resolved periodically."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace

import dns.rcode
import pytest

from wirekube_agent.relay import DnsSource
from wirekube_agent.relaying.manager import RelayManager
from wirekube_agent.relaying.target import DnsName, RelayTarget
from wirekube_common import wgkey
from wirekube_lab.loopdns import LoopbackDns


@pytest.mark.parametrize("failure", ["kill", "freeze"])
def test_replica_failure_flow_moves_within_5s_and_returns(
    relay_factory, nodes, h, failure: str
) -> None:
    """kill: SIGKILL (the kernel resets the connections); freeze: SIGSTOP (silent: only the
    missing PONGs tell). Then the replica comes back and is used again."""
    r1, r2 = relay_factory(), relay_factory()
    by_name = {f"{r.address[0]}:{r.address[1]}": r for r in (r1, r2)}
    a = nodes(addresses=[r1.address, r2.address])
    b = nodes(addresses=[r1.address, r2.address])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(2, 10) and b.bridge.pool.wait_live(2, 10)
    flow = h.Flow(a, b).start()
    h.wait_for(lambda: len(flow.received) > 20, 10, "the flow")
    carrier = a.bridge.stats(b.pub).replica
    assert carrier is not None
    # both ends agree on the replica (rendezvous on the key pair)
    b.wg.sendto(b"back", b.bridge.endpoint_for(a.pub))
    h.wait_for(lambda: b.bridge.stats(a.pub).replica == carrier, 5, "b to pick the same replica")

    victim = by_name[carrier]
    assert victim.proc is not None
    failed_at = time.monotonic()
    if failure == "kill":
        victim.kill()
    else:
        victim.proc.send_signal(signal.SIGSTOP)

    def first_delivery_sent_after_failure() -> float | None:
        times = [
            t for seq, t in list(flow.received.items()) if flow.send_times.get(seq, 0) > failed_at
        ]
        return min(times) if times else None

    h.wait_for(lambda: first_delivery_sent_after_failure() is not None, 6, "flow to move")
    outage = first_delivery_sent_after_failure() - failed_at  # type: ignore[operator]
    assert a.bridge.stats(b.pub).replica != carrier
    assert outage < 5.0

    if failure == "kill":
        victim.start()  # the same address comes back
    else:
        victim.proc.send_signal(signal.SIGCONT)
    h.wait_for(lambda: a.bridge.stats(b.pub).replica == carrier, 15, "flow back on the replica")
    back_at = time.monotonic()
    h.wait_for(
        lambda: sum(1 for t in flow.received.values() if t > back_at) > 20, 10, "flow after return"
    )
    flow.stop()
    print(f"{failure}: traffic on the surviving replica {outage:.2f}s after the failure")


def up_once(links: dict[str, dict[str, object]]) -> set[str] | None:
    """The replicas linked, if every link is up and connected exactly once
    (never dropped); None otherwise."""
    ok = all(link["up"] and link["connects"] == 1 and not link["error"] for link in links.values())
    return set(links) if ok else None


@pytest.fixture
def lab_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns("relay.wirekube.test")
    server.aaaa_rcode = dns.rcode.NOERROR  # A records only, as a headless Service has
    yield server
    server.close()


def test_replicas_discovered_by_dns_are_used_after_the_next_resolve(
    relay_factory, nodes, h, lab_dns
) -> None:
    r1 = relay_factory(host="127.0.0.1")
    port = r1.address[1]
    r2 = relay_factory(host="127.0.0.2", port=port)  # same port, second loopback address
    lab_dns.a = ["127.0.0.1"]
    source = DnsSource("relay.wirekube.test", port, ["127.0.0.1"], lab_dns.port)
    hub = nodes(dns_source=source, resolve_interval=1.0)
    spokes = [nodes(dns_source=source, resolve_interval=1.0) for _ in range(12)]
    hub.bridge.set_relayed_peers({s.pub for s in spokes})
    for s in spokes:
        s.bridge.set_relayed_peers({hub.pub})
    assert hub.bridge.pool.wait_live(1, 10)
    assert hub.bridge.pool.live_replicas() == (f"127.0.0.1:{port}",)

    lab_dns.a = ["127.0.0.1", "127.0.0.2"]
    for n in [hub, *spokes]:
        assert n.bridge.pool.wait_live(2, 10), "second replica not used after re-resolve"

    def send_all() -> None:
        for s in spokes:
            hub.wg.sendto(b"ping", hub.bridge.endpoint_for(s.pub))

    send_all()
    for s in spokes:
        s.wg.settimeout(5)
        assert s.wg.recv(100) == b"ping"
    carriers = {hub.bridge.stats(s.pub).replica for s in spokes}
    assert carriers == {f"127.0.0.1:{port}", f"127.0.0.2:{port}"}  # flows spread over both

    lab_dns.a = ["127.0.0.2"]  # the first replica leaves the Service
    h.wait_for(
        lambda: hub.bridge.pool.live_replicas() == (f"127.0.0.2:{port}",), 10, "replica removal"
    )
    send_all()
    for s in spokes:
        h.wait_for(lambda s=s: s.bridge.pool.live_replicas() == (f"127.0.0.2:{port}",), 10, "spoke")
    send_all()
    for s in spokes:
        data = s.wg.recv(100)
        assert data == b"ping"
    assert lab_dns.queries >= 3
    assert r2.proc is not None and r2.proc.poll() is None


def test_a_new_relay_address_keeps_the_bridge_and_the_links_still_wanted(
    relay_factory, nodes, h, lab_dns, wg
) -> None:
    """The mesh's relay endpoint rewritten (an IP, then a DNS name resolving to
    it, then another IP): WireGuard's endpoints for relayed peers (the bridge's
    sockets) never change, the link to a replica still wanted is never dropped,
    and a flow through it loses nothing."""
    r1 = relay_factory(host="127.0.0.1")
    port = r1.address[1]
    r2 = relay_factory(host="127.0.0.2", port=port)
    b = nodes(addresses=[r1.address])
    manager = RelayManager(wgkey.generate_private_key())
    try:
        bridge = manager.ensure(RelayTarget(addresses=(r1.address,)), wg.getsockname()[1])
        assert bridge is not None
        a = SimpleNamespace(bridge=bridge, wg=wg, pub=wgkey.public_key(manager.private_key))
        h.pair(a, b)
        h.wait_for(bridge.live_replicas, 10, "the worker's bridge to register")
        assert b.bridge.pool.wait_live(1, 10)
        endpoint = bridge.endpoint_for(b.pub)
        name = f"127.0.0.1:{port}"
        assert up_once(bridge.links()) == {name}
        flow = h.Flow(a, b).start()
        h.wait_for(lambda: len(flow.received) > 20, 10, "the flow")

        lab_dns.a = ["127.0.0.1"]
        dns = DnsName("relay.wirekube.test", port, ("127.0.0.1",), lab_dns.port)
        assert manager.ensure(RelayTarget(dns=dns), wg.getsockname()[1]) is bridge
        h.wait_for(lambda: lab_dns.queries > 0, 5, "the pool to resolve the new name")
        time.sleep(0.5)
        # the same link, never dropped
        assert up_once(bridge.links()) == {name}
        assert bridge.endpoint_for(b.pub) == endpoint
        flow.stop()
        assert flow.loss() == 0

        assert manager.ensure(RelayTarget(addresses=(r2.address,)), wg.getsockname()[1]) is bridge
        h.wait_for(lambda: bridge.live_replicas() == (f"127.0.0.2:{port}",), 10, "the new replica")
        assert bridge.endpoint_for(b.pub) == endpoint
        assert not bridge.links().get(name, {}).get("up")
    finally:
        manager.stop()
