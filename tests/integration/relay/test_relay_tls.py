"""The relay over TLS, on loopback: a real relay process serving TCP and TLS on
two ports, real agent relay links (RelayLink) with a CA the test makes.

* peers on TLS and on TCP register in one relay and exchange packets both ways;
* a relay whose certificate names another host is refused, and the link says why
  (and keeps retrying, never crashing);
* a certificate from a CA the agent does not trust is refused likewise.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from wirekube_agent.relay import RelayLink, register
from wirekube_agent.relay.egress import Egress
from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_lab.controlplane_pki import CertificateAuthority

UP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_pki(tmp: Path, relay_names: list[str]) -> tuple[Path, Path, Path]:
    """(CA bundle, relay cert, relay key) for a relay certificate naming ``relay_names``."""
    ca = CertificateAuthority.generate("wirekube-test-relay-ca")
    pair = ca.issue(relay_names[0], dns_names=relay_names, server=True)
    paths = tmp / "ca.pem", tmp / "relay.pem", tmp / "relay-key.pem"
    paths[0].write_bytes(ca.cert_pem)
    paths[1].write_bytes(pair.cert_pem)
    paths[2].write_bytes(pair.key_pem)
    return paths


def start_relay(relay_factory: Any, cert: Path, key: Path) -> tuple[Any, int]:
    tls_port = free_port()
    relay = relay_factory(
        f"--tls-listen=127.0.0.1:{tls_port}",
        f"--tls-cert-file={cert}",
        f"--tls-key-file={key}",
    )
    return relay, tls_port


class Inbox:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes]] = []
        self.event = threading.Event()

    def __call__(self, src: memoryview, packet: memoryview) -> None:
        self.packets.append((bytes(src), bytes(packet)))
        self.event.set()


def wait_up(link: RelayLink, timeout: float = UP_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if link.up:
            return True
        time.sleep(0.02)
    return False


def test_tls_and_tcp_peers_meet_in_one_relay(tmp_path: Path, relay_factory: Any) -> None:
    ca, cert, key = write_pki(tmp_path, ["relay.wirekube.test"])
    relay, tls_port = start_relay(relay_factory, cert, key)
    a_priv, b_priv = wgkey.generate_private_key(), wgkey.generate_private_key()
    a_pub, b_pub = wgkey.public_key(a_priv), wgkey.public_key(b_priv)
    inbox_a, inbox_b = Inbox(), Inbox()
    tls = Egress(transport="tls", server_name="relay.wirekube.test", ca_file=str(ca))
    a = RelayLink(("127.0.0.1", tls_port), a_priv, inbox_a, egress=tls)
    b = RelayLink(relay.address, b_priv, inbox_b)  # plain TCP
    try:
        a.start()
        b.start()
        assert wait_up(a), f"TLS link never came up: {a.last_error}"
        assert wait_up(b), f"TCP link never came up: {b.last_error}"
        assert a.sock is not None and getattr(a.sock, "version", None) in ("TLSv1.3", "TLSv1.2")
        # Bulk both ways, then one marker: every byte arrives intact and in order.
        payloads = [os.urandom(1 + (i * 37) % 1400) for i in range(2000)]
        for p in payloads:
            assert a.send(f.encode_send(b_pub, p), frames=1)
        for p in payloads[:200]:
            assert b.send(f.encode_send(a_pub, p), frames=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            len(inbox_b.packets) < len(payloads) or len(inbox_a.packets) < 200
        ):
            time.sleep(0.02)
        assert [p for _, p in inbox_b.packets] == payloads
        assert {s for s, _ in inbox_b.packets} == {a_pub}
        assert [p for _, p in inbox_a.packets] == payloads[:200]
        assert {s for s, _ in inbox_a.packets} == {b_pub}
    finally:
        a.stop()
        b.stop()
        a.join(3)
        b.join(3)


def test_relay_certificate_for_another_name_is_refused(tmp_path: Path, relay_factory: Any) -> None:
    ca, cert, key = write_pki(tmp_path, ["other.example.test"])
    _relay, tls_port = start_relay(relay_factory, cert, key)
    tls = Egress(transport="tls", server_name="relay.wirekube.test", ca_file=str(ca))
    link = RelayLink(("127.0.0.1", tls_port), wgkey.generate_private_key(), Inbox(), egress=tls)
    try:
        link.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and link.failures < 2:
            time.sleep(0.05)
        # Refused more than once (it retries with backoff), never registered.
        assert link.failures >= 2
        assert not link.up and link.connects == 0
        assert "relay.wirekube.test" in link.last_error
        assert "certificate verify failed" in link.last_error
        assert "Hostname mismatch" in link.last_error
        assert link._thread.is_alive()  # retrying, not crashed
    finally:
        link.stop()
        link.join(3)


def test_certificate_from_an_untrusted_ca_is_refused(tmp_path: Path, relay_factory: Any) -> None:
    _, cert, key = write_pki(tmp_path, ["relay.wirekube.test"])
    other_ca = CertificateAuthority.generate("someone-else")
    bundle = tmp_path / "other-ca.pem"
    bundle.write_bytes(other_ca.cert_pem)
    _relay, tls_port = start_relay(relay_factory, cert, key)
    tls = Egress(transport="tls", server_name="relay.wirekube.test", ca_file=str(bundle))
    link = RelayLink(("127.0.0.1", tls_port), wgkey.generate_private_key(), Inbox(), egress=tls)
    try:
        link.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and link.failures < 1:
            time.sleep(0.05)
        assert link.failures >= 1 and link.connects == 0
        assert "unable to get local issuer certificate" in link.last_error
    finally:
        link.stop()
        link.join(3)


def test_sigterm_tells_tls_clients_and_exits_cleanly(tmp_path: Path, relay_factory: Any) -> None:
    ca, cert, key = write_pki(tmp_path, ["relay.wirekube.test"])
    relay, tls_port = start_relay(relay_factory, cert, key)
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="relay.wirekube.test") as s:
        register(s, wgkey.generate_private_key())
        assert relay.terminate() == 0
        s.settimeout(5)
        parser = f.FrameParser(f.MAX_PAYLOAD)
        parser.feed(s.recv(4096))
        ev = parser.next_event()
    assert isinstance(ev, f.Close) and ev.code == f.CLOSE_SHUTTING_DOWN


SILENT_TLS = 200  # connections one address opens to the TLS port, never sending a ClientHello


def test_silent_tls_connections_count_against_their_source(
    tmp_path: Path, relay_factory: Any
) -> None:
    """One address opens many TCP connections to the TLS port and never starts
    TLS: beyond its pending share (64) they are closed at once, not after the
    handshake timeout; a plain TCP connection from it is refused too (one
    share for both ports); another address still registers over TLS."""
    ca, cert, key = write_pki(tmp_path, ["relay.wirekube.test"])
    relay, tls_port = start_relay(relay_factory, cert, key)
    silent: list[socket.socket] = []
    for _ in range(SILENT_TLS):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", tls_port))
        silent.append(s)
    time.sleep(1.0)  # well under TLS_HANDSHAKE_TIMEOUT (10 s)
    held = 0
    for s in silent:
        s.setblocking(False)
        try:
            held += s.recv(1) != b""  # nothing to read: still open (an EOF is b"")
        except BlockingIOError:
            held += 1
        except OSError:
            pass  # reset by the relay
    # the same address over plain TCP: its pending share is taken
    tcp = socket.socket()
    tcp.bind(("127.0.0.2", 0))
    tcp.settimeout(5)
    tcp.connect(relay.address)
    parser = f.FrameParser()
    events: list[f.Event] = []
    while not events:
        data = tcp.recv(4096)
        if not data:
            break
        parser.feed(data)
        events.extend(parser.events())
    tcp.close()
    # another address over TLS, meanwhile
    client = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    tls_sock = client.wrap_socket(raw, server_hostname="relay.wirekube.test")
    try:
        register(tls_sock, wgkey.generate_private_key(), timeout=5)
    finally:
        tls_sock.close()
        for s in silent:
            s.close()
    print(f"silent TLS connections from one address: {held}/{SILENT_TLS} held; TCP {events}")
    assert held == 64, held
    assert events and isinstance(events[0], f.Close) and events[0].code == f.CLOSE_OVERLOADED
    assert "source-pending" in relay.output()
