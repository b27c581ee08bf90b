"""Agent relay bridge throughput: UDP datagrams/s from "WireGuard" into the relay.

Setup, all on loopback: a real ``wirekube-relay`` process; a ``RelayBridge`` in
this process relaying one peer B; B itself is a plain registered relay client
whose socket is drained with ``splice`` into /dev/null (its received byte
count comes from TCP_INFO). A load generator *process* plays WireGuard and
sends 1400-byte datagrams at the bridge's endpoint for B, many per system
call: 64 per ``sendmmsg`` (via ctypes; each one a datagram of its own for the
kernel, as kernel WireGuard and older wireguard-go send) or, with ``--gso``, 46
per UDP GSO send, which the kernel cuts into datagrams (as newer wireguard-go
sends).

``--rate`` offers a fixed load instead of "as fast as possible". On a machine
with few cores that matters: a generator that blasts takes a whole core, most
of it for datagrams the kernel then drops, and starves the bridge it measures.

Reported: datagrams/s offered, accepted by the bridge (its tx counter) and
delivered through the relay to B; the CPU% of the bridge (this process) and of
the relay; the uplink thread's share of time running and waiting for a CPU
(from schedstat: "waiting" is time it was runnable but another process had the
core); and datagrams per bridge CPU-second, the figure that carries over to a
machine where the bridge has a core of its own.

    uv run python benchmarks/bridge_bench.py [--seconds 5] [--size 1400]
        [--rate DATAGRAMS_PER_S] [--gso] [--recv-into]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import multiprocessing as mp
import os
import socket
import sys
import threading
import time

from relay_bench import start_relay  # this directory: the scripts run from here

from wirekube_agent.relay import RelayBridge, RelayPool
from wirekube_agent.relay.link import register
from wirekube_common import wgkey

VLEN = 64
UDP_SEGMENT = 103  # not in Python's socket module
GSO_SEGMENTS = 64


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def generator(
    size: int, seconds: float, rate: float, gso: bool, ctl: mp.Queue, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    """Play WireGuard: bind a "listen port" (reported on ``out``), wait for the bridge's
    endpoint on ``ctl``, send datagrams at it for ``seconds`` (at ``rate`` per second,
    0: as fast as it can); report the count."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    out.put(sock.getsockname()[1])
    sock.connect(("127.0.0.1", ctl.get(timeout=30)))
    payload = ctypes.create_string_buffer(os.urandom(size), size)
    iovs = (IOVec * VLEN)()
    msgs = (MMsgHdr * VLEN)()
    for i in range(VLEN):
        iovs[i].iov_base = ctypes.cast(payload, ctypes.c_void_p)
        iovs[i].iov_len = size
        msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
        msgs[i].msg_hdr.msg_iovlen = 1
    per_gso = min(GSO_SEGMENTS, 65000 // size)
    gso_run = [payload.raw * per_gso]
    gso_cmsg = [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
    sent = 0
    start = time.monotonic()
    end = start + seconds
    fd = sock.fileno()
    while (now := time.monotonic()) < end:
        if rate and (due := start + sent / rate) > now:
            time.sleep(due - now)
        if gso:
            try:
                sock.sendmsg(gso_run, gso_cmsg)
                n = per_gso
            except OSError:  # receive buffer full: the kernel dropped the run
                n = 0
        else:
            n = libc.sendmmsg(fd, msgs, VLEN, 0)
        if n > 0:
            sent += n
    out.put(sent)


def sched(pid: int, tid: int) -> tuple[float, float]:
    """(seconds running, seconds runnable but waiting for a CPU) of one thread."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
        run, wait, _ = fh.read().split()
    return int(run) / 1e9, int(wait) / 1e9


def machine_idle() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rx_bytes(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return int.from_bytes(info[128:136], "little")


def receiver_proc(port: int, ctl: mp.Queue, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Peer B: register, report the public key, splice everything into /dev/null and
    answer "mark" with the TCP byte count received so far."""
    kb = wgkey.generate_private_key()
    sock = socket.create_connection(("127.0.0.1", port))
    register(sock, kb)
    sock.settimeout(None)
    out.put(wgkey.public_key(kb))

    def drain() -> None:
        r, w = os.pipe()
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            while True:
                got = os.splice(sock.fileno(), w, 1 << 20)
                if not got:
                    return
                while got:
                    got -= os.splice(r, null, got)
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    while ctl.get() == "mark":
        out.put(rx_bytes(sock))
    sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--rate", type=float, default=0, help="datagrams/s offered (0: flat out)")
    ap.add_argument("--gso", action="store_true", help="the generator sends with UDP GSO")
    ap.add_argument(
        "--recv-into", action="store_true", help="drain with recv_into (use_mmsg=False)"
    )
    args = ap.parse_args()

    relay, ports = start_relay()
    try:
        port = ports["relay_port"]
        # B: a registered receiver drained by splice, in its own process (so that it
        # does not compete with the bridge for this process's GIL)
        bctl: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        bout: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        receiver = mp.Process(target=receiver_proc, args=(port, bctl, bout), daemon=True)
        receiver.start()
        pub_b = bout.get(timeout=30)
        # the generator process plays WireGuard: the bridge only accepts datagrams from
        # WireGuard's listen port (its per-peer sockets are connected to it)
        ctl: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        gen = mp.Process(
            target=generator,
            args=(args.size, args.seconds + 1, args.rate, args.gso, ctl, q),
        )
        gen.start()
        wg_port = q.get(timeout=30)
        # A: the bridge under test
        ka = wgkey.generate_private_key()
        bridge = RelayBridge(
            ka,
            wg_port,
            RelayPool(ka, addresses=[("127.0.0.1", port)]),
            use_mmsg=not args.recv_into,
        )
        bridge.start()
        bridge.set_relayed_peers({pub_b})
        assert bridge.pool.wait_live(1, 10)
        ctl.put(bridge.endpoint_for(pub_b)[1])
        time.sleep(0.5)
        bctl.put("mark")
        s0, r0 = bridge.stats(pub_b), bout.get(timeout=10)
        uplink = bridge._thread.native_id
        assert uplink is not None
        u0 = sched(os.getpid(), uplink)
        c0, cr0, t0 = cpu_seconds(os.getpid()), cpu_seconds(relay.pid), time.monotonic()
        idle0 = machine_idle()
        time.sleep(args.seconds)
        bctl.put("mark")
        s1, r1 = bridge.stats(pub_b), bout.get(timeout=10)
        c1, cr1, t1 = cpu_seconds(os.getpid()), cpu_seconds(relay.pid), time.monotonic()
        idle1 = machine_idle()
        u1 = sched(os.getpid(), uplink)
        generated = q.get(timeout=30)
        gen.join(10)
        dt = t1 - t0
        accepted = (s1.tx_frames - s0.tx_frames) / dt
        through = (r1 - r0) / (args.size + 2 + 35 / 30) / dt  # ~30 packets per batch frame
        mode = "recv_into" if args.recv_into else "recvmmsg"
        how = "UDP GSO sends" if args.gso else "sendmmsg, one at a time"
        offered = f"{args.rate:,.0f}/s offered" if args.rate else "flat out"
        print(f"datagram size {args.size} B, {args.seconds:.0f} s, uplink {mode}")
        print(
            f"generated      {generated / (args.seconds + 1):>12,.0f} datagrams/s ({how}; {offered})"
        )
        print(
            f"bridge accepted{accepted:>12,.0f} datagrams/s ({accepted * args.size / 1e6:,.0f} MB/s)"
        )
        print(f"through relay  {through:>12,.0f} datagrams/s to the receiver")
        print(
            f"bridge CPU     {100 * (c1 - c0) / dt:>11.0f}%   relay CPU {100 * (cr1 - cr0) / dt:.0f}%"
            f"   uplink thread running {100 * (u1[0] - u0[0]) / dt:.0f}%,"
            f" waiting for a CPU {100 * (u1[1] - u0[1]) / dt:.0f}%"
        )
        # The generator, the relay, the receiver and the bridge share this
        # machine's cores; when none is idle the bridge's rate is what it was
        # given, and its cost per datagram is the figure that carries over.
        idle = 100 * (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
        print(
            f"per bridge CPU-second {accepted / max(1e-9, (c1 - c0) / dt):>6,.0f} datagrams"
            f"   (machine idle {idle:.0f}%)"
        )
        bctl.put("stop")
        bridge.stop()
        receiver.join(10)
    finally:
        relay.terminate()
        relay.wait(10)


if __name__ == "__main__":
    main()
