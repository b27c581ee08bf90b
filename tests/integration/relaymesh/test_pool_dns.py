"""The relay pool's name resolution against a DNS server that fails one record type.

Found with the lab's dnsmasq: for a name it has only an A record for (and no
upstream), it answers AAAA queries with REFUSED. The pool used to discard the
whole resolve then, A answer included, and an agent never connected to any
relay replica. A real DNS server on loopback (dnspython messages over a UDP
socket) plays such a server here; no relay needs to listen: the pool's links
are named after the addresses it resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from wirekube_agent.relay import DnsSource, RelayPool
from wirekube_common import wgkey
from wirekube_lab.loopdns import LoopbackDns
from wirekube_lab.polling import wait_for

NAME = "relay.pool.test."


@pytest.fixture
def picky_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(NAME)
    yield server
    server.close()


def _pool(server: LoopbackDns) -> RelayPool:
    source = DnsSource(NAME.rstrip("."), 3478, ["127.0.0.1"], server.port)
    pool = RelayPool(wgkey.generate_private_key(), dns_source=source, resolve_interval=0.5)
    pool.start(lambda src, packet: None)
    return pool


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(cond, timeout, what, every=0.05)


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.SERVFAIL])
def test_a_failed_aaaa_query_does_not_hide_the_a_records(
    picky_dns: LoopbackDns, rcode: dns.rcode.Rcode
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


def test_replicas_of_a_failing_record_type_are_kept(picky_dns: LoopbackDns) -> None:
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


def test_names_resolve_over_tcp_when_udp_gets_no_answer(picky_dns: LoopbackDns) -> None:
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
