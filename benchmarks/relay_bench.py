"""Relay throughput on loopback: frames/s, MB/s and the relay's CPU%.

Starts a real ``wirekube-relay`` process on 127.0.0.1, registers senders and
receivers through the real handshake (each client its own process, so that
load-generator threads never contend for one GIL), then for each scenario lets every sender push a prebuilt
256 KiB block of frames in a loop for ``--seconds`` while the receivers count
bytes. The load generator is kept as cheap as possible so that it does not
steal the relay's core on this 2-core machine: senders use ``sendfile`` from
a memfd holding the block, receivers ``splice`` into /dev/null (no copies to
user space); each receiver checks the first frame it gets with a real read
(a RECV/RECV_BATCH stamped with a sender's key).

Reported: frames/s, packets/s and MB/s delivered to receivers (a frame's
bytes include its header), the relay process's CPU% (from /proc/<pid>/stat),
and the relay's own forwarded/dropped counters (via the RelayAdmin gRPC API).
``single`` mode sends one packet per SEND frame; ``batch`` mode sends
SEND_BATCH frames of up to ~48 KiB (as the agent's bridge does when it drains
several datagrams of one peer), so packets/s > frames/s.

Scenarios: ``1to1`` (one sender, one receiver) and ``16to16`` (sixteen
senders, each round-robining its frames over all sixteen receivers, i.e.
interleaved destinations: the worst case for write coalescing).

With ``--pin`` (on a machine with at least two CPUs) the relay runs on CPU 0
and every client on the others, so the relay has a core of its own, as it
would in a cluster. Without it, on this 2-core machine, the relay and up to 32
client processes share both cores and the relay gets what is left (pinned,
the 16to16 clients share one core and can become the limit instead: then the
relay's CPU stays below 100 %). Either way the table's last column is packets
per relay CPU-second: the relay's cost, the figure that carries over to a
machine where it has a core to itself.

    uv run python benchmarks/relay_bench.py [--seconds 5] [--sizes 1400,100] [--pin]

Loopback only; every run is bounded in time; the relay is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import grpc

from wirekube_agent.relay.link import register
from wirekube_common import wgkey
from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc
from wirekube_common.relayproto import frames as f

BLOCK = 256 * 1024


def start_relay() -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ready = os.path.join(tempfile.mkdtemp(prefix="wkrelaybench"), "ready.json")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wirekube_relay",
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
            "--metrics-listen=",
            "--allowlist=off",
            f"--ready-file={ready}",
            "--log-level=warning",
        ]
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("relay did not start")
        time.sleep(0.05)
    with open(ready) as fh:
        return proc, json.load(fh)


def cpu_seconds(pid: int) -> float:
    """User + system time of the whole process, as ``getrusage`` reports it.
    With the tick-based accounting of this kernel (CONFIG_TICK_CPU_ACCOUNTING,
    HZ 250) it is a sample: whoever runs when a tick fires is charged the
    whole 4 ms."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float:
    """Time the scheduler ran the process's threads, summed (the first field of
    each ``/proc/<pid>/task/<tid>/schedstat``, nanoseconds): measured at every
    switch, not sampled at ticks, so short bursts of work between sleeps are
    counted exactly. Softirq work done while a thread runs (loopback delivery
    of what it sent) is in it, as in ``cpu_seconds`` (this kernel does not
    account interrupt time apart: CONFIG_IRQ_TIME_ACCOUNTING is off)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/{pid}/task/{tid}/schedstat") as fh,
        ):
            total += int(fh.read().split()[0])
    return total / 1e9


@dataclass
class Client:
    key: bytes
    pub: bytes
    sock: socket.socket


def connect(port: int) -> Client:
    priv = wgkey.generate_private_key()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _ok, rest = register(sock, priv)
    assert not rest
    sock.settimeout(None)
    return Client(priv, wgkey.public_key(priv), sock)


BATCH_BYTES = 48 * 1024


def build_block(dsts: list[bytes], size: int, batch: bool) -> tuple[bytes, int, int]:
    """(block, frames in block, packets in block); ``size`` is the single-frame size."""
    packet = bytes(size - f.DATA_OVERHEAD)
    if not batch:
        n = BLOCK // size
        return b"".join(f.encode_send(dsts[i % len(dsts)], packet) for i in range(n)), n, n
    per = BATCH_BYTES // (len(packet) + 2)
    n = BLOCK // (per * (len(packet) + 2) + f.DATA_OVERHEAD)
    frames = [f.encode_send_batch(dsts[i % len(dsts)], [packet] * per) for i in range(n)]
    return b"".join(frames), n, n * per


def receiver_proc(port: int, ctl: mp.Queue, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Register, report the key; check the first frame, then splice into /dev/null.
    Answers "mark" with (bytes received so far, source key of the first frame)."""
    c = connect(port)
    out.put(c.pub)
    first: list[bytes] = []

    def drain() -> None:
        head = c.sock.recv(35, socket.MSG_WAITALL)
        first.append(head[3:35] if head[0] & f.DATA_MASK == f.RECV else b"not-a-recv")
        r, w = os.pipe()
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            while True:
                got = os.splice(c.sock.fileno(), w, 1 << 20)
                if not got:
                    return
                while got:
                    got -= os.splice(r, null, got)
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    while ctl.get() == "mark":
        out.put((_rx_bytes(c.sock), first[0] if first else b""))


def sender_proc(port: int, block: bytes, ctl: mp.Queue, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Register, report the key, then sendfile the block from a memfd until told to stop."""
    c = connect(port)
    out.put(c.pub)
    fd = os.memfd_create("relaybench")
    os.write(fd, block)
    stop = threading.Event()
    threading.Thread(target=lambda: (ctl.get(), stop.set()), daemon=True).start()
    with contextlib.suppress(OSError):
        while not stop.is_set():
            off = 0
            while off < len(block):
                off += os.sendfile(c.sock.fileno(), fd, off, len(block) - off)


def run_scenario(
    port: int,
    admin: admin_pb2_grpc.RelayAdminStub,
    pid: int,
    n: int,
    size: int,
    seconds: float,
    batch: bool,
    pin: bool,
) -> dict[str, float]:
    """Each client is its own process (no GIL shared between load-generator threads)."""
    procs: list[mp.Process] = []
    rctl = [mp.Queue() for _ in range(n)]
    rout = [mp.Queue() for _ in range(n)]
    for i in range(n):
        procs.append(mp.Process(target=receiver_proc, args=(port, rctl[i], rout[i]), daemon=True))
        procs[-1].start()
    rkeys = [q.get(timeout=30) for q in rout]
    sctl = [mp.Queue() for _ in range(n)]
    sout = [mp.Queue() for _ in range(n)]
    block, frames_per_block, packets_per_block = build_block(rkeys, size, batch)
    for i in range(n):
        procs.append(
            mp.Process(target=sender_proc, args=(port, block, sctl[i], sout[i]), daemon=True)
        )
        procs[-1].start()
    skeys = {q.get(timeout=30) for q in sout}

    def mark() -> int:
        for q in rctl:
            q.put("mark")
        total = 0
        for q in rout:
            nbytes, first = q.get(timeout=30)
            if first and first not in skeys:
                raise SystemExit("a receiver's first frame is not stamped with a sender key")
            total += nbytes
        return total

    if pin:
        for tid in os.listdir(f"/proc/{pid}/task"):  # every relay thread, not just the main one
            os.sched_setaffinity(int(tid), {0})
        others = os.sched_getaffinity(0) - {0}
        for proc in procs:
            assert proc.pid is not None
            os.sched_setaffinity(proc.pid, others)
    time.sleep(0.5)  # warm up
    s0 = admin.GetStats(admin_pb2.GetStatsRequest(), timeout=5)
    r0 = mark()
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    r1 = mark()
    s1 = admin.GetStats(admin_pb2.GetStatsRequest(), timeout=5)
    for q in sctl + rctl:
        q.put("stop")
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    elapsed = t1 - t0
    delivered = r1 - r0
    drops = sum(d.frames for d in s1.drops) - sum(d.frames for d in s0.drops)
    return {
        "frames_per_s": delivered / len(block) * frames_per_block / elapsed,
        "packets_per_s": delivered / len(block) * packets_per_block / elapsed,
        "mb_per_s": delivered / elapsed / 1e6,
        "relay_cpu_pct": 100 * (c1 - c0) / elapsed,
        "relay_forwarded_per_s": (s1.frames_forwarded - s0.frames_forwarded) / elapsed,
        "relay_drops": drops,
    }


def _rx_bytes(sock: socket.socket) -> int:
    """Bytes received on a TCP socket so far (tcpi_bytes_received from TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return int.from_bytes(info[128:136], "little")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sizes", default="1400,100")
    ap.add_argument("--scenarios", default="1to1,16to16")
    ap.add_argument("--modes", default="single,batch")
    ap.add_argument("--pin", action="store_true", help="the relay alone on CPU 0")
    args = ap.parse_args()
    cpus = os.sched_getaffinity(0)
    if args.pin and (len(cpus) < 2 or 0 not in cpus):
        raise SystemExit("--pin needs CPU 0 and at least one other CPU")
    proc, ports = start_relay()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['admin_port']}") as ch:
            admin = admin_pb2_grpc.RelayAdminStub(ch)
            where = "alone on CPU 0" if args.pin else "sharing every CPU with the clients"
            print(f"relay pid {proc.pid} ({where}), {args.seconds:.0f} s each")
            print(
                f"{'scenario':<9}{'mode':<7}{'packet':>7}{'frames/s':>12}{'packets/s':>12}"
                f"{'MB/s':>7}{'relay CPU':>10}{'fwd/s (relay)':>14}{'drops':>7}"
                f"{'packets/relay CPU-s':>21}"
            )
            for scen in args.scenarios.split(","):
                n = 1 if scen == "1to1" else 16
                for mode in args.modes.split(","):
                    for size in (int(s) for s in args.sizes.split(",")):
                        r = run_scenario(
                            ports["relay_port"],
                            admin,
                            proc.pid,
                            n,
                            size,
                            args.seconds,
                            mode == "batch",
                            args.pin,
                        )
                        per_cpu = r["packets_per_s"] / max(1e-9, r["relay_cpu_pct"] / 100)
                        print(
                            f"{scen:<9}{mode:<7}{size:>6}B{r['frames_per_s']:>12,.0f}"
                            f"{r['packets_per_s']:>12,.0f}{r['mb_per_s']:>7,.0f}"
                            f"{r['relay_cpu_pct']:>9.0f}%{r['relay_forwarded_per_s']:>14,.0f}"
                            f"{r['relay_drops']:>7,.0f}{per_cpu:>21,.0f}",
                            flush=True,
                        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
