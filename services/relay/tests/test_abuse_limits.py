"""Abuse bounds, driven through fake transports and a fed clock (no sockets):
per-source limits, control-frame budgets, bounded control replies, the stall
timer, canonical keys, the registration cap, CLOSE answered, refusal logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import ClientHandshake
from wirekube_relay import timers
from wirekube_relay.admin.stats import RelayStats
from wirekube_relay.client.auth import AllowList, Authenticator
from wirekube_relay.forwarder import Context, RelayConnection
from wirekube_relay.limits import bounds as limits
from wirekube_relay.limits.bounds import Limits
from wirekube_relay.limits.refusals import RefusalLog
from wirekube_relay.limits.sources import SourceTable, TokenBucket
from wirekube_relay.server import RelayServer

pytestmark = pytest.mark.unit


class FakeTransport(asyncio.Transport):
    def __init__(self, ip: str = "127.0.0.1") -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closed = False
        self.reading = True
        self.ip = ip

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
        return (self.ip, 4242) if name == "peername" else default


class Clock:
    """A loop whose time() the test moves; call_later runs due callbacks on advance()."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 1000.0
        self.loop = loop
        self.timers: list[tuple[float, Any]] = []
        loop.time = lambda: self.now  # type: ignore[method-assign]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture
def ctx() -> Iterator[Context]:
    loop = asyncio.new_event_loop()
    c = Context(
        loop,
        Authenticator("relay-t", AllowList(False)),
        RelayStats(),
        Limits(max_pending_per_source=3, max_connections_per_source=5, max_registrations=4),
    )
    yield c
    loop.close()


def feed(conn: RelayConnection, data: bytes) -> None:
    while data:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]
    conn.ctx.loop.run_until_complete(asyncio.sleep(0))


def events(data: bytes) -> list[f.Event]:
    p = f.FrameParser()
    p.feed(data)
    return p.events()


def closed_with(tr: FakeTransport) -> int | None:
    closes = [e for e in events(tr.data()) if isinstance(e, f.Close)]
    return closes[-1].code if tr.closed and closes else None


def opened(ctx: Context, ip: str = "127.0.0.1") -> tuple[RelayConnection, FakeTransport]:
    conn, tr = RelayConnection(ctx), FakeTransport(ip)
    conn.connection_made(tr)
    return conn, tr


def connect(ctx: Context, ip: str = "127.0.0.1") -> tuple[RelayConnection, FakeTransport, bytes]:
    priv = wgkey.generate_private_key()
    conn, tr = opened(ctx, ip)
    hs = ClientHandshake(priv)
    feed(conn, hs.hello())
    (ch,) = events(tr.data())
    assert isinstance(ch, f.Challenge)
    tr.writes.clear()
    feed(conn, hs.on_challenge(ch, 0))
    assert isinstance(events(tr.data())[0], f.Ok), events(tr.data())
    tr.writes.clear()
    return conn, tr, wgkey.public_key(priv)


def test_pending_and_connections_are_bounded_per_source(ctx: Context) -> None:
    pend = [opened(ctx, "10.0.0.1") for _ in range(3)]
    conn, tr = opened(ctx, "10.0.0.1")  # a fourth pending one from the same address
    assert closed_with(tr) == f.CLOSE_OVERLOADED
    conn.connection_lost(None)
    other, tr2 = opened(ctx, "10.0.0.2")  # another address is not affected
    assert not tr2.closed
    # closing one frees its slot
    pend[0][0].connection_lost(None)
    _c, tr3 = opened(ctx, "10.0.0.1")
    assert not tr3.closed
    assert ctx.pending == 4 and ctx.sources.sources["10.0.0.1"].pending == 3
    other.connection_lost(None)


def test_source_table_counts_and_forgets() -> None:
    t = SourceTable(max_pending_per_source=2, max_connections_per_source=3)
    assert t.opened("a") is None and t.opened("a") is None
    assert t.opened("a") == "source-pending"
    t.registered("a")
    assert t.opened("a") is None  # 2 pending, 3 connections
    t.registered("a")
    assert t.opened("a") == "source-connections"
    for pending in (False, False, True):
        t.closed("a", pending)
    assert "a" not in t.sources
    assert t.opened("b") is None and len(t) == 1


def test_registration_attempts_rate_limited_per_source() -> None:
    t = SourceTable(hello_rate=1.0, hello_burst=2.0)
    assert t.hello("a", 0.0) is None and t.hello("a", 0.0) is None
    assert t.hello("a", 0.0) == "source-hello-rate"
    assert t.hello("b", 0.0) is None
    assert t.hello("a", 1.0) is None
    t.prune(100.0)
    assert not t.hellos  # refilled buckets are forgotten


def test_token_bucket() -> None:
    b = TokenBucket.full(2.0, 4.0, 0.0)
    assert all(b.take(0.0) for _ in range(4)) and not b.take(0.0)
    assert b.deficit_seconds(0.0) == pytest.approx(0.5)
    assert b.take(0.5)


def test_hello_flood_from_one_address_refused_before_any_key_exchange(ctx: Context) -> None:
    ctx.sources.hello_burst = 1.0
    ctx.sources.hello_rate = 0.001
    c1, t1 = opened(ctx, "10.0.0.9")
    feed(c1, ClientHandshake(wgkey.generate_private_key()).hello())
    assert isinstance(events(t1.data())[0], f.Challenge)
    c2, t2 = opened(ctx, "10.0.0.9")
    feed(c2, ClientHandshake(wgkey.generate_private_key()).hello())
    assert closed_with(t2) == f.CLOSE_RATE_LIMITED
    assert not any(isinstance(e, f.Challenge) for e in events(t2.data()))


def test_ping_flood_is_throttled_then_closed_rate_limited(ctx: Context) -> None:
    clock = Clock(ctx.loop)
    a, ta, _ = connect(ctx)
    burst = int(limits.PING_BURST)
    feed(a, f.encode_ping(bytes(8)) * (burst + 100))
    pongs = [e for e in events(ta.data()) if isinstance(e, f.Pong)]
    assert len(pongs) == burst  # the rest is not even parsed yet
    assert a.throttled and not ta.reading
    assert a.end - a.start == 99 * 11  # waiting in the buffer
    for _ in range(limits.RATE_LIMIT_STRIKES + 1):
        clock.advance(timers.THROTTLE_MIN)
        a.unthrottle()
        if ta.closed:
            break
    assert closed_with(ta) == f.CLOSE_RATE_LIMITED
    assert ctx.stats.closes["rate-limited"] == 1


def test_frames_to_unknown_keys_throttle_the_sender_only(ctx: Context) -> None:
    Clock(ctx.loop)
    a, ta, _ = connect(ctx)
    b, tb, _kb = connect(ctx)
    # a flow to one peer that left costs one lookup per read: never throttled
    feed(a, f.encode_send(bytes(32), b"y") * 20_000)
    assert not a.throttled and ta.reading
    # a different unknown key in every frame is what the budget is for
    n = int(limits.NO_PEER_BURST) + 500
    feed(a, b"".join(f.encode_send(i.to_bytes(4, "big") + bytes(28), b"x") for i in range(n)))
    assert a.throttled and not ta.reading
    assert b.transport is tb and tb.reading and not b.throttled
    gone = [e for e in events(ta.data()) if isinstance(e, f.PeerGone)]
    assert len(gone) <= limits.PEER_GONE_BURST + 1
    assert ctx.stats.drops["no-peer"] == 20_000 + n


def test_control_replies_not_queued_for_a_client_that_does_not_read(ctx: Context) -> None:
    a, ta, _ = connect(ctx)
    ta.buffered = limits.CONTROL_QUEUE_LIMIT + 1
    feed(a, f.encode_ping(bytes(8)) + f.encode_send(bytes(32), b"x"))
    assert ta.writes == []
    assert ctx.stats.control_dropped["queue-full"] == 2


def test_stall_timer_releases_senders_at_the_stall_limit(ctx: Context) -> None:
    a, ta, _ = connect(ctx)
    b, _tb, kb = connect(ctx)
    b.pause_writing()
    feed(a, f.encode_send(kb, b"x" * 100))
    assert not ta.reading  # held by b
    ctx.loop.run_until_complete(asyncio.sleep(ctx.limits.stall_limit + 0.1))
    assert b.stalled and ta.reading and ctx.stats.stalls == 1
    assert ctx.limits.stall_limit < 2.0  # the spec promises release within 2 s


def test_non_canonical_key_is_refused(ctx: Context) -> None:
    priv = wgkey.generate_private_key()
    alias = bytearray(wgkey.public_key(priv))
    alias[31] |= 0x80
    conn, tr = opened(ctx)
    feed(conn, f.encode_hello(bytes(alias)))
    assert closed_with(tr) == f.CLOSE_AUTH_FAILED
    assert ctx.stats.auth_failures["non-canonical-key"] == 1
    assert f.is_canonical_key(wgkey.public_key(priv))
    assert not f.is_canonical_key(((1 << 255) - 19).to_bytes(32, "little"))


def test_registration_cap_refuses_new_keys_but_not_reregistration(ctx: Context) -> None:
    for i in range(4):
        connect(ctx, f"10.1.0.{i}")
    priv = wgkey.generate_private_key()
    conn, tr = opened(ctx, "10.1.0.9")
    hs = ClientHandshake(priv)
    feed(conn, hs.hello())
    (ch,) = events(tr.data())
    feed(conn, hs.on_challenge(ch, 0))  # type: ignore[arg-type]
    assert closed_with(tr) == f.CLOSE_OVERLOADED
    assert ctx.stats.auth_failures["registration-cap"] == 1


def test_client_close_is_answered_with_close_normal(ctx: Context) -> None:
    a, ta, _ = connect(ctx)
    feed(a, f.encode_close(f.CLOSE_NORMAL, "bye"))
    assert closed_with(ta) == f.CLOSE_NORMAL


@pytest.mark.parametrize(
    "wire",
    [
        bytes((f.SEND_BATCH, 0, 32)) + bytes(32),  # a batch without entries
        bytes((f.SEND, 0, 31)) + bytes(31),  # shorter than its key
    ],
)
def test_empty_batches_and_keyless_sends_are_protocol_errors(ctx: Context, wire: bytes) -> None:
    a, ta, _ = connect(ctx)
    feed(a, wire)
    assert closed_with(ta) == f.CLOSE_PROTOCOL_ERROR


def test_a_zero_length_send_is_a_datagram(ctx: Context) -> None:
    a, _ta, ka = connect(ctx)
    _b, tb, kb = connect(ctx)
    feed(a, f.encode_send(kb, b""))
    assert events(tb.data()) == [f.Recv(ka, b"")]


def test_refusal_log_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test-refusals")
    r = RefusalLog(log, per_interval=2, interval=10.0)
    with caplog.at_level(logging.WARNING, logger="test-refusals"):
        for i in range(1000):
            r.refused(100.0 + i * 0.001, "overloaded", "1.2.3.4:5", "x")
        r.refused(100.5, "auth:bad-proof", "1.2.3.4:6", "y")
        r.roll(111.0)
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 4, lines
    assert "event=reject-summary reason=overloaded not_logged=998" in lines[-1]


def test_every_close_code_has_a_name() -> None:
    codes = {v for k, v in vars(f).items() if k.startswith("CLOSE_") and isinstance(v, int)}
    assert codes == set(f.CLOSE_NAMES)
    assert f.close_name(200) == "code-200"


def test_default_registration_cap_is_sized_by_memory() -> None:
    assert limits.default_max_registrations(1 << 30) == (1 << 29) // limits.REGISTRATION_COST
    assert limits.default_max_registrations(1 << 20) == limits.MIN_REGISTRATIONS
    assert limits.memory_budget() > 0


def test_expired_registrations_are_closed_a_chunk_at_a_time(ctx: Context) -> None:
    ctx.limits.max_pending_per_source = 10_000
    ctx.sources.max_pending_per_source = 10_000
    ctx.sources.max_connections_per_source = 10_000
    server = RelayServer(ctx.auth, ctx.stats, ctx.limits)
    server.ctx = ctx
    conns = [opened(ctx) for _ in range(3 * limits.EXPIRE_CHUNK + 5)]
    server.sweep(ctx.loop.time() + ctx.limits.registration_deadline + 1)
    assert sum(tr.closed for _c, tr in conns) == limits.EXPIRE_CHUNK
    # the rest follow a chunk per EXPIRE_PACE (the loop idles in between)
    # (each chunk schedules the next, so the wait is in steps, bounded)
    for _ in range(200):
        if all(tr.closed for _c, tr in conns):
            break
        ctx.loop.run_until_complete(asyncio.sleep(limits.EXPIRE_PACE))
    assert all(closed_with(tr) == f.CLOSE_TIMEOUT for _c, tr in conns)
    assert ctx.stats.auth_failures["deadline"] == len(conns)
