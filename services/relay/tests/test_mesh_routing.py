"""Replica links driven through fake transports: routing, no second hop, duplicates,
presence following links, and a join over the relay port (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import ClientHandshake
from wirekube_relay import timers
from wirekube_relay.admin.stats import RelayStats
from wirekube_relay.client.auth import AllowList, Authenticator
from wirekube_relay.forwarder import Context, RelayConnection
from wirekube_relay.limits.bounds import Limits
from wirekube_relay.mesh import proto as mp
from wirekube_relay.mesh.link import MeshLink
from wirekube_relay.mesh.pool import Mesh

SECRET = b"unit-test-pool-secret"


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: str = "10.0.0.9") -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.peer = peer
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def data(self) -> bytes:
        out = b"".join(self.writes)
        self.writes.clear()
        return out

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 4242) if name == "peername" else default


@pytest.fixture
def ctx() -> Iterator[Context]:
    loop = asyncio.new_event_loop()
    c = Context(loop, Authenticator("relay-1", AllowList(False)), RelayStats(), Limits())
    Mesh(c, SECRET, "relay-1", 3478)
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


def client(ctx: Context) -> tuple[RelayConnection, FakeTransport, bytes]:
    priv = wgkey.generate_private_key()
    conn, tr = RelayConnection(ctx), FakeTransport("10.0.1.1")
    conn.connection_made(tr)
    hs = ClientHandshake(priv)
    feed(conn, hs.hello())
    parser = f.FrameParser()
    parser.feed(tr.data())
    ch = parser.next_event()
    assert isinstance(ch, f.Challenge)
    feed(conn, hs.on_challenge(ch, 0))
    tr.data()
    return conn, tr, wgkey.public_key(priv)


def link(ctx: Context, peer: bytes, dialed: bool = True) -> tuple[MeshLink, FakeTransport]:
    """A replica link that has completed its handshake with replica ``peer``."""
    assert ctx.mesh is not None
    ln = MeshLink(ctx, ctx.mesh, ("10.0.0.2", 3478) if dialed else None)
    tr = FakeTransport()
    ln.connection_made(tr)
    ln.authenticated(peer, f"replica-{peer[:2].hex()}")
    tr.data()
    return ln, tr


def mesh_events(data: bytes) -> list[mp.Event]:
    p = mp.MeshParser()
    p.feed(data)
    return p.events()


def test_a_frame_for_a_remote_key_goes_over_its_replicas_link_stamped(ctx: Context) -> None:
    a, _, ka = client(ctx)
    ln, tr = link(ctx, b"\x02" * 16)
    remote = wgkey.public_key(wgkey.generate_private_key())
    feed(ln, mp.encode_presence(mp.PRESENCE_ADD, [(remote, 5)])[0])
    feed(a, f.encode_send(remote, b"hi"))
    (ev,) = mesh_events(tr.data())
    assert ev == mp.Data(remote, 1, f.encode_recv(ka, b"hi"))
    assert ctx.stats.mesh_frames_out == 1


def test_frames_from_a_replica_are_never_forwarded_again(ctx: Context) -> None:
    ln2, tr2 = link(ctx, b"\x02" * 16)
    ln3, tr3 = link(ctx, b"\x03" * 16)
    remote = wgkey.public_key(wgkey.generate_private_key())
    feed(ln3, mp.encode_presence(mp.PRESENCE_ADD, [(remote, 5)])[0])
    sender = wgkey.public_key(wgkey.generate_private_key())
    # replica 2 sends us a run for a key that lives on replica 3: dropped, not relayed
    feed(ln2, mp.encode_data(remote, 1, f.encode_recv(sender, b"x")))
    assert tr3.data() == b"" and tr2.data() == b""
    assert ctx.stats.drops["no-peer"] == 1
    assert ctx.stats.mesh_frames_out == 0


def test_a_run_from_a_replica_reaches_the_local_client_as_sent(ctx: Context) -> None:
    _b, tb, kb = client(ctx)
    ln, _ = link(ctx, b"\x02" * 16)
    sender = wgkey.public_key(wgkey.generate_private_key())
    inner = f.encode_recv(sender, b"one") + f.encode_recv(sender, b"two")
    feed(ln, mp.encode_data(kb, 2, inner))
    assert tb.data() == inner
    assert ctx.stats.mesh_frames_in == 2


def test_registrations_are_announced_with_growing_versions(ctx: Context) -> None:
    _ln, tr = link(ctx, b"\x02" * 16)
    _a, _, ka = client(ctx)
    (add,) = mesh_events(tr.data())
    assert isinstance(add, mp.PresenceAdd) and add.entries[0][0] == ka
    a2, _, _ = client(ctx)
    a2.close("client-close", None, "bye")
    assert [type(e) for e in mesh_events(tr.data())] == [mp.PresenceAdd, mp.PresenceDel]


def test_a_new_link_gets_the_whole_table_first(ctx: Context) -> None:
    _a, _, ka = client(ctx)
    assert ctx.mesh is not None
    ln, t = MeshLink(ctx, ctx.mesh, None), FakeTransport()
    ln.connection_made(t)
    ln.authenticated(b"\x05" * 16, "r5")
    version = ctx.mesh.presence.local[ka]
    assert mesh_events(t.data()) == [mp.PresenceReset(), mp.PresenceAdd(((ka, version),))]


def test_of_two_links_to_one_replica_the_one_dialled_by_the_smaller_id_stays(
    ctx: Context,
) -> None:
    mesh = ctx.mesh
    assert mesh is not None
    mesh.node_id = b"\x09" * 16  # we are the larger id
    theirs, _ = link(ctx, b"\x01" * 16, dialed=False)  # dialled by \x01
    ours, ours_tr = MeshLink(ctx, mesh, ("10.0.0.2", 3478)), FakeTransport()  # dialled by us
    ours.connection_made(ours_tr)
    ours.authenticated(b"\x01" * 16, "replica-01")
    assert mesh.links[(b"\x01" * 16).hex()] is theirs
    assert ours.closing and ours_tr.closed
    assert mesh_events(ours_tr.data())[-1] == mp.Close(mp.CLOSE_DUPLICATE, "duplicate replica link")
    # the other side keeps the same link: the one dialled by \x01, the smaller id
    assert theirs.dialer_id < ours.dialer_id


def test_a_closed_link_takes_its_presence_with_it(ctx: Context) -> None:
    a, _, _ = client(ctx)
    ln, _ = link(ctx, b"\x02" * 16)
    remote = wgkey.public_key(wgkey.generate_private_key())
    feed(ln, mp.encode_presence(mp.PRESENCE_ADD, [(remote, 5)])[0])
    assert ctx.mesh is not None and ctx.mesh.presence.route(remote) == (b"\x02" * 16).hex()
    ln.connection_lost(None)
    assert ctx.mesh.presence.route(remote) is None
    feed(a, f.encode_send(remote, b"late"))
    assert ctx.stats.drops["no-peer"] == 1


def test_a_lost_link_brings_the_next_resolve_forward(ctx: Context) -> None:
    """A replica going away may mean the pool was replaced: ask the name again
    within MESH_RESOLVE_RETRY, not at the regular interval set earlier."""
    mesh = ctx.mesh
    assert mesh is not None
    mesh.next_resolve = ctx.loop.time() + timers.MESH_RESOLVE_INTERVAL
    ln, _ = link(ctx, b"\x03" * 16)
    ln.connection_lost(None)
    assert mesh.next_resolve <= ctx.loop.time() + timers.MESH_RESOLVE_RETRY


def test_a_replica_joins_over_the_relay_port_and_a_client_cannot(ctx: Context) -> None:
    conn, tr = RelayConnection(ctx), FakeTransport()
    conn.connection_made(tr)
    dialer = mp.Dialer(SECRET, b"\x07" * 16, "relay-7")
    feed(conn, dialer.hello())
    ln = tr.protocol
    assert isinstance(ln, MeshLink) and conn not in ctx.connections
    (ch,) = mesh_events(tr.data())
    assert isinstance(ch, mp.Challenge)
    feed(ln, dialer.on_challenge(ch))
    assert ctx.mesh is not None and ln.up and ctx.mesh.links[(b"\x07" * 16).hex()] is ln
    # a registered client sending replica frames is a protocol error
    c, tc, _ = client(ctx)
    feed(c, mp.encode_presence_reset())
    assert tc.closed and c.closing


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300), st.booleans())
def test_hostile_bytes_on_the_relay_port_never_make_a_replica(
    ctx: Context, data: bytes, as_hello: bool
) -> None:
    """Whatever follows a MESH_HELLO byte (or a well-formed HELLO), the connection
    either waits for more, or is closed; it never becomes a replica link."""
    conn, tr = RelayConnection(ctx), FakeTransport()
    conn.connection_made(tr)
    prefix = mp.Dialer(b"not-the-secret-000", b"\x08" * 16, "x").hello() if as_hello else b"\x40"
    feed(conn, prefix + data)
    ln = tr.protocol
    assert ctx.mesh is not None and not ctx.mesh.links
    if isinstance(ln, MeshLink):
        assert not ln.up
        ln.connection_lost(None)
    assert not ctx.mesh.pending


def test_the_api_members_replace_dns_and_a_new_one_is_dialled_without_backoff(
    ctx: Context,
) -> None:
    """Pool members from the EndpointSlice watch: the wanted list at once,
    DNS no longer consulted (its answers trail by their TTL), and an address
    whose earlier dial failed is tried again at once when it turns ready."""
    mesh = ctx.mesh
    assert mesh is not None
    mesh.dns_name = "wirekube-relay-pool.ns.svc"
    mesh.self_addresses = {("10.0.0.1", 3478)}
    mesh.next_dial[("10.0.0.7", 3478)] = ctx.loop.time() + 60.0
    mesh.backoff[("10.0.0.7", 3478)] = 5.0
    mesh.set_members([("10.0.0.7", 3478), ("10.0.0.1", 3478), ("10.0.0.7", 3478)])
    assert mesh.wanted == [("10.0.0.1", 3478), ("10.0.0.7", 3478)]
    assert mesh.members == mesh.wanted
    assert ("10.0.0.7", 3478) not in mesh.next_dial
    assert ("10.0.0.7", 3478) not in mesh.backoff
    mesh.set_members([])  # every replica gone (or none ready yet): nothing to dial
    assert mesh.wanted == []
    assert mesh.members == []  # ...and still the API's word, not DNS's
