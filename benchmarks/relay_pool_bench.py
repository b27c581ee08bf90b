"""Relay pool on loopback: the same flow through one replica vs across two (replica mesh).

Starts two real ``wirekube-relay`` replicas on 127.0.0.1 joined by the
replica mesh (``--mesh-secret-file``, ``--mesh-peers``), then in one run:

* **throughput**: one sender pushes 1400-byte SEND frames (``sendfile`` of a
  prebuilt block, as ``relay_bench.py`` does) for ``--seconds`` to one
  receiver registered on the *same* replica, then to one registered on the
  *other* replica. Reported: frames/s delivered, the CPU of both relay
  processes together, and relay CPU per delivered frame; the ratio cross / same is the mesh's cost (target: at most 2x: the
  cross path is two relays' work by construction, read + write each). The
  cross path's CPU is also split per replica (the sender's, which stamps and
  wraps, and the receiver's, which only unwraps), to show where it goes.
* **latency**: a client pings a peer through the relay (SEND, the peer
  echoes each RECV straight back) ``--pings`` times, same replica vs
  across; reported: median and 90th percentile round trip and the added
  median (target: under 0.2 ms).

CPU is each relay process's own, not wall time, by two measures: the time
the scheduler ran its threads (``/proc/<pid>/task/*/schedstat``, exact) and
user + system time (``/proc/<pid>/stat``, what ``getrusage`` reports; this
kernel samples it at ticks). The client processes are left out of both paths
alike. The ratio is also given per round (each cross run against the
same-replica run just before it) as a median and range, with the machine's
load average (it is shared).

Four busy processes (sender, two replicas, receiver) on this VM's two cores
share caches and wake each other across CPUs; where the scheduler puts them
moves the figures as much as anything the relay does. ``--alone N`` gives
replica N a CPU to itself and everything else the other, to show by how much.
``--matched`` measures each replica's hop across against a local hop by the
same replica in the same place (alone on a CPU, as replicas on their own
nodes are in production) and adds the two hops' ratios.

    uv run python benchmarks/relay_pool_bench.py [--seconds 5] [--pings 2000] [--size 1400]
        [--rate 100000 (0: unpaced)] [--rounds 3] [--alone 0|1 | --matched]

Loopback only; bounded in time; both replicas are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_bench as rb

from wirekube_common.relayproto import frames as f

SECRET = "benchmark-pool-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_pool(tmp: str) -> list[tuple[subprocess.Popen[bytes], int]]:
    ports = [free_port(), free_port()]
    secret = os.path.join(tmp, "secret")
    Path(secret).write_text(SECRET)
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    out = []
    for i, port in enumerate(ports):
        ready = os.path.join(tmp, f"ready-{i}.json")
        argv = [
            sys.executable, "-m", "wirekube_relay", f"--listen=127.0.0.1:{port}",
            "--admin-listen=127.0.0.1:0", "--metrics-listen=", "--allowlist=off",
            f"--ready-file={ready}", "--log-level=warning", f"--relay-id=bench-{i}",
            f"--mesh-secret-file={secret}", f"--mesh-peers={peers}",
        ]  # fmt: skip
        proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("relay did not start")
            time.sleep(0.05)
        with open(ready) as fh:
            json.load(fh)
        out.append((proc, port))
    return out


def wait_for_mesh(ports: list[int]) -> None:
    """A frame from a client on the first replica reaches one on the second."""
    a, b = rb.connect(ports[0]), rb.connect(ports[1])
    b.sock.settimeout(0.2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        a.sock.sendall(f.encode_send(b.pub, b"probe"))
        with contextlib.suppress(TimeoutError):
            if b.sock.recv(4096):
                a.sock.close()
                b.sock.close()
                return
    raise SystemExit("the two replicas did not form a mesh")


#: Frames per burst of the paced sender (``--rate``): a burst is one write,
#: as an agent's bridge writes what it drained from its WireGuard socket.
BURST = 32


def paced_sender_proc(
    port: int, burst: bytes, bursts_per_s: float, ctl: mp.Queue, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    """Register, report the key, then write ``burst`` ``bursts_per_s`` times a
    second until told to stop (catching up at once after a late wake-up)."""
    c = rb.connect(port)
    out.put(c.pub)
    stop = threading.Event()

    def wait_for_stop() -> None:
        ctl.get()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    interval = 1.0 / bursts_per_s
    due = time.monotonic()
    with contextlib.suppress(OSError):
        while not stop.is_set():
            c.sock.sendall(burst)
            due += interval
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)


def throughput(
    send_port: int, recv_port: int, pids: list[int], size: int, seconds: float, rate: float
) -> dict[str, float]:
    """One sender to one receiver for ``seconds``: as fast as they go
    (``rate`` 0), or ``rate`` frames/s in bursts of ``BURST`` frames."""
    rctl, rout, sctl, sout = mp.Queue(), mp.Queue(), mp.Queue(), mp.Queue()
    procs = [mp.Process(target=rb.receiver_proc, args=(recv_port, rctl, rout), daemon=True)]
    procs[0].start()
    rkey = rout.get(timeout=30)
    if rate:
        packet = bytes(size - f.DATA_OVERHEAD)
        block, frames_per_block = f.encode_send(rkey, packet) * BURST, BURST
        sender = mp.Process(
            target=paced_sender_proc,
            args=(send_port, block, rate / BURST, sctl, sout),
            daemon=True,
        )
    else:
        block, frames_per_block, _ = rb.build_block([rkey], size, batch=False)
        sender = mp.Process(target=rb.sender_proc, args=(send_port, block, sctl, sout), daemon=True)
    procs.append(sender)
    procs[1].start()
    skey = sout.get(timeout=30)

    def mark() -> int:
        rctl.put("mark")
        nbytes, first = rout.get(timeout=30)
        if first and first != skey:
            raise SystemExit("the receiver's first frame is not stamped with the sender's key")
        return int(nbytes)

    time.sleep(0.5)  # warm up
    r0, p0, t0 = mark(), [rb.cpu_seconds(p) for p in pids], time.monotonic()
    q0 = [rb.run_seconds(p) for p in pids]
    time.sleep(seconds)
    r1, p1, t1 = mark(), [rb.cpu_seconds(p) for p in pids], time.monotonic()
    q1 = [rb.run_seconds(p) for p in pids]
    c0, c1 = sum(p0), sum(p1)
    sctl.put("stop")
    rctl.put("stop")
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    frames = (r1 - r0) / len(block) * frames_per_block
    return {
        "frames_per_s": frames / (t1 - t0),
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "cpu_us_per_frame": 1e6 * (c1 - c0) / max(frames, 1),
        # each replica's share: the sender's (first) and the other one
        "cpu_us_per_frame_0": 1e6 * (p1[0] - p0[0]) / max(frames, 1),
        "cpu_us_per_frame_1": 1e6 * (p1[1] - p0[1]) / max(frames, 1),
        # the same from the scheduler's run time (exact, rb.run_seconds)
        "run_us_per_frame": 1e6 * (sum(q1) - sum(q0)) / max(frames, 1),
        "run_us_per_frame_0": 1e6 * (q1[0] - q0[0]) / max(frames, 1),
        "run_us_per_frame_1": 1e6 * (q1[1] - q0[1]) / max(frames, 1),
    }


def echo_proc(port: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Register, report the key, then answer every RECV with a SEND of it to its source."""
    c = rb.connect(port)
    out.put(c.pub)
    parser = f.FrameParser()
    with contextlib.suppress(OSError):
        while data := c.sock.recv(65536):
            parser.feed(data)
            for ev in parser.events():
                if isinstance(ev, f.Recv):
                    c.sock.sendall(f.encode_send(ev.src, ev.packet))


def latency(send_port: int, echo_port: int, pings: int, size: int) -> list[float]:
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    echo = mp.Process(target=echo_proc, args=(echo_port, out), daemon=True)
    echo.start()
    peer = out.get(timeout=30)
    c = rb.connect(send_port)
    parser = f.FrameParser()
    packet = bytes(size - f.DATA_OVERHEAD)
    frame = f.encode_send(peer, packet)
    rtts: list[float] = []
    try:
        for i in range(pings + 50):
            t0 = time.perf_counter()
            c.sock.sendall(frame)
            while True:
                parser.feed(c.sock.recv(65536))
                if any(isinstance(ev, f.Recv) for ev in parser.events()):
                    break
            if i >= 50:  # the first ones warm up caches and the path
                rtts.append(time.perf_counter() - t0)
    finally:
        c.sock.close()
        echo.kill()
        echo.join(5)
    return rtts


def place(pids: list[int], alone: int) -> None:
    """Replica ``alone`` on CPU 0 by itself; the other replica, this process
    and the clients it starts (inheriting its affinity) on the other CPUs."""
    rest = os.sched_getaffinity(0) - {0}
    if not rest:
        raise SystemExit("--alone needs at least two CPUs")
    os.sched_setaffinity(0, rest)
    for r, pid in enumerate(pids):
        for tid in os.listdir(f"/proc/{pid}/task"):  # every thread of the replica
            os.sched_setaffinity(int(tid), {0} if r == alone else rest)


def matched(ports: list[int], pids: list[int], args: argparse.Namespace) -> None:
    """Each replica's hop across against a local hop by the same replica in the
    same place: alone on a CPU, the clients and the other replica elsewhere
    (as in production, where a pool's replicas run on different nodes and the
    agents on others still).

    On two CPUs the four busy processes cannot all be placed that way at
    once, and where they land moves the plain ratio more than the relay does
    (see ``--alone``). So each round measures, with replica 0 alone, its
    local hop and its (sending) hop across; then, with replica 1 alone, its
    local hop and its (receiving) hop across. The cross path's cost in that
    placement, as a multiple of a local one, is the sum of the two hops'
    ratios."""
    print(
        f"matched placement: two replicas {ports} (pids {pids}), {args.size} B frames, "
        f"{args.seconds:.0f} s per run, {args.rate:,.0f} frames/s offered"
    )
    hops: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for _ in range(args.rounds):
        for r in (0, 1):
            place(pids, r)
            local = throughput(ports[r], ports[r], pids, args.size, args.seconds, args.rate)
            cross = throughput(ports[0], ports[1], pids, args.size, args.seconds, args.rate)
            hops[r].append((local[f"run_us_per_frame_{r}"], cross[f"run_us_per_frame_{r}"]))
    print("CPU per frame by scheduler run time (schedstat), each replica alone on a CPU:")
    for r, role in ((0, "sending"), (1, "receiving")):
        rows = ", ".join(f"{c:.2f}/{lo:.2f}" for lo, c in hops[r])
        ratios = [c / lo for lo, c in hops[r]]
        print(
            f"  replica {r}: {role} hop across / its local hop: median "
            f"{statistics.median(ratios):.2f}x  (us per frame, per round: {rows})"
        )
    sums = [c0 / lo0 + c1 / lo1 for (lo0, c0), (lo1, c1) in zip(hops[0], hops[1], strict=True)]
    print(
        f"  across / same: {statistics.median(sums):.2f}x (target <= 2x); per round "
        f"{', '.join(f'{x:.2f}' for x in sums)}"
    )


def report_cpu(
    runs: dict[str, list[dict[str, float]]],
    med: dict[str, dict[str, float]],
    measure: str,
    label: str,
) -> None:
    """CPU per frame of both paths by one measure (``cpu`` or ``run``), the
    cross path split per replica, and the ratio: of the medians, and per round
    (each cross run against the same-replica run just before it: load from
    elsewhere changes between rounds more than within one)."""
    k = f"{measure}_us_per_frame"
    print(f"CPU per frame by {label}:")
    for name, path in (("same replica", "same"), ("across replicas", "cross")):
        per_run = ", ".join(f"{x[k]:.2f}" for x in runs[path])
        print(f"  {name:<16}{med[path][k]:>6.2f} us  ({per_run})")
    c = med["cross"]
    print(f"  across, per replica: sender's {c[k + '_0']:.2f} us, receiver's {c[k + '_1']:.2f} us")
    per_round = [c[k] / s[k] for s, c in zip(runs["same"], runs["cross"], strict=True)]
    print(
        f"  across / same: {c[k] / med['same'][k]:.2f}x (target <= 2x); per round "
        f"{', '.join(f'{r:.2f}' for r in per_round)}: median "
        f"{statistics.median(per_round):.2f}x, range {min(per_round):.2f}-{max(per_round):.2f}"
    )


def _load() -> str:
    """The 1-minute load average: this machine is shared, so say how busy it was."""
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument(
        "--rate",
        type=float,
        default=100_000,
        help="frames/s offered on both paths alike (0: as fast as each path goes)",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="same/across measured alternately, medians kept"
    )
    ap.add_argument(
        "--alone",
        type=int,
        choices=(0, 1),
        help="give replica 0 (the sender's) or 1 a CPU to itself, everything else the "
        "other CPUs: how much of the cost is where the scheduler puts four busy processes",
    )
    ap.add_argument(
        "--matched",
        action="store_true",
        help="measure each replica's hop across against its own local hop, each alone on "
        "a CPU (the placement production has); throughput only",
    )
    args = ap.parse_args()
    if args.matched and (args.alone is not None or not args.rate):
        raise SystemExit("--matched places the replicas itself and needs a --rate")
    with tempfile.TemporaryDirectory(prefix="wkpoolbench") as tmp:
        pool = start_pool(tmp)
        try:
            ports = [port for _, port in pool]
            pids = [proc.pid for proc, _ in pool]
            wait_for_mesh(ports)
            if args.matched:
                matched(ports, pids, args)
                return
            if args.alone is not None:
                place(pids, args.alone)
            load0 = _load()
            offered = f"{args.rate:,.0f} frames/s offered" if args.rate else "unpaced"
            print(
                f"two replicas {ports} (pids {pids}), {args.size} B frames, "
                f"{args.seconds:.0f} s per run, {offered}"
            )
            # alternate the two paths so that load from elsewhere on the
            # machine hits both alike; keep the median of each
            runs: dict[str, list[dict[str, float]]] = {"same": [], "cross": []}
            for _ in range(args.rounds):
                for path, dst in (("same", ports[0]), ("cross", ports[1])):
                    runs[path].append(
                        throughput(ports[0], dst, pids, args.size, args.seconds, args.rate)
                    )
            med = {
                path: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for path, rs in runs.items()
            }
            print(f"{'path':<16}{'frames/s':>12}{'relay CPU':>11}   (median of {args.rounds})")
            for name, path in (("same replica", "same"), ("across replicas", "cross")):
                r = med[path]
                print(f"{name:<16}{r['frames_per_s']:>12,.0f}{r['cpu_pct']:>10.0f}%")
            for measure, label in (
                ("run", "scheduler run time (schedstat, exact)"),
                ("cpu", "user + system time (/proc stat, tick-sampled)"),
            ):
                report_cpu(runs, med, measure, label)
            print(f"load average {load0} -> {_load()}")
            rtt_same = latency(ports[0], ports[0], args.pings, args.size)
            rtt_cross = latency(ports[0], ports[1], args.pings, args.size)
            print(f"{'path':<16}{'RTT median':>12}{'RTT p90':>10}   ({args.pings} pings)")
            for name, rtts in (("same replica", rtt_same), ("across replicas", rtt_cross)):
                q = statistics.quantiles(rtts, n=10)
                print(f"{name:<16}{statistics.median(rtts) * 1e3:>10.3f}ms{q[8] * 1e3:>8.3f}ms")
            added = (statistics.median(rtt_cross) - statistics.median(rtt_same)) * 1e3
            print(f"added median RTT across replicas: {added:.3f} ms (target < 0.2 ms)")
        finally:
            for proc, _ in pool:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
