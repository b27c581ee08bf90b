"""Tiny socket tool the lab tests run *inside* lab hosts (``python udptool.py MODE ...``).

Modes (all print one JSON line):

* ``send BIND_IP BIND_PORT DST_IP DST_PORT`` - one datagram from a fixed port.
* ``recv BIND_IP BIND_PORT TIMEOUT`` - wait for one datagram; prints its source or null.
* ``knock BIND_IP BIND_PORT DST_IP DST_PORT WAIT`` - send one datagram on a connected
  socket and report whether an ICMP error (port unreachable) came back within WAIT s.
* ``tcp BIND_IP DST_IP DST_PORT`` - connect, read one line; prints it or the error.
"""

from __future__ import annotations

import json
import socket
import sys


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "send":
        bind_ip, bind_port, dst_ip, dst_port = argv[1], int(argv[2]), argv[3], int(argv[4])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((bind_ip, bind_port))
            s.sendto(b"wklab-test", (dst_ip, dst_port))
        print(json.dumps({"sent": True}))
    elif mode == "recv":
        bind_ip, bind_port, timeout = argv[1], int(argv[2]), float(argv[3])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((bind_ip, bind_port))
            print(json.dumps({"ready": True}), flush=True)
            s.settimeout(timeout)
            try:
                _, peer = s.recvfrom(2048)
                print(json.dumps({"from": list(peer)}))
            except TimeoutError:
                print(json.dumps({"from": None}))
    elif mode == "knock":
        bind_ip, bind_port, dst_ip, dst_port, wait = (
            argv[1],
            int(argv[2]),
            argv[3],
            int(argv[4]),
            float(argv[5]),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((bind_ip, bind_port))
            s.connect((dst_ip, dst_port))
            s.send(b"wklab-knock")
            s.settimeout(wait)
            try:
                s.recv(2048)
                result = "reply"
            except ConnectionRefusedError:
                result = "icmp-unreachable"
            except TimeoutError:
                result = "silent"
        print(json.dumps({"result": result}))
    elif mode == "tcp":
        bind_ip, dst_ip, dst_port = argv[1], argv[2], int(argv[3])
        try:
            with socket.create_connection(
                (dst_ip, dst_port), timeout=3, source_address=(bind_ip, 0)
            ) as s:
                line = s.makefile().readline().strip()
            print(json.dumps({"line": line}))
        except OSError as exc:
            print(json.dumps({"error": type(exc).__name__}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
