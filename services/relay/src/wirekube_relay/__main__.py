"""``wirekube-relay``: flags and environment, wiring, supervisor, signals.

Every flag has an environment fallback (``WIREKUBE_RELAY_<FLAG>``) so the
Deployment can configure the relay without a command line. The supervisor
(wirekube_common.supervisor) watches the TCP forwarder, the housekeeping sweep, the admin gRPC server, the
metrics endpoint and (when enabled) the WireKubePeer allow-list and pool-member watchers; the
first of them to fail stops the rest and the process exits non-zero so that
Kubernetes restarts it. SIGTERM/SIGINT shut down cleanly: health goes
NOT_SERVING, clients are told CLOSE(shutting down), then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wirekube_common import logs, supervisor
from wirekube_common.heartbeat import Heartbeat
from wirekube_relay import timers
from wirekube_relay.admin.stats import RelayStats
from wirekube_relay.client.auth import AllowList, Authenticator
from wirekube_relay.limits import bounds as lim
from wirekube_relay.limits.bounds import Limits
from wirekube_relay.mesh.pool import MeshConfig, parse_peers
from wirekube_relay.mesh.proto import load_secret
from wirekube_relay.server import RelayServer

if TYPE_CHECKING:
    from wirekube_relay.k8s import PoolMembersWatcher

log = logging.getLogger("wirekube_relay")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"WIREKUBE_RELAY_{name.upper().replace('-', '_')}", default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wirekube-relay", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--listen", default=_env("listen", "0.0.0.0:3478"), help="relay TCP address host:port")
    a("--tls-listen", default=_env("tls-listen", ""), help="relay over TLS host:port ('' = off)")
    a("--tls-cert-file", default=_env("tls-cert-file", ""), help="PEM certificate chain (TLS)")
    a("--tls-key-file", default=_env("tls-key-file", ""), help="PEM private key (TLS)")
    a(
        "--admin-listen",
        default=_env("admin-listen", "127.0.0.1:9091"),
        help="admin gRPC host:port; loopback by default, any other address needs a token",
    )
    a(
        "--admin-token-file",
        default=_env("admin-token-file", "") or None,
        help="file holding the bearer token admin calls must carry (required off loopback)",
    )
    a("--metrics-listen", default=_env("metrics-listen", "0.0.0.0:9090"), help="'' disables")
    a("--relay-id", default=_env("relay-id", socket.gethostname()))
    a(
        "--allowlist",
        choices=["auto", "on", "off"],
        default=_env("allowlist", "auto"),
        help="admit only keys of WireKubePeers; auto = on when running in a cluster",
    )
    a("--kubeconfig", default=_env("kubeconfig", "") or None)
    a("--max-payload", type=int, default=int(_env("max-payload", str(timers.DEFAULT_MAX_PAYLOAD))))
    a(
        "--registration-deadline",
        type=float,
        default=float(_env("registration-deadline", str(timers.REGISTRATION_DEADLINE))),
    )
    a("--keepalive", type=float, default=float(_env("keepalive", str(timers.KEEPALIVE_INTERVAL))))
    a("--dead-timeout", type=float, default=float(_env("dead-timeout", str(timers.DEAD_TIMEOUT))))
    a("--max-pending", type=int, default=int(_env("max-pending", str(lim.MAX_PENDING))))
    a(
        "--max-pending-per-source",
        type=int,
        default=int(_env("max-pending-per-source", str(lim.MAX_PENDING_PER_SOURCE))),
    )
    a(
        "--max-connections-per-source",
        type=int,
        default=int(_env("max-connections-per-source", str(lim.MAX_CONNECTIONS_PER_SOURCE))),
    )
    a(
        "--max-registrations",
        type=int,
        default=int(_env("max-registrations", "0")),
        help="registered keys at most; 0 = sized by the memory limit (limits/bounds.py)",
    )
    a("--ready-file", default=_env("ready-file", "") or None, help="write bound ports as JSON")
    a(
        "--mesh-secret-file",
        default=_env("mesh-secret-file", "") or None,
        help="pool secret for the replica mesh (docs/relay-mesh.md); unset: run alone",
    )
    a(
        "--mesh-dns",
        default=_env("mesh-dns", "") or None,
        help="headless Service name listing the replicas (re-resolved every 30 s)",
    )
    a(
        "--mesh-endpoints",
        default=_env("mesh-endpoints", "") or None,
        help="namespace/service: watch the pool's EndpointSlices through the API "
        "(the ready replicas at once; DNS answers trail by their TTL); needs list/watch "
        "on endpointslices in that namespace",
    )
    a(
        "--mesh-peers",
        default=_env("mesh-peers", ""),
        help="static replica list host:port,... (external pools)",
    )
    a("--log-level", default=_env("log-level", "") or None)
    return p.parse_args(argv)


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _allowlist_enabled(mode: str) -> bool:
    if mode == "auto":
        return "KUBERNETES_SERVICE_HOST" in os.environ
    return mode == "on"


async def _start_tls(server: RelayServer, args: argparse.Namespace) -> asyncio.Server | None:
    """The TLS listener beside the TCP one (tls.py), when --tls-listen is set."""
    if not args.tls_listen:
        return None
    from wirekube_relay import tls  # noqa: PLC0415 - only with TLS

    if not (args.tls_cert_file and args.tls_key_file):
        raise SystemExit("--tls-listen needs --tls-cert-file and --tls-key-file")
    context = tls.server_context(args.tls_cert_file, args.tls_key_file)
    thost, tport = _split(args.tls_listen)
    listener, _ = await tls.serve_tls(server, thost, tport, context)
    return listener


def mesh_config(args: argparse.Namespace, port: int) -> MeshConfig | None:
    """The replica mesh settings, or None (no secret file: the relay runs alone)."""
    if not args.mesh_secret_file:
        if args.mesh_dns or args.mesh_peers:
            log.warning("event=mesh-disabled reason='--mesh-dns/--mesh-peers without a secret'")
        return None
    with open(args.mesh_secret_file, "rb") as fh:
        secret = load_secret(fh.read())
    pod_ip = os.environ.get("POD_IP", "").strip()
    return MeshConfig(
        secret=secret,
        static_peers=tuple(parse_peers(args.mesh_peers, port)),
        dns_name=args.mesh_dns,
        self_hosts=(pod_ip,) if pod_ip else (),
    )


def _watch_members(
    server: RelayServer, args: argparse.Namespace, port: int
) -> PoolMembersWatcher | None:
    """Feed the replica mesh the pool's ready replicas from the API (``--mesh-endpoints``)."""
    mesh = server.mesh
    if mesh is None or not args.mesh_endpoints:
        return None
    from wirekube_relay.k8s import PoolMembersWatcher, parse_service  # noqa: PLC0415 - optional

    namespace, service = parse_service(args.mesh_endpoints)
    loop = asyncio.get_running_loop()
    watcher = PoolMembersWatcher(
        args.kubeconfig,
        namespace,
        service,
        port,
        lambda found: loop.call_soon_threadsafe(mesh.set_members, found),
    )
    watcher.start()
    return watcher


async def run(args: argparse.Namespace) -> int:
    stats = RelayStats()
    allow = AllowList(_allowlist_enabled(args.allowlist))
    auth = Authenticator(args.relay_id, allow)
    limits = Limits(
        max_payload=min(args.max_payload, 0xFFFF),
        keepalive=args.keepalive,
        dead_timeout=args.dead_timeout,
        registration_deadline=args.registration_deadline,
        max_pending=args.max_pending,
        max_registrations=args.max_registrations
        or lim.default_max_registrations(lim.memory_budget()),
        max_pending_per_source=args.max_pending_per_source,
        max_connections_per_source=args.max_connections_per_source,
    )
    from wirekube_relay.admin.service import AdminAccess  # noqa: PLC0415 - grpc import is slow

    access = AdminAccess.configure(args.admin_listen, args.admin_token_file)
    host, port = _split(args.listen)
    server = RelayServer(auth, stats, limits, host, port, mesh_config(args, port))
    bound = await server.start()
    tls_listener = await _start_tls(server, args)

    watcher = None
    if allow.enabled:
        from wirekube_relay.k8s import PeerKeyWatcher  # noqa: PLC0415 - optional

        watcher = PeerKeyWatcher(args.kubeconfig, allow)
        watcher.start()

    members = _watch_members(server, args, port)

    from wirekube_relay.admin.service import serve_admin  # noqa: PLC0415 - grpc import is slow

    admin = serve_admin(server, args.admin_listen, access)
    heartbeat = Heartbeat()
    metrics_port = 0
    if args.metrics_listen:
        from wirekube_relay.admin.metrics import serve_metrics  # noqa: PLC0415

        mhost, mport = _split(args.metrics_listen)
        _, metrics_port = serve_metrics(server, mhost, mport, heartbeat)

    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(
                {"relay_port": bound, "admin_port": admin.port, "metrics_port": metrics_port}, fh
            )
        os.replace(tmp, args.ready_file)
    log.info(
        "event=ready relay_port=%d admin_port=%d metrics_port=%d allowlist=%s "
        "max_registrations=%d admin_token=%s",
        bound,
        admin.port,
        metrics_port,
        allow.enabled,
        limits.max_registrations,
        access.token is not None,
    )

    async def forwarder() -> None:
        await server.wait_closed()

    async def allowlist_watch() -> None:
        while watcher is not None and watcher.is_alive():
            await asyncio.sleep(1.0)
        if watcher is not None:
            raise RuntimeError(f"allow-list watcher died: {watcher.error!r}")
        await asyncio.Event().wait()  # disabled: nothing to supervise

    async def members_watch() -> None:
        while members is not None and members.is_alive():
            await asyncio.sleep(1.0)
        if members is not None:
            raise RuntimeError(f"pool-member watcher died: {members.error!r}")
        await asyncio.Event().wait()

    code = 0
    try:
        await supervisor.run(
            {
                "forwarder": forwarder,
                "allowlist-watch": allowlist_watch,
                "members-watch": members_watch,
                "mesh": server.mesh_closed,
                "heartbeat": heartbeat.run,
            }
        )
    except supervisor.TaskFailed:
        code = 1
    log.info("event=shutdown code=%d", code)
    admin.set_serving(False)
    await server.stop()
    if tls_listener is not None:
        tls_listener.close()
    await asyncio.sleep(0.2)  # let CLOSE frames reach the clients
    for w in (watcher, members):
        if w is not None:
            w.stop()
    admin.stop(timers.SHUTDOWN_GRACE)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure("relay", args.log_level)
    from wirekube_relay.admin.service import AdminAccess, AdminConfigError  # noqa: PLC0415

    try:
        AdminAccess.configure(args.admin_listen, args.admin_token_file)
    except AdminConfigError as exc:
        log.error("event=config-error detail=%r", str(exc))
        sys.exit(2)
    try:
        mesh_config(args, _split(args.listen)[1])
    except (OSError, ValueError) as exc:
        log.error("event=config-error detail=%r", f"mesh secret: {exc}")
        sys.exit(2)
    if args.mesh_endpoints:
        from wirekube_relay.k8s import parse_service  # noqa: PLC0415 - optional

        try:
            parse_service(args.mesh_endpoints)
        except ValueError as exc:
            log.error("event=config-error detail=%r", f"--mesh-endpoints: {exc}")
            sys.exit(2)
    _raise_fd_limit()
    # Deliberately the stock asyncio loop (run_main's), not uvloop: the
    # forwarder hands transport.write() memoryviews of its reused receive
    # buffer. asyncio copies whatever the kernel does not take at once; uvloop
    # keeps a reference to the view and would send bytes that were overwritten
    # by the next read (checked: corrupts data). Reads of 256 KiB make the
    # event loop's per-read overhead small anyway.
    sys.exit(supervisor.run_main(run(args)))


if __name__ == "__main__":
    main()
