"""The relay in the real mesh: one lab shared by the module, and helpers.

The lab (names prefixed ``rm-`` so the Nodes never collide with other tests
sharing the session's control plane)::

    vpc-a (symmetric NAT)   rm-a ─┐
    vpc-b (symmetric NAT)   rm-b ─┤
    secure (tcp-only)       rm-t ─┼─ internet ─ rm-relay1, rm-relay2 (wirekube-relay)
                                  │             rm-stun  (wirekube-stun-probe)
                                  │             rm-dns   (dnsmasq: relay.rm.lab -> both relays)
                                  └──────────── rm-x     (plain host: stats client, attacker)

rm-a and rm-b can never reach each other directly (symmetric <-> symmetric),
rm-t cannot send UDP at all: every pair needs the relay. Agents start with
``--dns-server`` pointing at rm-dns, so a test can switch the mesh's relay
endpoint from relay1's address to the pool name without restarting them.

The fixture also records, on relay1, the TCP registration of the agents
(tcpdump before they start): the hostile-client test replays a real node's
HELLO + PROOF from that capture.

Helpers are reached through the ``RelayMesh`` object (test modules cannot
import this file under ``--import-mode=importlib``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab, peer_name
from wirekube_lab.ping import PingResult, parse_ping
from wirekube_lab.processes import LabProcess

HERE = Path(__file__).resolve().parent
LABCLIENT = HERE / "labclient.py"
NODES = ("rm-a", "rm-b", "rm-t")
RELAYS = ("rm-relay1", "rm-relay2")
POOL_NAME = "relay.rm.lab"
# The lab topologies' test-sized timers (docs/lab.md).
TIMERS = {"handshakeTimeoutSeconds": 5, "directRetryIntervalSeconds": 15}
START_TIMEOUT_S = 120.0

TOPOLOGY: dict[str, Any] = {
    "name": "relaymesh",
    "networks": {
        "vpc-a": {"nat": {"kind": "symmetric"}},
        "vpc-b": {"nat": {"kind": "symmetric"}},
        "secure": {"nat": {"kind": "tcp-only"}},
    },
    "hosts": {
        "rm-a": {"network": "vpc-a", "role": "node"},
        "rm-b": {"network": "vpc-b", "role": "node"},
        "rm-t": {"network": "secure", "role": "node"},
        "rm-relay1": {"network": "internet", "role": "relay"},
        "rm-relay2": {"network": "internet", "role": "relay"},
        "rm-stun": {"network": "internet", "role": "stun"},
        "rm-dns": {"network": "internet", "role": "dns"},
        "rm-x": {"network": "internet", "role": "plain"},
    },
    "mesh": {"relay": {"mode": "auto", "provider": "external", **TIMERS}},
}


# -- pcap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def pcap_records(data: bytes) -> tuple[int, list[bytes]]:
    """(link type, packets) of a classic pcap file (either byte order)."""
    if len(data) < 24:
        return 0, []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out, i = [], 24
    while i + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[i + 8 : i + 12])[0]
        out.append(data[i + 16 : i + 16 + incl])
        i += 16 + incl
    return linktype, out


def tcp_segments(data: bytes) -> list[Segment]:
    """TCP/IPv4 segments with payload from an Ethernet pcap."""
    linktype, packets = pcap_records(data)
    assert linktype in (0, 1), f"expected an Ethernet capture, got link type {linktype}"
    out = []
    for pkt in packets:
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        if payload:
            src = ".".join(map(str, ip[12:16]))
            dst = ".".join(map(str, ip[16:20]))
            sport, dport = struct.unpack("!HH", tcp[:4])
            out.append(Segment((src, sport), (dst, dport), bytes(payload)))
    return out


def registrations(segments: list[Segment], key: bytes) -> list[tuple[bytes, bytes]]:
    """(HELLO, PROOF) frames a client sent to register ``key``, from a capture."""
    hello_prefix = bytes((f.HELLO, 0, 37)) + f.MAGIC + bytes((f.VERSION,)) + key
    found, pending = [], {}
    for seg in segments:
        if seg.payload.startswith(hello_prefix):
            pending[seg.src] = seg.payload[:40]
        elif seg.src in pending and seg.payload[:3] == bytes((f.PROOF, 0, 32)):
            found.append((pending.pop(seg.src), seg.payload[:35]))
    return found


# -- continuous ping -----------------------------------------------------------------


@dataclass
class Pinger:
    """``ping -i interval`` running in a lab host until ``stop()`` (bounded by ``count``)."""

    proc: LabProcess
    dst: str
    interval: float
    started: float

    def stop(self) -> PingResult:
        time.sleep(1.0)  # replies to the last requests
        self.proc.signal(signal.SIGINT)  # ping prints its summary on SIGINT
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        return parse_ping(self.dst, self.proc.log_text())

    def lost(self, result: PingResult) -> tuple[int, int]:
        """(requests without a reply up to the last reply, requests after it).

        ``ping`` keeps sending while ``stop`` waits for replies, and SIGINT ends
        it at once: the last request or two are still in flight then."""
        if not result.replied_seqs:
            return result.sent, 0
        last = max(result.replied_seqs)
        return last - len(set(result.replied_seqs)), result.sent - last

    def longest_gap_s(self, result: PingResult) -> float:
        """Longest stretch without a reply, from the sequence numbers (send schedule)."""
        seqs = list(result.replied_seqs)
        edges = [0, *seqs] if seqs else [0, result.sent]
        gaps = [b - a for a, b in itertools.pairwise(edges)]
        return max(gaps, default=0) * self.interval


class RelayMesh:
    """The shared lab, its mesh and the helpers the tests need."""

    def __init__(self, lab: Lab, mesh: MeshLab) -> None:
        self.lab = lab
        self.mesh = mesh
        self.registration_capture = b""
        self._names = itertools.count(1)

    # -- mesh configuration ------------------------------------------------------------
    def relay_address(self, host: str = "rm-relay1") -> str:
        return self.lab.address(host)

    def set_relay(self, mode: str, endpoint: str | None = None) -> None:
        endpoint = endpoint or f"{self.relay_address()}:3478"
        self.mesh.apply_mesh(
            {
                "relay": {
                    "mode": mode,
                    "provider": "external",
                    "external": {"endpoint": endpoint},
                    **TIMERS,
                }
            }
        )

    def key(self, host: str) -> str:
        peer = self.mesh.peer(host) or {}
        return str((peer.get("spec") or {}).get("publicKey", ""))

    def transport(self, a: str, b: str) -> str:
        return self.mesh.transports(a).get(peer_name(b), "none")

    def wait_relayed(self, a: str, b: str, timeout: float = 60.0) -> float:
        """Both ends say relay and a ping gets through; returns the seconds it took."""
        return self.mesh.wait_until(
            f"{a}<->{b} relayed and answering",
            lambda: (
                self.transport(a, b) == "relay"
                and self.transport(b, a) == "relay"
                and self.lab.ping(a, b, count=1, wait=1.0).ok
            ),
            timeout,
        )

    # -- observation ---------------------------------------------------------------------
    def stats(self, *relays: str) -> dict[str, Any]:
        """Metrics + admin of relay hosts, read from rm-x over the lab's internet."""
        ips = [self.lab.address(r) for r in relays or RELAYS]
        token = str(self.mesh.relay_admin_token_file)
        argv = [sys.executable, str(LABCLIENT), "stats", "--admin-token-file", token, *ips]
        out = self.lab.exec("rm-x", argv, timeout=60)
        by_ip = json.loads(out.stdout)
        return {r: by_ip[self.lab.address(r)] for r in relays or RELAYS}

    def attack(self, relay: str, victim: str, hello: bytes, proof: bytes) -> dict[str, Any]:
        argv = [
            sys.executable,
            str(LABCLIENT),
            "attack",
            self.lab.address(relay),
            "--victim",
            victim,
            "--replay-hello",
            hello.hex(),
            "--replay-proof",
            proof.hex(),
        ]
        return json.loads(self.lab.exec("rm-x", argv, timeout=120).stdout)  # type: ignore[no-any-return]

    def pinger(
        self,
        src: str,
        dst: str,
        interval: float = 0.1,
        count: int = 1200,
        extra: tuple[str, ...] = (),
    ) -> Pinger:
        ip = self.lab.address(dst)
        argv = ["ping", "-n", "-i", str(interval), "-c", str(count), "-W", "2", *extra, ip]
        proc = self.lab.spawn(src, argv, name=f"ping-{next(self._names)}")
        return Pinger(proc, ip, interval, time.monotonic())

    @contextlib.contextmanager
    def capture(
        self, host: str, iface: str, bpf: str, count: int = 2000
    ) -> Iterator[Callable[[], bytes]]:
        """tcpdump in a host (bounded: ``count`` packets, 120 s); yields a reader of the pcap.

        ``--immediate-mode`` is essential: without it libpcap hands packets over
        a ring-buffer block at a time (up to a 1 s timeout), and the SIGINT that
        ends the capture discards the unfinished block, i.e. whatever arrived in
        roughly the last second (measured: 0 of 20 datagrams sent 0.3 s before
        the SIGINT were saved; with immediate mode all 20).
        """
        n = next(self._names)
        path = self.lab.host_dir(host) / f"capture-{n}.pcap"
        argv = [
            "timeout", "120", "tcpdump", "-i", iface, "-n", "-U", "--immediate-mode",
            "-s", "0", "-Z", "root", "-c", str(count), "-w", str(path), bpf,
        ]  # fmt: skip
        proc = self.lab.spawn(host, argv, name=f"tcpdump-{n}")
        proc.wait_for_log(r"listening on", timeout=15)
        try:
            yield lambda: path.read_bytes() if path.exists() else b""
        finally:
            proc.signal(signal.SIGINT)
            with contextlib.suppress(Exception):
                proc.wait(10)

    # pure helpers, exposed here for the test module
    tcp_segments = staticmethod(tcp_segments)
    registrations = staticmethod(registrations)
    decode_key = staticmethod(wgkey.decode)

    def relay_log(self, host: str) -> str:
        return self.mesh.services[host].log_text()

    def agent_log(self, host: str) -> str:
        return self.mesh.agents[host].log_text()


def start_dns(lab: Lab, host: str, name: str, addresses: list[str]) -> LabProcess:
    """dnsmasq answering ``name`` with every address (A records), nothing else."""
    hosts_file = lab.host_dir(host) / "pool.hosts"
    hosts_file.write_text("".join(f"{a} {name}\n" for a in addresses))
    argv = [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-queries",
        "--no-resolv", "--no-hosts", f"--addn-hosts={hosts_file}",
        f"--listen-address={lab.address(host)}", "--bind-interfaces", "--port=53",
        "--user=root", "--group=root", f"--pid-file={lab.host_dir(host) / 'dnsmasq.pid'}",
        "--local-ttl=1", f"--local=/{name.partition('.')[2]}/",  # NODATA for AAAA, not REFUSED
    ]  # fmt: skip
    proc = lab.spawn(host, argv, name="dnsmasq")
    proc.wait_for_log(r"read .*pool\.hosts", timeout=15)
    return proc


@pytest.fixture(scope="module")
def relay_mesh(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayMesh]:
    with Lab(TOPOLOGY, workdir=tmp_path_factory.mktemp("relaymesh")) as lab:
        mesh = MeshLab(lab, control_plane)
        rm = RelayMesh(lab, mesh)
        try:
            rm.set_relay("auto")
            mesh.start_stun("rm-stun")
            for relay in RELAYS:
                mesh.start_relay(relay)
            start_dns(lab, "rm-dns", POOL_NAME, [lab.address(r) for r in RELAYS])
            for relay in RELAYS:
                mesh.services[relay].wait_for_log(r"event=ready", timeout=60)
            for node in NODES:
                mesh.register_node(node)
            with rm.capture("rm-relay1", "eth0", "tcp dst port 3478 and less 200", 500) as read:
                mesh.started_at = time.monotonic()
                for node in NODES:
                    mesh.start_agent(node, extra=["--dns-server", lab.address("rm-dns")])
                mesh.wait_until(
                    "every agent registered at rm-relay1",
                    lambda: (
                        all(rm.key(n) for n in NODES)
                        and {rm.key(n) for n in NODES}
                        <= set(rm.stats("rm-relay1")["rm-relay1"].get("peers", {}))
                    ),
                    START_TIMEOUT_S,
                )
                time.sleep(0.5)
            rm.registration_capture = read()
            print(
                f"[relaymesh] agents registered at the relay "
                f"{time.monotonic() - mesh.started_at:.1f}s after start"
            )
            yield rm
        finally:
            mesh.stop()
