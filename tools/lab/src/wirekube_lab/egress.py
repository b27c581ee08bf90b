"""Locked-down egress in the lab: a real HTTP CONNECT proxy host and the relay's TLS material.

A ``tls-only`` network (nftrules.py) lets only its ``proxy`` hosts out, and
only to TCP 443. ``start_proxy`` runs Debian's tinyproxy on such a host,
listening on the host's own lab address (never elsewhere), admitting only its
own network, requiring Basic credentials and allowing CONNECT to port 443
only, like a site's forward proxy. ``RelayTls`` makes a CA and a certificate
for the relay (its lab address and ``RELAY_TLS_NAME``) in the lab's work
directory; the relay serves TLS with it on 443 and every agent trusts the CA
through ``--relay-ca-file``. Nodes in a network with a proxy get
``HTTPS_PROXY`` (no credentials in it) and ``--relay-proxy-credentials-file``.

``tinyproxy_config`` is pure (tested without root).
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from wirekube_lab.controlplane_pki import CertificateAuthority

TINYPROXY = "/usr/bin/tinyproxy"
PROXY_PORT = 3128
RELAY_TLS_PORT = 443
#: The relay's name in its lab certificate (and the mesh's serverName).
RELAY_TLS_NAME = "relay.wirekube.lab"
PROXY_USER = "wirekube"
#: A CONNECT tunnel idle this long is closed by the proxy; agents ping the
#: relay every second, so only a dead tunnel ever gets near it.
PROXY_IDLE_TIMEOUT_S = 600


def tinyproxy_config(listen: str, allow_cidr: str, user: str, password: str) -> str:
    """A forward proxy on ``listen``:3128 for ``allow_cidr``, Basic auth, CONNECT to 443 only."""
    return "\n".join(
        [
            f"Port {PROXY_PORT}",
            f"Listen {listen}",
            f"Timeout {PROXY_IDLE_TIMEOUT_S}",
            "MaxClients 64",
            f"Allow {allow_cidr}",
            f"BasicAuth {user} {password}",
            f"ConnectPort {RELAY_TLS_PORT}",
            "DisableViaHeader Yes",
            "LogLevel Info",
            "",
        ]
    )


@dataclass(frozen=True)
class ProxyCredentials:
    user: str
    password: str

    @classmethod
    def generate(cls) -> ProxyCredentials:
        return cls(PROXY_USER, secrets.token_urlsafe(12))

    def write(self, path: Path) -> Path:
        path.write_text(f"{self.user}:{self.password}\n")
        path.chmod(0o600)
        return path


@dataclass(frozen=True)
class RelayTls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, relay_addresses: list[str]) -> RelayTls:
        directory.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.generate("wirekube-lab-relay-ca")
        pair = ca.issue(
            RELAY_TLS_NAME, dns_names=[RELAY_TLS_NAME], ip_addresses=relay_addresses, server=True
        )
        out = cls(directory / "ca.pem", directory / "relay.pem", directory / "relay-key.pem")
        out.ca_file.write_bytes(ca.cert_pem)
        out.cert_file.write_bytes(pair.cert_pem)
        out.key_file.write_bytes(pair.key_pem)
        out.key_file.chmod(0o600)
        return out


def tinyproxy_binary() -> str:
    if not Path(TINYPROXY).exists() and shutil.which("tinyproxy") is None:
        raise RuntimeError("tinyproxy is not installed (scripts/bootstrap.sh installs it)")
    return TINYPROXY if Path(TINYPROXY).exists() else str(shutil.which("tinyproxy"))
