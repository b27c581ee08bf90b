import ipaddress

import pytest

from wirekube_common.wireguard.types import (
    DeviceConfig,
    PeerConfig,
    format_endpoint,
    parse_endpoint,
)
from wirekube_common.wireguard.uapi import UapiError, format_set, parse_get

K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def test_format_set_device_and_peers() -> None:
    text = format_set(
        DeviceConfig(
            private_key=K1,
            listen_port=51820,
            fwmark=0x574B,
            peers=(
                PeerConfig(
                    public_key=K2,
                    endpoint=("2001:db8::1", 51820),
                    allowed_ips=(ipaddress.ip_network("10.0.0.5/32"),),
                    persistent_keepalive=25,
                ),
                PeerConfig(public_key=K1, remove=True),
            ),
        )
    )
    assert text == (
        f"set=1\nprivate_key={K1.hex()}\nlisten_port=51820\nfwmark={0x574B}\n"
        f"public_key={K2.hex()}\nendpoint=[2001:db8::1]:51820\n"
        "persistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
        "allowed_ip=10.0.0.5/32\n"
        f"public_key={K1.hex()}\nremove=true\n\n"
    )


def test_allowed_ips_none_leaves_them_untouched() -> None:
    text = format_set(DeviceConfig(peers=(PeerConfig(public_key=K2, endpoint=("1.2.3.4", 1)),)))
    assert "allowed_ip" not in text


def test_parse_get() -> None:
    state = parse_get(
        f"private_key={K1.hex()}\nlisten_port=51820\nfwmark=22347\n"
        f"public_key={K2.hex()}\nendpoint=198.18.0.5:51820\n"
        "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500000000\n"
        "tx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\n"
        "allowed_ip=10.0.0.5/32\nallowed_ip=fd00::5/128\nprotocol_version=1\n"
        "errno=0\n\n"
    )
    assert state.private_key == K1 and state.listen_port == 51820 and state.fwmark == 0x574B
    peer = state.peers[K2]
    assert peer.endpoint == ("198.18.0.5", 51820)
    assert peer.last_handshake == pytest.approx(1700000000.5)
    assert (peer.rx_bytes, peer.tx_bytes, peer.persistent_keepalive) == (20, 10, 25)
    assert peer.allowed_ips == {
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("fd00::5/128"),
    }


def test_parse_get_error() -> None:
    with pytest.raises(UapiError):
        parse_get("errno=19\n\n")


@pytest.mark.parametrize(
    "text", ["1.2.3.4", "1.2.3.4:0", "1.2.3.4:70000", "::1:5", "[::1]5", "x:1"]
)
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_endpoint_round_trip() -> None:
    for ep in (("198.18.0.1", 51820), ("2001:db8::1", 1)):
        assert parse_endpoint(format_endpoint(ep)) == ep
