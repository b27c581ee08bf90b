"""Two bridges exchange UDP datagrams through a real relay process; admin gRPC, health,
metrics and clean shutdown."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.request
from collections import Counter

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
    sa, sb = a.bridge.stats(b.pub), b.bridge.stats(a.pub)
    # complete, in order, unmodified (else: where they went missing)
    assert got == payloads, f"{len(got)} of {len(payloads)}; a sent {sa}, b got {sb}"
    # the datagrams come from the socket WireGuard uses as that peer's endpoint
    assert srcs == {b.bridge.endpoint_for(a.pub)}
    b.wg.sendto(b"reply", b.bridge.endpoint_for(a.pub))
    data, src_a = a.wg.recvfrom(2048)
    assert data == b"reply" and src_a == a.bridge.endpoint_for(b.pub)
    sa, sb = a.bridge.stats(b.pub), b.bridge.stats(a.pub)
    assert sa.tx_frames == len(payloads) and sb.rx_frames == len(payloads)
    assert sb.last_rx > 0 and sa.replica == f"{relay.address[0]}:{relay.address[1]}"


def receive(sock: socket.socket, count: int) -> tuple[list[bytes], threading.Thread]:
    """WireGuard reading: up to ``count`` datagrams (until a read times out),
    on a thread of their own; the list fills as they arrive."""
    got: list[bytes] = []

    def run() -> None:
        with contextlib.suppress(TimeoutError):
            while len(got) < count:
                got.append(sock.recv(65536))

    reader = threading.Thread(target=run)
    reader.start()
    return got, reader


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
    b.wg.settimeout(5)
    # empty datagrams too: a run of them must not be taken for a GSO failure
    sizes = ([1452] * 100 + [60, 1452, 1452, 700, 700, 1452, 0, 0, 0] + [300] * 80) * 3
    payloads = [i.to_bytes(4, "big") + os.urandom(n - 4) if n else b"" for i, n in enumerate(sizes)]
    got, reader = receive(b.wg, len(payloads))
    dst = a.bridge.endpoint_for(b.pub)
    for p in payloads:  # back to back: the bridge drains them in batches
        a.wg.sendto(p, dst)
    reader.join(30)
    assert got == payloads
    assert b.bridge._gso, "this kernel has UDP GSO; the bridge should be using it"
    assert max(runs) > 1 and sum(runs) == len(payloads)
    print(f"{len(payloads)} datagrams in {len(runs)} sends (longest run {max(runs)})")


def test_recvmmsg_uplink_sends_bulk_calls_straight_from_its_arena(
    relay_factory, nodes, h, monkeypatch
) -> None:
    """Bursts drained with recvmmsg: calls of equal-size datagrams leave from the
    arena as they landed (the uniform path), the slot size follows the traffic
    (1452 -> 1400 -> 96), and mixed calls, spills past the slot and empty
    datagrams all reach WireGuard whole and in order."""
    uniform: list[int] = []
    real = RelayBridge._uniform_vectors

    def spy(self: RelayBridge, rx, n: int, key: bytes, limit: int):  # type: ignore[no-untyped-def]
        uniform.append(rx.size)
        return real(self, rx, n, key, limit)

    monkeypatch.setattr(RelayBridge, "_uniform_vectors", spy)
    relay = relay_factory()
    a = nodes(addresses=[relay.address], use_mmsg=True)
    b = nodes(addresses=[relay.address])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    b.wg.settimeout(5)
    bursts = [
        [1452] * 200,  # the starting slot size: uniform at once
        [1400] * 400,  # two mixed calls, then the slot moves to 1400
        [1400, 60, 0, 9000, 1400, 16 * 1024, 1] * 12,  # mixed: spills, empties, tiny
        [96] * 300,  # an ACK stream: the slot moves down
        [96, 1452] * 40,  # larger than the slot: every other one spills
    ]
    sizes = [n for burst in bursts for n in burst]
    payloads = [
        i.to_bytes(4, "big") + os.urandom(n - 4) if n >= 4 else b"?" * n
        for i, n in enumerate(sizes)
    ]
    got, reader = receive(b.wg, len(payloads))
    dst = a.bridge.endpoint_for(b.pub)
    i = 0
    for burst in bursts:
        # Holding the bridge's lock parks its uplink thread, so each burst waits
        # in the socket and is drained in full recvmmsg calls.
        with a.bridge._lock:
            for _ in burst:
                a.wg.sendto(payloads[i], dst)
                i += 1
        time.sleep(0.2)
    reader.join(30)
    assert got == payloads
    assert a.bridge.stats(b.pub).tx_frames == len(payloads)
    assert {1452, 1400, 96} <= set(uniform), uniform
    print(f"{len(payloads)} datagrams; uniform calls per slot size: {Counter(uniform)}")


@pytest.mark.parametrize("use_mmsg", [False, True], ids=["recv_into", "recvmmsg"])
def test_a_relay_with_small_frames_gets_what_fits_and_counts_the_rest(
    relay_factory, nodes, h, use_mmsg
) -> None:
    """A relay configured for 1000-byte frames: datagrams that fit travel (several
    to a frame), larger ones are dropped and counted, never sent as frames the
    relay would close the link for."""
    relay = relay_factory("--max-payload=1000")
    a = nodes(addresses=[relay.address], use_mmsg=use_mmsg)
    b = nodes(addresses=[relay.address])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    b.wg.settimeout(2)
    sizes = [1452] * 70 + [300] * 70 + [966, 967, 1400, 5]
    payloads = [i.to_bytes(4, "big") + os.urandom(n - 4) for i, n in enumerate(sizes)]
    with a.bridge._lock:  # park the uplink: the datagrams are drained in bursts
        for p in payloads:
            a.wg.sendto(p, a.bridge.endpoint_for(b.pub))
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(b.wg.recv(65536))
    fits = [p for p in payloads if len(p) + 2 <= 1000 - 32]  # entry within a frame's room
    assert got == fits and len(fits) == 72
    assert a.bridge.stats(b.pub).drops == len(payloads) - len(fits)
    assert a.bridge.pool.wait_live(1, 1)  # the link was never closed for a large frame


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
