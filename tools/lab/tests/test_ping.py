"""Parsing iputils ping output."""

from __future__ import annotations

from wirekube_lab.ping import parse_ping

OUTPUT = """PING 10.2.0.10 (10.2.0.10) 56(84) bytes of data.
64 bytes from 10.2.0.10: icmp_seq=1 ttl=62 time=0.512 ms
64 bytes from 10.2.0.10: icmp_seq=3 ttl=62 time=0.101 ms
64 bytes from 10.2.0.10: icmp_seq=3 ttl=62 time=0.300 ms (DUP!)
64 bytes from 10.2.0.10: icmp_seq=4 ttl=62 time=0.095 ms

--- 10.2.0.10 ping statistics ---
4 packets transmitted, 3 received, +1 duplicates, 25% packet loss, time 601ms
rtt min/avg/max/mdev = 0.095/0.236/0.512/0.190 ms
"""


def test_parse_with_loss_and_duplicates() -> None:
    r = parse_ping("10.2.0.10", OUTPUT)
    assert (r.sent, r.received, r.lost) == (4, 3, 1)
    assert r.replied_seqs == (1, 3, 4)
    assert r.rtts_ms == (0.512, 0.101, 0.095)
    assert r.loss == 0.25
    assert not r.ok
    assert r.rtt_max_ms == 0.512
    assert r.rtt_min_ms == 0.095


def test_parse_total_loss() -> None:
    text = "PING 1.2.3.4 (1.2.3.4) 56(84) bytes of data.\n\n--- 1.2.3.4 ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 2040ms\n"
    r = parse_ping("1.2.3.4", text)
    assert (r.sent, r.received, r.rtt_avg_ms, r.loss) == (3, 0, None, 1.0)


def test_parse_nothing() -> None:
    r = parse_ping("x", "")
    assert (r.sent, r.received, r.ok) == (0, 0, False)
