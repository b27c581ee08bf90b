"""The relay bridge in a process of its own, driven by the agent over a socket pair.

Why a process: the bridge's threads carry every relayed packet, and inside
the agent they would share one GIL with the Kubernetes client and the
reconciler. While pure-Python work runs there (a watch event decoded, a pass
over hundreds of peers), a bridge thread that wants the GIL waits up to the
interpreter's switch interval (5 ms) for it, once per hand-over, and a relayed
round trip crosses four bridge hops. Measured (benchmarks/bridge_latency.py,
loopback): with one busy thread beside an in-process bridge the median relayed
round trip went from about 1 ms to 6-22 ms; with the bridge in its own
process it stayed at 0.7 ms. The control traffic is a few small messages per
reconcile pass, and starting the worker takes about 0.15 s once.

``BridgeWorker`` (agent side) offers what the agent uses of ``RelayBridge``
and ``RelayPool``: ``set_relayed_peers``, ``endpoint_for``, ``retarget``,
``live_replicas``, ``stop``. ``serve`` is the worker's side. The protocol runs
over a stream socket pair: one JSON object per message, each behind a 4-byte
length, request then reply; keys travel in base64:

    {"op": "start", "key", "wg_port", "addresses" | "dns", "fwmark", "egress", "ports"} -> {}
    {"op": "peers", "keys": [...]}          -> {"endpoints": {key: [host, port]}}
    {"op": "retarget", "addresses" | "dns"} -> {}
    {"op": "rekey", "key"}                  -> {} (key rotation: links re-register)
    {"op": "live"}                          -> {"live": ["ip:port", ...]}
    {"op": "links"}                         -> {"links": {"ip:port": {"error", LinkStats' fields}}}
    {"op": "export"}                        -> {"keys": [...]} + one socket per key (SCM_RIGHTS);
                                               the bridge retires (handover)
    {"op": "quiesce"}                       -> {} (the new bridge registers now: stop reading)
    {"op": "resume"}                        -> {} (the handover failed: carry on)
    {"op": "stop"}                          -> {} (the worker then exits)

A "start" with ``"adopt": [key, ...]`` is followed by one socket per key
(SCM_RIGHTS, handover/wire.py): the bridge starts with them (a new agent
taking an old one's bridge over, wirekube_agent.handover).

A request the worker cannot carry out gets ``{"error": "..."}``. The worker
exits when its end of the pair reads EOF, so it never outlives the agent,
however the agent ends. The private key crosses only this anonymous pair.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from wirekube_agent.handover import wire
from wirekube_agent.relay import timers
from wirekube_agent.relay.bridge import RelayBridge
from wirekube_agent.relay.egress import Egress
from wirekube_agent.relay.pool import DnsSource, RelayPool

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0


class WorkerGone(RuntimeError):
    """The worker process exited, or stopped answering."""


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _source(addresses: Sequence[tuple[str, int]] | None, dns: DnsSource | None) -> dict[str, Any]:
    if dns is not None:
        return {
            "dns": {
                "name": dns.name,
                "port": dns.port,
                "nameservers": list(dns.nameservers),
                "nameserver_port": dns.nameserver_port,
            }
        }
    return {"addresses": [[h, p] for h, p in addresses or ()]}


def _parse_source(msg: dict[str, Any]) -> tuple[list[tuple[str, int]] | None, DnsSource | None]:
    if msg.get("dns") is not None:
        d = msg["dns"]
        return None, DnsSource(
            str(d["name"]),
            int(d["port"]),
            tuple(str(s) for s in d["nameservers"]),
            int(d["nameserver_port"]),
        )
    return [(str(h), int(p)) for h, p in msg["addresses"]], None


@dataclass
class Spawned:
    """A worker process not told to start yet: its interpreter starts up
    while the agent does other things (``BridgeWorker(spawned=)``)."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket


def spawn() -> Spawned:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wirekube_agent.relay.worker", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
        env=os.environ | {"WIREKUBE_LOG_LEVEL": level},  # logs like the agent's own
    )
    theirs.close()
    return Spawned(proc, ours)


class BridgeWorker:
    """The agent's handle on a bridge running in a worker process."""

    def __init__(
        self,
        private_key: bytes,
        wg_listen_port: int,
        addresses: Sequence[tuple[str, int]] | None = None,
        dns_source: DnsSource | None = None,
        fwmark: int | None = None,
        timeout: float = CALL_TIMEOUT_S,
        egress: Egress | None = None,
        ports: dict[bytes, int] | None = None,
        spawned: Spawned | None = None,
        adopted: dict[bytes, int] | None = None,
    ) -> None:
        spawned = spawned if spawned is not None and spawned.proc.poll() is None else spawn()
        self._proc = spawned.proc
        spawned.sock.settimeout(timeout)
        self._sock = spawned.sock
        self._lock = threading.Lock()
        self._endpoints: dict[bytes, tuple[str, int]] = {}
        start = {"op": "start", "key": _b64(private_key), "wg_port": wg_listen_port}
        start |= _source(addresses, dns_source) | {"fwmark": fwmark}
        start["egress"] = (egress or Egress()).to_dict()
        start["ports"] = {_b64(k): p for k, p in (ports or {}).items()}
        adopted = adopted or {}
        if adopted:
            start["adopt"] = [_b64(k) for k in adopted]
        try:
            self._call(start, list(adopted.values()))
        except Exception:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll()

    def _call(
        self, msg: dict[str, Any], fds: list[int] | None = None, fds_back: bool = False
    ) -> dict[str, Any]:
        """One request and its reply; ``fds`` go after the request, and with
        ``fds_back`` one descriptor per key of the reply's "keys" follows it
        (in ``reply["fds"]``)."""
        with self._lock:
            try:
                wire.send_json(self._sock, msg)
                if fds:
                    wire.send_fds(self._sock, fds)
                data = wire.recv_bytes(self._sock)
                if fds_back and data:
                    reply = json.loads(data)
                    if "error" not in reply:
                        reply["fds"] = wire.recv_fds(self._sock, len(reply["keys"]))
                        return reply  # type: ignore[no-any-return]
            except OSError as exc:
                # A timeout included: a reply that comes later would answer the
                # next request, so a worker that hangs is ended and replaced.
                self._proc.kill()
                raise WorkerGone(f"relay bridge worker: {exc}") from exc
        if not data:
            raise WorkerGone(f"relay bridge worker exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(data)
        if "error" in reply:
            raise ValueError(f"relay bridge worker refused {msg['op']}: {reply['error']}")
        return reply

    def set_relayed_peers(self, keys: Iterable[bytes]) -> None:
        reply = self._call({"op": "peers", "keys": [_b64(bytes(k)) for k in keys]})
        self._endpoints = {
            base64.b64decode(k): (str(h), int(p)) for k, (h, p) in reply["endpoints"].items()
        }

    def endpoint_for(self, peer_public_key: bytes) -> tuple[str, int]:
        """Where WireGuard must send this relayed peer's packets (KeyError if not relayed)."""
        return self._endpoints[bytes(peer_public_key)]

    def retarget(
        self,
        addresses: Sequence[tuple[str, int]] | None = None,
        dns_source: DnsSource | None = None,
    ) -> None:
        self._call({"op": "retarget"} | _source(addresses, dns_source))

    def rekey(self, private_key: bytes) -> None:
        """Re-register every relay link under a new key; the peers' bridge
        sockets (their WireGuard endpoints) stay."""
        self._call({"op": "rekey", "key": _b64(private_key)})

    def live_replicas(self) -> tuple[str, ...]:
        return tuple(self._call({"op": "live"})["live"])

    def export(self) -> dict[bytes, int]:
        """Every relayed peer's socket (descriptors the caller owns), and the
        bridge retires: its links stay closed once the relay closes them."""
        reply = self._call({"op": "export"}, fds_back=True)
        keys = [base64.b64decode(k) for k in reply["keys"]]
        return dict(zip(keys, reply["fds"], strict=True))

    def quiesce(self) -> None:
        """The new agent's bridge registers now: read no more datagrams."""
        self._call({"op": "quiesce"})

    def resume(self) -> None:
        """The handover failed: the bridge carries on (links reconnect)."""
        self._call({"op": "resume"})

    def links(self) -> dict[str, dict[str, Any]]:
        """Every replica link: whether it is up and how often it connected."""
        return self._call({"op": "links"})["links"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(WorkerGone, ValueError):
            if self.alive:
                self._sock.settimeout(2.0)
                self._call({"op": "stop"})
        self._sock.close()
        try:
            self._proc.wait(3.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(3.0)


class _Served:
    """The worker's state: one bridge and its pool, built by "start"."""

    def __init__(self) -> None:
        self.bridge: RelayBridge | None = None
        self.pool: RelayPool | None = None
        self.pending_fds: list[int] = []  # to send after the reply ("export")

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "start":
            if self.bridge is not None:
                raise ValueError("already started")
            addresses, dns = _parse_source(msg)
            fwmark = msg.get("fwmark")
            key = base64.b64decode(msg["key"])
            self.pool = RelayPool(
                key,
                addresses=addresses,
                dns_source=dns,
                fwmark=int(fwmark) if fwmark is not None else None,
                egress=Egress.from_dict(msg.get("egress")),
            )
            ports = {base64.b64decode(k): int(p) for k, p in (msg.get("ports") or {}).items()}
            fds = msg.get("_fds") or []
            adopted = {
                base64.b64decode(k): socket.socket(fileno=fd)
                for k, fd in zip(msg.get("adopt") or [], fds, strict=True)
            }
            self.bridge = RelayBridge(
                key,
                wg_listen_port=int(msg["wg_port"]),
                relay_pool=self.pool,
                ports=ports,
                adopted=adopted,
                hold=timers.HANDOVER_HOLD,
            )
            self.bridge.start()
            return {}
        if self.bridge is None or self.pool is None:
            raise ValueError(f"{op!r} before start")
        if op == "peers":
            keys = [base64.b64decode(k) for k in msg["keys"]]
            self.bridge.set_relayed_peers(keys)
            return {"endpoints": {_b64(k): list(self.bridge.endpoint_for(k)) for k in keys}}
        if op == "retarget":
            addresses, dns = _parse_source(msg)
            self.pool.retarget(addresses=addresses, dns_source=dns)
            return {}
        if op == "rekey":
            key = base64.b64decode(msg["key"])
            if len(key) != 32:
                raise ValueError("a key is 32 bytes")
            self.bridge.private_key = key
            self.pool.rekey(key)
            return {}
        if op == "live":
            return {"live": list(self.pool.live_replicas())}
        if op == "links":
            return {
                "links": {
                    name: asdict(link.stats()) | {"error": link.last_error}
                    for name, link in dict(self.pool.links).items()
                }
            }
        if op == "export":
            socks = self.bridge.export()
            self.bridge.retire(True)
            self.pending_fds = [s.fileno() for s in socks.values()]
            return {"keys": [_b64(k) for k in socks]}
        if op == "quiesce":
            self.bridge.quiesce()
            return {}
        if op == "resume":
            self.bridge.retire(False)
            return {}
        if op == "stop":
            return {}
        raise ValueError(f"unknown op {op!r}")

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()


def serve(sock: socket.socket) -> None:
    """Answer the agent until it says stop or its end closes."""
    served = _Served()
    try:
        while True:
            try:
                data = wire.recv_bytes(sock)
            except OSError:
                data = None
            if data is None:
                log.info("relay bridge worker: the agent is gone; stopping")
                return
            op = None
            try:
                msg = json.loads(data)
                op = msg.get("op")
                if msg.get("adopt"):
                    msg["_fds"] = wire.recv_fds(sock, len(msg["adopt"]))
                reply = served.handle(msg)
            except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                wire.send_json(sock, reply)
                if served.pending_fds:
                    fds, served.pending_fds = served.pending_fds, []
                    wire.send_fds(sock, fds)
            except OSError:
                return
            if op == "stop":
                return
    finally:
        served.stop()


def main(argv: list[str]) -> int:
    from wirekube_common import logs  # noqa: PLC0415 - the worker's own process only

    logs.configure("wirekube-agent")
    # A terminal's Ctrl-C reaches the whole process group; the worker stops
    # when the agent does (its socket closes), not before.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    serve(sock)
    os._exit(0)  # the bridge's daemon threads are stopped; do not wait on anything else


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
