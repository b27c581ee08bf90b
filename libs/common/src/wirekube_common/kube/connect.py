"""One HTTPS connection pool to the API server, with authentication.

urllib3 directly (the transport the kubernetes package itself uses), so that a
service never imports the ``kubernetes`` package for its API traffic (see
``config`` for why). Retries are off: every caller owns its retry policy.
Every request is counted, so a service can export its exact load on the API
server as a metric.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import urllib3

from wirekube_common.kube.config import ClusterConfig, load

# TCP keepalive on every API connection: probe an idle connection after 10 s,
# give up after 3 unanswered probes 5 s apart. A node's watch usually crosses a
# NAT; when that NAT forgets the flow (conntrack flushed, gateway rebooted) the
# server's packets vanish and a plain read waits minutes for data that never
# comes. With these values a dead watch is noticed in ~25 s (client-go's
# defaults take ~165 s).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 5, 3
# Each informer holds one connection for its watch; calls share the rest.
POOL_SIZE = 8
# Bound service-account tokens are rotated by the kubelet; client-go re-reads
# the file every minute, and so do we.
TOKEN_REREAD_S = 60.0

Timeout = float | tuple[float, float] | None


def keepalive_options() -> list[tuple[int, int, int]]:
    return [
        *urllib3.connection.HTTPConnection.default_socket_options,
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT),
    ]


def ssl_context(cfg: ClusterConfig) -> ssl.SSLContext:
    if cfg.verify and cfg.ca_pem is not None:
        # Only the cluster's CA: loading the system's trust store as well costs
        # ~40 ms of start-up and would trust every public CA for the API server.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=cfg.ca_pem.decode("ascii", "replace"))
    else:
        ctx = ssl.create_default_context()
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert_pem is not None and cfg.client_key_pem is not None:
        # The ssl module loads a key pair only from files: write them to a
        # private directory for the duration of the call.
        with tempfile.TemporaryDirectory(prefix="wirekube-tls-") as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, pem in ((cert, cfg.client_cert_pem), (key, cfg.client_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
            ctx.load_cert_chain(cert, key)
    return ctx


class Auth:
    """The Authorization header: static, re-read from a file, or the library's."""

    def __init__(self, cfg: ClusterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._lock = threading.Lock()
        self._file_token: str | None = None
        self._read_at = float("-inf")

    def headers(self) -> dict[str, str]:
        cfg = self._cfg
        if cfg.auth_headers is not None:
            return cfg.auth_headers()
        token = cfg.token
        if cfg.token_file is not None:
            with self._lock:
                now = self._clock()
                if now - self._read_at >= TOKEN_REREAD_S:
                    # A failed read keeps the last token: the kubelet may be
                    # replacing the file this very moment.
                    try:
                        with open(cfg.token_file) as f:
                            self._file_token = f.read().strip()
                        self._read_at = now
                    except OSError:
                        if self._file_token is None:
                            raise
                token = self._file_token
        return {"Authorization": f"Bearer {token}"} if token else {}


class Connection:
    """The API server: ``request`` sends one HTTP request over the shared pool."""

    def __init__(self, kubeconfig: str | None, context: str | None = None) -> None:
        self.config = load(kubeconfig, context)
        self.host: str = self.config.server
        self.requests = 0
        self._auth = Auth(self.config)
        pool_kwargs: dict[str, Any] = {
            "maxsize": POOL_SIZE,
            "retries": False,
            "socket_options": keepalive_options(),
        }
        if self.host.startswith("https://"):
            pool_kwargs["ssl_context"] = ssl_context(self.config)
            if not self.config.verify:
                pool_kwargs["cert_reqs"] = "CERT_NONE"
                pool_kwargs["assert_hostname"] = False
            elif self.config.tls_server_name:
                pool_kwargs["server_hostname"] = self.config.tls_server_name
        self._pool = urllib3.connection_from_url(self.host, **pool_kwargs)
        self._prefix = urllib.parse.urlsplit(self.host).path.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: Timeout,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        self.requests += 1
        if isinstance(timeout, tuple):
            limits = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            limits = urllib3.Timeout(total=timeout)
        return self._pool.urlopen(
            method,
            self._prefix + path,
            body=body,
            headers={**headers, **self._auth.headers()},
            timeout=limits,
            redirect=False,
            preload_content=not stream,
            release_conn=not stream,
        )

    def close(self) -> None:
        self._pool.close()
