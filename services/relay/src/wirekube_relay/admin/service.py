"""RelayAdmin gRPC service (stats, connected peers) served next to grpc.health.v1.

Runs on grpc's worker threads (wirekube_common.grpcserver); anything that
needs a consistent view of the peer table is computed on the relay's event
loop via ``run_coroutine_threadsafe`` so the hot path needs no locks.

Access (``AdminAccess``): ListPeers returns every connected key with its
address, so the admin API is never open to the network unauthenticated.
By default it binds to loopback (``127.0.0.1:9091``: reachable from inside
the pod only, e.g. ``kubectl exec``/``port-forward``). An address that is not
loopback is accepted only with ``--admin-token-file``: every RelayAdmin call
must then carry ``authorization: Bearer <token>`` (compared in constant
time); without a token file the relay refuses to start. grpc.health.v1 stays
open (it reveals nothing; probes use the HTTP /livez and /readyz). The token
is a shared secret sent in clear on the wire, so off loopback it belongs
only on a network the NetworkPolicy already restricts.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from wirekube_common import wgkey
from wirekube_common.grpcserver import GrpcServer, start_grpc_server
from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc
from wirekube_common.relayproto import frames as f
from wirekube_relay.server import PeerInfo, RelayServer

SERVICE_NAME = "wirekube.relay.v1.RelayAdmin"
SNAPSHOT_TIMEOUT = 5.0  # an admin call never waits longer than this for the loop


class AdminConfigError(ValueError):
    """The admin address and token settings are unsafe or unreadable."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that is not "localhost": assume reachable


@dataclass(frozen=True)
class AdminAccess:
    """Who may call RelayAdmin: anyone who reaches a loopback address, or holders of ``token``."""

    token: str | None

    @classmethod
    def configure(cls, address: str, token_file: str | None) -> AdminAccess:
        host = address.rpartition(":")[0]
        token = None
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise AdminConfigError(f"cannot read admin token file: {exc}") from exc
            if len(token) < 16:
                raise AdminConfigError("admin token must be at least 16 characters")
        if token is None and not is_loopback(host):
            raise AdminConfigError(
                f"admin gRPC on {address} is reachable from the network: give "
                "--admin-token-file, or listen on loopback (the default)"
            )
        return cls(token)

    def allows(self, metadata: tuple[tuple[str, Any], ...] | None) -> bool:
        if self.token is None:
            return True
        want = f"Bearer {self.token}".encode()
        for key, value in metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else bytes(value)
                if hmac.compare_digest(got, want):
                    return True
        return False


class _TokenInterceptor(grpc.ServerInterceptor):
    """Refuses RelayAdmin calls without the bearer token (health stays open)."""

    def __init__(self, access: AdminAccess) -> None:
        self.access = access

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin token required")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method or ""
        if method.startswith(f"/{SERVICE_NAME}/") and not self.access.allows(
            handler_call_details.invocation_metadata
        ):
            return self._deny
        return continuation(handler_call_details)


class RelayAdmin(admin_pb2_grpc.RelayAdminServicer):
    def __init__(self, server: RelayServer) -> None:
        self.server = server

    def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Stats:
        st = self.server.stats
        conns, peers = self.server.counts()
        return admin_pb2.Stats(
            relay_id=self.server.auth.relay_id,
            protocol_version=f.VERSION,
            uptime_seconds=st.uptime(),
            connections=conns,
            registered_peers=peers,
            frames_forwarded=st.frames_forwarded,
            bytes_forwarded=st.bytes_forwarded,
            drops=[admin_pb2.DropCount(reason=r, frames=n) for r, n in sorted(st.drops.items())],
            auth_failures=[
                admin_pb2.AuthFailureCount(reason=r, count=n)
                for r, n in sorted(st.auth_failures.items())
            ],
            registrations=st.registrations,
            allowlist_enabled=self.server.auth.allowlist.enabled,
        )

    def ListPeers(
        self, request: admin_pb2.ListPeersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPeersResponse:
        peers = self._snapshot()
        return admin_pb2.ListPeersResponse(
            peers=[
                admin_pb2.Peer(
                    public_key=wgkey.encode(p.key),
                    remote_address=p.remote,
                    connected_seconds=p.connected_seconds,
                    frames_in=p.frames_in,
                    bytes_in=p.bytes_in,
                    frames_out=p.frames_out,
                    bytes_out=p.bytes_out,
                )
                for p in sorted(peers, key=lambda p: p.key)
            ]
        )

    def _snapshot(self) -> list[PeerInfo]:
        async def take() -> list[PeerInfo]:
            return self.server.snapshot()

        fut = asyncio.run_coroutine_threadsafe(take(), self.server.loop)
        return fut.result(SNAPSHOT_TIMEOUT)


def serve_admin(server: RelayServer, address: str, access: AdminAccess | None = None) -> GrpcServer:
    """Serve RelayAdmin on ``address``; ``access`` defaults to the loopback-only rule."""
    access = access or AdminAccess.configure(address, None)
    admin = RelayAdmin(server)
    return start_grpc_server(
        address,
        [lambda s: admin_pb2_grpc.add_RelayAdminServicer_to_server(admin, s)],
        service_names=[SERVICE_NAME],
        interceptors=[_TokenInterceptor(access)] if access.token is not None else [],
    )
