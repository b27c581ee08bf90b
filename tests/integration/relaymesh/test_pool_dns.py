"""The relay pool's name resolution against a DNS server that fails one record type.

Found with the lab's dnsmasq: for a name it has only an A record for (and no
upstream), it answers AAAA queries with REFUSED. The pool used to discard the
whole resolve then, A answer included, and an agent never connected to any
relay replica. A real DNS server on loopback (dnspython messages over a UDP
socket) plays such a server here; no relay needs to listen: the pool's links
are named after the addresses it resolved.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from wirekube_agent.relay import DnsSource, RelayPool
from wirekube_common import wgkey

NAME = "relay.pool.test."


class PickyDns:
    """Answers A (and AAAA while ``aaaa`` is set); otherwise ``refuse_aaaa`` decides.

    Serves UDP and TCP on one port; with ``udp`` cleared it reads UDP queries
    and never answers them (a firewall that lets only TCP out).
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.udp = True
        self.a = ["127.0.0.1"]
        self.aaaa: list[str] = []
        self.aaaa_rcode = dns.rcode.REFUSED
        self.queries = 0
        self.tcp_queries = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        resp = dns.message.make_response(query)
        q = query.question[0]
        self.queries += 1
        if q.name.to_text().lower() != NAME:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        elif q.rdtype == dns.rdatatype.A:
            resp.answer.append(dns.rrset.from_text_list(q.name, 1, "IN", "A", self.a))
        elif q.rdtype == dns.rdatatype.AAAA and self.aaaa:
            resp.answer.append(dns.rrset.from_text_list(q.name, 1, "IN", "AAAA", self.aaaa))
        else:
            resp.set_rcode(self.aaaa_rcode)
        return resp.to_wire()  # type: ignore[no-any-return]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if self.udp:
                self.sock.sendto(self._answer(data), peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError, ValueError):
                    while True:  # 2-byte length-prefixed messages (RFC 1035 4.2.2)
                        head = conn.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            break
                        data = conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
                        wire = self._answer(data)
                        self.tcp_queries += 1
                        conn.sendall(len(wire).to_bytes(2, "big") + wire)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()
        self.tcp.close()


@pytest.fixture
def picky_dns() -> Iterator[PickyDns]:
    server = PickyDns()
    yield server
    server.close()


def _pool(server: PickyDns) -> RelayPool:
    source = DnsSource(NAME.rstrip("."), 3478, ["127.0.0.1"], server.port)
    pool = RelayPool(wgkey.generate_private_key(), dns_source=source, resolve_interval=0.5)
    pool.start(lambda src, packet: None)
    return pool


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.SERVFAIL])
def test_a_failed_aaaa_query_does_not_hide_the_a_records(
    picky_dns: PickyDns, rcode: dns.rcode.Rcode
) -> None:
    picky_dns.aaaa_rcode = rcode
    pool = _pool(picky_dns)
    try:
        assert set(pool.links) == {"127.0.0.1:3478"}
        picky_dns.a = ["127.0.0.1", "127.0.0.2"]  # a second replica: found at the next resolve
        _wait(lambda: len(pool.links) == 2, 10, "the second replica")
        assert set(pool.links) == {"127.0.0.1:3478", "127.0.0.2:3478"}
    finally:
        pool.stop()


def test_replicas_of_a_failing_record_type_are_kept(picky_dns: PickyDns) -> None:
    picky_dns.aaaa = ["::1"]
    pool = _pool(picky_dns)
    try:
        assert set(pool.links) == {"127.0.0.1:3478", "::1:3478"}
        picky_dns.aaaa = []  # now AAAA queries are refused: keep the v6 replica we have
        seen = picky_dns.queries
        _wait(lambda: picky_dns.queries >= seen + 4, 10, "two more resolves")
        assert set(pool.links) == {"127.0.0.1:3478", "::1:3478"}
        picky_dns.a = ["127.0.0.2"]  # ...while A changes still apply
        _wait(lambda: "127.0.0.2:3478" in pool.links, 10, "the A change")
        assert set(pool.links) == {"127.0.0.2:3478", "::1:3478"}
    finally:
        pool.stop()


def test_names_resolve_over_tcp_when_udp_gets_no_answer(picky_dns: PickyDns) -> None:
    """A tcp-only zone: UDP queries go unanswered; the pool asks again over TCP."""
    picky_dns.udp = False
    pool = _pool(picky_dns)
    try:
        assert set(pool.links) == {"127.0.0.1:3478"}
        assert picky_dns.tcp_queries >= 1
        picky_dns.a = ["127.0.0.2"]  # later resolves go straight to TCP
        _wait(lambda: set(pool.links) == {"127.0.0.2:3478"}, 10, "the change, over TCP")
    finally:
        pool.stop()
