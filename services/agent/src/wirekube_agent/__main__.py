"""wirekube-agent: flags, wiring, and the supervisor that runs every task.

Imports are split by command: ``cleanup`` (the DaemonSet's initContainer,
which runs before every agent start) loads only what it uses. The agent's
full import (Kubernetes client, metrics, reconciler) took 2.7 s on a loaded
2-core lab host, ``cleanup``'s 1.1 s; an agent restart waits for both, and
relayed peers wait for the restart (docs/lab.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import TYPE_CHECKING

from wirekube_agent.settings import SettingsError, build_parser, from_args
from wirekube_common import logs

if TYPE_CHECKING:
    from wirekube_agent.settings import Settings

log = logging.getLogger("wirekube_agent")


async def run_agent(settings: Settings) -> None:
    from wirekube_agent.handover.taker import take_over  # noqa: PLC0415

    # First of all, before the heavy imports and the key: a live old agent on
    # this node (a surge rollout) steps back and gives us its relay sockets;
    # meanwhile it still answers the kubelet's probes for our pod too
    # (surge.py), so the sooner the better.
    taken = take_over(settings.state_dir)
    from prometheus_client import REGISTRY  # noqa: PLC0415 - the agent's imports (module doc)

    from wirekube_agent import health  # noqa: PLC0415
    from wirekube_agent.gateway.metrics import GatewayCollector  # noqa: PLC0415
    from wirekube_agent.k8s.client import KubeApi  # noqa: PLC0415
    from wirekube_agent.keys import store as keys  # noqa: PLC0415
    from wirekube_agent.metrics import AgentCollector  # noqa: PLC0415
    from wirekube_agent.reconciler import Reconciler  # noqa: PLC0415
    from wirekube_agent.surge import MetricsPort  # noqa: PLC0415
    from wirekube_agent.surge import run as surge_run  # noqa: PLC0415
    from wirekube_common import supervisor, wgkey  # noqa: PLC0415
    from wirekube_common.kube.watch import run_informer  # noqa: PLC0415

    api = KubeApi(settings.kubeconfig)
    reconciler = Reconciler(settings, api, keys.load_or_create(settings.state_dir))
    if taken is not None:
        reconciler.relays.adopt(taken.sockets)
        reconciler.relays.before_adopted_start = taken.quiesce
    # The relay bridge's worker process starts now, while the informers list
    # (its interpreter start-up overlaps theirs): after a restart, relayed
    # peers carry no traffic until the bridge is up.
    reconciler.relays.prespawn()
    log.info(
        "starting",
        extra={"node": settings.node_name, "public_key": wgkey.encode(reconciler.public_key)},
    )
    REGISTRY.register(AgentCollector(reconciler))
    REGISTRY.register(GatewayCollector(reconciler))
    livez, readyz = health.checks(reconciler)
    metrics = MetricsPort(settings.metrics_port, livez, readyz)
    if settings.metrics_port:
        metrics.serve()
    stop = reconciler.stop_threads
    tasks = {
        f"watch-{i.name}": functools.partial(run_informer, i, stop) for i in reconciler.informers
    }
    tasks["reconcile"] = reconciler.run
    tasks["probe"] = reconciler.net.probe_loop
    tasks["netcheck"] = reconciler.net.netcheck_loop
    # Gateway peers probe their WireKubeGateways' health-check targets and
    # publish heartbeat Leases for the gateway controller (docs/gateway.md).
    tasks["gateway-health"] = reconciler.gateway_health.run
    tasks["address-watch"] = reconciler.net.address_watch_loop
    tasks["handover"] = functools.partial(surge_run, reconciler, taken, metrics)
    try:
        await supervisor.run(tasks)
    finally:
        reconciler.stop_threads.set()
        for informer in reconciler.informers:
            informer.stop()
        reconciler.net.close()
        reconciler.relays.stop()
        if reconciler.left_mesh and not reconciler.retired:
            # In a worker thread, like every pass: netlink (pyroute2) cannot
            # run on the event loop's thread.
            await asyncio.to_thread(reconciler.clean_up_after_leaving)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("wirekube-agent", args.log_level)
    if args.command == "cleanup":
        from wirekube_agent.cleanup import cleanup_stale  # noqa: PLC0415 - module doc

        # The initContainer: only stale state goes; a healthy interface of
        # this node stays and the agent adopts it (cleanup.py).
        cleanup_stale(args.interface, args.state_dir)
        return 0
    try:
        settings = from_args(args)
    except SettingsError as exc:
        print(f"wirekube-agent: {exc}", file=sys.stderr)
        return 2
    from wirekube_common import supervisor  # noqa: PLC0415 - module doc

    return supervisor.run_main(run_agent(settings))


if __name__ == "__main__":
    sys.exit(main())
