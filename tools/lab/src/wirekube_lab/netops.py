"""The only module that changes kernel state: namespaces, links and their removal.

It executes what :mod:`~wirekube_lab.commands` renders, with ``ip`` and
``nft`` (reliable, fast in batch mode, and what an operator would type to
debug the lab). Three jobs:

* :func:`build` creates a planned lab. The control link's /30 is chosen and
  created under an exclusive ``flock`` so that parallel lab runs never pick
  the same subnet.
* :func:`destroy` removes one run: it kills every process still inside the
  run's namespaces (by PID, found through ``ip netns pids``), then deletes the
  namespaces, which also destroys every veth, bridge and nft table in them,
  including the control link's root-side end.
* :func:`sweep` finds namespaces of *earlier* runs whose owner PID is dead
  (see :mod:`~wirekube_lab.naming`) and destroys them the same way. Only our
  own ``wklab-<pid>-<run>-`` names are ever considered.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .addressing import LabPlan, pick_control_subnet
from .commands import control_batch, namespace_script, root_batch
from .naming import ParsedNetns, RunIds, stale_namespaces

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
LOCK_PATH = Path("/run/wirekube-lab.lock")


class NetopsError(RuntimeError):
    """A command that builds or tears down the lab failed."""


def run(argv: list[str], stdin: str | None = None, timeout: float = 30.0) -> str:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        shown = stdin if stdin is not None and len(stdin) < 4000 else ""
        raise NetopsError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}\n{shown}".rstrip()
        )
    return proc.stdout


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def root_networks() -> list[ipaddress.IPv4Network]:
    """Networks of every IPv4 address in the root namespace."""
    out = run(["ip", "-4", "-o", "address", "show"])
    nets: list[ipaddress.IPv4Network] = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            cidr = fields[fields.index("inet") + 1]
            nets.append(ipaddress.IPv4Interface(cidr).network)
    return nets


def allocate_control_subnet(ids: RunIds) -> ipaddress.IPv4Network:
    """A free /30 for this run (call under :func:`control_link_lock`, then create it)."""
    return pick_control_subnet(root_networks(), seed=hash((ids.pid, ids.run)) % 16384)


def create_root(plan: LabPlan) -> None:
    """Namespaces, veth pairs and the control link (call under :func:`control_link_lock`)."""
    lines = root_batch(plan) + control_batch(plan)
    run(["ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
    _disable_root_ipv6(plan.control.root_ifname)


def configure_namespaces(plan: LabPlan) -> None:
    """Run every namespace's set-up script (a few in parallel)."""

    def setup(ns: str) -> None:
        run(["ip", "netns", "exec", ns, "sh", "-e"], stdin=namespace_script(plan, ns))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(setup, plan.namespaces))
    wait_for_carrier(plan)


LINK_READY_TIMEOUT_S = 3.0  # the kernel's link watcher defers some carrier changes by up to 1 s


def wait_for_carrier(plan: LabPlan, timeout: float = LINK_READY_TIMEOUT_S) -> None:
    """Return once every link of the lab has carrier (packets sent before are dropped)."""
    script = "".join(f"ip -n {ns} -o link show; " for ns in plan.namespaces)
    script += f"ip -o link show dev {plan.control.root_ifname}"
    deadline = time.monotonic() + timeout
    while True:
        waiting = [
            line.split(":")[1].strip()
            for line in run(["sh", "-c", script]).splitlines()
            if "NO-CARRIER" in line
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise NetopsError(f"links without carrier after {timeout}s: {', '.join(waiting)}")
        time.sleep(0.02)


def _disable_root_ipv6(ifname: str) -> None:
    path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    with contextlib.suppress(OSError):
        path.write_text("1")


@contextlib.contextmanager
def control_link_lock() -> Iterator[None]:
    with _global_lock():
        yield


def namespace_pids(ns: str) -> list[int]:
    try:
        out = run(["ip", "netns", "pids", ns], timeout=10)
    except NetopsError:
        return []
    return [int(tok) for tok in out.split() if tok.isdigit()]


def kill_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left."""
    remaining = [p for p in pids if p != os.getpid()]
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if pid_alive(p)]
        if remaining:
            time.sleep(0.02)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """The process exists and is no zombie (shared by every sweep of dead runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone (its parent reaps it; we never wait on others' children).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def destroy(namespaces: Iterable[str]) -> list[str]:
    """Kill everything inside ``namespaces`` and delete them; returns error messages."""
    names = [ns for ns in namespaces if (NETNS_DIR / ns).exists()]
    errors: list[str] = []
    pids = [pid for ns in names for pid in namespace_pids(ns)]
    if pids:
        kill_pids(pids)
    if names:
        try:
            run(["ip", "-force", "-batch", "-"], stdin="".join(f"netns del {ns}\n" for ns in names))
        except NetopsError as exc:
            errors.append(str(exc))
    for ns in namespaces:
        etc = ETC_NETNS_DIR / ns
        if etc.is_dir():
            shutil.rmtree(etc, ignore_errors=True)
    return errors


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def sweep() -> list[ParsedNetns]:
    """Destroy namespaces left behind by lab runs whose owner process is gone."""
    names = list_namespaces()
    candidates = stale_namespaces(names, alive=set())
    alive = {p.pid for p in candidates if pid_alive(p.pid)}
    stale = stale_namespaces(names, alive=alive)
    if stale:
        log.info("sweeping %d namespaces of dead lab runs", len(stale))
        for msg in destroy([p.name for p in stale]):
            log.warning("sweep: %s", msg)
    return stale
