"""The agent builds a WireGuard mesh from WireKubePeer objects (issue 3).

Five lab nodes on one LAN, each running the real agent in its own network
namespace with wireguard-go, against the real kube-apiserver. The tests run in
order and share the mesh: full mesh → a join under traffic → a removal →
an agent restart → an API-server outage → hostile peer objects.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wirekube_agent.model import FWMARK
from wirekube_lab.mesh import MeshLab, peer_name

FIRST = ["n1", "n2", "n3", "n4"]
ALL = [*FIRST, "n5"]
CONVERGE_S = 60.0


def wg_peers(mesh: MeshLab, host: str) -> set[str]:
    """Public keys configured on the host's wire_kube (through its private run dir)."""
    out = mesh.agents[host].exec(["wg", "show", "wire_kube", "peers"]).stdout
    return set(out.split())


def public_key(mesh: MeshLab, host: str) -> str:
    peer = mesh.peer(host)
    assert peer is not None
    return str(peer["spec"]["publicKey"])


@pytest.fixture(scope="module")
def started(flat_mesh: MeshLab) -> MeshLab:
    flat_mesh.start(FIRST)
    took = flat_mesh.wait_until("full mesh of 4", lambda: flat_mesh.working_mesh(FIRST), CONVERGE_S)
    print(f"4-node mesh converged {took:.1f}s after the agents started")
    return flat_mesh


def test_full_mesh_pings_through_wireguard(started: MeshLab) -> None:
    mesh = started
    table = mesh.path_table(FIRST)
    assert all(v == "direct" for row in table.values() for v in row.values()), table
    before = {h: mesh.wg_bytes(h) for h in FIRST}
    matrix = mesh.ping_matrix(FIRST, count=3)
    assert all(v == 1.0 for row in matrix.values() for v in row.values()), matrix
    for h in FIRST:
        rx, tx = mesh.wg_bytes(h)
        # 3 nodes x 3 pings x (84 B ICMP) each way, at least, through the tunnel
        assert tx - before[h][1] >= 3 * 3 * 84, (h, before[h], (rx, tx))
        assert rx - before[h][0] >= 3 * 3 * 84, (h, before[h], (rx, tx))
    for h in FIRST:
        status = (mesh.peer(h) or {}).get("status", {})
        assert status.get("connected") is True
        assert status.get("transportMode") == "direct"
        assert status.get("endpointDiscoveryMethod") == "internal"
        assert status.get("lastHandshake")


def test_a_joining_node_does_not_disturb_existing_pairs(started: MeshLab) -> None:
    mesh = started
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # 200 pings at 50 ms: 10 s of traffic spanning the whole join
        running = pool.submit(mesh.lab.ping, "n1", mesh.lab.address("n2"), 200, 0.05)
        time.sleep(1.0)
        mesh.register_node("n5")
        mesh.start_agent("n5")
        routed = mesh.wait_until("n5 routed", lambda: mesh.full_mesh(ALL), CONVERGE_S)
        took = routed + mesh.wait_until("n5 joined", lambda: mesh.working_mesh(ALL), CONVERGE_S)
        result = running.result(timeout=60)
    print(
        f"n5 routed everywhere in {routed:.1f}s, answering everyone in {took:.1f}s;"
        f" n1->n2 during the join: {result.received}/{result.sent}"
    )
    assert result.sent == 200 and result.received == 200
    assert mesh.ping_matrix(ALL, count=2)["n5"] == {"n1": 1.0, "n2": 1.0, "n3": 1.0, "n4": 1.0}


def test_a_removed_node_is_removed_everywhere(started: MeshLab) -> None:
    mesh = started
    key = public_key(mesh, "n5")
    mesh.stop_agent("n5")
    mesh.delete_node("n5")
    took = mesh.wait_until(
        "n5 gone from every WireGuard device",
        lambda: all(key not in wg_peers(mesh, h) for h in FIRST),
        30,
    )
    mesh.wait_until(
        "n5 gone from every status",
        lambda: all(peer_name("n5") not in mesh.transports(h) for h in FIRST),
        30,
    )
    print(f"n5 removed from all WireGuard devices in {took:.1f}s")
    routes = mesh.lab.exec("n1", ["ip", "route", "show", "table", "22347"]).stdout
    assert mesh.lab.address("n5") not in routes


def test_agent_restart_keeps_its_key_and_the_mesh_comes_back(started: MeshLab) -> None:
    mesh = started
    key = public_key(mesh, "n1")
    mesh.stop_agent("n1")
    t0 = time.monotonic()
    mesh.start_agent("n1")
    mesh.wait_until("n1 back", lambda: mesh.working_mesh(FIRST), CONVERGE_S)
    assert public_key(mesh, "n1") == key
    assert mesh.ping_matrix(FIRST, count=2)["n1"] == {"n2": 1.0, "n3": 1.0, "n4": 1.0}
    print(f"n1 restarted and back in the mesh after {time.monotonic() - t0:.1f}s")


def test_pings_continue_while_the_api_server_is_down(started: MeshLab) -> None:
    mesh = started
    apiserver = mesh.cp.pids["kube-apiserver"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # 35 s of pings at 100 ms around a 30 s outage
        running = pool.submit(mesh.lab.ping, "n2", mesh.lab.address("n3"), 350, 0.1)
        time.sleep(2)
        os.kill(apiserver, signal.SIGSTOP)
        try:
            time.sleep(30)
        finally:
            os.kill(apiserver, signal.SIGCONT)
        result = running.result(timeout=60)
    print(f"n2->n3 across a 30 s API outage: {result.received}/{result.sent}")
    assert result.sent == 350 and result.received == 350
    for h in FIRST:
        assert mesh.agents[h].alive
    # and the agents follow changes again once it is back
    mesh.register_node("n5")
    mesh.start_agent("n5")
    mesh.wait_until("n5 joined after the outage", lambda: mesh.working_mesh(ALL), CONVERGE_S)
    mesh.stop_agent("n5")
    mesh.delete_node("n5")


def test_hostile_peer_objects_leave_the_mesh_unaffected(started: MeshLab) -> None:
    mesh = started
    n2_key = public_key(mesh, "n2")
    n3_ip = mesh.lab.address("n3")
    hostile = {
        "node-evil-dupkey": {"publicKey": n2_key, "allowedIPs": ["10.250.0.1/32"]},
        "node-evil-hijack": {
            "publicKey": "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=",
            "allowedIPs": [f"{n3_ip}/32"],
        },
        "node-evil-default": {
            "publicKey": "aN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=",
            "allowedIPs": ["0.0.0.0/0"],
        },
        "node-evil-endpoint": {
            "publicKey": "bN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=",
            "endpoint": "no-such-host.invalid:51820",
            "allowedIPs": ["10.250.0.2/32"],
        },
    }
    for name, spec in hostile.items():
        mesh.custom.create_cluster_custom_object(
            "wirekube.io",
            "v1alpha1",
            "wirekubepeers",
            {
                "apiVersion": "wirekube.io/v1alpha1",
                "kind": "WireKubePeer",
                "metadata": {"name": name},
                "spec": spec,
            },
        )
    try:
        time.sleep(3)  # several reconcile passes
        for h in FIRST:
            assert mesh.agents[h].alive
        matrix = mesh.ping_matrix(FIRST, count=3)
        assert all(v == 1.0 for row in matrix.values() for v in row.values()), matrix
        table = mesh.path_table(FIRST)
        assert all(v == "direct" for row in table.values() for v in row.values()), table
        # n3's address still routes to n3, not to the hijacker
        routes = mesh.lab.exec("n1", ["ip", "route", "get", n3_ip]).stdout
        assert "wire_kube" in routes
        assert n2_key in wg_peers(mesh, "n1")
        events = mesh.core.list_namespaced_event("default").items
        reasons = {(e.involved_object.name, e.reason) for e in events}
        assert ("node-evil-default", "InvalidPeer") in reasons
        assert ("node-evil-hijack", "InvalidPeer") in reasons
    finally:
        for name in hostile:
            mesh.custom.delete_cluster_custom_object(
                "wirekube.io", "v1alpha1", "wirekubepeers", name
            )


def test_xfrm_bypass_sysctls_are_set(started: MeshLab) -> None:
    for name in ("disable_xfrm", "disable_policy"):
        out = started.lab.exec("n1", ["cat", f"/proc/sys/net/ipv4/conf/wire_kube/{name}"]).stdout
        assert out.strip() == "1", name


def test_routes_and_rules_are_reasserted_after_a_flush(started: MeshLab) -> None:
    mesh = started
    n2 = mesh.lab.address("n2")
    mesh.lab.exec("n1", ["ip", "route", "flush", "table", "22347"])
    for prio in ("31170", "31171", "31172"):
        mesh.lab.exec("n1", ["ip", "rule", "del", "priority", prio], check=False)
    took = mesh.wait_until(
        "routes and rules back",
        lambda: (
            n2 in mesh.lab.exec("n1", ["ip", "route", "show", "table", "22347"]).stdout
            and "lookup 22347" in mesh.lab.exec("n1", ["ip", "rule"]).stdout
        ),
        30,
    )
    print(f"table 22347 and the rules were re-asserted {took:.1f}s after a flush")
    # The agent's own packets bypass our table (the mark, not a stale literal:
    # it moved from 0x574b to kube-proxy-safe low bits).
    assert f"fwmark {FWMARK:#x} lookup main" in mesh.lab.exec("n1", ["ip", "rule"]).stdout


def test_passive_mode_and_user_managed_allowed_ips(started: MeshLab) -> None:
    mesh = started
    key = public_key(mesh, "n2")
    patch = {"spec": {"allowedIPs": []}}
    mesh.custom.patch_cluster_custom_object(
        "wirekube.io", "v1alpha1", "wirekubepeers", "node-n2", patch
    )
    try:
        mesh.wait_until(
            "n2 passive everywhere",
            lambda: all(key not in wg_peers(mesh, h) for h in ("n1", "n3")),
            30,
        )
        time.sleep(3)  # n2's own agent must leave the user's choice alone
        assert (mesh.peer("n2") or {})["spec"]["allowedIPs"] == []
        routes = mesh.lab.exec("n1", ["ip", "route", "show", "table", "22347"]).stdout
        assert mesh.lab.address("n2") not in routes
    finally:
        back = {"spec": {"allowedIPs": [f"{mesh.lab.address('n2')}/32"]}}
        mesh.custom.patch_cluster_custom_object(
            "wirekube.io", "v1alpha1", "wirekubepeers", "node-n2", back
        )
    mesh.wait_until("n2 back", lambda: mesh.working_mesh(FIRST), CONVERGE_S)


def test_status_writes_stop_in_steady_state(started: MeshLab) -> None:
    """Each agent writes its own status only on change: a quiet mesh writes nothing."""
    mesh = started

    def writes() -> int:
        return sum(int(mesh.agent_metric(h, "wirekube_api_writes_total")) for h in FIRST)

    time.sleep(6)  # let the last transitions settle
    before = writes()
    time.sleep(15)
    assert writes() == before


def _root(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A command in the root namespaces (nsenter picks the namespaces itself)."""
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)


def _wireguard_go_pid(mesh: MeshLab, host: str) -> int:
    """The wireguard-go serving the host's wire_kube (it outlived its agent)."""
    pids = _root(["ip", "netns", "pids", mesh.lab.netns(host)]).stdout.split()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "wireguard-go":
                    return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no wireguard-go in {host}'s namespace")


def test_sigterm_is_a_clean_exit_and_cleanup_removes_only_stale_state(
    started: MeshLab, tmp_path: Path
) -> None:
    """SIGTERM leaves the data plane up; the initContainer's cleanup keeps this
    node's healthy interface and removes one keyed with another key."""
    mesh = started
    assert mesh.stop_agent("n4") == 0  # SIGTERM: clean shutdown, exit code 0
    state = str(mesh.lab.host_dir("n4") / "state")
    # Where the agent ran: its wireguard-go's mount namespace (private
    # /run/wireguard, the socket) and the node's network namespace.
    where = ["nsenter", "-t", str(_wireguard_go_pid(mesh, "n4")), "-m", "-n", "--"]
    argv = [sys.executable, "-m", "wirekube_agent", "--state-dir", state, "cleanup"]

    def dataplane() -> tuple[bool, str, str]:
        link = "wire_kube" in mesh.lab.exec("n4", ["ip", "link"]).stdout
        table = mesh.lab.exec("n4", ["ip", "route", "show", "table", "22347"]).stdout.strip()
        return link, table, mesh.lab.exec("n4", ["ip", "rule"]).stdout

    link, table, rules = dataplane()
    assert link and table and "22347" in rules
    out = _root([*where, *argv])
    assert out.returncode == 0
    assert dataplane() == (link, table, rules)  # this node's key: all of it stays
    assert "keep (this node's healthy interface)" in out.stderr + out.stdout
    # Another key in the state dir: the interface is stale, everything goes.
    other = tmp_path / "other"
    other.mkdir()
    (other / "private.key").write_text(_root(["wg", "genkey"]).stdout)
    stale = [sys.executable, "-m", "wirekube_agent", "--state-dir", str(other), "cleanup"]
    assert _root([*where, *stale]).returncode == 0
    # (wireguard-go exited with its tun: the second run, idempotent, in the node's namespace)
    assert mesh.lab.exec("n4", stale).returncode == 0
    link, table, rules = dataplane()
    assert not link and table == "" and "22347" not in rules
    mesh.start_agent("n4")
    mesh.wait_until("n4 back", lambda: mesh.working_mesh(FIRST), CONVERGE_S)
