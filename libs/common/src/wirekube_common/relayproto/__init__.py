"""The WireKube relay protocol, sans-IO: framing (``frames``) and registration (``handshake``).

Shared by the relay service and the agent's relay bridge. Nothing here opens a
socket or touches an event loop; the specification is docs/relay-protocol.md.
"""

from wirekube_common.relayproto import frames, handshake
from wirekube_common.relayproto.frames import FrameParser, ProtocolError, scan
from wirekube_common.relayproto.handshake import ClientHandshake, HandshakeError, ServerHandshake

__all__ = [
    "ClientHandshake",
    "FrameParser",
    "HandshakeError",
    "ProtocolError",
    "ServerHandshake",
    "frames",
    "handshake",
    "scan",
]
