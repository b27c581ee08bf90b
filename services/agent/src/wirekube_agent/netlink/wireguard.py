"""Kernel WireGuard over generic netlink (pyroute2.WireGuard).

The pure halves — ``peer_requests`` (our change → pyroute2's peer dicts) and
``state_from_messages`` (pyroute2's decoded dump → our ``DeviceState``) — are
unit-tested; the I/O halves are two calls. pyroute2 sets one peer per message,
which suits the kernel (each message is a cheap syscall).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable
from typing import Any

from pyroute2 import WireGuard

from wirekube_common.wireguard.types import DeviceConfig, DeviceState, IPNetwork, PeerState


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def peer_requests(config: DeviceConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for peer in config.peers:
        req: dict[str, Any] = {"public_key": _b64(peer.public_key)}
        if peer.remove:
            req["remove"] = True
            out.append(req)
            continue
        if peer.update_only:
            req["update_only"] = True
        if peer.endpoint is not None:
            req["endpoint_addr"], req["endpoint_port"] = peer.endpoint
        if peer.persistent_keepalive is not None:
            req["persistent_keepalive"] = peer.persistent_keepalive
        if peer.allowed_ips is not None:
            req["replace_allowed_ips"] = True
            req["allowed_ips"] = [str(n) for n in peer.allowed_ips]
        out.append(req)
    return out


def _key(value: Any) -> bytes:
    """pyroute2 hands keys back base64-encoded (bytes or str)."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return base64.b64decode(value)


def state_from_messages(messages: Iterable[Any]) -> DeviceState:
    private_key: bytes | None = None
    listen_port = 0
    fwmark = 0
    peers: dict[bytes, PeerState] = {}
    for msg in messages:
        pk = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if pk is not None:
            private_key = _key(pk)
        listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or listen_port
        fwmark = msg.get_attr("WGDEVICE_A_FWMARK") or fwmark
        # Large devices come back as several messages, each with some peers.
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
            key = _key(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
            handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            allowed: set[IPNetwork] = set()
            for aip in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                if aip.get("addr"):
                    allowed.add(ipaddress.ip_network(aip["addr"], strict=False))
            prev = peers.get(key)
            if prev is not None:  # a peer split across messages: merge its allowed IPs
                allowed |= prev.allowed_ips
            peers[key] = PeerState(
                public_key=key,
                endpoint=(endpoint["addr"], endpoint["port"])
                if endpoint and endpoint["port"]
                else None,
                allowed_ips=frozenset(allowed),
                persistent_keepalive=peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0,
                last_handshake=(
                    handshake["tv_sec"] + handshake["tv_nsec"] / 1e9
                    if handshake and handshake["tv_sec"]
                    else 0.0
                ),
                rx_bytes=peer.get_attr("WGPEER_A_RX_BYTES") or 0,
                tx_bytes=peer.get_attr("WGPEER_A_TX_BYTES") or 0,
            )
    return DeviceState(private_key=private_key, listen_port=listen_port, fwmark=fwmark, peers=peers)


def get(interface: str) -> DeviceState:
    with WireGuard() as wg:
        return state_from_messages(wg.info(interface))


def apply(interface: str, config: DeviceConfig) -> None:
    with WireGuard() as wg:
        if (
            config.private_key is not None
            or config.listen_port is not None
            or config.fwmark is not None
        ):
            wg.set(
                interface,
                private_key=_b64(config.private_key) if config.private_key is not None else None,
                listen_port=config.listen_port,
                fwmark=config.fwmark,
            )
        for request in peer_requests(config):
            wg.set(interface, peer=request)
