"""NAT behaviour from STUN observations, and what each router kind must show (pure).

The prober (:mod:`~wirekube_lab.natprobe`) records what it saw; this module
turns that into RFC 4787 terms and compares it with the router's kind.

Mapping: one local UDP port sends Binding requests to the primary server
address (A1:P), the alternate address (A2:P) and the alternate port (A1:P').
Mapped address equal to the local one -> ``none`` (no NAT); the same mapping
for all three -> ``endpoint-independent``; the same for A1:P and A1:P' but
different for A2 -> ``address-dependent``; otherwise
``address-and-port-dependent``.

Filtering (RFC 5780 section 4.4), from a *fresh* local port that has talked
only to A1:P: a reply sent from A2:P' (CHANGE-REQUEST ip+port) arrives ->
``endpoint-independent``; else a reply from A1:P' (CHANGE-REQUEST port)
arrives -> ``address-dependent``; else ``address-and-port-dependent``.

No UDP answer at all -> ``udp: false`` (mapping and filtering unknown); TCP
reachability is probed separately with STUN over TCP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Address = tuple[str, int]

NONE = "none"
EI = "endpoint-independent"
AD = "address-dependent"
APD = "address-and-port-dependent"


@dataclass(frozen=True)
class Observations:
    local: Address
    primary: Address | None  # mapped address seen by A1:P
    alt_address: Address | None  # ... by A2:P
    alt_port: Address | None  # ... by A1:P'
    filter_primary: Address | None  # fresh port: mapped address seen by A1:P
    change_both: bool  # reply from A2:P' arrived
    change_port: bool  # reply from A1:P' arrived
    tcp: Address | None  # mapped address of a STUN-over-TCP request

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observations:
        def addr(value: Any) -> Address | None:
            return None if value is None else (str(value[0]), int(value[1]))

        return cls(
            local=(str(data["local"][0]), int(data["local"][1])),
            primary=addr(data["primary"]),
            alt_address=addr(data["alt_address"]),
            alt_port=addr(data["alt_port"]),
            filter_primary=addr(data["filter_primary"]),
            change_both=bool(data["change_both"]),
            change_port=bool(data["change_port"]),
            tcp=addr(data["tcp"]),
        )


@dataclass(frozen=True)
class NatBehaviour:
    udp: bool
    tcp: bool
    mapping: str | None
    filtering: str | None
    public_ip: str | None
    port_preserved: bool | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def classify(obs: Observations) -> NatBehaviour:
    tcp_ok = obs.tcp is not None
    if obs.primary is None:
        return NatBehaviour(
            udp=False,
            tcp=tcp_ok,
            mapping=None,
            filtering=None,
            public_ip=obs.tcp[0] if obs.tcp else None,
            port_preserved=None,
        )
    if obs.primary == obs.local:
        mapping = NONE
    elif obs.primary == obs.alt_address == obs.alt_port:
        mapping = EI
    elif obs.primary == obs.alt_port:
        mapping = AD
    else:
        mapping = APD
    if obs.change_both:
        filtering = EI
    elif obs.change_port:
        filtering = AD
    else:
        filtering = APD
    return NatBehaviour(
        udp=True,
        tcp=tcp_ok,
        mapping=mapping,
        filtering=filtering,
        public_ip=obs.primary[0],
        port_preserved=obs.primary[1] == obs.local[1],
    )


# kind -> (udp, tcp, mapping, filtering)
EXPECTED: dict[str, tuple[bool, bool, str | None, str | None]] = {
    "public": (True, True, NONE, EI),
    "full-cone": (True, True, EI, EI),
    "address-restricted": (True, True, EI, AD),
    "port-restricted": (True, True, EI, APD),
    "symmetric": (True, True, APD, APD),
    "tcp-only": (False, True, None, None),
    # only the network's proxy hosts reach the internet (TCP 443): a node
    # (the probing host) gets nothing out
    "tls-only": (False, False, None, None),
    "one-to-one": (True, True, EI, EI),  # a node with public_ip behind a NAT router
}


def mismatches(kind: str, seen: NatBehaviour, public_ip: str) -> list[str]:
    """Differences between what was seen and what ``kind`` must show (empty: pass)."""
    udp, tcp, mapping, filtering = EXPECTED[kind]
    out: list[str] = []
    if seen.udp != udp:
        out.append(
            f"udp {'works' if seen.udp else 'blocked'}, expected {'works' if udp else 'blocked'}"
        )
    if seen.tcp != tcp:
        out.append(
            f"tcp {'works' if seen.tcp else 'blocked'}, expected {'works' if tcp else 'blocked'}"
        )
    if seen.mapping != mapping:
        out.append(f"mapping {seen.mapping}, expected {mapping}")
    if seen.filtering != filtering:
        out.append(f"filtering {seen.filtering}, expected {filtering}")
    if seen.public_ip is not None and seen.public_ip != public_ip:
        out.append(f"public address {seen.public_ip}, expected {public_ip}")
    return out
