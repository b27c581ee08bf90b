"""Path-probe wire format ("disco"): pings and pongs between agents, sans-IO.

Probes travel between the nodes' WireGuard listen ports (sent and read through
a raw socket, see ``wirekube_common.rawudp``), so they use exactly the NAT
mappings WireGuard's own packets use: a pong proves that WireGuard packets
would get through in both directions, without touching WireGuard's
configuration — a failed probe costs the traffic on the relay nothing.

Layout (big-endian)::

    magic   "WKD" 0x01     4   not a WireGuard message (their first byte is 1-4)
    type    1=ping 2=pong  1
    flags                  1   bit 0: the sender sends WireGuard to us directly
    sender  public key    32
    txid                  12
    [pong]  family 4|6     1
            port           2
            address     4|16   where the ping came from, as the ponger saw it
    mac                   16   HMAC-SHA256 under a key both ends derive from
                               X25519(own private, peer public), truncated

The MAC means nobody without one of the two private keys can make an agent
move a peer's traffic to an address of their choosing. Decoding raises only
``DiscoError``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from wirekube_common.wireguard.types import Endpoint

MAGIC = b"WKD\x01"
MAGIC_WORD = 0x574B4401  # MAGIC as the 32-bit word the kernel's filter matches
PING, PONG = 1, 2
FLAG_DIRECT = 0x01
KEY_LEN = 32
TXID_LEN = 12
MAC_LEN = 16
_HEAD = struct.Struct("!4sBB32s12s")
HEADER_LEN = _HEAD.size  # 50
MAX_LEN = HEADER_LEN + 1 + 2 + 16 + MAC_LEN


class DiscoError(ValueError):
    """Not a valid probe (wrong magic, truncated, bad MAC...)."""


@dataclass(frozen=True)
class Ping:
    sender: bytes
    txid: bytes
    flags: int = 0


@dataclass(frozen=True)
class Pong:
    sender: bytes
    txid: bytes
    observed: Endpoint
    flags: int = 0


def mac_key(shared_secret: bytes) -> bytes:
    """The per-pair MAC key; both ends get the same one from their X25519 secret."""
    return hashlib.sha256(b"wirekube disco v1" + shared_secret).digest()


def _seal(body: bytes, key: bytes) -> bytes:
    return body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]


def encode_ping(sender: bytes, txid: bytes, key: bytes, flags: int = 0) -> bytes:
    return _seal(_HEAD.pack(MAGIC, PING, flags, sender, txid), key)


def encode_pong(
    sender: bytes, txid: bytes, observed: Endpoint, key: bytes, flags: int = 0
) -> bytes:
    ip = ipaddress.ip_address(observed[0])
    addr = struct.pack("!BH", ip.version, observed[1]) + ip.packed
    return _seal(_HEAD.pack(MAGIC, PONG, flags, sender, txid) + addr, key)


def is_disco(data: bytes) -> bool:
    return data[:4] == MAGIC


def peek_sender(data: bytes) -> bytes:
    """The claimed sender key, to look up the MAC key before ``decode``."""
    if len(data) < HEADER_LEN + MAC_LEN or data[:4] != MAGIC:
        raise DiscoError("not a probe")
    return bytes(data[6 : 6 + KEY_LEN])


def decode(data: bytes, key: bytes) -> Ping | Pong:
    if len(data) < HEADER_LEN + MAC_LEN or len(data) > MAX_LEN:
        raise DiscoError(f"bad probe length {len(data)}")
    body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN], mac):
        raise DiscoError("bad MAC")
    magic, kind, flags, sender, txid = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise DiscoError("bad magic")
    rest = body[HEADER_LEN:]
    if kind == PING:
        if rest:
            raise DiscoError("trailing bytes in ping")
        return Ping(sender, txid, flags)
    if kind == PONG:
        if len(rest) < 3:
            raise DiscoError("truncated pong")
        family, port = struct.unpack_from("!BH", rest)
        size = {4: 4, 6: 16}.get(family)
        if size is None or len(rest) != 3 + size:
            raise DiscoError("bad pong address")
        ip = ipaddress.ip_address(rest[3 : 3 + size])
        return Pong(sender, txid, (str(ip), port), flags)
    raise DiscoError(f"unknown probe type {kind}")
