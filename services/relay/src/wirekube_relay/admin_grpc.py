"""RelayAdmin gRPC service (stats, connected peers) served next to grpc.health.v1.

Runs on grpc's worker threads (wirekube_common.grpcserver); anything that
needs a consistent view of the peer table is computed on the relay's event
loop via ``run_coroutine_threadsafe`` so the hot path needs no locks.
"""

from __future__ import annotations

import asyncio

import grpc

from wirekube_common import wgkey
from wirekube_common.grpcserver import GrpcServer, start_grpc_server
from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc
from wirekube_common.relayproto import frames as f
from wirekube_relay.server import PeerInfo, RelayServer

SERVICE_NAME = "wirekube.relay.v1.RelayAdmin"
SNAPSHOT_TIMEOUT = 5.0  # an admin call never waits longer than this for the loop


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


def serve_admin(server: RelayServer, address: str) -> GrpcServer:
    admin = RelayAdmin(server)
    return start_grpc_server(
        address,
        [lambda s: admin_pb2_grpc.add_RelayAdminServicer_to_server(admin, s)],
        service_names=[SERVICE_NAME],
    )
