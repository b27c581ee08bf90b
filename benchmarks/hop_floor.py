"""The RTT floor of a relay path: three Python process hops each way, doing nothing else.

A relayed packet wakes three processes on its way (the sender's agent bridge,
the relay, the receiver's agent bridge) and three more on the way back. On a
virtual machine each wake-up costs tens of microseconds or more, whatever the
code does once awake. This module measures what those six wake-ups alone cost,
with the least Python possible per hop: no framing, no authentication, no
batching, blocking sockets, one thread per direction.

Roles, each a separate process (run with ``python hop_floor.py ROLE ...``):

* ``echo``    UDP echo server (the far end; Python in both measurements, so
              its cost cancels out);
* ``edge``    UDP on 127.0.0.1 <-> one TCP connection (an agent bridge);
* ``middle``  accepts two TCP connections and pipes them into each other (the relay);
* ``client``  sends ``--count`` UDP pings one at a time, prints RTTs as JSON.

``relay_e2e_bench.py`` runs them in the lab's namespaces of the same run,
before the agents start (once they run, a node's address is routed into the
tunnel), and reports floor = RTT(client -> edge -> middle -> edge -> echo and
back) - RTT(client -> echo over the same network), to compare the relay's RTT
overhead with.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

MESSAGE = 128  # bytes per ping: a small ICMP echo inside WireGuard


def _tcp_nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """TCP -> TCP, each read written on at once (one message in flight: no framing needed)."""
    buf = bytearray(65536)
    view = memoryview(buf)
    while n := src.recv_into(buf):
        dst.sendall(view[:n])


def echo(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(seconds)
    print("ready", flush=True)
    try:
        while True:
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)
    except TimeoutError:
        pass


def middle(port: int, seconds: float) -> None:
    """Accept two connections; pipe each into the other until either closes."""
    listener = socket.create_server(("0.0.0.0", port))
    listener.settimeout(seconds)
    print("ready", flush=True)
    a = _tcp_nodelay(listener.accept()[0])
    b = _tcp_nodelay(listener.accept()[0])
    t = threading.Thread(target=_pipe, args=(b, a), daemon=True)
    t.start()
    _pipe(a, b)


def edge(udp_port: int, tcp_host: str, tcp_port: int, peer_port: int | None) -> None:
    """UDP 127.0.0.1:udp_port <-> TCP. With ``peer_port`` (the far edge), datagrams
    from TCP go to 127.0.0.1:peer_port; else (the near edge) back to the UDP sender."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", udp_port))
    if peer_port is not None:
        udp.connect(("127.0.0.1", peer_port))
    tcp = _tcp_nodelay(socket.create_connection((tcp_host, tcp_port), timeout=30))
    tcp.settimeout(None)
    print("ready", flush=True)
    sender: list[tuple[str, int]] = [("127.0.0.1", 0)]  # the latest client's address

    def down() -> None:
        buf = bytearray(65536)
        view = memoryview(buf)
        while n := tcp.recv_into(buf):
            if peer_port is not None:
                udp.send(view[:n])
            else:
                udp.sendto(view[:n], sender[0])

    threading.Thread(target=down, daemon=True).start()
    while True:
        data, sender[0] = udp.recvfrom(2048)
        tcp.sendall(data)


def client(host: str, port: int, count: int, interval: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(2.0)
    payload = bytes(MESSAGE)
    rtts: list[float] = []
    lost = 0
    for _ in range(count):
        t0 = time.perf_counter()
        sock.send(payload)
        try:
            sock.recv(2048)
        except TimeoutError:
            lost += 1
            if lost >= 5:
                break  # the path is broken: report, don't wait out every ping
            continue
        rtts.append((time.perf_counter() - t0) * 1000)
        time.sleep(interval)
    json.dump({"rtts_ms": rtts, "lost": lost}, sys.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--seconds", type=float, default=300.0, help="exit after this long idle")
    m = sub.add_parser("middle")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--seconds", type=float, default=60.0, help="give up waiting for edges")
    g = sub.add_parser("edge")
    g.add_argument("--udp-port", type=int, required=True)
    g.add_argument("--connect", required=True, help="HOST:PORT of the middle")
    g.add_argument("--peer-port", type=int, help="the far edge: deliver to 127.0.0.1:PORT")
    c = sub.add_parser("client")
    c.add_argument("--to", required=True, help="HOST:PORT")
    c.add_argument("--count", type=int, default=200)
    c.add_argument("--interval", type=float, default=0.01)
    args = p.parse_args()
    if args.role == "echo":
        echo(args.port, args.seconds)
    elif args.role == "middle":
        middle(args.port, args.seconds)
    elif args.role == "edge":
        host, _, port = args.connect.rpartition(":")
        edge(args.udp_port, host, int(port), args.peer_port)
    else:
        host, _, port = args.to.rpartition(":")
        client(host, int(port), args.count, args.interval)


if __name__ == "__main__":
    main()
