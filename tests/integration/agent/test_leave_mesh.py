"""A node leaves the mesh: its peer is garbage-collected, its agent cleans up (issue 16).

Four lab nodes on one LAN running the real agent, and the real
``wirekube-gateway-controller`` (its own ServiceAccount; leader-elected; peer
GC grace shortened to ``GRACE_S``). Removing a node's
``wirekube.io/vpn-enabled`` label must:

* withdraw that node's agent at once (interface, routes and rules gone while
  it keeps running), while its WireKubePeer stays for the grace period - the
  agent may not delete it, and a label put back in time keeps it;
* after the grace period, have the controller delete the peer (with an
  Event), and every other node drop it from WireGuard within the grace period
  plus one resync - with no ping lost between the remaining nodes throughout.

And an agent that starts on a node that already left, where a previous agent
left its data plane behind (wireguard-go outlives the agent on purpose),
removes it on SIGTERM.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wirekube_agent.timers import RESYNC_INTERVAL_S
from wirekube_lab.controlplane import ControlPlane
from wirekube_lab.lab import Lab
from wirekube_lab.mesh import VPN_LABEL, MeshLab, peer_name

STAY = ["gc1", "gc2", "gc3"]
LEAVER = "gc4"
ALL = [*STAY, LEAVER]
# Short, so the test is quick; long enough to tell "deleted after the grace
# period" from "deleted at once" on a loaded machine.
GRACE_S = 8.0
CONVERGE_S = 60.0
TABLE = "22347"  # the agent's routing table
PING_INTERVAL_S = 0.1

TOPOLOGY: dict[str, Any] = {
    "name": "leave-mesh",
    "networks": {"lan": {"nat": {"kind": "port-restricted"}}},
    "hosts": {h: {"network": "lan", "role": "node"} for h in ALL},
    "mesh": {"relay": {"mode": "never"}},
}


class Controller:
    """wirekube-gateway-controller as a host process with its own ServiceAccount."""

    def __init__(self, cp: ControlPlane, tmp: Path) -> None:
        token = uuid.uuid4().hex[:6]
        kubeconfig = cp.kubeconfig_for_service_account(
            "wirekube-system", "wirekube-gateway-controller", path=tmp / "gwc.kubeconfig"
        )
        argv = [
            sys.executable, "-m", "wirekube_gateway",
            "--kubeconfig", str(kubeconfig),
            "--identity", f"leave-{token}",
            "--lease-name", f"leave-{token}",
            "--lease-namespace", "wirekube-system",
            "--metrics-port", "0",
            "--peer-gc-grace", str(GRACE_S),
        ]  # fmt: skip
        env = dict(os.environ, WIREKUBE_LOG_FORMAT="text", WIREKUBE_LOG_LEVEL="info")
        env.pop("KUBECONFIG", None)
        self.log = tmp / "gateway-controller.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MeshLab, Controller]]:
    tmp = tmp_path_factory.mktemp("leave")
    with Lab(TOPOLOGY, workdir=tmp / "lab") as lab:
        mesh = MeshLab(lab, control_plane)
        controller = Controller(control_plane, tmp)
        try:
            mesh.start(ALL)
            mesh.wait_until("full mesh of 4", lambda: mesh.working_mesh(ALL), CONVERGE_S)
            mesh.wait_until(
                "the controller leads", lambda: "became leader" in controller.log_text(), 30
            )
            yield mesh, controller
        finally:
            controller.stop()
            mesh.stop()


def set_label(mesh: MeshLab, host: str, value: str | None) -> None:
    mesh.core.patch_node(host, {"metadata": {"labels": {VPN_LABEL: value}}})


def wg_peers(mesh: MeshLab, host: str) -> set[str]:
    return set(mesh.agents[host].exec(["wg", "show", "wire_kube", "peers"]).stdout.split())


def dataplane(mesh: MeshLab, host: str) -> dict[str, str]:
    """What of the mesh is on ``host``: the interface, our table's routes, our rules."""
    link = mesh.lab.exec(host, ["ip", "-o", "link", "show", "wire_kube"], check=False)
    routes = mesh.lab.exec(host, ["ip", "route", "show", "table", TABLE], check=False)
    rules = mesh.lab.exec(host, ["ip", "rule", "show"], check=False)
    return {
        "link": link.stdout.strip() if link.returncode == 0 else "",
        "routes": routes.stdout.strip(),
        "rules": "\n".join(r for r in rules.stdout.splitlines() if TABLE in r or "0x574b" in r),
    }


def raw_sockets(mesh: MeshLab, host: str) -> str:
    """Open raw sockets in ``host`` (the agent's probe/STUN socket is one)."""
    return mesh.lab.exec(host, ["ss", "-H", "-w", "-a"]).stdout.strip()


def public_key(mesh: MeshLab, host: str) -> str:
    peer = mesh.peer(host)
    assert peer is not None, host
    return str(peer["spec"]["publicKey"])


def events_for(mesh: MeshLab, peer: str) -> list[Any]:
    out = mesh.core.list_namespaced_event("default", field_selector=f"involvedObject.name={peer}")
    return list(out.items)


def pairs() -> list[tuple[str, str]]:
    return [(a, b) for a in STAY for b in STAY if a != b]


def test_a_label_put_back_in_time_keeps_the_peer(world: tuple[MeshLab, Controller]) -> None:
    mesh, _ = world
    before = mesh.peer(LEAVER)
    assert before is not None
    set_label(mesh, LEAVER, None)
    try:
        # The agent withdraws at once (no peer delete: RBAC forbids it)...
        mesh.wait_until("the leaver withdrew", lambda: not dataplane(mesh, LEAVER)["link"], 20)
    finally:
        set_label(mesh, LEAVER, "true")
    # ... and comes back; the controller never deletes the peer.
    mesh.wait_until("the leaver is back", lambda: mesh.working_mesh(ALL), CONVERGE_S)
    time.sleep(GRACE_S + 2)
    after = mesh.peer(LEAVER)
    assert after is not None
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert not [e for e in events_for(mesh, peer_name(LEAVER)) if e.reason == "NodeLeftMesh"]


def test_an_unlabelled_node_leaves_everyone_s_wireguard_without_disturbing_the_rest(
    world: tuple[MeshLab, Controller],
) -> None:
    mesh, controller = world
    mesh.wait_until("full mesh of 4", lambda: mesh.working_mesh(ALL), CONVERGE_S)
    key = public_key(mesh, LEAVER)
    assert all(key in wg_peers(mesh, h) for h in STAY)
    uid = (mesh.peer(LEAVER) or {})["metadata"]["uid"]
    assert raw_sockets(mesh, LEAVER), "the agent's probe socket"
    # Pings between every remaining pair span the departure, the grace period
    # and the removal (bounded: count x interval).
    count = int((GRACE_S + RESYNC_INTERVAL_S + 12) / PING_INTERVAL_S)
    with concurrent.futures.ThreadPoolExecutor(len(pairs())) as pool:
        running = {
            (a, b): pool.submit(mesh.lab.ping, a, mesh.lab.address(b), count, PING_INTERVAL_S)
            for a, b in pairs()
        }
        time.sleep(2.0)
        t0 = time.monotonic()
        set_label(mesh, LEAVER, None)
        mesh.wait_until("the leaver withdrew", lambda: not dataplane(mesh, LEAVER)["link"], 20)
        withdrew = time.monotonic() - t0
        # The peer outlives the withdrawal for the grace period.
        assert mesh.peer(LEAVER) is not None
        # No more probes or STUN from the leaver: its raw socket is closed.
        mesh.wait_until(
            "the leaver's probe socket closed", lambda: not raw_sockets(mesh, LEAVER), 5
        )
        gone = mesh.wait_until(
            "the leaver's key gone from every WireGuard device",
            lambda: all(key not in wg_peers(mesh, h) for h in STAY),
            GRACE_S + RESYNC_INTERVAL_S + 30,
        )
        took = time.monotonic() - t0
        results = {pair: f.result(timeout=120) for pair, f in running.items()}
    print(
        f"leaver withdrew {withdrew:.1f}s after losing its label; its key was gone from "
        f"every other node {took:.1f}s after (grace {GRACE_S:g}s, resync "
        f"{RESYNC_INTERVAL_S:g}s); pings between the others: "
        + ", ".join(f"{a}->{b} {r.received}/{r.sent}" for (a, b), r in results.items())
    )
    assert gone <= took
    assert GRACE_S <= took <= GRACE_S + RESYNC_INTERVAL_S, controller.log_text()[-3000:]
    assert mesh.peer(LEAVER) is None
    for (a, b), r in results.items():
        assert r.sent == count and r.received == count, (a, b, r)
    for h in STAY:
        routes = mesh.lab.exec(h, ["ip", "route", "show", "table", TABLE]).stdout
        assert mesh.lab.address(LEAVER) not in routes, (h, routes)
        assert peer_name(LEAVER) not in mesh.transports(h)
    events = [e for e in events_for(mesh, peer_name(LEAVER)) if e.reason == "NodeLeftMesh"]
    assert len(events) == 1, events
    assert events[0].involved_object.uid == uid
    assert events[0].message == (
        f"Node {LEAVER} is not labelled {VPN_LABEL}=true (for {GRACE_S:g}s): "
        f"deleted its WireKubePeer {peer_name(LEAVER)}"
    )
    # The departed node has nothing of the mesh left, and a SIGTERM keeps it so.
    assert dataplane(mesh, LEAVER) == {"link": "", "routes": "", "rules": ""}
    assert mesh.stop_agent(LEAVER) == 0
    assert dataplane(mesh, LEAVER) == {"link": "", "routes": "", "rules": ""}


def test_sigterm_after_leaving_removes_what_a_previous_agent_left(
    world: tuple[MeshLab, Controller],
) -> None:
    mesh, _ = world
    # Back in the mesh (a fresh peer: the old one was collected) ...
    if LEAVER not in mesh.agents:
        set_label(mesh, LEAVER, "true")
        mesh.start_agent(LEAVER)
    mesh.wait_until("the leaver rejoined", lambda: mesh.working_mesh(ALL), CONVERGE_S)
    # ... then its agent stops while the node is still in the mesh: the data
    # plane stays (wireguard-go outlives the agent, for hitless restarts).
    assert mesh.stop_agent(LEAVER) == 0
    left_behind = dataplane(mesh, LEAVER)
    assert left_behind["link"] and left_behind["routes"] and left_behind["rules"], left_behind
    # The node leaves while no agent runs; the next agent finds the label gone.
    set_label(mesh, LEAVER, None)
    agent = mesh.start_agent(LEAVER)
    agent.wait_for_log("not taking part in the mesh", timeout=60)
    time.sleep(2.0)
    assert mesh.stop_agent(LEAVER) == 0
    assert "left the mesh; removing wire_kube" in agent.log_text(), agent.log_text()[-2000:]
    assert dataplane(mesh, LEAVER) == {"link": "", "routes": "", "rules": ""}
    # and the others still reach each other
    assert mesh.all_reachable(STAY)
    mesh.wait_until("the leaver's peer collected", lambda: mesh.peer(LEAVER) is None, GRACE_S + 15)
    assert json.dumps(mesh.path_table(STAY)).count("none") == 0
