"""A client of the lab's relay pool, run *inside* a lab host (``python poolclient.py ...``).

The test process has no route into the lab, so whatever must talk to the
relays over the lab internet runs here and prints one JSON document:

* ``stats IP...``: per relay, its Prometheus metrics (``:9090/metrics``,
  flattened to ``{"name{labels}": value}``) and the keys registered with it
  (RelayAdmin ``ListPeers`` on ``:9091``, with ``--admin-token``); a relay that does not answer
  reports ``{"error": ...}``.
* ``clients LB N``: register N clients one after the other through the load
  balancer, report the replica each landed on (the relay id in its OK), then
  send one frame from every client to every other and report which arrived,
  stamped with the right source key.
* ``join IP``: try to join the replica mesh with a wrong secret; report the
  CLOSE code the replica answered with.
* ``replay IP HELLO PROOF``: replay a captured replica handshake (hex) on a
  new connection; report the CLOSE code.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
import urllib.request
from typing import Any

RELAY_PORT = 3478
METRICS_PORT = 9090
ADMIN_PORT = 9091


def metrics(ip: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def peer_keys(ip: str, token: str) -> list[str]:
    import grpc  # noqa: PLC0415 - only this subcommand needs it

    from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"{ip}:{ADMIN_PORT}") as chan:
        stub = admin_pb2_grpc.RelayAdminStub(chan)
        auth = (("authorization", f"Bearer {token}"),)
        peers = stub.ListPeers(admin_pb2.ListPeersRequest(), timeout=5, metadata=auth).peers
    return sorted(p.public_key for p in peers)


def cmd_stats(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ip in args.relays:
        try:
            out[ip] = {"metrics": metrics(ip), "peers": peer_keys(ip, args.admin_token)}
        except Exception as exc:  # a dead replica is a result, not a crash
            out[ip] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def cmd_clients(args: argparse.Namespace) -> dict[str, Any]:
    from wirekube_agent.relay import register  # noqa: PLC0415
    from wirekube_common import wgkey  # noqa: PLC0415
    from wirekube_common.relayproto import frames as f  # noqa: PLC0415

    clients = []
    for _ in range(args.n):
        priv = wgkey.generate_private_key()
        sock = socket.create_connection((args.lb, RELAY_PORT), timeout=5)
        ok, rest = register(sock, priv)
        parser = f.FrameParser()
        parser.feed(rest)
        clients.append((wgkey.public_key(priv), sock, parser, ok.relay_id))
    time.sleep(0.5)  # presence of the last ones reaches every replica
    for src, sock, _, _ in clients:
        for dst, _, _, _ in clients:
            if dst != src:
                sock.sendall(f.encode_send(dst, b"from " + src[:4].hex().encode()))
    delivered: list[list[str]] = []
    for i, (key, sock, parser, _) in enumerate(clients):
        want = len(clients) - 1
        got: list[Any] = []
        deadline = time.monotonic() + 5
        while len(got) < want and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            parser.feed(data)
            got += [e for e in parser.events() if isinstance(e, f.Recv)]
        for ev in got:
            j = next(k for k, c in enumerate(clients) if c[0] == ev.src)
            if ev.packet == b"from " + ev.src[:4].hex().encode():
                delivered.append([clients[j][3], clients[i][3]])
        del key
    for _, sock, _, _ in clients:
        sock.close()
    return {"replicas": [c[3] for c in clients], "delivered": delivered}


def _close_code(sock: socket.socket) -> int | None:
    from wirekube_relay.mesh import proto as mp  # noqa: PLC0415

    sock.settimeout(10)
    parser = mp.MeshParser()
    while True:
        data = sock.recv(4096)
        if not data:
            return None
        parser.feed(data)
        for ev in parser.events():
            if isinstance(ev, mp.Close):
                return ev.code


def cmd_join(args: argparse.Namespace) -> dict[str, Any]:
    from wirekube_relay.mesh import proto as mp  # noqa: PLC0415

    secret = b"a guess at the pool secret, wrong"
    with socket.create_connection((args.relay, RELAY_PORT), timeout=5) as sock:
        dialer = mp.Dialer(secret, os.urandom(mp.ID_LEN), "intruder")
        sock.sendall(dialer.hello())
        parser = mp.MeshParser()
        ch = None
        while ch is None:
            parser.feed(sock.recv(4096))
            ch = parser.next_event()
        assert isinstance(ch, mp.Challenge)
        data = mp.transcript(
            dialer.node_id, ch.node_id, dialer.nonce, ch.nonce, "intruder", ch.name
        )
        sock.sendall(mp.encode_proof(mp.mac(secret, b"dialer", data)))
        return {"code": _close_code(sock)}


def cmd_replay(args: argparse.Namespace) -> dict[str, Any]:
    from wirekube_relay.mesh import proto as mp  # noqa: PLC0415

    with socket.create_connection((args.relay, RELAY_PORT), timeout=5) as sock:
        sock.sendall(bytes.fromhex(args.hello))
        parser = mp.MeshParser()
        ch = None
        while ch is None:
            parser.feed(sock.recv(4096))
            ch = parser.next_event()
        sock.sendall(bytes.fromhex(args.proof))
        # what an intruder would do next: claim a key is registered with it
        claim = mp.encode_presence(mp.PRESENCE_ADD, [(bytes(32), 2**62)])[0]
        sock.sendall(claim)
        return {"challenge": type(ch).__name__, "code": _close_code(sock)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin-token", default="", help="bearer token of the relays' admin gRPC")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stats")
    p.add_argument("relays", nargs="+")
    p = sub.add_parser("clients")
    p.add_argument("lb")
    p.add_argument("n", type=int)
    p = sub.add_parser("join")
    p.add_argument("relay")
    p = sub.add_parser("replay")
    p.add_argument("relay")
    p.add_argument("hello")
    p.add_argument("proof")
    args = ap.parse_args()
    handler = {"stats": cmd_stats, "clients": cmd_clients, "join": cmd_join}.get(
        args.cmd, cmd_replay
    )
    print(json.dumps(handler(args)))


if __name__ == "__main__":
    main()
