"""Relayed round trips while the agent's own Python code is busy: the bridge in
the agent's process vs in its worker process (relay/worker.py).

Setup, all on loopback: a real ``wirekube-relay`` process; two bridges A and B
relaying to each other, both owned by this process (the "agent"); a separate
pinger process plays both WireGuards: it sends a datagram to A's endpoint for
B, B's side echoes it back through B's endpoint for A, and it times the round
trip (two uplinks, two downlinks, two relay passes). Being its own process,
the pinger is not slowed by this one.

Each arrangement is measured twice: idle, and with one thread of this process
running pure-Python work (what a decoded watch event or a reconcile pass over
many peers is). In-process, every bridge thread then waits for the GIL at each
hand-over; a worker has a GIL of its own.

    uv run python benchmarks/bridge_latency.py [--pings 300] [--interval 0.01]

Loopback only; bounded in time; the relay and workers are stopped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import statistics
import threading
import time
from typing import Any

from relay_bench import start_relay  # this directory: the scripts run from here

from wirekube_agent.relay import RelayBridge, RelayPool
from wirekube_agent.relay.worker import BridgeWorker
from wirekube_common import wgkey


def pinger(ctl: Any, out: Any) -> None:
    """Both WireGuards: report their ports, then per request time ``n`` round trips."""
    wa = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wa.bind(("127.0.0.1", 0))
    wb.bind(("127.0.0.1", 0))
    wa.settimeout(1.0)
    wb.settimeout(1.0)
    out.put((wa.getsockname()[1], wb.getsockname()[1]))
    while (req := ctl.get()) is not None:
        ea, eb, n, interval = req
        rtts: list[float] = []
        lost = 0
        for i in range(n):
            payload = b"%d:" % i + b"p" * 120
            t = time.perf_counter()
            try:
                wa.sendto(payload, tuple(ea))
                data = wb.recv(2048)
                wb.sendto(data, tuple(eb))
                while wa.recv(2048) != payload:  # skip a late echo of an earlier ping
                    pass
            except TimeoutError:
                lost += 1
                continue
            rtts.append((time.perf_counter() - t) * 1e3)
            time.sleep(interval)
        out.put((rtts, lost))


def busy(stop: threading.Event, on: threading.Event) -> None:
    """Pure-Python work, as the Kubernetes client's decoding is."""
    while not stop.is_set():
        if not on.wait(0.1):
            continue
        x = 0
        for i in range(50_000):
            x += i * i


def live(bridge: RelayBridge | BridgeWorker) -> tuple[str, ...]:
    if isinstance(bridge, BridgeWorker):
        return bridge.live_replicas()
    return bridge.pool.live_replicas()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pings", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.01)
    args = ap.parse_args()

    spawn = mp.get_context("spawn")
    ctl, out = spawn.Queue(), spawn.Queue()
    proc = spawn.Process(target=pinger, args=(ctl, out), daemon=True)
    proc.start()
    port_a, port_b = out.get(timeout=30)

    relay, ports = start_relay()
    stop, on = threading.Event(), threading.Event()
    burner = threading.Thread(target=busy, args=(stop, on), daemon=True)
    burner.start()
    try:
        addr = ("127.0.0.1", ports["relay_port"])
        ka, kb = wgkey.generate_private_key(), wgkey.generate_private_key()
        pa, pb = wgkey.public_key(ka), wgkey.public_key(kb)
        print(f"{args.pings} relayed round trips per row, {args.interval * 1e3:.0f} ms apart")
        print(f"{'bridge':<12}{'agent':<7}{'median ms':>10}{'p95 ms':>8}{'max ms':>8}{'lost':>6}")
        for where in ("in-process", "worker"):
            if where == "worker":
                a: Any = BridgeWorker(ka, port_a, addresses=[addr])
                b: Any = BridgeWorker(kb, port_b, addresses=[addr])
            else:
                a = RelayBridge(ka, port_a, RelayPool(ka, addresses=[addr]))
                b = RelayBridge(kb, port_b, RelayPool(kb, addresses=[addr]))
                a.start()
                b.start()
            try:
                a.set_relayed_peers({pb})
                b.set_relayed_peers({pa})
                deadline = time.monotonic() + 10
                while not (live(a) and live(b)):
                    if time.monotonic() > deadline:
                        raise SystemExit("bridges did not register")
                    time.sleep(0.05)
                ctl.put((a.endpoint_for(pb), b.endpoint_for(pa), 20, args.interval))
                out.get(timeout=60)  # warm-up: first frames, caches, the relay's tables
                for load in ("idle", "busy"):
                    (on.set if load == "busy" else on.clear)()
                    ctl.put((a.endpoint_for(pb), b.endpoint_for(pa), args.pings, args.interval))
                    rtts, lost = out.get(timeout=args.pings * (args.interval + 2) + 30)
                    on.clear()
                    q = statistics.quantiles(rtts, n=20) if len(rtts) > 1 else [0.0] * 19
                    print(
                        f"{where:<12}{load:<7}{statistics.median(rtts):>10.2f}{q[-1]:>8.2f}"
                        f"{max(rtts):>8.2f}{lost:>6}",
                        flush=True,
                    )
            finally:
                a.stop()
                b.stop()
    finally:
        stop.set()
        ctl.put(None)
        proc.join(5)
        relay.terminate()
        relay.wait(10)


if __name__ == "__main__":
    main()
