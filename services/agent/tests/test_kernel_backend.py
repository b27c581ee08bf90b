"""The kernel backend's translation, checked against pyroute2's real codec.

This machine has no WireGuard kernel module, so the kernel backend cannot be
exercised end to end here; instead the netlink messages pyroute2 would send and
decode are built with pyroute2's own message classes.
"""

import base64
import ipaddress

from pyroute2.netlink.generic.wireguard import wgmsg

from wirekube_agent.netlink.wireguard import peer_requests, state_from_messages
from wirekube_common.wireguard.types import DeviceConfig, PeerConfig

from .helpers import key


def test_peer_requests() -> None:
    reqs = peer_requests(
        DeviceConfig(
            peers=(
                PeerConfig(
                    key(2),
                    endpoint=("198.18.0.2", 51820),
                    allowed_ips=(ipaddress.ip_network("10.0.0.2/32"),),
                    persistent_keepalive=25,
                ),
                PeerConfig(key(3), remove=True),
                PeerConfig(key(4), endpoint=("2001:db8::4", 1)),
            )
        )
    )
    b = lambda n: base64.b64encode(key(n)).decode()  # noqa: E731
    assert reqs == [
        {
            "public_key": b(2),
            "endpoint_addr": "198.18.0.2",
            "endpoint_port": 51820,
            "persistent_keepalive": 25,
            "replace_allowed_ips": True,
            "allowed_ips": ["10.0.0.2/32"],
        },
        {"public_key": b(3), "remove": True},
        {"public_key": b(4), "endpoint_addr": "2001:db8::4", "endpoint_port": 1},
    ]


def _encoded_dump() -> wgmsg:
    """A GET_DEVICE answer as the kernel would send it, via pyroute2's encoder."""
    msg = wgmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = [
        ["WGDEVICE_A_IFNAME", "wire_kube"],
        ["WGDEVICE_A_PRIVATE_KEY", base64.b64encode(key(1))],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        ["WGDEVICE_A_FWMARK", 0x574B],
        [
            "WGDEVICE_A_PEERS",
            [
                {
                    "attrs": [
                        ["WGPEER_A_PUBLIC_KEY", base64.b64encode(key(2))],
                        ["WGPEER_A_ENDPOINT", {"addr": "198.18.0.2", "port": 51820}],
                        ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
                        ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 0}],
                        ["WGPEER_A_RX_BYTES", 123],
                        ["WGPEER_A_TX_BYTES", 456],
                    ]
                }
            ],
        ],
    ]
    msg.encode()
    decoded = wgmsg(msg.data)
    decoded.decode()
    return decoded


def test_state_from_real_messages() -> None:
    state = state_from_messages([_encoded_dump()])
    assert state.private_key == key(1)
    assert (state.listen_port, state.fwmark) == (51820, 0x574B)
    peer = state.peers[key(2)]
    assert peer.endpoint == ("198.18.0.2", 51820)
    assert peer.persistent_keepalive == 25
    assert peer.last_handshake == 1700000000.0
    assert (peer.rx_bytes, peer.tx_bytes) == (123, 456)
