"""TlsStream: real TLS over a socket pair, one reader thread and several writer
threads at once (the relay link's pattern), every byte intact and in order per
writer; a peer that verifies nothing it should not; EOF and close_notify."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from wirekube_agent.relay.egress import tls_context
from wirekube_agent.relay.tlsstream import TlsStream
from wirekube_lab.controlplane_pki import CertificateAuthority

NAME = "relay.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.generate("tlsstream-test-ca")
    pair = ca.issue(NAME, dns_names=[NAME], server=True)
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "c.pem").write_bytes(pair.cert_pem)
    (tmp / "k.pem").write_bytes(pair.key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return tmp / "ca.pem", server


def pair(
    pki: tuple[Path, ssl.SSLContext], name: str = NAME
) -> tuple[TlsStream, ssl.SSLSocket, threading.Thread, list[BaseException]]:
    ca, server_ctx = pki
    a, b = socket.socketpair()
    errors: list[BaseException] = []
    holder: list[ssl.SSLSocket] = []

    def serve() -> None:
        try:
            holder.append(server_ctx.wrap_socket(b, server_side=True))
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    stream = TlsStream(a, tls_context(str(ca)), name)
    try:
        stream.handshake(5.0)
    finally:
        t.join(5)
    return stream, holder[0], t, errors


def test_one_reader_many_writers_both_ways(pki: tuple[Path, ssl.SSLContext]) -> None:
    stream, server, _, _ = pair(pki)
    assert stream.version in ("TLSv1.3", "TLSv1.2")
    writers, chunks, size = 4, 300, 4000
    # Server echoes everything back: the client's reader sees what its writers sent.
    echoed = threading.Thread(target=lambda: _echo(server), daemon=True)
    echoed.start()

    def write(w: int) -> None:
        for i in range(chunks):
            # each chunk is one "frame": writer id, sequence, then filler
            head = bytes([w]) + i.to_bytes(2, "big")
            stream.sendall(head + bytes([w]) * (size - 3))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    got = bytearray()
    buf = memoryview(bytearray(1 << 16))
    total = writers * chunks * size
    while len(got) < total:
        n = stream.recv_into(buf)
        assert n > 0
        got += buf[:n]
    for t in threads:
        t.join(10)
    # Chunks are atomic (sendall is serialised) and each writer's are in order.
    seen: dict[int, int] = {}
    for k in range(0, total, size):
        chunk = got[k : k + size]
        w, seq = chunk[0], int.from_bytes(chunk[1:3], "big")
        assert chunk[3:] == bytes([w]) * (size - 3)
        assert seq == seen.get(w, -1) + 1
        seen[w] = seq
    assert seen == {w: chunks - 1 for w in range(writers)}
    stream.sendmsg([memoryview(b"ab"), b"cd"])
    assert stream.recv(4) == b"abcd"
    stream.shutdown(socket.SHUT_RDWR)
    stream.close()


def _echo(server: ssl.SSLSocket) -> None:
    try:
        while data := server.recv(1 << 16):
            server.sendall(data)
    except OSError:
        pass


def test_end_of_stream_reads_zero(pki: tuple[Path, ssl.SSLContext]) -> None:
    stream, server, _, _ = pair(pki)
    server.sendall(b"last")
    # close_notify; unwrap then waits for ours, which never comes: a thread
    closer = threading.Thread(target=lambda: _quietly(server.unwrap), daemon=True)
    closer.start()
    buf = bytearray(16)
    assert stream.recv_into(buf) == 4 and bytes(buf[:4]) == b"last"
    assert stream.recv_into(buf) == 0
    stream.close()
    closer.join(5)


def test_end_of_stream_without_close_notify_reads_zero(pki: tuple[Path, ssl.SSLContext]) -> None:
    stream, server, _, _ = pair(pki)
    server.sendall(b"x")
    os.close(server.detach())  # the TCP stream ends, TLS never said goodbye
    buf = bytearray(16)
    assert stream.recv_into(buf) == 1
    assert stream.recv_into(buf) == 0
    stream.close()


def _quietly(call: Callable[[], object]) -> None:
    with contextlib.suppress(OSError):
        call()


def test_wrong_name_fails_the_handshake(pki: tuple[Path, ssl.SSLContext]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        pair(pki, "other.test")


def test_handshake_times_out_against_a_silent_peer(pki: tuple[Path, ssl.SSLContext]) -> None:
    ca, _ = pki
    a, b = socket.socketpair()
    try:
        stream = TlsStream(a, tls_context(str(ca)), NAME)
        with pytest.raises((TimeoutError, socket.timeout)):
            stream.handshake(0.3)
    finally:
        a.close()
        b.close()


def test_a_peer_that_closes_during_the_handshake(pki: tuple[Path, ssl.SSLContext]) -> None:
    ca, _ = pki
    a, b = socket.socketpair()
    b.close()
    stream = TlsStream(a, tls_context(str(ca)), NAME)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        stream.handshake(2.0)
    a.close()
