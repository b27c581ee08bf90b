"""A relay pool behind one load-balancer address: lab + real apiserver, agents, relays.

Issue 13's end-to-end tests. One lab for the module::

    zone-a, zone-b, zone-c (symmetric NAT)  rp-a, rp-b, rp-c ─┐
    tcp-1, tcp-2 (tcp-only firewalls)       rp-t, rp-u      ─┼─ internet ─ rp-lb ─┬─ rp-relay1
                                                              │                     ├─ rp-relay2
                                                              │                     └─ rp-relay3
                                                              │   rp-stun, rp-dns (pool name), rp-x

Every node is alone in its network, so no pair can go direct (symmetric <->
symmetric, or no UDP at all): everything is relayed. The mesh's relay
endpoint is the load balancer's one address (round-robin per new TCP
connection, so five agents land on all three replicas); the replicas find
each other through the pool's DNS name (``--mesh-dns``, the headless
Service's role) and join with the pool secret (``--mesh-secret-file``).

Proof is always the relays' own state: which keys are registered where
(RelayAdmin ListPeers) and their routed-frame counters, read from rp-x over
the lab internet by ``poolclient.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wirekube_agent.timers import RELAY_LOSS_GRACE_S
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab, peer_name
from wirekube_lab.pcap import tcp_segments
from wirekube_lab.ping import PingResult, parse_ping
from wirekube_lab.processes import LabProcess
from wirekube_relay.mesh import proto as mp

POOLCLIENT = Path(__file__).resolve().parent / "poolclient.py"
NODES = ("rp-a", "rp-b", "rp-c", "rp-t", "rp-u")
RELAYS = ("rp-relay1", "rp-relay2", "rp-relay3")
POOL_NAME = "relay-pool.rp.lab"
SECRET = "lab-pool-secret-5b0c2e71d9a84f36"
START_TIMEOUT_S = 150.0
#: The issue's budget for relayed traffic to come back after a replica dies.
FAILOVER_BUDGET_S = 5.0
PING_INTERVAL_S = 0.1

TOPOLOGY: dict[str, Any] = {
    "name": "relaypool",
    "networks": {
        "zone-a": {"nat": "symmetric"},
        "zone-b": {"nat": "symmetric"},
        "zone-c": {"nat": "symmetric"},
        "tcp-1": {"nat": "tcp-only"},
        "tcp-2": {"nat": "tcp-only"},
    },
    "hosts": {
        "rp-a": {"network": "zone-a", "role": "node"},
        "rp-b": {"network": "zone-b", "role": "node"},
        "rp-c": {"network": "zone-c", "role": "node"},
        "rp-t": {"network": "tcp-1", "role": "node"},
        "rp-u": {"network": "tcp-2", "role": "node"},
        **{r: {"network": "internet", "role": "relay"} for r in RELAYS},
        "rp-lb": {
            "network": "internet",
            "role": "load-balancer",
            "backends": list(RELAYS),
            "balance": "round-robin",
        },
        "rp-stun": {"network": "internet", "role": "stun"},
        "rp-dns": {"network": "internet", "role": "dns"},
        "rp-x": {"network": "internet", "role": "plain"},
    },
    "mesh": {
        "relay": {
            "mode": "auto",
            "provider": "external",
            # the production overlay's value: a relayed pair that wrongly
            # waits for it (see the pool-replaced test) shows as a 30 s gap
            "handshakeTimeoutSeconds": 30,
            "directRetryIntervalSeconds": 15,
        }
    },
}


class Pool:
    """The running lab and what the tests ask of it."""

    def __init__(self, lab: Lab, mesh: MeshLab) -> None:
        self.lab = lab
        self.mesh = mesh
        self._n = itertools.count(1)
        self.join_capture = b""  # the replicas joining, as seen on rp-relay2's link

    def client(self, *argv: str, timeout: float = 60) -> Any:
        token = self.mesh.relay_admin_token_file.read_text().strip()
        argv = (sys.executable, str(POOLCLIENT), "--admin-token", token, *argv)
        out = self.lab.exec("rp-x", argv, timeout=timeout)
        return json.loads(out.stdout)

    def stats(self) -> dict[str, Any]:
        by_ip = self.client("stats", *(self.lab.address(r) for r in RELAYS))
        return {r: by_ip[self.lab.address(r)] for r in RELAYS}

    def key(self, node: str) -> str:
        return str(((self.mesh.peer(node) or {}).get("spec") or {}).get("publicKey", ""))

    def placement(self, stats: dict[str, Any] | None = None) -> dict[str, str]:
        """node -> the replica its agent is registered with (as the replicas say)."""
        stats = stats or self.stats()
        by_key = {self.key(n): n for n in NODES}
        out: dict[str, str] = {}
        for relay, st in stats.items():
            for key in st.get("peers", []):
                if key in by_key:
                    out[by_key[key]] = relay
        return out

    def start_relay(self, relay: str) -> LabProcess:
        secret = self.lab.workdir / "mesh-secret"
        # allow-list off: the "used again" step registers throwaway test keys
        flags = [
            "--relay-id", relay, "--allowlist", "off",
            "--mesh-secret-file", str(secret), "--mesh-dns", POOL_NAME,
        ]  # fmt: skip
        proc = self.mesh.start_relay(relay, extra=flags, env={"POD_IP": self.lab.address(relay)})
        proc.wait_for_log(r"event=ready", timeout=60)
        return proc

    def links_up(self, stats: dict[str, Any]) -> dict[str, float]:
        return {
            r: st.get("metrics", {}).get("wirekube_relay_mesh_links_up", -1)
            for r, st in stats.items()
        }

    def routed(self, stats: dict[str, Any], relay: str, path: str) -> float:
        metrics = stats[relay].get("metrics", {})
        return float(metrics.get(f'wirekube_relay_routed_frames_total{{path="{path}"}}', 0))

    def pinger(self, src: str, dst: str) -> LabProcess:
        argv = [
            "ping", "-n", "-i", str(PING_INTERVAL_S), "-c", "900", "-W", "2",
            self.lab.address(dst),
        ]  # fmt: skip
        return self.lab.spawn(src, argv, name=f"ping-{next(self._n)}")

    @contextlib.contextmanager
    def capture(self, host: str, bpf: str) -> Iterator[Path]:
        """tcpdump on ``host``'s uplink while the block runs (bounded: 60 s, 200 packets)."""
        path = self.lab.host_dir(host) / f"capture-{next(self._n)}.pcap"
        argv = [
            "timeout", "60", "tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode",
            "-s", "0", "-Z", "root", "-c", "200", "-w", str(path), bpf,
        ]  # fmt: skip
        proc = self.lab.spawn(host, argv, name=f"tcpdump-{next(self._n)}")
        proc.wait_for_log(r"listening on", timeout=15)
        try:
            yield path
        finally:
            proc.signal(signal.SIGINT)
            with contextlib.suppress(Exception):
                proc.wait(10)


def stop_ping(proc: LabProcess) -> PingResult:
    time.sleep(1.0)  # replies to the last requests
    proc.signal(signal.SIGINT)
    with contextlib.suppress(Exception):
        proc.wait(10)
    return parse_ping("", proc.log_text())


def longest_gap_s(result: PingResult) -> float:
    """Longest stretch without a reply, from the answered sequence numbers."""
    seqs = sorted(set(result.replied_seqs))
    edges = [0, *seqs] if seqs else [0, result.sent]
    return max((b - a for a, b in itertools.pairwise(edges)), default=0) * PING_INTERVAL_S


def start_dns(lab: Lab, host: str, name: str, addresses: list[str]) -> LabProcess:
    """dnsmasq answering ``name`` with every address (A records; AAAA: no data)."""
    hosts_file = lab.host_dir(host) / "pool.hosts"
    hosts_file.write_text("".join(f"{a} {name}\n" for a in addresses))
    argv = [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
        f"--addn-hosts={hosts_file}", f"--listen-address={lab.address(host)}",
        "--bind-interfaces", "--port=53", "--user=root", "--group=root",
        f"--pid-file={lab.host_dir(host) / 'dnsmasq.pid'}", "--local-ttl=1",
        f"--local=/{name.partition('.')[2]}/",
    ]  # fmt: skip
    proc = lab.spawn(host, argv, name="dnsmasq")
    proc.wait_for_log(r"read .*pool\.hosts", timeout=15)
    return proc


@pytest.fixture(scope="module")
def pool(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with Lab(TOPOLOGY, workdir=tmp_path_factory.mktemp("relaypool")) as lab:
        mesh = MeshLab(lab, control_plane)
        p = Pool(lab, mesh)
        try:
            mesh.apply_mesh()
            mesh.start_stun("rp-stun")
            start_dns(lab, "rp-dns", POOL_NAME, [lab.address(r) for r in RELAYS])
            (lab.workdir / "mesh-secret").write_text(SECRET + "\n")
            with p.capture("rp-relay2", "tcp port 3478") as pcap:
                for relay in RELAYS:  # the pool's name resolves through the lab's DNS
                    lab.write_etc(relay, "resolv.conf", f"nameserver {lab.address('rp-dns')}\n")
                    p.start_relay(relay)
                mesh.wait_until(
                    "every replica linked to the other two",
                    lambda: all(v == 2 for v in p.links_up(p.stats()).values()),
                    30,
                )
            p.join_capture = pcap.read_bytes()
            for node in NODES:
                mesh.register_node(node)
            mesh.started_at = time.monotonic()
            for node in NODES:
                mesh.start_agent(node)
            took = mesh.wait_until(
                "every pair relayed and answering", lambda: mesh.working_mesh(list(NODES)), 150
            )
            print(f"[relaypool] all {len(NODES)} nodes relayed and pinging after {took:.1f}s")
            yield p
        finally:
            mesh.stop()


def test_every_pair_pings_through_the_pool_spread_over_all_replicas(pool: Pool) -> None:
    paths = pool.mesh.pair_paths(list(NODES))
    assert set(paths.values()) == {"relay"}, paths
    results = pool.mesh.ping_results(list(NODES), count=5, interval=0.1)
    lost = {f"{a}->{b}": r.sent - r.received for a, row in results.items() for b, r in row.items()}
    assert sum(lost.values()) <= 1, lost  # a loaded host may lose one late reply, no more
    stats = pool.stats()
    placement = pool.placement(stats)
    print(f"[relaypool] placement: {placement}")
    assert set(placement) == set(NODES), placement  # every agent registered exactly somewhere
    # round-robin over five agents: every replica holds at least one
    assert set(placement.values()) == set(RELAYS), placement
    # and traffic really crossed replicas, both ways, by the relays' own count
    for relay in RELAYS:
        assert pool.routed(stats, relay, "to-replica") > 0, relay
        assert pool.routed(stats, relay, "from-replica") > 0, relay
        presence = stats[relay]["metrics"]["wirekube_relay_mesh_presence_keys"]
        assert presence == len(NODES), (relay, presence)


def test_a_dead_replica_is_left_within_5s_and_rejoins(pool: Pool) -> None:
    placement = pool.placement()
    src = next(n for n in NODES if placement[n] == "rp-relay1")
    dst = next(n for n in NODES if placement[n] != "rp-relay1")
    ping = pool.pinger(src, dst)
    time.sleep(2.0)
    pool.mesh.services["rp-relay1"].signal(signal.SIGKILL)  # the replica dies
    pool.mesh.wait_until(
        f"{src} registered on a live replica",
        lambda: pool.placement().get(src) in ("rp-relay2", "rp-relay3"),
        20,
    )
    time.sleep(3.0)
    result = stop_ping(ping)
    gap = longest_gap_s(result)
    print(f"[relaypool] {src}->{dst}: longest gap {gap:.1f}s ({result.received}/{result.sent})")
    assert result.received > 0
    assert gap < FAILOVER_BUDGET_S, gap
    assert pool.mesh.transports(src).get(peer_name(dst)) == "relay"

    pool.mesh.services["rp-relay1"].wait(10)
    pool.start_relay("rp-relay1")  # back, same address: it dials the others, they it
    pool.mesh.wait_until(
        "rp-relay1 back in the mesh",
        lambda: all(v == 2 for v in pool.links_up(pool.stats()).values()),
        30,
    )
    # used again: three new connections through the round-robin balancer land on
    # the three replicas, and each reaches the other two (through the mesh)
    out = pool.client("clients", pool.lab.address("rp-lb"), "3")
    assert sorted(out["replicas"]) == sorted(RELAYS), out
    assert len({tuple(p) for p in out["delivered"]}) == 6, out
    assert pool.mesh.working_mesh(list(NODES))


def test_joining_without_the_secret_or_replaying_a_join_is_refused(pool: Pool) -> None:
    segments = tcp_segments(pool.join_capture)
    hellos = [s for s in segments if s.payload[:1] == bytes((mp.MESH_HELLO,))]
    proofs = [s for s in segments if s.payload[:1] == bytes((mp.MESH_PROOF,))]
    assert hellos and proofs, f"no replica join captured ({len(segments)} segments)"
    hello = hellos[0]
    proof = next(p for p in proofs if p.src == hello.src)
    before = pool.stats()
    target = pool.lab.address(RELAYS[1])

    wrong = pool.client("join", target)
    hello_frame = hello.payload[: mp.HEADER_LEN + int.from_bytes(hello.payload[1:5], "big")]
    proof_frame = proof.payload[: mp.HEADER_LEN + mp.MAC_LEN]
    replayed = pool.client("replay", target, hello_frame.hex(), proof_frame.hex())
    assert wrong["code"] == mp.CLOSE_AUTH_FAILED, wrong
    assert replayed == {"challenge": "Challenge", "code": mp.CLOSE_AUTH_FAILED}, replayed

    after = pool.stats()
    assert pool.links_up(after) == pool.links_up(before) == dict.fromkeys(RELAYS, 2)
    for relay in RELAYS:
        for name in (
            "wirekube_relay_mesh_presence_keys",
            "wirekube_relay_mesh_links_established_total",
        ):
            assert after[relay]["metrics"][name] == before[relay]["metrics"][name], (relay, name)
    failures = after["rp-relay2"]["metrics"]
    assert failures['wirekube_relay_mesh_auth_failures_total{reason="bad-proof"}'] >= 2
    assert pool.mesh.working_mesh(list(NODES))


def test_a_hung_replica_is_left_within_5s(pool: Pool) -> None:
    """A replica that stops answering without closing anything (SIGSTOP: its
    kernel still accepts connections behind the balancer, nothing sends a
    RST): its agents notice the unanswered PINGs, and a reconnect that lands
    on it again gives up after the first short registration bound."""
    placement = pool.placement()
    src = next(n for n in NODES if placement[n] != placement[NODES[0]])
    dst = next(n for n in NODES if placement[n] != placement[src])
    hung_name = placement[src]
    hung = pool.mesh.services[hung_name]
    live = [r for r in RELAYS if r != hung_name]
    ping = pool.pinger(src, dst)
    time.sleep(2.0)
    hung.signal(signal.SIGSTOP)
    try:
        by_ip = {pool.lab.address(r): r for r in live}

        def moved() -> bool:
            stats = pool.client("stats", *by_ip)
            return pool.placement({by_ip[ip]: st for ip, st in stats.items()}).get(src) in live

        pool.mesh.wait_until(f"{src} registered on a live replica", moved, 20)
        time.sleep(3.0)
        result = stop_ping(ping)
    finally:
        hung.signal(signal.SIGCONT)
    gap = longest_gap_s(result)
    print(
        f"[relaypool] {hung_name} stopped: {src}->{dst} longest gap {gap:.1f}s "
        f"({result.received}/{result.sent})"
    )
    assert result.received > 0
    assert gap < FAILOVER_BUDGET_S, gap
    assert pool.mesh.transports(src).get(peer_name(dst)) == "relay"
    # woken up, the replica is part of the pool again and every pair still answers
    pool.mesh.wait_until(
        f"{hung_name} back in the mesh",
        lambda: all(v == 2 for v in pool.links_up(pool.stats()).values()),
        30,
    )
    assert pool.mesh.working_mesh(list(NODES))


def test_the_whole_pool_replaced_relayed_pairs_back_soon_after_a_replica_is_back(
    pool: Pool,
) -> None:
    """Every replica gone for longer than the agents' relay-loss grace (the
    pool replaced at once, ``kubectl delete pod -l``): the agents move their
    relayed peers to a direct attempt meanwhile. Once a replica is back the
    pairs must be relayed again within the failover budget, not after the
    mesh's handshake timeout (production's 30 s: seen on the kubelet lab)."""
    src, dst = NODES[0], NODES[1]
    ping = pool.pinger(src, dst)
    started = time.monotonic()
    time.sleep(2.0)
    for relay in RELAYS:
        pool.mesh.services[relay].signal(signal.SIGKILL)
    for relay in RELAYS:
        pool.mesh.services[relay].wait(10)
    time.sleep(RELAY_LOSS_GRACE_S + 3.0)  # past the grace: the agents saw no relay
    back = time.monotonic()
    sent_before = int((back - started) / PING_INTERVAL_S)  # ping's sequence number then
    for relay in RELAYS:
        pool.start_relay(relay)
    pool.mesh.wait_until(
        "every replica linked to the other two",
        lambda: all(v == 2 for v in pool.links_up(pool.stats()).values()),
        30,
    )
    time.sleep(FAILOVER_BUDGET_S + 3.0)
    result = stop_ping(ping)
    answered_after = sorted(s for s in result.replied_seqs if s > sent_before)
    first = (answered_after[0] - sent_before) * PING_INTERVAL_S if answered_after else None
    print(
        f"[relaypool] pool replaced: {src}->{dst} first answer {first}s after the replicas "
        f"were started ({time.monotonic() - back:.1f}s ago); {result.received}/{result.sent}"
    )
    assert first is not None, pool.mesh.path_table(list(NODES))
    assert first < FAILOVER_BUDGET_S, first
    assert pool.mesh.transports(src).get(peer_name(dst)) == "relay"
    pool.mesh.wait_until(
        "every pair answers again", lambda: pool.mesh.working_mesh(list(NODES)), 30
    )
