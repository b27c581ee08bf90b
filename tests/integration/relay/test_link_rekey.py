"""A relay link re-registers under a new key (key rotation) without going
down: the new connection is registered before the old one is let go, and the
old one is read to its end (docs/keyrotation.md)."""

from __future__ import annotations

import socket
import threading
import time

from wirekube_agent.relay.link import RelayLink, register
from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f

BURST = 200


def test_rekey_makes_before_it_breaks(relay_factory, h) -> None:
    relay = relay_factory()
    a1, a2, b = (wgkey.generate_private_key() for _ in range(3))
    ka1, ka2, kb = (wgkey.public_key(k) for k in (a1, a2, b))
    got: list[bytes] = []
    lock = threading.Lock()

    def on_frame(src: memoryview, packet: memoryview) -> None:
        with lock:
            got.append(bytes(packet))

    states: list[bool] = []
    link = RelayLink(relay.address, a1, on_frame, on_state=lambda lk: states.append(lk.up))
    peer = socket.create_connection(relay.address, timeout=5)
    try:
        register(peer, b)
        link.start()
        h.wait_for(lambda: link.up, 10, "the link up")
        # A burst to the old key, and the rotation right behind it: the old
        # connection is read to its end, so every frame of the burst arrives.
        peer.sendall(b"".join(f.encode_send(ka1, b"old:%d" % i) for i in range(BURST)))
        link.rekey(a2)
        h.wait_for(lambda: link.connects == 2, 10, "the link re-registered")
        h.wait_for(lambda: len(got) >= BURST, 5, "the burst to the old key")
        assert got[:BURST] == [b"old:%d" % i for i in range(BURST)]
        # Never down in between: writers moved to the new connection at once.
        assert states == [True], states
        # The new key is ours now: frames to it arrive, ours carry it ...
        peer.sendall(f.encode_send(ka2, b"new"))
        h.wait_for(lambda: b"new" in got, 5, "a frame to the new key")
        assert link.send(f.encode_send(kb, b"from a"), frames=1)
        parser = f.FrameParser()
        deadline = time.monotonic() + 5
        seen: list[f.Event] = []
        peer.settimeout(0.5)
        while f.Recv(ka2, b"from a") not in seen and time.monotonic() < deadline:
            try:
                parser.feed(peer.recv(65536))
            except TimeoutError:
                continue
            seen += parser.events()
        assert f.Recv(ka2, b"from a") in seen, seen
        # ... and the old key's registration ended with its connection.
        peer.sendall(f.encode_send(ka1, b"late"))
        deadline = time.monotonic() + 5
        while f.PeerGone(ka1) not in seen and time.monotonic() < deadline:
            try:
                parser.feed(peer.recv(65536))
            except TimeoutError:
                continue
            seen += parser.events()
        assert f.PeerGone(ka1) in seen, seen
    finally:
        link.stop()
        link.join(5)
        peer.close()
