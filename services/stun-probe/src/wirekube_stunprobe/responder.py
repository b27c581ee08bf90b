"""What to answer to one datagram or TCP message. Pure: no sockets, no clock.

``respond(data, source, arrived_on, table, ...)`` returns either a ``Reply``
(bytes, which local address to send them from, and to whom) or a ``Drop``
with a reason that becomes a metric label. Rate limiting happens before this
(it needs a clock); everything about message content happens here.

Server behaviour:

* **RFC 5389**: a Binding request gets XOR-MAPPED-ADDRESS; other methods get
  400; unknown comprehension-required attributes get 420 with
  UNKNOWN-ATTRIBUTES. Requests with a FINGERPRINT get one back (budget
  permitting). Indications and responses are ignored (never answered).
* **RFC 5780** (when an alternate IP and port are configured, i.e. four UDP
  sockets ``(ip index, port index)``): CHANGE-REQUEST selects the socket the
  answer leaves from; RESPONSE-ORIGIN names it; OTHER-ADDRESS names the
  socket differing in both IP and port from the one the request reached.
  RESPONSE-PORT sends the answer to the requester's IP at that port. Without
  the alternate address, CHANGE-REQUEST asking for a change gets 420.
  Over TCP, CHANGE-REQUEST with a change and RESPONSE-PORT get 400.
* **RFC 3489** clients (no magic cookie, e.g. Debian's ``stun``) get
  MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS, with their 128-bit
  transaction ID echoed; cookie-less non-Binding messages are dropped. RFC 3489's RESPONSE-ADDRESS (answer to a third
  party) is never honoured: it is a reflection primitive; it gets 420.
* **No amplification**: over UDP a reply is at most ``max_factor`` times the
  request's size. Mandatory attributes first, optional ones (RESPONSE-ORIGIN,
  OTHER-ADDRESS, FINGERPRINT, SOFTWARE, in a fixed priority) only while they
  fit; if even the mandatory part does not fit, the request is dropped.
* **Spoofed sources**: unspecified, multicast, broadcast, "this network"
  (0/8), class E, port 0, or one of our own sockets -- dropped unanswered.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from wirekube_common.stun import codec
from wirekube_common.stun.codec import (
    Attribute,
    AttrType,
    ChangedAddress,
    ChangeRequest,
    ErrorCode,
    MappedAddress,
    MessageClass,
    Method,
    OtherAddress,
    RawAttribute,
    ResponseOrigin,
    ResponsePort,
    Software,
    SourceAddress,
    StunDecodeError,
    StunMessage,
    UnknownAttributes,
    XorMappedAddress,
)
from wirekube_common.stun.endpoint import Endpoint, IPAddress

SocketIndex = tuple[int, int]  # (ip index, port index); (0, 0) is the primary
PRIMARY: SocketIndex = (0, 0)

# Comprehension-required attributes we understand well enough to ignore
# (we do no authentication, and these carry no instruction for us).
IGNORED_ATTRIBUTES = frozenset(
    {AttrType.USERNAME, AttrType.MESSAGE_INTEGRITY, AttrType.REALM, AttrType.NONCE}
)

_NON_ROUTABLE_V4 = (
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("240.0.0.0/4"),  # class E, includes 255.255.255.255
)


class DropReason(StrEnum):
    NOT_STUN = "not-stun"
    MALFORMED = "malformed"
    NOT_REQUEST = "not-request"
    SPOOFED = "spoofed-source"
    AMPLIFICATION = "amplification"
    RATE_LIMITED = "rate-limited"
    GLOBAL_LIMIT = "global-limit"
    TCP_FRAMING = "tcp-framing"
    TCP_CONNECTIONS = "tcp-connections"
    TCP_SOURCE_CONNECTIONS = "tcp-source-connections"
    SEND_FAILED = "send-failed"


@dataclass(frozen=True)
class AddressTable:
    """The server's transport addresses, indexed by ``SocketIndex``.

    ``alternate_ip``/``alternate_port`` are both needed for RFC 5780 mode.
    """

    primary: Endpoint
    alternate_ip: IPAddress | None = None
    alternate_port: int | None = None

    @property
    def rfc5780(self) -> bool:
        return self.alternate_ip is not None and self.alternate_port is not None

    def indices(self) -> list[SocketIndex]:
        return [(i, p) for i in (0, 1) for p in (0, 1) if self.has(i, p)]

    def has(self, ip_i: int, port_i: int) -> bool:
        return (ip_i == 0 or self.alternate_ip is not None) and (
            port_i == 0 or self.alternate_port is not None
        )

    def address(self, index: SocketIndex) -> Endpoint:
        ip_i, port_i = index
        if not self.has(ip_i, port_i):
            raise KeyError(index)
        ip = self.primary.ip if ip_i == 0 else self.alternate_ip
        port = self.primary.port if port_i == 0 else self.alternate_port
        assert ip is not None and port is not None
        return Endpoint(ip, port)

    def is_own(self, ep: Endpoint) -> bool:
        return any(self.address(i) == ep for i in self.indices())


@dataclass(frozen=True)
class Reply:
    datagram: bytes
    via: SocketIndex
    to: Endpoint
    error: int | None = None


@dataclass(frozen=True)
class Drop:
    reason: DropReason


def is_spoofed(source: Endpoint, table: AddressTable) -> bool:
    ip = source.ip
    if source.port == 0 or ip.is_unspecified or ip.is_multicast:
        return True
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in n for n in _NON_ROUTABLE_V4):
        return True
    return table.is_own(source)


def respond(
    data: bytes,
    source: Endpoint,
    arrived_on: SocketIndex,
    table: AddressTable,
    *,
    tcp: bool = False,
    max_factor: float | None = 3.0,
    software: str | None = None,
) -> Reply | Drop:
    """Decide the answer to one request (see the module docstring)."""
    if is_spoofed(source, table):
        return Drop(DropReason.SPOOFED)
    try:
        req = codec.decode(data)
    except StunDecodeError:
        # "Malformed" only for data that claims to be STUN (cookie or a length
        # field matching the size); anything else is someone else's protocol.
        looks_like_stun = (
            len(data) >= codec.HEADER_LEN
            and not data[0] & 0xC0
            and (
                data[4:8] == codec.MAGIC_COOKIE_BYTES
                or int.from_bytes(data[2:4], "big") == len(data) - codec.HEADER_LEN
            )
        )
        return Drop(DropReason.MALFORMED if looks_like_stun else DropReason.NOT_STUN)
    if req.cls != MessageClass.REQUEST:
        return Drop(DropReason.NOT_REQUEST)
    budget = None if tcp or max_factor is None else int(len(data) * max_factor)

    def error(code: int, reason: str, *extra: Attribute) -> Reply | Drop:
        return _build(req, source, arrived_on, [ErrorCode(code, reason), *extra], [], budget, code)

    if req.method != Method.BINDING:
        # RFC 3489 knew only Binding (and Shared Secret); without a cookie a
        # non-Binding "request" is far more likely noise (20 zero bytes
        # parse as one) than a client, so it is not answered at all.
        if req.classic:
            return Drop(DropReason.MALFORMED)
        return error(400, "Bad Request: only Binding is served")
    unknown = [
        a.type
        for a in req.attributes
        if isinstance(a, RawAttribute)
        and codec.is_comprehension_required(a.type)
        and a.type not in IGNORED_ATTRIBUTES
    ]
    if unknown:
        return error(420, "Unknown Attribute", UnknownAttributes(tuple(unknown)))
    change = req.get(ChangeRequest) or ChangeRequest()
    response_port = req.get(ResponsePort)
    if tcp and (change.change_ip or change.change_port or response_port is not None):
        return error(400, "Bad Request: CHANGE-REQUEST/RESPONSE-PORT need UDP")
    via = (arrived_on[0] ^ change.change_ip, arrived_on[1] ^ change.change_port)
    if not table.has(*via):
        return error(420, "Unknown Attribute", UnknownAttributes((AttrType.CHANGE_REQUEST,)))
    to = source
    if response_port is not None:
        if response_port.port == 0:
            return error(400, "Bad Request: RESPONSE-PORT 0")
        to = Endpoint(source.ip, response_port.port)
    origin = table.address(via)
    other_index = (1 - arrived_on[0], 1 - arrived_on[1])
    other = table.address(other_index) if table.rfc5780 else None
    specific = not origin.ip.is_unspecified
    mandatory: list[Attribute]
    optional: list[Attribute]
    if req.classic:
        mandatory = [MappedAddress.of(source)]
        optional = []
        if specific:
            optional.append(SourceAddress.of(origin))
        if other is not None:
            optional.append(ChangedAddress.of(other))
    else:
        mandatory = [XorMappedAddress.of(source)]
        optional = []
        if other is not None:
            optional.append(OtherAddress.of(other))
        if specific:
            optional.append(ResponseOrigin.of(origin))
        if software:
            optional.append(Software(software))
    reply = _build(req, source, via, mandatory, optional, budget, None)
    if isinstance(reply, Reply):
        return Reply(reply.datagram, via, to)
    return reply


def _build(
    req: StunMessage,
    source: Endpoint,
    via: SocketIndex,
    mandatory: list[Attribute],
    optional: list[Attribute],
    budget: int | None,
    error_code: int | None,
) -> Reply | Drop:
    cls = MessageClass.ERROR if error_code is not None else MessageClass.SUCCESS
    # FINGERPRINT is echoed for RFC 5389 requests that carried one; it is the
    # lowest-priority optional part (8 bytes).
    want_fp = req.fingerprint and not req.classic
    size = codec.HEADER_LEN + sum(codec.encoded_attribute_size(a) for a in mandatory)
    if error_code is not None and budget is not None and size > budget:
        # Shorten the reason phrase rather than give up on the error.
        err = mandatory[0]
        assert isinstance(err, ErrorCode)
        excess = size - budget
        keep = max(0, len(err.reason.encode()) - excess - 3)
        mandatory = [
            ErrorCode(err.code, err.reason.encode()[:keep].decode(errors="ignore")),
            *mandatory[1:],
        ]
        size = codec.HEADER_LEN + sum(codec.encoded_attribute_size(a) for a in mandatory)
    if budget is not None and size > budget:
        return Drop(DropReason.AMPLIFICATION)
    attrs = list(mandatory)
    fingerprint = False
    # Priority order: addresses as listed, then FINGERPRINT, then SOFTWARE.
    addresses = [a for a in optional if not isinstance(a, Software)]
    rest = [a for a in optional if isinstance(a, Software)]
    for attr in addresses:
        extra = codec.encoded_attribute_size(attr)
        if budget is None or size + extra <= budget:
            attrs.append(attr)
            size += extra
    if want_fp and (budget is None or size + 8 <= budget):
        fingerprint = True
        size += 8
    for soft in rest:
        extra = codec.encoded_attribute_size(soft)
        if budget is None or size + extra <= budget:
            attrs.append(soft)
            size += extra
    msg = StunMessage(
        req.method,
        cls,
        req.transaction_id,
        tuple(attrs),
        fingerprint=fingerprint,
        cookie=req.cookie,
    )
    return Reply(codec.encode(msg), via, source, error_code)
