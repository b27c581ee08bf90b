"""Start a gRPC server with the standard health service plus the given servicers.

Every WireKube service exposes ``grpc.health.v1.Health`` next to its own admin
service; this helper keeps that wiring in one place. It uses grpc's threaded
server: the control side is low-rate, and keeping it off the services' event
loops means a slow admin client can never stall a hot path.

Usage::

    server = start_grpc_server(
        "0.0.0.0:9091",
        [lambda s: admin_pb2_grpc.add_RelayAdminServicer_to_server(MyAdmin(), s)],
        service_names=["wirekube.relay.v1.RelayAdmin"],
    )
    server.health.set("", SERVING)        # overall health
    ...
    server.stop(grace=1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Registrar = Callable[[grpc.Server], None]


@dataclass
class GrpcServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        """Set the overall ("") status and every named service's status at once."""
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float | None = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def start_grpc_server(
    address: str,
    registrars: Iterable[Registrar],
    service_names: Iterable[str] = (),
    max_workers: int = 4,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
) -> GrpcServer:
    """Bind ``address`` ("host:port"; port 0 picks a free port), register, start, report SERVING."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=list(interceptors)
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for register in registrars:
        register(server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    server.start()
    out = GrpcServer(server, health_servicer, port, tuple(service_names))
    out.set_serving(True)
    return out
