"""The raw-socket view of our WireGuard listen port, shared by STUN and probes.

One owner for the socket (this module); the prober gets ``send`` and is fed
its datagrams, netcheck gets ``binding``. The kernel filter passes up only
STUN and disco datagrams, so WireGuard's own traffic never reaches Python.
Packets carry our fwmark, so they leave through the underlay, never the
tunnel. Needs CAP_NET_RAW; without it the agent still works, minus STUN and
direct-path probing (it logs why).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from wirekube_agent.model import FWMARK, Endpoint
from wirekube_agent.paths import disco
from wirekube_common.rawudp import Datagram
from wirekube_common.stun.aio import RawStunSocket
from wirekube_common.stun.client import BindingResult
from wirekube_common.stun.endpoint import Endpoint as StunEndpoint

log = logging.getLogger(__name__)

OnProbe = Callable[[bytes, Endpoint, float], None]


class Underlay:
    def __init__(self, port: int, on_probe: OnProbe) -> None:
        self.port = port
        self._on_probe = on_probe
        self.sock = RawStunSocket(
            port,
            fwmark=FWMARK,
            on_other=self._other,
            other_words=[(0, disco.MAGIC_WORD)],
        )

    def _other(self, dgram: Datagram) -> None:
        if disco.is_disco(dgram.payload):
            self._on_probe(dgram.payload, (str(dgram.src.ip), dgram.src.port), time.time())

    def send(self, payload: bytes, endpoint: Endpoint) -> bool:
        return self.sock.send(payload, StunEndpoint(ipaddress.ip_address(endpoint[0]), endpoint[1]))

    async def binding(self, server: StunEndpoint, **kwargs: object) -> BindingResult:
        return await self.sock.binding(server, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()
