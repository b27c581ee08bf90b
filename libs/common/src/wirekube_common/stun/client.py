"""STUN Binding transactions without owning a socket (sans-IO-ish prober).

The client is *handed* a ``send(datagram, destination)`` callable and *fed*
replies through ``on_datagram(data, source)``; time comes from an injected
clock. It therefore runs unchanged over

* an ordinary UDP socket (``aio.UdpStunSocket``),
* the raw-socket port shared with WireGuard (``wirekube_common.rawudp``),
* a test that drives a fake clock and captures datagrams in a list.

Mechanics (RFC 5389 section 7):

* every request gets a fresh 96-bit transaction ID; replies are matched on
  the full 128 bits (cookie + ID) only -- *not* on the source address, since
  an RFC 5780 CHANGE-REQUEST answer legitimately comes from elsewhere. The
  source is recorded so callers can check it;
* retransmission per a ``RetransmitPolicy`` (RTO doubling, Rc transmissions,
  Rm final wait). The owner calls ``poll()`` at ``next_deadline()``;
* any number of transactions run in parallel (one per server and test);
* a reply that is not STUN, not a response, or not ours returns ``False``
  from ``on_datagram`` so a shared port can hand the datagram elsewhere.

RTT is measured from the first transmission; when the request had to be
retransmitted the figure is an upper bound (Karn's ambiguity) and
``transmissions`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from wirekube_common.stun import codec
from wirekube_common.stun.codec import (
    ChangedAddress,
    ChangeRequest,
    ErrorCode,
    MessageClass,
    Method,
    OtherAddress,
    ResponseOrigin,
    Software,
    SourceAddress,
    StunDecodeError,
)
from wirekube_common.stun.endpoint import Endpoint
from wirekube_common.stun.timers import RFC_POLICY, RetransmitPolicy

SendFn = Callable[[bytes, Endpoint], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class BindingResult:
    """The outcome of one Binding transaction."""

    server: Endpoint
    """Where the request was sent."""
    change: ChangeRequest | None
    """The CHANGE-REQUEST flags sent, if any."""
    mapped: Endpoint | None = None
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server)."""
    source: Endpoint | None = None
    """The address the response actually came from."""
    response_origin: Endpoint | None = None
    """RESPONSE-ORIGIN (or RFC 3489 SOURCE-ADDRESS) as claimed by the server."""
    other_address: Endpoint | None = None
    """OTHER-ADDRESS (or RFC 3489 CHANGED-ADDRESS): the server's alternate IP+port."""
    rtt: float | None = None
    transmissions: int = 0
    error: ErrorCode | None = None
    software: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.mapped is not None and self.error is None

    def key(self) -> tuple[object, ...]:
        flags = (self.change.change_ip, self.change.change_port) if self.change else (False, False)
        return (self.server.key(), flags)


class Transaction:
    """One outstanding request. Mutable bookkeeping owned by ``StunClient``."""

    __slots__ = (
        "change",
        "datagram",
        "deadline",
        "first_sent",
        "interval",
        "key",
        "on_done",
        "policy",
        "result",
        "server",
        "transmissions",
    )

    def __init__(
        self,
        key: bytes,
        server: Endpoint,
        datagram: bytes,
        *,
        change: ChangeRequest | None,
        policy: RetransmitPolicy,
        now: float,
        on_done: Callable[[BindingResult], None] | None,
    ) -> None:
        self.key = key
        self.server = server
        self.datagram = datagram
        self.change = change
        self.policy = policy
        self.first_sent = now
        self.transmissions = 1
        self.interval = policy.rto
        self.deadline = now + (policy.rto if policy.rc > 1 else policy.rm * policy.rto)
        self.on_done = on_done
        self.result: BindingResult | None = None

    @property
    def done(self) -> bool:
        return self.result is not None


class StunClient:
    """Runs Binding transactions over a caller-provided ``send``."""

    def __init__(
        self,
        send: SendFn,
        *,
        clock: Clock = time.monotonic,
        policy: RetransmitPolicy = RFC_POLICY,
        software: str | None = None,
        fingerprint: bool = True,
    ) -> None:
        self._send = send
        self._clock = clock
        self._policy = policy
        self._software = software
        self._fingerprint = fingerprint
        self._pending: dict[bytes, Transaction] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(
        self,
        server: Endpoint,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        policy: RetransmitPolicy | None = None,
        on_done: Callable[[BindingResult], None] | None = None,
    ) -> Transaction:
        """Send a Binding request now and track it until answered or timed out."""
        msg = codec.binding_request(
            change_ip=change_ip,
            change_port=change_port,
            software=self._software,
            fingerprint=self._fingerprint,
        )
        change = msg.get(ChangeRequest)
        txn = Transaction(
            msg.key(),
            server,
            codec.encode(msg),
            change=change,
            policy=policy or self._policy,
            now=self._clock(),
            on_done=on_done,
        )
        self._pending[txn.key] = txn
        self._send(txn.datagram, server)
        return txn

    def cancel(self, txn: Transaction) -> None:
        """Forget a transaction without a result (no callback)."""
        self._pending.pop(txn.key, None)

    def on_datagram(self, data: bytes, source: Endpoint) -> bool:
        """Feed a received datagram. True when it answered one of our transactions."""
        try:
            msg = codec.decode(data)
        except StunDecodeError:
            return False
        if msg.method != Method.BINDING or msg.cls not in (
            MessageClass.SUCCESS,
            MessageClass.ERROR,
        ):
            return False
        txn = self._pending.pop(msg.key(), None)
        if txn is None:
            return False
        now = self._clock()
        other = msg.get(OtherAddress) or msg.get(ChangedAddress)
        origin = msg.get(ResponseOrigin) or msg.get(SourceAddress)
        software = msg.get(Software)
        error = msg.get(ErrorCode) if msg.cls == MessageClass.ERROR else None
        if msg.cls == MessageClass.ERROR and error is None:
            error = ErrorCode(500, "error response without ERROR-CODE")
        result = BindingResult(
            server=txn.server,
            change=txn.change,
            mapped=msg.mapped() if error is None else None,
            source=source,
            response_origin=origin.endpoint if origin else None,
            other_address=other.endpoint if other else None,
            rtt=max(0.0, now - txn.first_sent),
            transmissions=txn.transmissions,
            error=error,
            software=software.text if software else None,
        )
        self._finish(txn, result)
        return True

    def poll(self) -> None:
        """Retransmit and time out whatever is due. Call at ``next_deadline()``."""
        now = self._clock()
        for txn in [t for t in self._pending.values() if t.deadline <= now]:
            if txn.transmissions < txn.policy.rc:
                self._send(txn.datagram, txn.server)
                txn.transmissions += 1
                if txn.transmissions < txn.policy.rc:
                    txn.interval *= 2
                    txn.deadline += txn.interval
                else:
                    txn.deadline = max(txn.deadline, now) + txn.policy.rm * txn.policy.rto
            else:
                del self._pending[txn.key]
                self._finish(
                    txn,
                    BindingResult(
                        server=txn.server,
                        change=txn.change,
                        transmissions=txn.transmissions,
                        timed_out=True,
                    ),
                )

    def next_deadline(self) -> float | None:
        """Clock time at which ``poll`` has work to do, or None when idle."""
        return min((t.deadline for t in self._pending.values()), default=None)

    @staticmethod
    def _finish(txn: Transaction, result: BindingResult) -> None:
        txn.result = result
        if txn.on_done is not None:
            txn.on_done(result)
