"""Time to steady state per shipped topology, against the issue's targets.

Issue 5's targets, with the topologies' test-sized timers, counted from the
moment the agents are started (all at once, as a DaemonSet rollout does):
every pair reachable (through the relay if need be) within 5 s, and every
possible direct path established within 15 s (reachability is asserted with
one WireGuard handshake retry of slack; a miss of the target is printed). The
lab runs all the agents, the API server and etcd on two cores, so this is the
harder case; registration (every WireKubePeer exists) is printed too, to
separate start-up from path selection.

Measured from outside the agents:

* reachable — every node sends an echo request to every other every 0.1 s
  from the agents' start (``wirekube_lab.firstreply``); a pair is reachable
  once both directions have been answered. Pairs on one network answer over
  their LAN whatever the mesh does, so the target is asserted on the pairs
  that need the mesh (different networks); all are printed.
* direct (data plane) — both ends' agents have logged ``path to <peer>:
  direct`` (lines timestamped as they appear, to 0.1 s), for every pair the
  topology's ``expect.paths`` says is direct.
* direct (status) — both ends' ``peerTransports`` say direct.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest

from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.fixtures.lab import TOPOLOGY_DIR
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import MeshLab
from wirekube_lab.topology import load_topology

SHIPPED = sorted(TOPOLOGY_DIR.glob("topology-*.yaml"))
REACHABLE_TARGET_S = 5.0
WG_REKEY_TIMEOUT_S = 5.0  # WireGuard's handshake retry interval
DIRECT_TARGET_S = 15.0
# How long to keep watching after registration before giving up on a figure.
WATCH_S = 45.0
REGISTER_TIMEOUT_S = 90.0


def router_state(lab: Lab) -> str:
    """NAT state of every router (UDP conntrack, mapping tables): for a failure report."""
    out = []
    for router in lab.plan.routers:
        out.append(f"--- {router.name} ({router.nat.kind})")
        ct = lab.exec(router.name, ["conntrack", "-L", "-p", "udp"], check=False)
        out.append(ct.stdout.strip())
        if router.nat.kind in ("full-cone", "address-restricted"):
            maps = lab.exec(router.name, ["nft", "list", "table", "ip", "wklab"], check=False)
            out.extend(ln for ln in maps.stdout.splitlines() if "elements" in ln or ":" in ln)
    return "\n".join(out)


_CT = re.compile(
    r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+).*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)"
)


def mapping_mismatches(lab: Lab, mesh: MeshLab, pairs: list[tuple[str, str]]) -> list[str]:
    """For pairs that never went direct: does a node's NAT map its WireGuard port
    towards the peer to another public port than the endpoint it published?

    Two nodes behind one port-preserving NAT, both on port 51820: per remote
    address, whichever sent first keeps 51820 and the other gets another port,
    so a 'cone' NAT is not endpoint-independent for the second one."""
    notes = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            router = lab.router_of(x)
            spec = (mesh.peer(x) or {}).get("spec", {})
            published = str(spec.get("endpoint", ""))
            if router is None or ":" not in published:
                continue
            if lab.plan.router(router).nat.kind == "symmetric":
                continue  # a new port per destination is what symmetric means
            port = published.rsplit(":", 1)[1]
            ct = lab.exec(router, ["conntrack", "-L", "-p", "udp"], check=False).stdout
            for line in ct.splitlines():
                m = _CT.search(line)
                towards_y = m is not None and (m[1], m[2]) == (
                    lab.address(x),
                    lab.public_address(y),
                )
                if m is not None and towards_y and m[8] != port:
                    notes.append(
                        f"{x} published {published} but its NAT ({router}) maps it to "
                        f"port {m[8]} towards {y} ({lab.public_address(y)}:{m[4]})"
                    )
    return notes


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_time_to_steady_state(
    path: Path, control_plane: ControlPlane, tmp_path: Path, pc_tools: Any
) -> None:
    topology = load_topology(path)
    direct_pairs = sorted(pair for pair, mode in topology.expect_paths if mode == "direct")
    with Lab(topology, workdir=tmp_path) as lab:
        mesh = MeshLab(lab, control_plane)
        logs = None
        dump = wg_dump = ""
        mismatches: list[str] = []
        try:
            nodes = mesh.start(watch_replies=True)
            agents_started = mesh.started_wall
            logs = pc_tools.LogWatch({h: p.log_path for h, p in mesh.agents.items()})
            mesh.wait_until(
                "every agent registered",
                lambda: all(mesh.peer(h) for h in nodes),
                REGISTER_TIMEOUT_S,
            )
            registered = time.time()
            pairs = list(itertools.combinations(nodes, 2))
            mesh_pairs = [(a, b) for a, b in pairs if lab.router_of(a) != lab.router_of(b)]
            reachable: dict[tuple[str, str], float | None] = dict.fromkeys(pairs)
            direct_dp: dict[tuple[str, str], float | None] = dict.fromkeys(direct_pairs)
            direct_st: dict[tuple[str, str], float | None] = dict.fromkeys(direct_pairs)
            deadline = agents_started + WATCH_S
            done = False
            while time.time() < deadline:
                dead = [h for h, proc in mesh.agents.items() if not proc.alive]
                assert not dead, f"agents exited: {dead}\n{mesh.diagnose()}"
                answered = mesh.first_replies()
                for a, b in pairs:
                    # Reachable: both directions have answered a ping.
                    if (a, b) in answered and (b, a) in answered:
                        reachable[(a, b)] = agents_started + max(answered[(a, b)], answered[(b, a)])
                table = mesh.path_table(nodes)
                for a, b in direct_pairs:
                    if direct_st[(a, b)] is None and table[a][b] == table[b][a] == "direct":
                        direct_st[(a, b)] = time.time()
                    if direct_dp[(a, b)] is None:
                        ends = [logs.path_changes(x, y) for x, y in ((a, b), (b, a))]
                        firsts = [
                            next((ln.t for ln in lines if ": direct " in ln.text), None)
                            for lines in ends
                        ]
                        if None not in firsts:
                            direct_dp[(a, b)] = max(t for t in firsts if t is not None)
                overdue = [p for p in mesh_pairs if reachable[p] is None]
                if overdue and not wg_dump and time.time() > agents_started + REACHABLE_TARGET_S:
                    wg_dump = mesh.wireguard_dump(h for pair in overdue for h in pair)
                done = (
                    None not in reachable.values()
                    and None not in direct_dp.values()
                    and None not in direct_st.values()
                )
                if done:
                    break
                time.sleep(0.2)
            if not done:
                dump = router_state(lab) + "\n" + mesh.diagnose()
                late_direct = [p for p, t in direct_dp.items() if t is None]
                mismatches = mapping_mismatches(lab, mesh, late_direct)
        finally:
            if logs is not None:
                logs.stop()
            mesh.stop()

    def since(t: float | None, t0: float) -> float | None:
        return None if t is None else round(t - t0, 1)

    slowest = {
        "reachable": max((reachable[p] or float("inf") for p in mesh_pairs), default=registered),
        "direct": max((direct_dp[p] or float("inf") for p in direct_pairs), default=registered),
        "status": max((direct_st[p] or float("inf") for p in direct_pairs), default=registered),
    }
    print(
        f"\n{topology.name}: from the agents' start: registered "
        f"{registered - agents_started:.1f}s, every pair reachable "
        f"{since(slowest['reachable'], agents_started)}s, every direct path established "
        f"{since(slowest['direct'], agents_started)}s (status "
        f"{since(slowest['status'], agents_started)}s)"
    )
    for (a, b), t in reachable.items():
        shared = "" if (a, b) in mesh_pairs else " (same network: over the LAN)"
        print(f"  {a}/{b}: reachable {since(t, agents_started)}s{shared}")
    for pair in direct_pairs:
        print(
            f"  {pair[0]}/{pair[1]}: direct {since(direct_dp[pair], agents_started)}s, "
            f"status {since(direct_st[pair], agents_started)}s"
        )
    if wg_dump:
        print(f"WireGuard {REACHABLE_TARGET_S}s after the agents' start:\n{wg_dump}")
    if dump:
        print(dump)
    over = {
        f"{a}/{b}": since(t, agents_started)
        for (a, b), t in reachable.items()
        if (a, b) in mesh_pairs and (t is None or t - agents_started > REACHABLE_TARGET_S)
    }
    if over:
        print(f"over the {REACHABLE_TARGET_S}s target: {over}")
    # Asserted with one WireGuard handshake retry of slack: now and then a
    # pair's first initiation is lost in a way neither agent may repair without
    # risking worse (see wirekube_agent.paths.initiate), and WireGuard retries after
    # REKEY_TIMEOUT. Every other run meets the target; misses are printed.
    late = {
        f"{a}/{b}": since(t, agents_started)
        for (a, b), t in reachable.items()
        if (a, b) in mesh_pairs
        and (t is None or t - agents_started > REACHABLE_TARGET_S + WG_REKEY_TIMEOUT_S)
    }
    assert not late, (
        f"pairs not reachable within {REACHABLE_TARGET_S}s (+ one WireGuard retry) of the "
        f"agents' start: {late}"
    )
    late = {
        f"{a}/{b}": since(t, agents_started)
        for (a, b), t in direct_dp.items()
        if t is None or t - agents_started > DIRECT_TARGET_S
    }
    why = (
        "\n  a cone NAT mapped a node's WireGuard port to another public port than the one "
        "it published (two nodes on one port behind one port-preserving NAT: per remote "
        "address, whichever sent first keeps the port):"
        if mismatches
        else ""
    )
    assert not late, (
        f"direct paths not established within {DIRECT_TARGET_S}s: {late}"
        + why
        + "".join(f"\n    {note}" for note in mismatches)
    )
    late = {
        f"{a}/{b}": since(t, agents_started)
        for (a, b), t in direct_st.items()
        if t is None or t - agents_started > DIRECT_TARGET_S
    }
    assert not late, f"status not direct within {DIRECT_TARGET_S}s: {late}"
