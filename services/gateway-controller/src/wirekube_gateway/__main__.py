"""wirekube-gateway-controller: flags, wiring, and the supervisor of every task.

Tasks: one informer per watched resource, the reconcile loop, the
leader-election loop (``election``) and the peer garbage collector (``peergc``);
the first to fail stops the others and the process
exits non-zero (Kubernetes restarts it). SIGTERM stops everything cleanly; the
leader releases its Lease on the way out so the standby takes over at once.
"""

from __future__ import annotations

import functools
import logging
import sys

from prometheus_client import CollectorRegistry

from wirekube_common import logs, supervisor
from wirekube_common.kube.watch import run_informer
from wirekube_common.metrics import MetricsServer
from wirekube_gateway.election.elector import Elector
from wirekube_gateway.election.leader import LeaderElection
from wirekube_gateway.gateways.reconciler import Controller
from wirekube_gateway.kube import ControllerApi
from wirekube_gateway.managedrelay.reconciler import ManagedRelayController
from wirekube_gateway.metrics import ControllerCollector, liveness, readiness
from wirekube_gateway.peergc.collector import PeerCollector
from wirekube_gateway.settings import Settings, SettingsError, build_parser, from_args

log = logging.getLogger("wirekube_gateway")


async def run_controller(settings: Settings) -> None:
    api = ControllerApi(settings.kubeconfig)
    elector = Elector(settings.identity, settings.lease_duration_s, settings.renew_deadline_s)
    election = LeaderElection(
        api, settings.lease_namespace, settings.lease_name, elector, settings.retry_period_s
    )
    controller = Controller(api, election, settings.health_namespace, failback=settings.failback)
    peer_gc = PeerCollector(api, election, settings.peer_gc_grace_s, peers=controller.peers)
    relay = settings.managed_relay and ManagedRelayController(  # its own connection pool
        ControllerApi(settings.kubeconfig).new_rest,
        election,
        settings.managed_relay,
        settings.mesh_name,
    )
    http = None
    if settings.metrics_port:
        registry = CollectorRegistry()
        registry.register(ControllerCollector(controller))
        http = MetricsServer(
            settings.metrics_address,
            settings.metrics_port,
            registry,
            liveness(controller),
            readiness(controller),
        ).start()
    log.info(
        "starting",
        extra={
            "identity": settings.identity,
            "lease": f"{settings.lease_namespace}/{settings.lease_name}",
            "health_namespace": settings.health_namespace,
            "metrics_port": settings.metrics_port,
        },
    )
    tasks: dict[str, supervisor.TaskFactory] = {
        f"watch-{i.name}": functools.partial(run_informer, i, controller.stop_threads)
        for i in controller.informers
    }
    tasks["reconcile"] = controller.run
    tasks["leader-election"] = election.run
    tasks.update(peer_gc.tasks(controller.stop_threads))
    if relay:
        tasks.update(relay.tasks())
    try:
        await supervisor.run(tasks)
    finally:
        controller.stop_threads.set()
        for informer in controller.informers:
            informer.stop()
        peer_gc.stop()
        if relay:
            relay.stop()
        if http is not None:
            http.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("wirekube-gateway-controller", args.log_level)
    try:
        settings = from_args(args)
    except SettingsError as exc:
        print(f"wirekube-gateway-controller: {exc}", file=sys.stderr)
        return 2
    return supervisor.run_main(run_controller(settings))


if __name__ == "__main__":
    sys.exit(main())
