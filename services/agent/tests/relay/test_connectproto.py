"""The CONNECT exchange (connectproto): requests, answers, refusals, garbage, bounds."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekube_agent.relay.connectproto import (
    MAX_HEAD,
    ConnectResponse,
    Established,
    ProxyError,
    ProxyProtocolError,
    ProxyRefused,
    connect_request,
)


def test_request_without_credentials() -> None:
    assert connect_request("198.18.0.10", 443) == (
        b"CONNECT 198.18.0.10:443 HTTP/1.1\r\nHost: 198.18.0.10:443\r\n\r\n"
    )


def test_request_with_basic_credentials() -> None:
    req = connect_request("relay.example", 443, ("wk", "s3cr:et"))
    lines = req.decode().split("\r\n")
    assert lines[0] == "CONNECT relay.example:443 HTTP/1.1"
    assert lines[2] == "Proxy-Authorization: Basic " + base64.b64encode(b"wk:s3cr:et").decode()
    assert req.endswith(b"\r\n\r\n")


def test_request_brackets_ipv6() -> None:
    assert connect_request("fd00::1", 443).startswith(b"CONNECT [fd00::1]:443 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("host", "port", "creds"),
    [
        ("relay\r\nX-Evil: 1", 443, None),
        ("relay example", 443, None),
        ("relay", 0, None),
        ("relay", 70000, None),
        ("relay", 443, ("u\r\n", "p")),
    ],
)
def test_request_refuses_injection_and_bad_ports(
    host: str, port: int, creds: tuple[str, str] | None
) -> None:
    with pytest.raises(ValueError):
        connect_request(host, port, creds)


def test_established_with_tunnel_bytes_after_the_head() -> None:
    r = ConnectResponse()
    out = r.feed(b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n\x16\x03\x01")
    assert out == Established(200, b"\x16\x03\x01")


def test_established_fed_a_byte_at_a_time() -> None:
    data = b"HTTP/1.0 200 OK\r\n\r\n"
    r = ConnectResponse()
    results = [r.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == Established(200, b"")


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n", 407),
        (b"HTTP/1.1 403 Access violation\r\n\r\n", 403),
        (b"HTTP/1.0 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad", 502),
        (b"HTTP/1.1 500\r\n\r\n", 500),
    ],
)
def test_refusals_carry_the_status_line(answer: bytes, status: int) -> None:
    with pytest.raises(ProxyRefused) as exc:
        ConnectResponse().feed(answer)
    assert exc.value.status == status
    assert exc.value.status_line == answer.split(b"\r\n")[0].decode()
    assert exc.value.status_line in str(exc.value)


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_garbage_is_a_protocol_error(answer: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        ConnectResponse().feed(answer)


def test_oversized_head_is_refused_before_it_ends() -> None:
    r = ConnectResponse()
    assert r.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(ProxyProtocolError, match="longer than"):
        for _ in range(MAX_HEAD // 1000 + 2):
            r.feed(b"X-Pad: " + b"a" * 991 + b"\r\n")


def test_oversized_head_in_one_piece() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(ProxyProtocolError):
        ConnectResponse().feed(big)


def test_eof_before_the_head_ends() -> None:
    r = ConnectResponse()
    r.feed(b"HTTP/1.1 200 Conn")
    with pytest.raises(ProxyProtocolError, match="closed the connection"):
        r.eof()


def test_no_feeding_after_done() -> None:
    r = ConnectResponse()
    r.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    r.eof()  # fine once done
    with pytest.raises(ProxyProtocolError):
        r.feed(b"more")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_fuzz_any_input_parses_or_raises_our_error(data: bytes, chunk: int) -> None:
    """Whole or in pieces: the same outcome, and only ProxyError subclasses."""

    def run(pieces: list[bytes]) -> object:
        r = ConnectResponse(max_head=256)
        try:
            for p in pieces:
                out = r.feed(p)
                if out is not None:
                    return out
            r.eof()
        except ProxyError as exc:
            return type(exc)
        return None

    whole = run([data])
    parts = run([data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""])
    assert whole == parts


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=100, max_value=999), st.text(alphabet="abc XYZ", max_size=40))
def test_fuzz_status_codes(status: int, reason: str) -> None:
    head = f"HTTP/1.1 {status} {reason}\r\n\r\n".encode()
    r = ConnectResponse()
    if 200 <= status < 300:
        assert r.feed(head) == Established(status, b"")
    else:
        with pytest.raises(ProxyRefused) as exc:
            r.feed(head)
        assert exc.value.status == status
