"""Forwarder logic driven through fake transports (no sockets): stamping, coalescing,
drops, backpressure, stalls, takeover, hostile input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import ClientHandshake
from wirekube_relay import forwarder, timers
from wirekube_relay.admin.stats import RelayStats
from wirekube_relay.client.auth import AllowList, Authenticator
from wirekube_relay.forwarder import Context, Limits, RelayConnection


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.writes)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default


@pytest.fixture
def ctx() -> Iterator[Context]:
    loop = asyncio.new_event_loop()
    yield Context(loop, Authenticator("relay-t", AllowList(False)), RelayStats(), Limits())
    loop.close()


def feed(conn: RelayConnection, data: bytes, end_round: bool = True) -> None:
    """Deliver bytes the way asyncio does: through get_buffer/buffer_updated,
    then (``end_round``) let the loop run the round's flush of staged frames."""
    while data:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]
    if end_round:
        conn.ctx.loop.run_until_complete(asyncio.sleep(0))


def events(data: bytes) -> list[f.Event]:
    p = f.FrameParser()
    p.feed(data)
    return p.events()


def connect(
    ctx: Context, priv: bytes | None = None
) -> tuple[RelayConnection, FakeTransport, bytes]:
    priv = priv or wgkey.generate_private_key()
    conn = RelayConnection(ctx)
    tr = FakeTransport()
    conn.connection_made(tr)
    hs = ClientHandshake(priv)
    feed(conn, hs.hello())
    (ch,) = events(tr.data())
    assert isinstance(ch, f.Challenge)
    tr.writes.clear()
    feed(conn, hs.on_challenge(ch, 0))
    (ok,) = events(tr.data())
    assert isinstance(ok, f.Ok)
    tr.writes.clear()
    return conn, tr, wgkey.public_key(priv)


def test_source_is_stamped_and_frames_coalesced(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    _b, tb, kb = connect(ctx)
    forged = wgkey.public_key(wgkey.generate_private_key())
    wire = b"".join(f.encode_send(kb, bytes([i]) * 100) for i in range(5))
    feed(a, wire)
    assert len(tb.writes) == 1  # five frames, one write
    assert events(tb.data()) == [f.Recv(ka, bytes([i]) * 100) for i in range(5)]
    assert ctx.stats.frames_forwarded == 5
    # a client naming someone else as the key of a SEND only chooses the destination
    tb.writes.clear()
    feed(a, f.encode_send(kb, forged + b"payload"))
    assert events(tb.data()) == [f.Recv(ka, forged + b"payload")]


def test_batches_are_forwarded_as_recv_batches(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    _b, tb, kb = connect(ctx)
    feed(a, f.encode_send_batch(kb, [b"one", b"two", b""]))
    assert events(tb.data()) == [f.RecvBatch(ka, (b"one", b"two", b""))]


def test_interleaved_destinations_one_write_each_in_order(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    peers = [connect(ctx) for _ in range(3)]
    wire = b"".join(f.encode_send(peers[i % 3][2], i.to_bytes(2, "big")) for i in range(30))
    feed(a, wire)
    for idx, (_c, tr, _k) in enumerate(peers):
        assert len(tr.writes) == 1
        assert events(tr.data()) == [f.Recv(ka, i.to_bytes(2, "big")) for i in range(idx, 30, 3)]


def test_split_frames_across_reads(ctx: Context) -> None:
    a, _ta, _ka = connect(ctx)
    _b, tb, kb = connect(ctx)
    wire = f.encode_send(kb, b"x" * 1000) * 3
    for i in range(0, len(wire), 7):  # 7-byte reads
        feed(a, wire[i : i + 7])
    assert [len(e.packet) for e in events(tb.data()) if isinstance(e, f.Recv)] == [1000] * 3


def test_unknown_destination_dropped_with_rate_limited_peer_gone(ctx: Context) -> None:
    a, ta, _ka = connect(ctx)
    nobody = wgkey.public_key(wgkey.generate_private_key())
    feed(a, f.encode_send(nobody, b"x") * 3)
    feed(a, f.encode_send(nobody, b"x"))
    assert ctx.stats.drops["no-peer"] == 4
    assert events(ta.data()) == [f.PeerGone(nobody)]  # once per interval


def test_frames_to_a_rotated_nodes_old_key_reach_its_new_registration(ctx: Context) -> None:
    """Until its switch is done (auth.retained), a rotated node's old key
    stands for its new one: its peers still address it by the old key."""
    a, _ta, ka = connect(ctx)
    _b, tb, kb_new = connect(ctx)  # b re-registered under its new key
    kb_old = wgkey.public_key(wgkey.generate_private_key())  # no registration any more
    ctx.auth.allowlist.moved = {kb_old: kb_new}
    feed(a, f.encode_send(kb_old, b"still for b"))
    assert events(tb.data()) == [f.Recv(ka, b"still for b")]
    # the rotation over, the old key is nobody's
    ctx.auth.allowlist.moved = {}
    tb.writes.clear()
    feed(a, f.encode_send(kb_old, b"late"))
    assert tb.data() == b"" and ctx.stats.drops["no-peer"] == 1


def test_ping_answered_and_oversize_closes(ctx: Context) -> None:
    ctx.limits.max_payload = 2000
    a, ta, _ka = connect(ctx)
    feed(a, f.encode_ping(b"12345678"))
    assert events(ta.data()) == [f.Pong(b"12345678")]
    ta.writes.clear()
    feed(a, bytes((f.SEND, 0x10, 0x00)))  # declares 4096 > 2000: closed on the header
    assert ta.closed
    assert events(ta.data())[-1] == f.Close(
        f.CLOSE_FRAME_TOO_LARGE, "frame of 4096 bytes exceeds limit 2000"
    )


@pytest.mark.parametrize(
    "wire",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes((f.HELLO, 0x02, 0x00)) + bytes(512),  # pre-auth frame above the handshake limit
        f.encode_send(bytes(32), b"x"),  # data before registration
        f.encode_proof(bytes(32)),  # proof without hello
    ],
)
def test_hostile_pre_registration_input_closes(ctx: Context, wire: bytes) -> None:
    conn = RelayConnection(ctx)
    tr = FakeTransport()
    conn.connection_made(tr)
    feed(conn, wire)
    assert tr.closed
    assert conn.key is None
    assert len(ctx.registry) == 0


def test_impostor_cannot_register_or_evict(ctx: Context) -> None:
    victim_priv = wgkey.generate_private_key()
    victim, tv, kv = connect(ctx, victim_priv)
    imp = RelayConnection(ctx)
    ti = FakeTransport()
    imp.connection_made(ti)
    attacker = ClientHandshake(wgkey.generate_private_key())
    attacker.hello()
    feed(imp, f.encode_hello(kv))  # claims the victim's key
    (ch,) = events(ti.data())
    assert isinstance(ch, f.Challenge)
    feed(imp, attacker.on_challenge(ch, 0))
    assert ti.closed
    assert ctx.registry.get(kv) is victim and not tv.closed
    assert ctx.stats.auth_failures["bad-proof"] == 1


def test_second_valid_registration_takes_over(ctx: Context) -> None:
    priv = wgkey.generate_private_key()
    old, told, key = connect(ctx, priv)
    new, _tnew, _ = connect(ctx, priv)
    assert ctx.registry.get(key) is new
    assert told.closed and events(told.data())[-1].code == f.CLOSE_REPLACED  # type: ignore[union-attr]
    old.connection_lost(None)  # the late close of the old one must not unregister the new one
    assert ctx.registry.get(key) is new


def test_allowlist_rejects_unknown_keys(ctx: Context) -> None:
    allowed_priv = wgkey.generate_private_key()
    ctx.auth.allowlist.enabled = True
    ctx.auth.allowlist.replace([wgkey.public_key(allowed_priv)])
    connect(ctx, allowed_priv)
    conn = RelayConnection(ctx)
    tr = FakeTransport()
    conn.connection_made(tr)
    hs = ClientHandshake(wgkey.generate_private_key())
    feed(conn, hs.hello())
    (ch,) = events(tr.data())
    assert isinstance(ch, f.Challenge)
    feed(conn, hs.on_challenge(ch, 0))
    assert tr.closed and ctx.stats.auth_failures["not-allowed"] == 1


def test_backpressure_pauses_sender_until_receiver_drains(ctx: Context) -> None:
    a, ta, _ka = connect(ctx)
    b, _tb, kb = connect(ctx)
    b.pause_writing()
    feed(a, f.encode_send(kb, b"x"))
    assert not ta.reading
    b.resume_writing()
    assert ta.reading


def test_stalled_receiver_releases_senders_and_drops(ctx: Context) -> None:
    a, ta, _ka = connect(ctx)
    b, tb, kb = connect(ctx)
    b.pause_writing()
    feed(a, f.encode_send(kb, b"x"))
    assert not ta.reading
    b.stalled = True  # what the sweeper decides after STALL_LIMIT
    b.release_waiters()
    assert ta.reading
    tb.buffered = timers.DROP_LIMIT + 1
    feed(a, f.encode_send(kb, b"x") * 2)
    assert ta.reading
    assert ctx.stats.drops["queue-full"] == 2


def test_receiver_gone_counts_drop(ctx: Context) -> None:
    a, _ta, _ka = connect(ctx)
    b, tb, kb = connect(ctx)
    tb.closed = True
    feed(a, f.encode_send(kb, b"x"))
    assert ctx.stats.drops["receiver-closed"] == 1
    b.connection_lost(None)
    assert ctx.registry.get(kb) is None


def test_frames_pipelined_behind_the_proof_are_forwarded(ctx: Context) -> None:
    _b, tb, kb = connect(ctx)
    priv = wgkey.generate_private_key()
    conn = RelayConnection(ctx)
    tr = FakeTransport()
    conn.connection_made(tr)
    assert len(conn.buf) == timers.HANDSHAKE_BUFFER  # small until registered
    hs = ClientHandshake(priv)
    feed(conn, hs.hello())
    (ch,) = events(tr.data())
    assert isinstance(ch, f.Challenge)
    feed(conn, hs.on_challenge(ch, 0) + f.encode_send(kb, b"early"))
    assert len(conn.buf) > timers.RECV_BUFFER
    assert events(tb.data()) == [f.Recv(wgkey.public_key(priv), b"early")]


def test_runs_of_one_header_are_rewritten_at_once_and_exactly(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bulk traffic takes the batch rewrite (uniform_run); whatever breaks a run
    (another size, another peer, a control frame, a split read) must not
    change a byte of what the receivers get."""
    batched: list[int] = []
    real = RelayConnection.uniform_run

    def spy(self: RelayConnection, i: int, stride: int, most: int) -> int:
        m = real(self, i, stride, most)
        if m >= forwarder._UNIFORM_MIN:  # rewritten as a batch (fewer: only counted)
            batched.append(m)
        return m

    monkeypatch.setattr(RelayConnection, "uniform_run", spy)
    a, ta, ka = connect(ctx)
    (_b, tb, kb), (_c, tc, kc) = connect(ctx), connect(ctx)
    forged = wgkey.public_key(wgkey.generate_private_key())
    plan: list[tuple[bytes, bytes]] = []  # (destination, packet)
    for i in range(300):
        dst = kc if i in (41, 42, 170) else kb
        size = 600 if i in range(90, 95) else 1400
        packet = (forged if i == 7 else b"") + i.to_bytes(2, "big") * (size // 2)
        plan.append((dst, packet[:size]))
    wire = b"".join(f.encode_send(d, p) for d, p in plan)
    ping_at = len(b"".join(f.encode_send(d, p) for d, p in plan[:200]))
    wire = wire[:ping_at] + f.encode_ping(b"12345678") + wire[ping_at:]
    for cut in range(0, len(wire), 100_000):  # reads that split frames
        feed(a, wire[cut : cut + 100_000])
    assert events(tb.data()) == [f.Recv(ka, p) for d, p in plan if d == kb]
    assert events(tc.data()) == [f.Recv(ka, p) for d, p in plan if d == kc]
    assert events(ta.data()) == [f.Pong(b"12345678")]
    assert ctx.stats.frames_forwarded == 300
    assert sum(batched) > 250  # most frames went the batch way


def test_a_long_uniform_run_is_one_write(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    _b, tb, kb = connect(ctx)
    feed(a, b"".join(f.encode_send(kb, bytes([i]) * 1400) for i in range(100)))
    assert len(tb.writes) == 1
    assert events(tb.data()) == [f.Recv(ka, bytes([i]) * 1400) for i in range(100)]
    assert a.frames_in == 100


def test_a_short_run_is_not_tried_again_frame_after_frame(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, same peer, but another peer every 5th frame: each attempt
    finds fewer than _UNIFORM_MIN agreeing frames; the frames it has already
    seen disagree no better, so they are not examined again."""
    attempts: list[int] = []
    real = RelayConnection.uniform_run

    def spy(self: RelayConnection, i: int, stride: int, most: int) -> int:
        attempts.append(i)
        return real(self, i, stride, most)

    monkeypatch.setattr(RelayConnection, "uniform_run", spy)
    a, _ta, ka = connect(ctx)
    (_b, tb, kb), (_c, tc, kc) = connect(ctx), connect(ctx)
    plan = [(kc if i % 5 == 4 else kb, i.to_bytes(2, "big") * 50) for i in range(200)]
    feed(a, b"".join(f.encode_send(d, p) for d, p in plan))
    assert events(tb.data()) == [f.Recv(ka, p) for d, p in plan if d == kb]
    assert events(tc.data()) == [f.Recv(ka, p) for d, p in plan if d == kc]
    assert len(attempts) <= 200 // 5 + 1  # about one per stretch, not one per frame


def test_interleaved_frames_of_one_size_are_sorted_out_at_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender's packets to many peers, round-robin: one block scatter, each
    receiver one write in arrival order, frames to an unknown key dropped."""
    blocks: list[int] = []
    real = RelayConnection.scatter

    def spy(self: RelayConnection, i: int, stride: int, m: int) -> None:
        blocks.append(m)
        real(self, i, stride, m)

    monkeypatch.setattr(RelayConnection, "scatter", spy)
    a, ta, ka = connect(ctx)
    peers = [connect(ctx) for _ in range(4)]
    gone = wgkey.public_key(wgkey.generate_private_key())
    keys = [k for _c, _t, k in peers] + [gone]
    plan = [(keys[i % 5], i.to_bytes(2, "big") * 700) for i in range(100)]
    feed(a, b"".join(f.encode_send(d, p) for d, p in plan))
    assert blocks == [100]
    for _c, tr, k in peers:
        assert len(tr.writes) == 1
        assert events(tr.data()) == [f.Recv(ka, p) for d, p in plan if d == k]
    assert ctx.stats.drops["no-peer"] == 20
    assert ctx.stats.frames_forwarded == 80
    assert a.frames_in == 100
    assert events(ta.data()) == [f.PeerGone(gone)]  # once, however many frames


def test_a_block_of_one_size_ends_where_the_size_changes(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    (_b, tb, kb), (_c, tc, kc) = connect(ctx), connect(ctx)
    plan = [
        ((kb, kc)[i % 2], i.to_bytes(2, "big") * (300 if 20 <= i < 23 else 500)) for i in range(60)
    ]
    feed(a, b"".join(f.encode_send(d, p) for d, p in plan))
    assert events(tb.data()) == [f.Recv(ka, p) for d, p in plan if d == kb]
    assert events(tc.data()) == [f.Recv(ka, p) for d, p in plan if d == kc]


def test_one_write_per_receiver_per_round_of_reads(ctx: Context) -> None:
    """Reads of several senders in one loop round: a receiver they all wrote to
    gets one write when the round ends, in the order the reads came."""
    (a, _ta, ka), (b, _tb, kb) = connect(ctx), connect(ctx)
    _r, tr, kr = connect(ctx)
    feed(a, f.encode_send(kr, b"a1") + f.encode_send(kr, b"a2"), end_round=False)
    feed(b, f.encode_send(kr, b"b1"), end_round=False)
    assert tr.writes == []  # staged until the round ends
    ctx.loop.run_until_complete(asyncio.sleep(0))
    assert len(tr.writes) == 1
    assert events(tr.data()) == [f.Recv(ka, b"a1"), f.Recv(ka, b"a2"), f.Recv(kb, b"b1")]


def test_a_stage_keeps_its_buffer_between_writes_up_to_a_limit() -> None:
    stage = forwarder.Stage()
    tr = FakeTransport()
    stage.add(b"x" * 1000)
    stage.add(memoryview(b"y" * 10))
    kept = stage.buf
    stage.write_to(tr)
    assert tr.writes == [b"x" * 1000 + b"y" * 10] and len(stage) == 0
    stage.add(b"z")
    assert stage.buf is kept  # no new allocation for the next round
    stage.add(b"w" * timers.STAGE_KEEP)
    stage.write_to(tr)
    assert len(stage.buf) == 0  # a burst's large buffer is not kept
    stage.add(b"v" * 100)
    stage.write_to(tr)
    stage.trim()
    assert len(stage.buf) > 0  # written to since the last sweep: kept
    stage.trim()
    assert len(stage.buf) == 0  # a sweep interval without a write: let go
