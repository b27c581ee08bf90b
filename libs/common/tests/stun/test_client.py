"""The sans-IO STUN client driven by a fake clock and a captured send()."""

from __future__ import annotations

import ipaddress

import pytest

from wirekube_common.stun import codec
from wirekube_common.stun.client import BindingResult, StunClient
from wirekube_common.stun.codec import (
    ErrorCode,
    MessageClass,
    Method,
    OtherAddress,
    ResponseOrigin,
    StunMessage,
    XorMappedAddress,
)
from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.timers import RFC_POLICY, RetransmitPolicy

SERVER_A = Endpoint.parse("192.0.2.1:3478")
SERVER_B = Endpoint.parse("[2001:db8::1]:3478")
MAPPED = Endpoint.parse("203.0.113.9:40001")


class Harness:
    def __init__(self, policy: RetransmitPolicy = RFC_POLICY) -> None:
        self.now = 0.0
        self.sent: list[tuple[float, bytes, Endpoint]] = []
        self.done: list[BindingResult] = []
        self.client = StunClient(self._send, clock=lambda: self.now, policy=policy)

    def _send(self, data: bytes, dest: Endpoint) -> None:
        self.sent.append((self.now, data, dest))

    def run_until(self, t: float) -> None:
        while (d := self.client.next_deadline()) is not None and d <= t:
            self.now = d
            self.client.poll()
        self.now = t

    def reply(
        self,
        request: bytes,
        *attrs: object,
        cls: MessageClass = MessageClass.SUCCESS,
        txid: bytes | None = None,
    ) -> bytes:
        req = codec.decode(request)
        return codec.encode(
            StunMessage(
                Method.BINDING,
                cls,
                txid or req.transaction_id,
                tuple(attrs),  # type: ignore[arg-type]
                fingerprint=True,
            )
        )


def test_rfc_retransmission_schedule_and_timeout() -> None:
    h = Harness()
    h.client.start(SERVER_A, on_done=h.done.append)
    h.run_until(100.0)
    times = [t for t, _, _ in h.sent]
    assert times == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert times == pytest.approx(RFC_POLICY.schedule())
    assert len({d for _, d, _ in h.sent}) == 1  # same transaction ID every time
    assert len(h.done) == 1 and h.done[0].timed_out and h.done[0].transmissions == 7
    assert RFC_POLICY.total_timeout() == pytest.approx(39.5)
    assert h.client.pending == 0


def test_timeout_fires_at_rm_times_rto_after_last() -> None:
    h = Harness(RetransmitPolicy(0.1, 3, 4))
    h.client.start(SERVER_A, on_done=h.done.append)
    h.run_until(0.699)
    assert not h.done and len(h.sent) == 3
    h.run_until(0.701)
    assert h.done[0].timed_out


def test_success_reply_matched_with_rtt_and_attributes() -> None:
    h = Harness()
    h.client.start(SERVER_A, on_done=h.done.append)
    h.now = 0.042
    reply = h.reply(
        h.sent[0][1],
        XorMappedAddress.of(MAPPED),
        ResponseOrigin.of(SERVER_A),
        OtherAddress.of(Endpoint.parse("192.0.2.2:3479")),
    )
    assert h.client.on_datagram(reply, SERVER_A)
    (r,) = h.done
    assert r.ok and r.mapped == MAPPED and r.rtt == pytest.approx(0.042)
    assert r.other_address == Endpoint.parse("192.0.2.2:3479")
    assert r.response_origin == SERVER_A and r.source == SERVER_A and r.transmissions == 1
    # A duplicate (retransmitted) answer is not ours any more.
    assert not h.client.on_datagram(reply, SERVER_A)
    assert h.client.next_deadline() is None


def test_unmatched_and_garbage_are_not_consumed() -> None:
    h = Harness()
    h.client.start(SERVER_A, on_done=h.done.append)
    req = h.sent[0][1]
    assert not h.client.on_datagram(b"\x01\x00\x00\x00" + bytes(144), SERVER_A)  # WireGuard
    assert not h.client.on_datagram(h.reply(req, txid=bytes(12)), SERVER_A)
    assert not h.client.on_datagram(req, SERVER_A)  # a request is not a reply
    assert not h.done and h.client.pending == 1


def test_parallel_transactions_ipv4_and_ipv6() -> None:
    h = Harness()
    h.client.start(SERVER_A, on_done=h.done.append)
    h.client.start(SERVER_B, on_done=h.done.append)
    (_, req_a, dst_a), (_, req_b, dst_b) = h.sent
    assert (dst_a, dst_b) == (SERVER_A, SERVER_B)
    v6_mapped = Endpoint(ipaddress.IPv6Address("2001:db8::99"), 5555)
    assert h.client.on_datagram(h.reply(req_b, XorMappedAddress.of(v6_mapped)), SERVER_B)
    assert h.client.on_datagram(h.reply(req_a, XorMappedAddress.of(MAPPED)), SERVER_A)
    assert [r.server for r in h.done] == [SERVER_B, SERVER_A]
    assert [r.mapped for r in h.done] == [v6_mapped, MAPPED]


def test_retransmitted_rtt_is_upper_bound_and_counted() -> None:
    h = Harness(RetransmitPolicy(0.1, 4, 4))
    h.client.start(SERVER_A, on_done=h.done.append)
    h.run_until(0.35)
    h.client.on_datagram(h.reply(h.sent[0][1], XorMappedAddress.of(MAPPED)), SERVER_A)
    assert h.done[0].transmissions == 3 and h.done[0].rtt == pytest.approx(0.35)


def test_error_response() -> None:
    h = Harness()
    h.client.start(SERVER_A, change_ip=True, on_done=h.done.append)
    req = codec.decode(h.sent[0][1])
    assert req.get(codec.ChangeRequest) == codec.ChangeRequest(True, False)
    h.client.on_datagram(
        h.reply(h.sent[0][1], ErrorCode(420, "Unknown Attribute"), cls=MessageClass.ERROR),
        SERVER_A,
    )
    (r,) = h.done
    assert not r.ok and r.error == ErrorCode(420, "Unknown Attribute") and r.mapped is None


def test_reply_from_other_source_is_recorded() -> None:
    h = Harness()
    h.client.start(SERVER_A, change_ip=True, change_port=True, on_done=h.done.append)
    other = Endpoint.parse("192.0.2.2:3479")
    h.client.on_datagram(h.reply(h.sent[0][1], XorMappedAddress.of(MAPPED)), other)
    assert h.done[0].source == other and h.done[0].server == SERVER_A


def test_cancel() -> None:
    h = Harness()
    txn = h.client.start(SERVER_A, on_done=h.done.append)
    h.client.cancel(txn)
    h.run_until(100)
    assert len(h.sent) == 1 and not h.done


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetransmitPolicy(0, 1, 1)
    assert RetransmitPolicy(1.0, 1, 2).schedule() == [0.0]
    assert RetransmitPolicy(1.0, 1, 2).total_timeout() == 2.0
