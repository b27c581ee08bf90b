"""``wirekube-stun-probe``: wiring, supervisor, health and metrics.

Tasks (one supervisor; the first to fail stops the process non-zero):

* ``stun``   -- the UDP/TCP server (``server.StunServer.serve``);
* ``health`` -- waits until every socket is bound, then serves the standard
  gRPC health service as SERVING; on shutdown it flips to NOT_SERVING first
  so load balancers stop sending before the sockets close;
* ``heartbeat`` -- stamps the event loop's progress for ``/livez``.

The metrics port also serves ``/livez`` (the event loop turns) and ``/readyz``
(it turns and every socket is bound).

SIGTERM/SIGINT stop everything cleanly and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from wirekube_common import logs, supervisor
from wirekube_common.grpcserver import start_grpc_server
from wirekube_common.heartbeat import Heartbeat
from wirekube_common.metrics import serve_metrics
from wirekube_stunprobe import limits
from wirekube_stunprobe.metrics import Metrics
from wirekube_stunprobe.server import StunServer
from wirekube_stunprobe.settings import Settings, parse

log = logging.getLogger("wirekube_stunprobe")

HEALTH_SERVICE_NAME = "wirekube.stunprobe.v1.StunProbe"


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    metrics = Metrics()
    server = StunServer(settings, metrics)
    heartbeat = Heartbeat()

    def ready() -> tuple[bool, str]:
        alive, why = heartbeat.check()
        if not alive:
            return alive, why
        if not server.started.is_set():
            return False, "STUN sockets not bound yet"
        return True, "ok: STUN sockets bound"

    serve_metrics(
        settings.metrics_port,
        settings.metrics_address,
        registry=metrics.registry,
        livez=heartbeat.check,
        readyz=ready,
    )

    async def health() -> None:
        await server.started.wait()
        if not settings.health_address:
            await asyncio.Event().wait()
        grpc_server = start_grpc_server(
            settings.health_address, [], service_names=[HEALTH_SERVICE_NAME]
        )
        log.info("health service up", extra={"address": settings.health_address})
        try:
            await asyncio.Event().wait()
        finally:
            grpc_server.set_serving(False)
            grpc_server.stop(grace=limits.SHUTDOWN_GRACE_SECONDS)

    await supervisor.run({"stun": server.serve, "health": health, "heartbeat": heartbeat.run}, stop)


async def _serve(settings: Settings) -> int:
    try:
        await run(settings)
    except OSError as exc:  # a port that cannot be bound, before the supervisor runs
        log.error("cannot start: %s", exc)
        return 1
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    logs.configure("stun-probe", settings.log_level, settings.log_format)
    return supervisor.run_main(_serve(settings))


if __name__ == "__main__":
    sys.exit(main())
