"""A lab you can stay in: ``wirekube-lab up`` / ``exec`` / ``down``.

``up`` starts a *keeper* process in a session of its own (so it outlives the
shell's ``up``), which builds the topology, starts the control plane and the
services exactly as ``run`` does, waits for steady state, writes the state
file and then just waits for SIGTERM. ``up`` itself waits for the state file
(a spinner on a terminal) and prints the kubeconfig and what to try.

The state directory (``--state-dir``, default ``$WIREKUBE_LAB_STATE_DIR`` or
``/run/wirekube-lab``; one lab per directory) holds::

    keeper.pid        written by ``up`` as soon as the keeper runs
    state.json        written by the keeper once the lab is ready (shape below)
    kubeconfig        admin, for the root namespace (https://127.0.0.1:<port>)
    kubeconfig-lab    admin, for commands inside lab namespaces (100.64.0.1)
    keeper.log        the keeper's output (control plane and lab logs)
    work/             the lab's working directory (per-host logs)

``exec NODE -- CMD`` runs CMD in a host's or router's namespace (for a node,
also in its agent's mount namespace, so ``wg show`` sees the agent's
wireguard-go socket) and exits with CMD's status. ``down`` stops the keeper
(SIGTERM, then SIGKILL after ``STOP_GRACE_S``), which tears everything down;
when the keeper is already gone (a killed ``up``: SIGKILL, OOM, reboot) it
sweeps what it left: namespaces of dead lab runs (whatever ran inside them is
killed first), control-plane work directories of dead owners. The control
plane dies with its keeper on its own (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import netops
from .lab import Lab
from .topology import load_topology

DEFAULT_STATE_DIR = "/run/wirekube-lab"
# Building, the control plane and steady state take 20-60 s on 2 loaded cores;
# the keeper gives up on steady state after pipeline.STEADY_TIMEOUT_S and
# reports the lab anyway, so this only bounds a keeper that hangs.
UP_TIMEOUT_S = 240.0
# The keeper's teardown stops every process with a grace of 3 s each, then
# deletes the namespaces: well within this on a loaded host.
STOP_GRACE_S = 45.0
STATE = "state.json"
PIDFILE = "keeper.pid"


class SessionError(RuntimeError):
    """Something the user must resolve (no lab up, one already up, unknown host)."""


def state_dir(explicit: Path | None) -> Path:
    return explicit or Path(os.environ.get("WIREKUBE_LAB_STATE_DIR", DEFAULT_STATE_DIR))


def _keeper_pid(directory: Path) -> int | None:
    try:
        return int((directory / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def read_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE
    pid = _keeper_pid(directory)
    if not path.exists() or pid is None or not netops.pid_alive(pid):
        raise SessionError(f"no lab is up in {directory} (wirekube-lab up TOPOLOGY.yaml)")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


# -- up ------------------------------------------------------------------------------------
def up(topology_path: Path, directory: Path, out: Any = sys.stdout) -> int:
    load_topology(topology_path)  # a bad topology fails here, not in the keeper
    pid = _keeper_pid(directory)
    if pid is not None and netops.pid_alive(pid):
        raise SessionError(
            f"a lab is already up in {directory} (keeper {pid}); wirekube-lab down first"
        )
    _clear(directory)
    directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "wirekube_lab", "keep", str(topology_path.resolve()),
            "--state-dir", str(directory)]  # fmt: skip
    with (directory / "keeper.log").open("ab") as log:
        keeper = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    (directory / PIDFILE).write_text(f"{keeper.pid}\n")
    deadline = time.monotonic() + UP_TIMEOUT_S
    with _spinner("building the lab, starting the control plane and the mesh"):
        while time.monotonic() < deadline:
            if (directory / STATE).exists():
                break
            if keeper.poll() is not None:
                tail = _tail(directory / "keeper.log")
                raise SessionError(
                    f"the lab did not come up (keeper exited {keeper.returncode}):\n{tail}"
                )
            time.sleep(0.25)
        else:
            keeper.terminate()
            raise SessionError(
                f"the lab did not come up within {UP_TIMEOUT_S:.0f} s; see {directory}/keeper.log"
            )
    state = json.loads((directory / STATE).read_text())
    out.write(summary(state, directory))
    return 0


def summary(state: dict[str, Any], directory: Path) -> str:
    nodes = state["nodes"]
    a, b = (nodes + nodes)[:2] if nodes else ("node-1", "node-2")
    lines = [
        f"lab {state['topology']} is up (keeper pid {state['pid']}; steady: {state['steady']})",
        f"  kubeconfig:        {state['kubeconfig']}",
        f"  inside the lab:    {state['lab_kubeconfig']}",
        f"  nodes:             {', '.join(nodes)}",
        f"  other hosts:       {', '.join(h for h in state['namespaces'] if h not in nodes)}",
        "try:",
        f"  export KUBECONFIG={state['kubeconfig']}",
        "  wirekubectl status",
        "  wirekubectl paths",
        f"  wirekubectl why {a} {b}",
        "  wirekubectl graph --format svg > mesh.svg",
        f"  wirekube-lab exec {a} -- wirekubectl doctor   # where the nodes' networks are",
        *(
            f"  wirekube-lab exec {relay} -- wirekubectl relays --relay-admin 127.0.0.1:"
            f"{state.get('relay_admin_port', 9091)} --relay-admin-token-file "
            f"{state['relay_admin_token_file']}"
            for relay in list(state.get("relays", {}))[:1]
            if state.get("relay_admin_token_file")
        ),
        f"  wirekube-lab exec {a} -- wg show",
        f"  wirekube-lab exec {a} -- ping -c3 {state['addresses'].get(b, '')}",
        "  wirekube-lab down",
    ]
    if str(directory) != DEFAULT_STATE_DIR:
        lines.append(f"  (this lab's state directory: --state-dir {directory})")
    return "\n".join(lines) + "\n"


def keep(topology_path: Path, directory: Path) -> int:
    """The keeper: bring the lab up, publish its state, wait for SIGTERM."""
    from .mesh import MeshDriver  # noqa: PLC0415 - imports the kubernetes client
    from .pipeline import STEADY_TIMEOUT_S  # noqa: PLC0415

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    topology = load_topology(topology_path)
    lab = Lab(topology, workdir=directory / "work")
    driver = MeshDriver()
    with lab:
        try:
            driver.start(lab)
            steady = driver.wait_steady(lab, STEADY_TIMEOUT_S)
            assert driver.cp is not None and driver.mesh is not None
            kubeconfig = driver.cp.write_kubeconfig(directory / "kubeconfig")
            lab_kubeconfig = driver.cp.write_kubeconfig(directory / "kubeconfig-lab", lab=True)
            names = [h for h in lab.hosts()] + [r.name for r in lab.plan.routers]
            state = {
                "pid": os.getpid(),
                "topology": topology.name,
                "topology_file": str(topology_path),
                "steady": steady,
                "kubeconfig": str(kubeconfig),
                "lab_kubeconfig": str(lab_kubeconfig),
                "kubectl": str(driver.cp.bin_dir / "kubectl"),
                "nodes": driver.nodes,
                "namespaces": {n: lab.netns(n) for n in names},
                "addresses": {h: lab.address(h) for h in lab.hosts()},
                "public_addresses": {h: lab.public_address(h) for h in lab.hosts()},
                "routers": {h: lab.router_of(h) for h in lab.hosts()},
                "agents": {h: p.pid for h, p in driver.mesh.agents.items()},
                "controlplane_pids": driver.cp.pids,
                "relays": {h: f"{lab.address(h)}:3478" for h in lab.hosts("relay")},
                "relay_admin_port": 9091,
                "relay_admin_token_file": str(driver.mesh.relay_admin_token_file),
                "paths": driver.paths(lab),
                "workdir": str(lab.workdir),
            }
            tmp = directory / (STATE + ".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.rename(directory / STATE)
            print(f"lab up: {json.dumps(state)}", flush=True)
            while not stop.wait(1.0):
                pass
        finally:
            driver.stop(lab)
    return 0


# -- exec -----------------------------------------------------------------------------------
def exec_argv(state: dict[str, Any], host: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in ``host``'s namespace (pure)."""
    namespaces: dict[str, str] = state["namespaces"]
    if host not in namespaces:
        raise SessionError(
            f"no host or router {host!r} in this lab (known: {', '.join(namespaces)})"
        )
    if not argv:
        raise SessionError("nothing to run: wirekube-lab exec NODE -- COMMAND [ARGS...]")
    agent = state.get("agents", {}).get(host)
    if agent is not None and netops.pid_alive(int(agent)):
        # The agent's own mount namespace: its private /var/run/wireguard.
        return ["nsenter", "-t", str(agent), "-m", "-n", *argv]
    return ["ip", "netns", "exec", namespaces[host], *argv]


def exec_in(directory: Path, host: str, argv: list[str]) -> int:
    state = read_state(directory)
    env = {**os.environ, "KUBECONFIG": state["lab_kubeconfig"]}
    try:
        return subprocess.run(exec_argv(state, host, argv), env=env, check=False).returncode
    except FileNotFoundError as exc:
        raise SessionError(str(exc)) from exc


# -- down -----------------------------------------------------------------------------------
def down(directory: Path, out: Any = sys.stdout) -> int:
    pid = _keeper_pid(directory)
    stopped = False
    if pid is not None and netops.pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        with _spinner("stopping the lab"):
            while netops.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        if netops.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        stopped = True
    # Whatever a killed keeper left (and, harmlessly, other dead runs' leftovers).
    swept = netops.sweep()
    from .controlplane import _sweep_orphaned_workdirs  # noqa: PLC0415

    _sweep_orphaned_workdirs()
    _clear(directory)
    if stopped:
        out.write(
            f"lab in {directory} stopped (keeper {pid}); {len(swept)} leftover namespaces removed\n"
        )
    elif pid is not None:
        out.write(f"the lab's keeper {pid} was gone; removed {len(swept)} namespaces it left\n")
    else:
        out.write(
            f"no lab was up in {directory}; removed {len(swept)} namespaces of dead lab runs\n"
        )
    return 0


def _clear(directory: Path) -> None:
    for name in (STATE, PIDFILE, "kubeconfig", "kubeconfig-lab", STATE + ".tmp"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    shutil.rmtree(directory / "work", ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _spinner(message: str) -> Any:
    """A progress indicator on stderr while the block waits (terminals only)."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        frames = "|/-\\"
        i = 0
        while not done.wait(0.2):
            sys.stderr.write(f"\r{frames[i % 4]} {message} ({time.monotonic() - started:.0f} s)")
            sys.stderr.flush()
            i += 1
        sys.stderr.write("\r" + " " * (len(message) + 12) + "\r")

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
