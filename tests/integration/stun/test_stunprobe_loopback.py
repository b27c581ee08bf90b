"""The real wirekube-stun-probe process on loopback: UDP, TCP, RFC 5780,
garbage, a bounded flood, gRPC health and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wirekube_common.stun import codec
from wirekube_common.stun.aio import UdpStunSocket
from wirekube_common.stun.codec import MessageClass, OtherAddress, ResponseOrigin
from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.framing import StreamSplitter
from wirekube_common.stun.timers import RetransmitPolicy

FAST = RetransmitPolicy(0.1, 3, 4)


def E(host: str, port: int) -> Endpoint:
    return Endpoint.parse(f"{host}:{port}")


def test_udp_binding_and_rfc5780_change_requests(stun_probe) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with await UdpStunSocket.open("127.0.0.1", 0, policy=FAST) as sock:
            server = E("127.0.0.1", stun_probe.port)
            plain = await sock.binding(server)
            assert plain.ok and plain.mapped == sock.local
            assert plain.other_address == E("127.0.0.2", stun_probe.alt_port)
            assert plain.response_origin == server and plain.source == server
            cases = {
                (True, True): E("127.0.0.2", stun_probe.alt_port),
                (True, False): E("127.0.0.2", stun_probe.port),
                (False, True): E("127.0.0.1", stun_probe.alt_port),
            }
            for (ci, cp), expected in cases.items():
                r = await sock.binding(server, change_ip=ci, change_port=cp)
                assert r.ok, r
                assert r.source == expected and r.response_origin == expected
                assert r.mapped == sock.local
            # All four sockets answer directly too.
            for host in ("127.0.0.1", "127.0.0.2"):
                for port in (stun_probe.port, stun_probe.alt_port):
                    r = await sock.binding(E(host, port))
                    assert r.ok and r.source == E(host, port)

    asyncio.run(go())


def test_tcp_binding_pipelined(stun_probe) -> None:  # type: ignore[no-untyped-def]
    reqs = [codec.binding_request(fingerprint=True) for _ in range(3)]
    with socket.create_connection(("127.0.0.1", stun_probe.port), timeout=5) as s:
        s.sendall(b"".join(codec.encode(r) for r in reqs))
        splitter, got = StreamSplitter(), []
        while len(got) < 3:
            got += splitter.feed(s.recv(4096))
        local = Endpoint.from_sockaddr(s.getsockname())
    msgs = [codec.decode(g) for g in got]
    assert [m.key() for m in msgs] == [r.key() for r in reqs]
    assert all(m.cls == MessageClass.SUCCESS and m.mapped() == local for m in msgs)
    assert msgs[0].get(ResponseOrigin) is not None and msgs[0].get(OtherAddress) is not None
    # CHANGE-REQUEST makes no sense over TCP: 400.
    with socket.create_connection(("127.0.0.1", stun_probe.port), timeout=5) as s:
        s.sendall(codec.encode(codec.binding_request(change_port=True)))
        msg = codec.decode(s.recv(4096))
        assert msg.cls == MessageClass.ERROR and msg.get(codec.ErrorCode).code == 400  # type: ignore[union-attr]
    # Garbage on TCP closes the connection without an answer.
    with socket.create_connection(("127.0.0.1", stun_probe.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096) == b""
    m = stun_probe.metrics()
    assert m['wirekube_stun_drops_total{reason="tcp-framing",transport="tcp"}'] == 1
    assert m['wirekube_stun_responses_total{kind="success",transport="tcp"}'] == 3


def test_garbage_is_ignored_and_counted(stun_probe) -> None:  # type: ignore[no-untyped-def]
    junk = [
        b"",
        b"x",
        b"\x01\x00\x00\x00" + bytes(144),
        bytes(20),
        b"\xff" * 64,
        codec.encode(codec.StunMessage(1, MessageClass.INDICATION, bytes(12))),
        codec.encode(codec.binding_request())[:-1] + b"\x00",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for j in junk:
            s.sendto(j, ("127.0.0.1", stun_probe.port))
        # Nothing comes back for any of it; a real request still works afterwards.
        req = codec.binding_request()
        s.sendto(codec.encode(req), ("127.0.0.1", stun_probe.port))
        assert codec.decode(s.recv(2048)).key() == req.key()
        s.settimeout(0.3)
        try:
            extra = s.recv(2048)
        except TimeoutError:
            extra = b""
        assert extra == b""
    m = stun_probe.metrics()
    dropped = sum(
        v
        for k, v in m.items()
        if k.startswith("wirekube_stun_drops_total") and 'transport="udp"' in k
    )
    # The zero-length datagram is counted as a request and dropped too.
    assert dropped == len(junk)
    assert m['wirekube_stun_drops_total{reason="not-request",transport="udp"}'] == 1


def test_bounded_flood_is_rate_limited(stun_probe_factory) -> None:  # type: ignore[no-untyped-def]
    probe = stun_probe_factory("--rate", "20", "--burst", "40")
    n = 2000
    replies = 0
    key = 'wirekube_stun_responses_total{kind="success",transport="udp"}'
    # The readiness probe spent tokens of 127.0.0.1's bucket: wait for it to
    # refill (burst 40 at 20/s) so the flood starts from a full burst. Its
    # answers are counted once they were sent, so read the counter only now.
    time.sleep(40 / 20 + 0.2)
    before = probe.metrics().get(key, 0.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        s.setblocking(False)
        req = codec.encode(codec.binding_request(fingerprint=False))
        start = time.monotonic()
        for _ in range(n):
            s.sendto(req, ("127.0.0.1", probe.port))
        elapsed = time.monotonic() - start
        time.sleep(1.0)
        sent_bytes = len(req) * n
        got_bytes = 0
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            replies += 1
            got_bytes += len(data)
    budget = 40 + 20 * (elapsed + 1.5)
    print(
        f"flood: {n} requests in {elapsed:.3f}s -> {replies} replies "
        f"({got_bytes} of {sent_bytes} bytes)"
    )
    assert 40 <= replies <= budget
    m = probe.metrics()
    limited = m['wirekube_stun_drops_total{reason="rate-limited",transport="udp"}']
    received = m['wirekube_stun_requests_total{transport="udp"}']
    assert limited >= received - budget
    assert m[key] - before == replies


def test_health_and_sigterm(stun_probe_factory) -> None:  # type: ignore[no-untyped-def]
    probe = stun_probe_factory(rfc5780=False)
    with grpc.insecure_channel(f"127.0.0.1:{probe.health_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        resp = stub.Check(
            health_pb2.HealthCheckRequest(service="wirekube.stunprobe.v1.StunProbe"), timeout=5
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    start = time.monotonic()
    assert probe.proc.stop(signal.SIGTERM) == 0
    assert time.monotonic() - start < 5
    lines = [json.loads(line) for line in probe.proc.text().splitlines() if line.startswith("{")]
    msgs = [line["msg"] for line in lines]
    assert "stun server listening" in msgs and msgs[-1] == "stopped"
    assert all({"ts", "level", "service", "msg"} <= set(line) for line in lines)
    # The port is released.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", probe.port))


def test_bad_configuration_exits_nonzero() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wirekube_stunprobe", "--alternate-address", "127.0.0.2"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0 and b"RFC 5780 mode needs specific" in out.stderr


def test_ipv6_udp_and_tcp(stun_probe_factory) -> None:  # type: ignore[no-untyped-def]
    probe = stun_probe_factory("--also-listen", "::1")

    async def go() -> None:
        async with await UdpStunSocket.open("::1", 0, policy=FAST) as sock:
            r = await sock.binding(Endpoint.parse(f"[::1]:{probe.port}"))
            assert r.ok and r.mapped == sock.local and r.mapped.family == 6
            # The extra address is plain RFC 5389: no alternate, CHANGE-REQUEST is refused.
            assert r.other_address is None
            refused = await sock.binding(Endpoint.parse(f"[::1]:{probe.port}"), change_ip=True)
            assert refused.error is not None and refused.error.code == 420

    asyncio.run(go())
    with socket.create_connection(("::1", probe.port), timeout=5) as s:
        req = codec.binding_request()
        s.sendall(codec.encode(req))
        msg = codec.decode(s.recv(4096))
        assert msg.key() == req.key()
        assert msg.mapped() == Endpoint.from_sockaddr(s.getsockname())
