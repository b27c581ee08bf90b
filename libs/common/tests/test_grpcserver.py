"""start_grpc_server: health service reports SERVING, then NOT_SERVING, over a real channel."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wirekube_common.grpcserver import start_grpc_server


def test_health_service_round_trip() -> None:
    srv = start_grpc_server("127.0.0.1:0", [], service_names=["x.v1.Svc"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for name in ("", "x.v1.Svc"):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            srv.set_serving(False)
            resp = stub.Check(health_pb2.HealthCheckRequest(service="x.v1.Svc"), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        srv.stop(0)
