"""A client of the lab's relays, run *inside* a lab namespace (``python labclient.py ...``).

The test process lives in the root namespace, which has no route into the
lab (only the API server's control link crosses). Everything that must talk
to a relay over the lab's internet - reading its Prometheus metrics and its
RelayAdmin gRPC service, or attacking it - therefore runs as this script in a
lab host, and prints one JSON document on stdout for the test to assert on.

Subcommands:

* ``stats IP...``: per relay, the Prometheus metrics (``:9090/metrics``,
  flattened to ``{"name{labels}": value}``), ``GetStats`` and ``ListPeers``
  (``:9091``, with the bearer token of ``--admin-token-file``).
* ``attack IP``: the hostile clients of the relay issue, one after the
  other, each reporting the close code the relay answered with; the idle
  connection flood reports the relay's connection gauge while it is held.
  The wire-level helpers are those of ``tests/integration/relay``'s hostile
  client test (loaded from its file: test modules are not importable).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

RELAY_PORT = 3478
METRICS_PORT = 9090
ADMIN_PORT = 9091
HOSTILE_HELPERS = Path(__file__).resolve().parents[1] / "relay" / "test_hostile_clients.py"


def _load_hostile_helpers() -> Any:
    spec = importlib.util.spec_from_file_location("relay_hostile_helpers", HOSTILE_HELPERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- stats ---------------------------------------------------------------------------


def metrics(ip: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def admin(ip: str, token: str | None = None) -> dict[str, Any]:
    import grpc  # noqa: PLC0415 - only this subcommand needs it

    from wirekube_common.protos.wirekube.relay.v1 import (  # noqa: PLC0415
        admin_pb2,
        admin_pb2_grpc,
    )

    auth = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(f"{ip}:{ADMIN_PORT}") as chan:
        stub = admin_pb2_grpc.RelayAdminStub(chan)
        st = stub.GetStats(admin_pb2.GetStatsRequest(), timeout=5, metadata=auth)
        peers = stub.ListPeers(admin_pb2.ListPeersRequest(), timeout=5, metadata=auth).peers
    return {
        "connections": st.connections,
        "registered_peers": st.registered_peers,
        "registrations": st.registrations,
        "frames_forwarded": st.frames_forwarded,
        "bytes_forwarded": st.bytes_forwarded,
        "auth_failures": {a.reason: a.count for a in st.auth_failures},
        "drops": {d.reason: d.frames for d in st.drops},
        "peers": {
            p.public_key: {
                "remote": p.remote_address,
                "connected_seconds": p.connected_seconds,
                "frames_in": p.frames_in,
                "bytes_in": p.bytes_in,
                "frames_out": p.frames_out,
                "bytes_out": p.bytes_out,
            }
            for p in peers
        },
    }


def cmd_stats(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    token = Path(args.admin_token_file).read_text().strip() if args.admin_token_file else None
    for ip in args.relays:
        try:
            out[ip] = {"metrics": metrics(ip), **admin(ip, token)}
        except Exception as exc:  # a dead replica is a result, not a crash
            out[ip] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# -- attacks -------------------------------------------------------------------------


def _closed_with(h: Any, sock: socket.socket) -> int | None:
    try:
        return h.close_code(h.read_until_closed(sock, timeout=10.0))  # type: ignore[no-any-return]
    finally:
        sock.close()


def cmd_attack(args: argparse.Namespace) -> dict[str, Any]:
    from wirekube_common import wgkey  # noqa: PLC0415
    from wirekube_common.relayproto import frames as f  # noqa: PLC0415
    from wirekube_common.relayproto.handshake import ClientHandshake  # noqa: PLC0415

    h = _load_hostile_helpers()
    addr = (args.relay, RELAY_PORT)
    victim = wgkey.decode(args.victim)
    results: dict[str, Any] = {}

    # 1. garbage bytes
    s = socket.create_connection(addr, timeout=5)
    s.sendall(os.urandom(4096))
    results["garbage"] = _closed_with(h, s)

    # 2. a wrong proof for a fresh key
    s, _ch = h.hello_and_challenge(addr, wgkey.public_key(wgkey.generate_private_key()))
    s.sendall(f.encode_proof(os.urandom(32)))
    results["wrong_proof"] = _closed_with(h, s)

    # 3. a replayed registration: a real node's HELLO + PROOF as captured on the wire
    s = socket.create_connection(addr, timeout=5)
    s.sendall(bytes.fromhex(args.replay_hello))
    time.sleep(0.2)  # let the relay answer the HELLO with a fresh challenge first
    s.sendall(bytes.fromhex(args.replay_proof))
    results["replay"] = _closed_with(h, s)

    # 4. registering another node's key with a proof made with our own key
    s, ch = h.hello_and_challenge(addr, victim)
    attacker = ClientHandshake(wgkey.generate_private_key())
    attacker.hello()
    s.sendall(attacker.on_challenge(ch, time.time()))
    results["foreign_key"] = _closed_with(h, s)

    # 5. a valid proof of a key that is no WireKubePeer's (the allow-list)
    s = socket.create_connection(addr, timeout=5)
    stranger = ClientHandshake(wgkey.generate_private_key())
    s.sendall(stranger.hello())
    parser = f.FrameParser()
    ch2 = None
    while ch2 is None:
        parser.feed(s.recv(4096))
        ch2 = parser.next_event()
    assert isinstance(ch2, f.Challenge)
    s.sendall(stranger.on_challenge(ch2, time.time()))
    results["not_allowed"] = _closed_with(h, s)

    # 6. oversized frames before registration: a header announcing 60000 bytes
    # (the relay must close at once, without waiting for the payload), and a
    # HELLO one byte over the 512-byte pre-registration limit, sent whole
    s = socket.create_connection(addr, timeout=5)
    s.sendall(bytes((f.HELLO, 0xEA, 0x60)) + bytes(1000))
    results["oversized_header"] = _closed_with(h, s)
    s = socket.create_connection(addr, timeout=5)
    n = f.MAX_HANDSHAKE_PAYLOAD + 1
    s.sendall(bytes((f.HELLO, n >> 8, n & 0xFF)) + bytes(n))
    results["oversized_hello"] = _closed_with(h, s)

    # 7. idle connections: open them all, hold, read the relay's gauge, close
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.idle + 256)), hard))
    idle: list[socket.socket] = []
    t0 = time.monotonic()
    try:
        for _ in range(args.idle):
            idle.append(socket.create_connection(addr, timeout=5))
        opened_s = time.monotonic() - t0
        time.sleep(args.hold)
        gauge = metrics(args.relay)["wirekube_relay_connections"]
    finally:
        for c in idle:
            with contextlib.suppress(OSError):
                c.close()
    results["idle"] = {"opened": len(idle), "open_s": round(opened_s, 2), "relay_gauge": gauge}
    # the relay notices the closes; its gauge must come back down
    deadline = time.monotonic() + 10
    after = gauge
    while time.monotonic() < deadline:
        after = metrics(args.relay)["wirekube_relay_connections"]
        if after < 50:
            break
        time.sleep(0.2)
    results["idle"]["relay_gauge_after_close"] = after
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats")
    st.add_argument("relays", nargs="+")
    st.add_argument("--admin-token-file", help="the lab relays' admin bearer token")
    at = sub.add_parser("attack")
    at.add_argument("relay")
    at.add_argument("--victim", required=True, help="base64 public key of a mesh node")
    at.add_argument("--replay-hello", required=True, help="hex of a captured HELLO frame")
    at.add_argument("--replay-proof", required=True, help="hex of the PROOF that followed it")
    at.add_argument("--idle", type=int, default=1000)
    at.add_argument("--hold", type=float, default=2.0)
    args = p.parse_args()
    out = cmd_stats(args) if args.cmd == "stats" else cmd_attack(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
