"""Two bridges exchange UDP datagrams through a real relay process; admin gRPC, health,
metrics and clean shutdown."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wirekube_agent.relay import RelayBridge
from wirekube_common import wgkey
from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc


@pytest.mark.parametrize("use_mmsg", [False, True], ids=["recv_into", "recvmmsg"])
def test_two_bridges_exchange_datagrams_both_ways(relay_factory, nodes, h, use_mmsg) -> None:
    relay = relay_factory()
    a = nodes(addresses=[relay.address], use_mmsg=use_mmsg)
    b = nodes(addresses=[relay.address], use_mmsg=use_mmsg)
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    b.wg.settimeout(5)
    a.wg.settimeout(5)
    sizes = [0, 1, 100, 1452, 9000, 16 * 1024]
    payloads = [os.urandom(n) for n in sizes] + [os.urandom(1400) for _ in range(500)]
    got: list[bytes] = []
    srcs: set[tuple[str, int]] = set()

    def receive() -> None:  # WireGuard reads as packets arrive
        with contextlib.suppress(TimeoutError):
            while len(got) < len(payloads):
                data, addr = b.wg.recvfrom(65536)
                got.append(data)
                srcs.add(addr)

    reader = threading.Thread(target=receive)
    reader.start()
    for p in payloads:
        a.wg.sendto(p, a.bridge.endpoint_for(b.pub))
        time.sleep(0.0005)
    reader.join(30)
    assert got == payloads  # complete, in order, unmodified
    # the datagrams come from the socket WireGuard uses as that peer's endpoint
    assert srcs == {b.bridge.endpoint_for(a.pub)}
    b.wg.sendto(b"reply", b.bridge.endpoint_for(a.pub))
    data, src_a = a.wg.recvfrom(2048)
    assert data == b"reply" and src_a == a.bridge.endpoint_for(b.pub)
    sa, sb = a.bridge.stats(b.pub), b.bridge.stats(a.pub)
    assert sa.tx_frames == len(payloads) and sb.rx_frames == len(payloads)
    assert sb.last_rx > 0 and sa.replica == f"{relay.address[0]}:{relay.address[1]}"


def test_batches_reach_wireguard_as_gso_runs_cut_into_the_original_datagrams(
    relay_factory, nodes, h, monkeypatch
) -> None:
    """Bursts (as bulk traffic makes) arrive in RECV_BATCH frames; the bridge
    sends runs of one size in one GSO sendmsg and WireGuard still reads every
    datagram, whole and in order, whatever the mix of sizes."""
    runs: list[int] = []
    real = RelayBridge._send_run

    def spy(self: RelayBridge, p: object, run: list[memoryview], size: int, total: int) -> None:
        runs.append(len(run))
        real(self, p, run, size, total)  # type: ignore[arg-type]

    monkeypatch.setattr(RelayBridge, "_send_run", spy)
    relay = relay_factory()
    a = nodes(addresses=[relay.address])
    b = nodes(addresses=[relay.address])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    b.wg.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    b.wg.settimeout(5)
    # empty datagrams too: a run of them must not be taken for a GSO failure
    sizes = ([1452] * 100 + [60, 1452, 1452, 700, 700, 1452, 0, 0, 0] + [300] * 80) * 3
    payloads = [i.to_bytes(4, "big") + os.urandom(n - 4) if n else b"" for i, n in enumerate(sizes)]
    got: list[bytes] = []

    def receive() -> None:
        with contextlib.suppress(TimeoutError):
            while len(got) < len(payloads):
                got.append(b.wg.recv(65536))

    reader = threading.Thread(target=receive)
    reader.start()
    dst = a.bridge.endpoint_for(b.pub)
    for p in payloads:  # back to back: the bridge drains them in batches
        a.wg.sendto(p, dst)
    reader.join(30)
    assert got == payloads
    assert b.bridge._gso, "this kernel has UDP GSO; the bridge should be using it"
    assert max(runs) > 1 and sum(runs) == len(payloads)
    print(f"{len(payloads)} datagrams in {len(runs)} sends (longest run {max(runs)})")


def test_admin_grpc_health_and_metrics(relay_factory, nodes, h) -> None:
    relay = relay_factory()
    a = nodes(addresses=[relay.address])
    b = nodes(addresses=[relay.address])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    for _ in range(10):
        a.wg.sendto(b"x" * 200, a.bridge.endpoint_for(b.pub))
    b.wg.settimeout(5)
    for _ in range(10):
        b.wg.recv(2048)
    with grpc.insecure_channel(f"127.0.0.1:{relay.ports['admin_port']}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "wirekube.relay.v1.RelayAdmin"):
            st = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5).status
            assert st == health_pb2.HealthCheckResponse.SERVING
        admin = admin_pb2_grpc.RelayAdminStub(ch)
        stats = admin.GetStats(admin_pb2.GetStatsRequest(), timeout=5)
        assert stats.protocol_version == 1 and stats.registered_peers == 2
        assert stats.frames_forwarded >= 1 and stats.bytes_forwarded >= 10 * 200
        peers = admin.ListPeers(admin_pb2.ListPeersRequest(), timeout=5).peers
        assert {p.public_key for p in peers} == {wgkey.encode(a.pub), wgkey.encode(b.pub)}
        by_key = {p.public_key: p for p in peers}
        assert by_key[wgkey.encode(b.pub)].bytes_out >= 10 * 200
    url = f"http://127.0.0.1:{relay.ports['metrics_port']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert metrics["wirekube_relay_registered_peers"] == 2
    assert metrics["wirekube_relay_frames_forwarded_total"] >= 1
    assert metrics["wirekube_relay_bytes_forwarded_total"] >= 2000
    assert 'wirekube_relay_frames_dropped_total{reason="no-peer"}' in metrics
    # SIGTERM: clean exit, clients told, health goes away
    assert relay.terminate() == 0
    h.wait_for(lambda: not a.bridge.pool.live_replicas(), 5, "clients to notice shutdown")
