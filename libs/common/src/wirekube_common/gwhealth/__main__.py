"""Run a gateway peer's health checks standalone (without the node agent).

    python -m wirekube_common.gwhealth --peer node-b1 [--kubeconfig PATH]

Watches WireKubeGateways and feeds them to a ``GatewayHealthReporter``; the
same wiring the node agent uses, minus everything else the agent does. Useful
as a sidecar on gateway nodes and in the integration tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from wirekube_common import logs, supervisor
from wirekube_common.crd import GROUP, VERSION, Gateway, InvalidObject, peer_name_for_node
from wirekube_common.gwhealth.report import NAMESPACE
from wirekube_common.gwhealth.reporter import GatewayHealthReporter, KubeLeaseWriter
from wirekube_common.kube.connect import Connection
from wirekube_common.kube.rest import Rest
from wirekube_common.kube.watch import Informer, run_informer
from wirekube_common.wakeup import Wakeup

log = logging.getLogger("wirekube_common.gwhealth")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wirekube_common.gwhealth",
        description="Probe the health-check targets of the WireKubeGateways this peer serves "
        "and publish the results as Leases for the gateway controller.",
    )
    p.add_argument("--peer", help="WireKubePeer name (default: node-$NODE_NAME)")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    p.add_argument("--namespace", default=NAMESPACE, help="namespace of the report Leases")
    p.add_argument("--log-level", default=None)
    return p


def parse_gateways(objects: dict[str, dict[str, object]], rejected: set[str]) -> list[Gateway]:
    out = []
    for name, obj in sorted(objects.items()):
        try:
            out.append(Gateway.from_dict(obj))
        except InvalidObject as exc:
            if name not in rejected:
                log.warning(
                    "ignoring malformed gateway", extra={"gateway": name, "error": str(exc)}
                )
            rejected.add(name)
            continue
        rejected.discard(name)
    return out


async def run(peer: str, kubeconfig: str | None, namespace: str) -> None:
    connection = Connection(kubeconfig)
    reporter = GatewayHealthReporter(peer, KubeLeaseWriter(Rest(connection)), namespace=namespace)
    wake = Wakeup()
    stop_threads = threading.Event()
    informer = Informer(
        "wirekubegateways",
        Rest(connection),
        f"/apis/{GROUP}/{VERSION}/wirekubegateways",
        wake.set,
    )
    rejected: set[str] = set()

    async def watch() -> None:
        await run_informer(informer, stop_threads)

    async def feed() -> None:
        while True:
            await wake.wait()
            wake.clear()
            reporter.update(parse_gateways(informer.snapshot(), rejected))

    log.info("starting", extra={"peer": peer, "namespace": namespace})
    try:
        await supervisor.run({"watch-gateways": watch, "feed": feed, "reporter": reporter.run})
    finally:
        stop_threads.set()
        informer.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("wirekube-gateway-health", args.log_level)
    peer = args.peer
    if not peer:
        node = os.environ.get("NODE_NAME")
        if not node:
            print("gwhealth: --peer or NODE_NAME is required", file=sys.stderr)
            return 2
        peer = peer_name_for_node(node)
    return supervisor.run_main(run(peer, args.kubeconfig, args.namespace))


if __name__ == "__main__":
    sys.exit(main())
