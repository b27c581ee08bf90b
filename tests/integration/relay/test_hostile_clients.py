"""Hostile clients against a real relay while a legitimate relayed flow runs.

Every attack must fail (its connection closed with a reason, nothing registered
or evicted) and the legitimate flow must be unaffected."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import grpc

from wirekube_agent.relay.link import register
from wirekube_common import wgkey
from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import ClientHandshake

DEADLINE = 2.0


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> list[f.Event]:
    """Everything the relay sends until it closes the connection (fails if it does not)."""
    sock.settimeout(timeout)
    parser = f.FrameParser()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        parser.feed(data)
    return parser.events()


def close_code(events: list[f.Event]) -> int | None:
    closes = [e for e in events if isinstance(e, f.Close)]
    return closes[-1].code if closes else None


def hello_and_challenge(
    addr: tuple[str, int], claimed_key: bytes
) -> tuple[socket.socket, f.Challenge]:
    s = socket.create_connection(addr, timeout=5)
    s.sendall(f.encode_hello(claimed_key))
    parser = f.FrameParser()
    while True:
        parser.feed(s.recv(4096))
        ev = parser.next_event()
        if ev is not None:
            assert isinstance(ev, f.Challenge)
            return s, ev


def test_attacks_fail_and_the_mesh_is_unaffected(relay_factory, nodes, h) -> None:
    relay = relay_factory(
        f"--registration-deadline={DEADLINE}", "--max-payload=16384", "--max-pending=2000"
    )
    addr = relay.address
    a = nodes(addresses=[addr])
    b = nodes(addresses=[addr])
    h.pair(a, b)
    assert a.bridge.pool.wait_live(1, 10) and b.bridge.pool.wait_live(1, 10)
    flow = h.Flow(a, b).start()
    h.wait_for(lambda: len(flow.received) > 20, 10, "the legitimate flow")

    # 1. garbage bytes
    s = socket.create_connection(addr)
    s.sendall(os.urandom(4096))
    assert close_code(read_until_closed(s)) in (f.CLOSE_PROTOCOL_ERROR, f.CLOSE_FRAME_TOO_LARGE)

    # 2. wrong proof for one's own key
    s, _ch = hello_and_challenge(addr, wgkey.public_key(wgkey.generate_private_key()))
    s.sendall(f.encode_proof(os.urandom(32)))
    assert close_code(read_until_closed(s)) == f.CLOSE_AUTH_FAILED

    # 3. replayed registration: record a legitimate HELLO + PROOF, replay them elsewhere
    priv = wgkey.generate_private_key()
    hs = ClientHandshake(priv)
    s = socket.create_connection(addr, timeout=5)
    hello = hs.hello()
    s.sendall(hello)
    parser = f.FrameParser()
    parser.feed(s.recv(4096))
    ch = parser.next_event()
    assert isinstance(ch, f.Challenge)
    proof = hs.on_challenge(ch, time.time())
    s.sendall(proof)
    parser.feed(s.recv(4096))
    assert isinstance(parser.next_event(), f.Ok)
    s.close()
    r = socket.create_connection(addr, timeout=5)
    r.sendall(hello)
    time.sleep(0.2)
    r.sendall(proof)
    assert close_code(read_until_closed(r)) == f.CLOSE_AUTH_FAILED

    # 4. registering another node's key (a's), proof made with the attacker's own key
    s, ch = hello_and_challenge(addr, a.pub)
    attacker = ClientHandshake(wgkey.generate_private_key())
    attacker.hello()
    s.sendall(attacker.on_challenge(ch, time.time()))
    assert close_code(read_until_closed(s)) == f.CLOSE_AUTH_FAILED

    # 5a. oversized frame before registration
    s = socket.create_connection(addr)
    s.sendall(bytes((f.HELLO, 0xEA, 0x60)) + bytes(1000))
    assert close_code(read_until_closed(s)) == f.CLOSE_FRAME_TOO_LARGE

    # 5b. a registered (valid) client sends an oversized frame, and before that a
    # frame to a: it arrives stamped with its own key, never as b
    hostile_priv = wgkey.generate_private_key()
    s = socket.create_connection(addr, timeout=5)
    register(s, hostile_priv)
    s.sendall(f.encode_send(a.pub, b"pretend-to-be-b"))
    h.wait_for(
        lambda: wgkey.public_key(hostile_priv) in a.bridge.unknown_sources, 5, "stamped frame"
    )
    s.sendall(bytes((f.SEND, 0x4E, 0x20)) + bytes(20000))  # 20000 > 16384
    assert close_code(read_until_closed(s)) == f.CLOSE_FRAME_TOO_LARGE

    # 6. a thousand idle connections from one address: the first 64 (the
    # per-source pending limit) closed by the registration deadline, the rest at once
    idle = []
    for _ in range(1000):
        c = socket.create_connection(addr)
        c.setblocking(False)
        idle.append(c)
    t0 = time.monotonic()
    open_socks = set(idle)
    while open_socks and time.monotonic() - t0 < DEADLINE + 15:
        for c in list(open_socks):
            with contextlib.suppress(BlockingIOError):
                try:
                    if not c.recv(65536):
                        open_socks.discard(c)
                except ConnectionResetError:
                    open_socks.discard(c)
        time.sleep(0.1)
    closed_after = time.monotonic() - t0
    for c in idle:
        c.close()
    assert not open_socks, f"{len(open_socks)} idle connections still open"
    assert closed_after < DEADLINE + 10

    flow.stop()
    # the legitimate flow: (almost) nothing lost, never stalled
    assert flow.loss() <= max(2, flow.sent // 100), (flow.sent, len(flow.received))
    assert flow.longest_gap() < 1.0
    # both legitimate nodes still registered from their original connections
    with grpc.insecure_channel(f"127.0.0.1:{relay.ports['admin_port']}") as chan:
        admin = admin_pb2_grpc.RelayAdminStub(chan)
        peers = {p.public_key for p in admin.ListPeers(admin_pb2.ListPeersRequest()).peers}
        assert {wgkey.encode(a.pub), wgkey.encode(b.pub)} <= peers
        stats = admin.GetStats(admin_pb2.GetStatsRequest(), timeout=5)
    fails = {x.reason: x.count for x in stats.auth_failures}
    assert fails.get("bad-proof", 0) >= 3 and fails.get("deadline", 0) >= 64
    assert a.bridge.pool.links[f"{addr[0]}:{addr[1]}"].connects == 1  # never kicked off
    assert "reason=auth:bad-proof" in relay.output()  # rejections are logged with a reason
