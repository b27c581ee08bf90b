"""A DNS server on loopback for the relay pool's tests (dnspython messages).

Real enough for ``dns.resolver`` over UDP and TCP, small enough to make fail
on purpose: refuse a record type, or go silent over UDP.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class LoopbackDns:
    """Authoritative for one ``name``: answers A with ``a`` and AAAA with ``aaaa``;
    an AAAA query with ``aaaa`` empty gets ``aaaa_rcode`` (dnsmasq's REFUSED by
    default; NOERROR gives an empty answer). Other names: NXDOMAIN.

    Serves UDP and TCP on one port; with ``udp`` cleared it reads UDP queries
    and never answers them (a firewall that lets only TCP out).
    """

    @staticmethod
    def _bind_pair(tries: int = 20) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on one free port of 127.0.0.1 (DNS serves both
        on one port). The kernel picks the UDP port; the same number may be in
        use for TCP (a connection's local port, seen in CI), so pick again."""
        for _ in range(tries):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            return udp, tcp
        raise OSError(f"no port of 127.0.0.1 free for both UDP and TCP in {tries} tries")

    def __init__(self, name: str) -> None:
        self.name = name if name.endswith(".") else name + "."
        self.sock, self.tcp = self._bind_pair()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
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
        if q.name.to_text().lower() != self.name:
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
