"""The lab's minimal STUN codec and responder logic (pure)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from wirekube_lab import ministun
from wirekube_lab.stunresponder import reply_for

TX = bytes(range(12))
ADDRS = ["198.18.0.11", "198.18.0.12"]
PORTS = (3478, 3479)


def test_request_roundtrip() -> None:
    msg = ministun.decode(ministun.binding_request(TX, change_ip=True, change_port=True))
    assert msg.type == ministun.BINDING_REQUEST
    assert msg.transaction_id == TX
    assert msg.change_flags == ministun.CHANGE_IP | ministun.CHANGE_PORT
    assert ministun.decode(ministun.binding_request(TX)).change_flags == 0


def test_response_roundtrip() -> None:
    data = ministun.binding_success(
        TX, ("198.18.1.1", 40000), ("198.18.0.11", 3478), ("198.18.0.12", 3479)
    )
    msg = ministun.decode(data)
    assert msg.type == ministun.BINDING_SUCCESS
    assert msg.mapped == ("198.18.1.1", 40000)
    assert msg.address(ministun.XOR_MAPPED_ADDRESS) == ("198.18.1.1", 40000)
    assert msg.address(ministun.MAPPED_ADDRESS) == ("198.18.1.1", 40000)
    assert msg.address(ministun.RESPONSE_ORIGIN) == ("198.18.0.11", 3478)
    assert msg.address(ministun.OTHER_ADDRESS) == ("198.18.0.12", 3479)
    # XOR really obfuscates: the raw attribute differs from the plain one.
    assert msg.attributes[ministun.XOR_MAPPED_ADDRESS] != msg.attributes[ministun.MAPPED_ADDRESS]


@given(st.binary(max_size=200))
def test_decode_raises_only_its_own_error(data: bytes) -> None:
    try:
        msg = ministun.decode(data)
    except ministun.StunDecodeError:
        return
    for attr in (ministun.XOR_MAPPED_ADDRESS, ministun.MAPPED_ADDRESS):
        with contextlib.suppress(ministun.StunDecodeError):
            msg.address(attr)
    assert msg.change_flags in (0, 2, 4, 6)


@given(st.binary(max_size=200))
def test_responder_never_answers_garbage(data: bytes) -> None:
    out = reply_for(data, (ADDRS[0], 3478), ("198.18.1.1", 1000), ADDRS, PORTS)
    if out is not None:
        assert ministun.decode(data).type == ministun.BINDING_REQUEST


def test_responder_change_request() -> None:
    peer = ("198.18.1.1", 40000)
    cases = {
        (False, False): (ADDRS[0], 3478),
        (False, True): (ADDRS[0], 3479),
        (True, False): (ADDRS[1], 3478),
        (True, True): (ADDRS[1], 3479),
    }
    for (ip, port), origin in cases.items():
        out = reply_for(
            ministun.binding_request(TX, ip, port), (ADDRS[0], 3478), peer, ADDRS, PORTS
        )
        assert out is not None
        assert out[0] == origin
        msg = ministun.decode(out[1])
        assert msg.mapped == peer
        assert msg.address(ministun.RESPONSE_ORIGIN) == origin
        assert msg.address(ministun.OTHER_ADDRESS) == (ADDRS[1], 3479)


def test_responder_with_one_address_rejects_change_ip() -> None:
    out = reply_for(
        ministun.binding_request(TX, change_ip=True),
        ("198.18.0.11", 3478),
        ("1.2.3.4", 5),
        ADDRS[:1],
        PORTS,
    )
    assert out is not None
    assert ministun.decode(out[1]).type == ministun.BINDING_ERROR
