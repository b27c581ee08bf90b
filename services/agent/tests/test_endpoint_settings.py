import http.server
import ipaddress
import threading

import pytest

from wirekube_agent.endpoint import discovery as endpoint
from wirekube_agent.settings import SettingsError, build_parser, from_args

from .helpers import node

ALL = ("annotation", "stun", "ipv6", "aws-imds", "external-ip", "internal")


def test_annotation_beats_everything_and_sources_are_asked_lazily() -> None:
    asked: list[str] = []

    def stun() -> tuple[str, int]:
        asked.append("stun")
        return ("198.18.0.1", 40000)

    n = node(annotations={"wirekube.io/endpoint": "203.0.113.5:51820"})
    found = endpoint.discover(n, 51820, ALL, stun=stun)
    assert (found.endpoint, found.method) == (("203.0.113.5", 51820), "annotation")
    assert asked == []


def test_priority_order_and_malformed_annotation() -> None:
    n = node(
        annotations={"wirekube.io/endpoint": "not-an-endpoint"},
        external_ips=(ipaddress.ip_address("203.0.113.9"),),
    )
    order = ("annotation", "stun", "ipv6", "external-ip", "internal")
    assert endpoint.discover(n, 51820, order, stun=lambda: None).method == "external-ip"
    v6 = endpoint.discover(
        n, 51820, order, global_ipv6=lambda: [ipaddress.ip_address("2001:db8::1")]
    )
    assert (v6.endpoint, v6.method) == (("2001:db8::1", 51820), "ipv6")
    stun = endpoint.discover(n, 51820, order, stun=lambda: ("198.18.0.1", 1))
    assert stun.method == "stun"
    internal = endpoint.discover(node(), 51820, order)
    assert (internal.endpoint, internal.method) == (("10.0.0.1", 51820), "internal")


def test_node_name_is_required() -> None:
    args = build_parser().parse_args(["--node-name", ""])
    with pytest.raises(SettingsError, match="NODE_NAME"):
        from_args(args)


def test_unknown_endpoint_source_is_rejected() -> None:
    args = build_parser().parse_args(["--node-name", "a", "--endpoint-sources", "stun,magic"])
    with pytest.raises(SettingsError, match="magic"):
        from_args(args)


class FakeImds(http.server.BaseHTTPRequestHandler):
    """IMDSv2 on loopback: a token from PUT, the address only with that token."""

    token = "t0k3n"
    answer = b"203.0.113.77"

    def do_PUT(self) -> None:
        ok = self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        )
        self.send_response(200 if ok else 400)
        self.end_headers()
        self.wfile.write(self.token.encode() if ok else b"")

    def do_GET(self) -> None:
        ok = (
            self.path == "/latest/meta-data/public-ipv4"
            and self.headers.get("X-aws-ec2-metadata-token") == self.token
        )
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(self.answer if ok else b"")

    def log_message(self, *args: object) -> None:
        pass


def test_aws_imds_v2_token_flow() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/latest"
        assert endpoint.from_aws_imds(51820, base=base) == ("203.0.113.77", 51820)
        FakeImds.answer = b"<html>proxy error</html>"
        assert endpoint.from_aws_imds(51820, base=base) is None
    finally:
        FakeImds.answer = b"203.0.113.77"
        server.shutdown()
    # nothing listening: no answer, quickly
    assert endpoint.from_aws_imds(51820, timeout=0.2, base=base) is None
