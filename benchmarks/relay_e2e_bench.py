"""End to end through the WireGuard tunnel: relay path vs direct path, in one lab run.

The real system in the network lab: a kube-apiserver, one ``wirekube-relay``
and two ``wirekube-agent``s (userspace WireGuard). Both nodes and the relay
sit on the lab's internet, so the two paths cross the same veths and bridge:

* **direct**: mesh relay mode ``never``; WireGuard's UDP goes node to node;
* **relay**: mode ``always``; WireGuard -> the agent's bridge (loopback UDP)
  -> TCP -> the relay -> TCP -> the peer's bridge -> its WireGuard.

The mode is switched live on the WireKubeMesh (the agents follow it), and
each round measures both paths: ``iperf3`` TCP throughput from node A to node
B's address (routed into the tunnel), and ping RTT. Printed: both figures,
the relay/direct throughput ratio (target >= 80 %) and the RTT overhead
(target < 0.5 ms), plus the CPU each process used during the iperf3 run (to
see where the time goes: wireguard-go, the agents' bridges, the relay).

Before the agents start, the same lab measures the **hop floor**
(``hop_floor.py``, ``--rounds`` times): the RTT that three bare Python process
hops each way add between the same namespaces (UDP -> TCP on A, TCP -> TCP on
the relay host, TCP -> UDP on B and back), with no framing, crypto or
batching. It is what this machine charges for the relay path's six process
wake-ups alone, so the relay's RTT overhead is judged against it in the same
run.

    uv run python benchmarks/relay_e2e_bench.py [--seconds 10] [--rounds 2] [--json]

Needs root (network namespaces). Traffic stays inside the lab's namespaces;
every run is bounded in time; everything is torn down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wirekube_lab.controlplane import ControlPlane, ensure_binaries
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab, peer_name

A, B, RELAY = "bench-e2e-a", "bench-e2e-b", "bench-e2e-relay"
TIMERS = {"handshakeTimeoutSeconds": 5, "directRetryIntervalSeconds": 15}
TOPOLOGY: dict[str, Any] = {
    "name": "relay-e2e-bench",
    "hosts": {
        A: {"network": "internet", "role": "node"},
        B: {"network": "internet", "role": "node"},
        RELAY: {"network": "internet", "role": "relay"},
    },
    "mesh": {"relay": {"mode": "never", "provider": "external", **TIMERS}},
}
IPERF_PORT = 5201
# hop_floor.py's ports: the echo server on B, the middle on the relay host,
# and the two edges' UDP ports (on 127.0.0.1 of A and of B)
FLOOR_ECHO, FLOOR_MIDDLE, FLOOR_EDGE_A, FLOOR_EDGE_B = 7007, 7008, 7009, 7010
HOP_FLOOR = str(Path(__file__).with_name("hop_floor.py"))
PINGS = 200
PING_INTERVAL = 0.01
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    return found


def processes(mesh: MeshLab, lab: Lab) -> dict[str, int]:
    """The processes on the packet path, by role (wireguard-go daemonises: found by netns)."""
    procs = {"relay": mesh.services[RELAY].pid}
    for host, tag in ((A, "a"), (B, "b")):
        agent = mesh.agents[host].pid
        procs[f"agent-{tag}"] = agent
        for child in children(agent):  # the relay bridge runs in the agent's worker process
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/cmdline") as fh:
                if "wirekube_agent.relay.worker" in fh.read():
                    procs[f"bridge-{tag}"] = child
        pids = subprocess.run(
            ["ip", "netns", "pids", lab.netns(host)], capture_output=True, text=True, check=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip().startswith("wireguard"):
                    procs[f"wireguard-go-{tag}"] = int(pid)
    return procs


def set_mode(mesh: MeshLab, lab: Lab, mode: str) -> None:
    mesh.apply_mesh(
        {
            "relay": {
                "mode": mode,
                "provider": "external",
                "external": {"endpoint": f"{lab.address(RELAY)}:3478"},
                **TIMERS,
            }
        }
    )
    want = "relay" if mode == "always" else "direct"
    mesh.wait_until(
        f"both ends {want}",
        lambda: (
            mesh.transports(A).get(peer_name(B)) == want
            and mesh.transports(B).get(peer_name(A)) == want
            and lab.ping(A, B, count=1, wait=1.0).ok
        ),
        90,
    )
    time.sleep(1.0)


def measure(mesh: MeshLab, lab: Lab, seconds: float) -> dict[str, Any]:
    ping = lab.ping(A, B, count=PINGS, interval=PING_INTERVAL, wait=2.0)
    rtts = sorted(ping.rtts_ms)
    server = lab.spawn(
        B,
        ["iperf3", "-s", "-1", "--forceflush", "-B", lab.address(B), "-p", str(IPERF_PORT)],
        name="iperf3-s",
    )
    server.wait_for_log("Server listening", timeout=10)
    procs = processes(mesh, lab)
    before = {k: cpu_seconds(p) for k, p in procs.items()}
    t0 = time.monotonic()
    client = lab.exec(
        A,
        [
            "iperf3",
            "-c",
            lab.address(B),
            "-p",
            str(IPERF_PORT),
            "-t",
            str(seconds),
            "-O",
            "1",
            "-J",
        ],
        timeout=seconds + 30,
    )
    wall = time.monotonic() - t0
    cpu = {k: round(100 * (cpu_seconds(p) - before[k]) / wall, 1) for k, p in procs.items()}
    server.wait(10)
    result = json.loads(client.stdout)["end"]
    return {
        "mbit_s": round(result["sum_received"]["bits_per_second"] / 1e6, 1),
        "retransmits": result["sum_sent"].get("retransmits"),
        "ping_sent": ping.sent,
        "ping_received": ping.received,
        "rtt_median_ms": round(statistics.median(rtts), 3) if rtts else None,
        "rtt_avg_ms": round(statistics.fmean(rtts), 3) if rtts else None,
        "rtt_p90_ms": round(rtts[int(0.9 * (len(rtts) - 1))], 3) if rtts else None,
        "cpu_percent": cpu,
    }


def start_floor(lab: Lab) -> None:
    """hop_floor.py's echo (on B), middle (relay host) and edges (A, B), all ready."""

    def spawn(host: str, *argv: str) -> None:
        proc = lab.spawn(host, [sys.executable, HOP_FLOOR, *argv], name=f"floor-{argv[0]}")
        proc.wait_for_log("ready", timeout=30)

    spawn(B, "echo", "--port", str(FLOOR_ECHO))
    spawn(RELAY, "middle", "--port", str(FLOOR_MIDDLE))
    middle = f"{lab.address(RELAY)}:{FLOOR_MIDDLE}"
    spawn(A, "edge", "--udp-port", str(FLOOR_EDGE_A), "--connect", middle)
    spawn(
        B,
        "edge",
        "--udp-port", str(FLOOR_EDGE_B),
        "--connect", middle,
        "--peer-port", str(FLOOR_ECHO),
    )  # fmt: skip


def measure_floor(lab: Lab) -> dict[str, Any]:
    """Python UDP echo RTT from A to B: straight, and through the three bare hops."""

    def rtt(to: str) -> float:
        argv = [sys.executable, HOP_FLOOR, "client", "--to", to, "--count", str(PINGS)]
        out = json.loads(lab.exec(A, [*argv, "--interval", str(PING_INTERVAL)]).stdout)
        return float(statistics.median(out["rtts_ms"]))

    straight = rtt(f"{lab.address(B)}:{FLOOR_ECHO}")
    hops = rtt(f"127.0.0.1:{FLOOR_EDGE_A}")
    return {
        "echo_rtt_median_ms": round(straight, 3),
        "hops_rtt_median_ms": round(hops, 3),
        "floor_ms": round(hops - straight, 3),
    }


def run(seconds: float, rounds: int, log: Any) -> dict[str, Any]:
    cp = ControlPlane(bin_dir=ensure_binaries(log=log), log=log)
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": [], "floor": []}
    with cp:
        cp.install_wirekube()
        with Lab(TOPOLOGY) as lab:
            mesh = MeshLab(lab, cp)
            try:
                mesh.apply_mesh()
                mesh.start_relay(RELAY).wait_for_log("event=ready", timeout=60)
                # The floor first: once the agents run, B's address is routed
                # into the tunnel, and the straight echo would not be straight.
                start_floor(lab)
                for r in range(rounds):
                    figures = measure_floor(lab)
                    log(f"hop floor {r + 1}: {figures}")
                    results["floor"].append(figures)
                for host in (A, B):
                    mesh.register_node(host)
                    mesh.start_agent(host)
                for r in range(rounds):
                    for path, mode in (("direct", "never"), ("relay", "always")):
                        set_mode(mesh, lab, mode)
                        figures = measure(mesh, lab, seconds)
                        log(f"round {r + 1} {path}: {figures}")
                        results[path].append(figures)
            finally:
                mesh.stop()
    return summarize(results, seconds, rounds)


def summarize(
    results: dict[str, list[dict[str, Any]]], seconds: float, rounds: int
) -> dict[str, Any]:
    def med(path: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[path]))

    direct_mbit, relay_mbit = med("direct", "mbit_s"), med("relay", "mbit_s")
    direct_rtt, relay_rtt = med("direct", "rtt_median_ms"), med("relay", "rtt_median_ms")
    return {
        "seconds": seconds,
        "rounds": rounds,
        "load_average": os.getloadavg(),
        "direct_mbit_s": direct_mbit,
        "relay_mbit_s": relay_mbit,
        "throughput_ratio": round(relay_mbit / direct_mbit, 3) if direct_mbit else None,
        "direct_rtt_median_ms": direct_rtt,
        "relay_rtt_median_ms": relay_rtt,
        "rtt_overhead_ms": round(relay_rtt - direct_rtt, 3),
        "hop_floor_ms": med("floor", "floor_ms"),
        "targets": {"throughput_ratio": ">= 0.80", "rtt_overhead_ms": "< 0.5"},
        "runs": results,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="iperf3 duration per path")
    p.add_argument("--rounds", type=int, default=2, help="direct+relay measurements, alternated")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    quiet = args.json

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    out = run(args.seconds, args.rounds, log)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"load average during the run: {out['load_average']}")
    print(f"{'':22}{'direct':>12}{'relay':>12}")
    print(f"{'iperf3 TCP (Mbit/s)':22}{out['direct_mbit_s']:>12.1f}{out['relay_mbit_s']:>12.1f}")
    print(
        f"{'ping RTT median (ms)':22}"
        f"{out['direct_rtt_median_ms']:>12.3f}{out['relay_rtt_median_ms']:>12.3f}"
    )
    print(f"relay / direct throughput: {out['throughput_ratio']:.1%} (target >= 80 %)")
    print(f"RTT overhead of the relay: {out['rtt_overhead_ms']:.3f} ms (target < 0.5 ms)")
    print(
        f"hop floor (6 bare Python hops, same namespaces): {out['hop_floor_ms']:.3f} ms; "
        f"relay overhead = {out['rtt_overhead_ms'] / out['hop_floor_ms']:.2f} x floor"
        if out["hop_floor_ms"] > 0
        else f"hop floor: {out['hop_floor_ms']:.3f} ms"
    )
    for path in ("direct", "relay"):
        for i, r in enumerate(out["runs"][path]):
            print(f"  {path} round {i + 1}: CPU % during iperf3: {r['cpu_percent']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
