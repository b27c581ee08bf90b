"""The lab's proxy configuration and relay TLS material (pure / local files)."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

from wirekube_lab.egress import RELAY_TLS_NAME, ProxyCredentials, RelayTls, tinyproxy_config


def test_tinyproxy_listens_on_its_lab_address_for_its_network_only() -> None:
    conf = tinyproxy_config("10.1.0.11", "10.1.0.0/24", "wirekube", "pw").splitlines()
    assert "Listen 10.1.0.11" in conf
    assert "Allow 10.1.0.0/24" in conf
    assert "BasicAuth wirekube pw" in conf
    assert "ConnectPort 443" in conf  # CONNECT to anything else is refused
    assert not [line for line in conf if line.startswith(("Upstream", "Allow 0.0.0.0"))]


def test_credentials_file_is_private(tmp_path: Path) -> None:
    creds = ProxyCredentials.generate()
    path = creds.write(tmp_path / "c")
    assert path.read_text() == f"{creds.user}:{creds.password}\n"
    assert path.stat().st_mode & 0o077 == 0


def test_relay_certificate_verifies_for_its_name_and_address(tmp_path: Path) -> None:
    tls = RelayTls.create(tmp_path, ["198.18.0.11"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.cert_file, tls.key_file)
    client = ssl.create_default_context(cafile=str(tls.ca_file))
    for name in (RELAY_TLS_NAME, "198.18.0.11"):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        c = client.wrap_bio(c_in, c_out, server_hostname=name)
        s = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            for obj in (c, s):
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        assert c.version() is not None, name
