"""Relay throughput over TLS against plain TCP, measured in one run on loopback.

Starts one real ``wirekube-relay`` process serving both transports (``--listen``
and ``--tls-listen``, a certificate from a CA made here), then, alternating
TCP and TLS rounds so that drift in the machine's load hits both alike, lets
``n`` senders each push a prebuilt 256 KiB block of SEND frames (one 1400 B
WireGuard-sized packet per frame, or SEND_BATCH frames of ~48 KiB) to ``n``
receivers for ``--seconds``. Clients are processes of their own. Both kinds
of client do the same work: ``sendall`` of the block and ``recv_into`` a
1 MiB buffer (the TLS client through ``ssl.SSLSocket``, used by one thread
each, so that is safe), so the difference is TLS alone: on the relay (decrypt
every read, encrypt every write) and on the clients.

Reported per transport: MB/s and packets/s delivered (plaintext, counted by
the receivers), the relay's CPU%, and packets per relay CPU-second (the
relay's cost per packet, which carries over to a machine where the relay has
a core to itself); then the TLS/TCP ratios of those.

    uv run python benchmarks/relay_tls_bench.py [--seconds 4] [--rounds 2] [--pairs 1,4]

Loopback only; every run is bounded in time; the relay is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wirekube_agent.relay.link import register
from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_lab.controlplane_pki import CertificateAuthority

BLOCK = 256 * 1024
PACKET = 1400 - f.DATA_OVERHEAD
BATCH_BYTES = 48 * 1024
NAME = "relay.bench.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(tmp: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    ca = CertificateAuthority.generate("relay-bench-ca")
    pair = ca.issue(NAME, dns_names=[NAME], server=True)
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "cert.pem").write_bytes(pair.cert_pem)
    (tmp / "key.pem").write_bytes(pair.key_pem)
    ready = tmp / "ready.json"
    tls_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wirekube_relay",
            "--listen=127.0.0.1:0",
            f"--tls-listen=127.0.0.1:{tls_port}",
            f"--tls-cert-file={tmp / 'cert.pem'}",
            f"--tls-key-file={tmp / 'key.pem'}",
            "--admin-listen=127.0.0.1:0",
            "--metrics-listen=",
            "--allowlist=off",
            f"--ready-file={ready}",
            "--log-level=warning",
        ]
    )
    deadline = time.monotonic() + 20
    while not ready.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("relay did not start")
        time.sleep(0.05)
    time.sleep(0.3)  # the TLS listener starts right after the ready file
    return proc, json.loads(ready.read_text())["relay_port"], tls_port, tmp / "ca.pem"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(port: int, ca: str | None) -> tuple[socket.socket, bytes]:
    priv = wgkey.generate_private_key()
    sock: socket.socket = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ca is not None:
        ctx = ssl.create_default_context(cafile=ca)
        sock = ctx.wrap_socket(sock, server_hostname=NAME)
    _ok, rest = register(sock, priv)
    assert not rest
    sock.settimeout(None)
    return sock, wgkey.public_key(priv)


def receiver(port: int, ca: str | None, keys: mp.Queue, count: mp.Value) -> None:  # type: ignore[type-arg]
    sock, pub = connect(port, ca)
    keys.put(pub)
    buf = memoryview(bytearray(1 << 20))
    while True:
        n = sock.recv_into(buf)
        if not n:
            return
        with count.get_lock():
            count.value += n


def sender(port: int, ca: str | None, block: bytes, keys: mp.Queue) -> None:  # type: ignore[type-arg]
    sock, pub = connect(port, ca)
    keys.put(pub)
    while True:
        sock.sendall(block)


def build_block(dsts: list[bytes], batch: bool) -> tuple[bytes, int]:
    """(block, packets in it)."""
    packet = bytes(PACKET)
    if not batch:
        n = BLOCK // (PACKET + f.DATA_OVERHEAD)
        return b"".join(f.encode_send(dsts[i % len(dsts)], packet) for i in range(n)), n
    per = BATCH_BYTES // (PACKET + 2)
    n = BLOCK // (per * (PACKET + 2) + f.DATA_OVERHEAD)
    frames = [f.encode_send_batch(dsts[i % len(dsts)], [packet] * per) for i in range(n)]
    return b"".join(frames), n * per


def run(port: int, ca: str | None, pid: int, pairs: int, batch: bool, seconds: float) -> dict:  # type: ignore[type-arg]
    keys: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    count = mp.Value("q", 0)
    procs = [
        mp.Process(target=receiver, args=(port, ca, keys, count), daemon=True) for _ in range(pairs)
    ]
    for p in procs:
        p.start()
    rkeys = [keys.get(timeout=30) for _ in range(pairs)]
    block, packets = build_block(rkeys, batch)
    senders = [
        mp.Process(target=sender, args=(port, ca, block, keys), daemon=True) for _ in range(pairs)
    ]
    for p in senders:
        p.start()
    for _ in range(pairs):
        keys.get(timeout=30)
    procs += senders
    try:
        time.sleep(0.5)  # warm up
        b0, c0, t0 = count.value, cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        b1, c1, t1 = count.value, cpu_seconds(pid), time.monotonic()
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(5)
    elapsed = t1 - t0
    pps = (b1 - b0) / len(block) * packets / elapsed
    cpu = (c1 - c0) / elapsed
    return {
        "mb_per_s": (b1 - b0) / elapsed / 1e6,
        "packets_per_s": pps,
        "relay_cpu_pct": 100 * cpu,
        "packets_per_relay_cpu_s": pps / cpu if cpu else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2, help="TCP/TLS alternations per scenario")
    ap.add_argument("--pairs", default="1,4", help="sender/receiver pairs per scenario")
    ap.add_argument("--modes", default="single,batch")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wkrelaytls") as tmp:
        proc, tcp_port, tls_port, ca = start_relay(Path(tmp))
        try:
            print(
                f"{'scenario':<16}{'transport':<10}{'MB/s':>9}{'pkts/s':>11}"
                f"{'relay CPU%':>12}{'pkts/relay-CPU-s':>18}"
            )
            for pairs in (int(x) for x in args.pairs.split(",")):
                for mode in args.modes.split(","):
                    name = f"{pairs}to{pairs}-{mode}"
                    sums: dict[str, dict[str, float]] = {"tcp": {}, "tls": {}}
                    for _ in range(args.rounds):
                        for transport, port, cafile in (
                            ("tcp", tcp_port, None),
                            ("tls", tls_port, str(ca)),
                        ):
                            r = run(port, cafile, proc.pid, pairs, mode == "batch", args.seconds)
                            for k, v in r.items():
                                sums[transport][k] = sums[transport].get(k, 0.0) + v / args.rounds
                    for transport in ("tcp", "tls"):
                        r = sums[transport]
                        print(
                            f"{name:<16}{transport:<10}{r['mb_per_s']:>9.1f}"
                            f"{r['packets_per_s']:>11.0f}{r['relay_cpu_pct']:>12.0f}"
                            f"{r['packets_per_relay_cpu_s']:>18.0f}"
                        )
                    t, s = sums["tcp"], sums["tls"]
                    print(
                        f"{name:<16}{'TLS/TCP':<10}{s['mb_per_s'] / t['mb_per_s']:>9.2f}"
                        f"{'':>11}{'':>12}"
                        f"{s['packets_per_relay_cpu_s'] / t['packets_per_relay_cpu_s']:>18.2f}"
                    )
                    sys.stdout.flush()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


if __name__ == "__main__":
    main()
