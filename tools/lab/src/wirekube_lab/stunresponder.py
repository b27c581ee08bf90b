"""A tiny RFC 5780-capable STUN responder the lab runs on its ``stun`` hosts.

``python -m wirekube_lab.stunresponder --address A1 --address A2 --port 3478
--alt-port 3479`` binds UDP on all four (address, port) combinations and TCP
on (A1, port) and (A2, port). A Binding request is answered with the
source address it came from (XOR-MAPPED-ADDRESS and MAPPED-ADDRESS), the
socket that answers (RESPONSE-ORIGIN) and the alternate address (OTHER-
ADDRESS). CHANGE-REQUEST is honoured by answering from the socket with the
other address and/or the other port: that is how the self-test tells the
filtering kinds apart. It only ever answers; it never sends first.

This is test equipment for the lab, not the product's STUN server
(``services/stun-probe``).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import threading
from pathlib import Path

from . import ministun

Address = tuple[str, int]


def reply_for(
    data: bytes,
    local: Address,
    peer: Address,
    addresses: list[str],
    ports: tuple[int, int],
) -> tuple[Address, bytes] | None:
    """Pure: which socket answers a datagram that ``local`` got from ``peer``, and with what.

    None for anything that is not a Binding request (never answer garbage).
    """
    try:
        msg = ministun.decode(data)
    except ministun.StunDecodeError:
        return None
    if msg.type != ministun.BINDING_REQUEST:
        return None
    flags = msg.change_flags
    two = len(addresses) >= 2

    def flip_addr(addr: str) -> str:
        return addresses[1] if addr == addresses[0] else addresses[0]

    def flip_port(port: int) -> int:
        return ports[1] if port == ports[0] else ports[0]

    addr, port = local
    if flags & ministun.CHANGE_IP:
        if not two:
            return local, ministun.binding_error(msg.transaction_id, 420, "no alternate address")
        addr = flip_addr(addr)
    if flags & ministun.CHANGE_PORT:
        port = flip_port(port)
    other = (flip_addr(local[0]), flip_port(local[1])) if two else None
    origin = (addr, port)
    return origin, ministun.binding_success(
        msg.transaction_id, mapped=peer, origin=origin, other=other
    )


class Responder:
    def __init__(self, addresses: list[str], port: int, alt_port: int) -> None:
        self.addresses = addresses[:2]
        self.ports = (port, alt_port)
        self.udp: dict[Address, socket.socket] = {}
        for addr in self.addresses:
            for p in self.ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((addr, p))
                self.udp[(addr, p)] = sock
        self.tcp: list[socket.socket] = []
        for addr in self.addresses:
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((addr, port))
            lsock.listen(64)
            self.tcp.append(lsock)

    def answer(self, data: bytes, local: Address, peer: Address) -> tuple[Address, bytes] | None:
        return reply_for(data, local, peer, self.addresses, self.ports)

    def serve_forever(self, ready_file: Path | None = None) -> None:
        sel = selectors.DefaultSelector()
        for local, sock in self.udp.items():
            sel.register(sock, selectors.EVENT_READ, ("udp", local))
        for lsock in self.tcp:
            sel.register(lsock, selectors.EVENT_READ, ("tcp", lsock.getsockname()))
        if ready_file is not None:
            ready_file.write_text("ready\n")
        print("stunresponder ready", flush=True)
        while True:
            for key, _ in sel.select():
                kind, local = key.data
                ready = key.fileobj
                if not isinstance(ready, socket.socket):
                    continue
                if kind == "udp":
                    data, peer = ready.recvfrom(2048)
                    out = self.answer(data, local, peer)
                    if out is not None:
                        origin, reply = out
                        self.udp[origin].sendto(reply, peer)
                        print(
                            f"udp {peer[0]}:{peer[1]} -> {local[0]}:{local[1]} "
                            f"answered from {origin[0]}:{origin[1]}",
                            flush=True,
                        )
                else:
                    conn, peer = ready.accept()
                    threading.Thread(
                        target=self._tcp_client, args=(conn, local, peer), daemon=True
                    ).start()

    def _tcp_client(self, conn: socket.socket, local: Address, peer: Address) -> None:
        with conn:
            conn.settimeout(10)
            buf = b""
            try:
                while True:
                    chunk = conn.recv(2048)
                    if not chunk:
                        return
                    buf += chunk
                    while len(buf) >= ministun.HEADER.size:
                        length = int.from_bytes(buf[2:4], "big")
                        total = ministun.HEADER.size + length
                        if len(buf) < total:
                            break
                        data, buf = buf[:total], buf[total:]
                        out = self.answer(data, local, peer)
                        if out is None:
                            return
                        conn.sendall(out[1])
            except OSError:
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", action="append", required=True)
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--alt-port", type=int, default=3479)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    Responder(args.address, args.port, args.alt_port).serve_forever(args.ready_file)


if __name__ == "__main__":
    main()
