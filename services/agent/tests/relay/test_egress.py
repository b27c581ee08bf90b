"""How relay links leave the node: the proxy choice (env, NO_PROXY, explicit field,
credentials) and the mesh spec -> Egress translation. Pure."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from wirekube_agent.model import NodeInfo
from wirekube_agent.relay.egress import (
    Egress,
    Proxy,
    parse_proxy_url,
    proxy_for,
    read_credentials,
)
from wirekube_agent.relaying.manager import RelayManager, local_egress, resolve_egress
from wirekube_agent.relaying.target import LocalEgress, relay_target
from wirekube_agent.settings import build_parser, from_args
from wirekube_common.crd import MeshSpec
from wirekube_common.crd.base import InvalidObject

N = NodeInfo(name="a", uid="uid-a", internal_ips=(ipaddress.ip_address("10.0.0.1"),))


def test_no_proxy_without_environment() -> None:
    assert proxy_for("198.18.0.10", None, {}) is None


def test_https_proxy_from_either_case_lower_wins() -> None:
    assert proxy_for("r", None, {"HTTPS_PROXY": "http://10.1.0.5:3128"}) == Proxy("10.1.0.5", 3128)
    both = {"HTTPS_PROXY": "http://10.1.0.5:3128", "https_proxy": "10.1.0.6:8080"}
    assert proxy_for("r", None, both) == Proxy("10.1.0.6", 8080)


def test_http_proxy_alone_is_not_used() -> None:
    assert proxy_for("r", None, {"HTTP_PROXY": "http://10.1.0.5:3128"}) is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "bypassed"),
    [
        ("relay.example", "relay.example", True),
        (".example", "relay.example", True),
        ("example", "relay.example", True),
        ("other.example", "relay.example", False),
        ("198.18.0.10", "198.18.0.10", True),
        ("198.18.0.11,198.18.0.12", "198.18.0.10", False),
        ("*", "anything", True),
    ],
)
def test_no_proxy(no_proxy: str, host: str, bypassed: bool) -> None:
    env = {"https_proxy": "http://10.1.0.5:3128", "NO_PROXY": no_proxy}
    assert (proxy_for(host, None, env) is None) is bypassed


def test_explicit_proxy_wins_over_environment_and_no_proxy() -> None:
    env = {"https_proxy": "http://10.1.0.5:3128", "no_proxy": "*"}
    assert proxy_for("r", "http://10.9.0.1:8888", env) == Proxy("10.9.0.1", 8888)


def test_credentials_in_url_decoded_and_file_wins(tmp_path: Path) -> None:
    p = parse_proxy_url("http://wk%40site:p%3Ass@10.1.0.5:3128")
    assert (p.username, p.password) == ("wk@site", "p:ss")
    assert "p:ss" not in p.describe() and "wk@site@10.1.0.5" in p.describe()
    f = tmp_path / "auth"
    f.write_text("agent:from-secret\n")
    assert read_credentials(str(f)) == ("agent", "from-secret")
    q = parse_proxy_url("http://u:p@10.1.0.5:3128", read_credentials(str(f)))
    assert q.credentials == ("agent", "from-secret")


@pytest.mark.parametrize(
    "url", ["https://10.1.0.5:3128", "socks5://10.1.0.5:1080", "http://:3128", "http://h:99999"]
)
def test_unsupported_or_broken_proxy_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy_url(url)


def test_credentials_file_must_be_user_colon_password(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    f.write_text("no-colon")
    with pytest.raises(ValueError, match="user:password"):
        read_credentials(str(f))


def test_egress_round_trips_the_worker_pipe() -> None:
    e = Egress("tls", "relay.example", "/ca.pem", Proxy("10.1.0.5", 3128, "u", "p"), "/auth")
    assert Egress.from_dict(e.to_dict()) == e
    assert Egress.from_dict(None) == Egress()
    with pytest.raises(ValueError):
        Egress.from_dict({"transport": "udp"})


def mesh(**external: object) -> MeshSpec:
    return MeshSpec.from_dict({"relay": {"provider": "external", "external": external}})


def test_tls_external_relay_verifies_the_endpoint_name_by_default() -> None:
    local = LocalEgress(ca_file="/etc/wirekube/relay-ca/ca.crt")
    t = relay_target(mesh(endpoint="relay.example:443", transport="tls"), N, local=local)
    assert t.dns is not None
    assert resolve_egress(t.egress) == Egress(
        "tls", "relay.example", "/etc/wirekube/relay-ca/ca.crt"
    )


def test_tls_server_name_and_proxy_from_the_mesh_with_credentials_file() -> None:
    local = LocalEgress(
        proxy_credentials_file="/etc/wirekube/proxy/auth",
        proxy_env=(("https_proxy", "http://10.7.0.1:1"),),
    )
    m = mesh(
        endpoint="198.18.0.10:443",
        transport="tls",
        serverName="relay.lab",
        proxy="http://10.1.0.5:3128",
    )
    t = relay_target(m, N, local=local)
    assert t.addresses == (("198.18.0.10", 443),)
    assert resolve_egress(t.egress) == Egress(
        "tls", "relay.lab", None, Proxy("10.1.0.5", 3128), "/etc/wirekube/proxy/auth"
    )


def test_plain_tcp_relay_through_the_environment_proxy() -> None:
    local = LocalEgress(proxy_env=(("HTTPS_PROXY", "http://u:p@10.1.0.5:3128"),))
    t = relay_target(mesh(endpoint="198.18.0.10:3478"), N, local=local)
    assert resolve_egress(t.egress) == Egress("tcp", None, None, Proxy("10.1.0.5", 3128, "u", "p"))


def test_bad_proxy_url_is_a_reason_not_a_crash() -> None:
    t = relay_target(mesh(endpoint="198.18.0.10:443", proxy="ftp://x"), N)
    with pytest.raises(ValueError, match="only http://"):
        resolve_egress(t.egress)
    # The manager starts no bridge for it and says why.
    manager = RelayManager(b"\x01" * 32)
    assert manager.ensure(t, 51820) is None
    assert "only http://" in manager.reason


def test_unknown_transport_is_refused_by_the_model() -> None:
    with pytest.raises(InvalidObject, match="transport"):
        mesh(endpoint="198.18.0.10:443", transport="quic")


def test_mesh_round_trip_keeps_the_new_fields() -> None:
    m = mesh(endpoint="r.example:443", transport="tls", serverName="r.example", proxy="p:3128")
    assert MeshSpec.from_dict(m.to_dict()) == m
    assert m.to_dict()["relay"]["external"] == {
        "endpoint": "r.example:443",
        "transport": "tls",
        "serverName": "r.example",
        "proxy": "p:3128",
    }


def test_local_egress_from_flags_and_environment() -> None:
    args = build_parser().parse_args(
        ["--node-name", "a", "--relay-ca-file", "/ca.pem", "--relay-proxy-credentials-file", "/p"]
    )
    env = {"HTTPS_PROXY": "http://10.1.0.5:3128", "NO_PROXY": "", "PATH": "/bin"}
    assert local_egress(from_args(args), env) == LocalEgress(
        "/ca.pem", "/p", (("HTTPS_PROXY", "http://10.1.0.5:3128"),)
    )
