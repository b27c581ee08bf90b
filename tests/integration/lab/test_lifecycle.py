"""Teardown always happens: normal exit, exceptions, SIGTERM, and (via the sweep) SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wirekube_lab import netops
from wirekube_lab.lab import Lab
from wirekube_lab.naming import RunIds

SMALL = {
    "name": "small",
    "networks": {"home": {"nat": "port-restricted"}},
    "hosts": {"a": {"network": "home"}, "b": {"network": "internet"}},
}

CHILD = r"""
import json, sys, time
from wirekube_lab.lab import Lab
lab = Lab(json.loads(sys.argv[1]), workdir=sys.argv[2])
lab.start()
orphan = lab.exec("a", ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout.strip()
tracked = lab.spawn("b", ["sleep", "300"]).pid
print(json.dumps({"prefix": lab.ids.prefix, "root_if": lab.plan.control.root_ifname,
                  "pids": [int(orphan), tracked]}), flush=True)
time.sleep(300)
"""


def our_namespaces(prefix: str) -> list[str]:
    return [n for n in netops.list_namespaces() if n.startswith(prefix)]


def link_exists(ifname: str) -> bool:
    return (
        subprocess.run(["ip", "link", "show", ifname], capture_output=True, check=False).returncode
        == 0
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "still there"
        time.sleep(0.05)


def test_with_block_removes_everything(tmp_path: Path) -> None:
    with Lab(SMALL, workdir=tmp_path) as lab:
        prefix, root_if = lab.ids.prefix, lab.plan.control.root_ifname
        assert len(our_namespaces(prefix)) == 4
        assert link_exists(root_if)
        tracked = lab.spawn("a", ["sleep", "300"], name="sleeper")
        orphan = int(lab.exec("a", ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)
        assert alive(tracked.pid) and alive(orphan)
    assert our_namespaces(prefix) == []
    assert not alive(tracked.pid) and not alive(orphan)  # the orphan was found in the namespace
    wait_gone(lambda: link_exists(root_if))
    assert (tmp_path / "a" / "sleeper.log").exists()
    assert lab.timings["teardown_s"] < 10
    lab.close()  # idempotent


def test_exception_inside_the_block_still_tears_down(tmp_path: Path) -> None:
    prefix = ""
    with pytest.raises(RuntimeError, match="boom"), Lab(SMALL, workdir=tmp_path) as lab:
        prefix = lab.ids.prefix
        raise RuntimeError("boom")
    assert prefix and our_namespaces(prefix) == []


def _child(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(SMALL), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "child lab did not start"
    return proc, json.loads(line)


def test_sigterm_tears_down_and_still_terminates(tmp_path: Path) -> None:
    proc, info = _child(tmp_path)
    prefix = str(info["prefix"])
    assert len(our_namespaces(prefix)) == 4
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM  # the signal is re-raised after teardown
    assert our_namespaces(prefix) == []
    for pid in info["pids"]:  # type: ignore[attr-defined]
        wait_gone(lambda pid=pid: alive(pid))


def test_sweep_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    proc, info = _child(tmp_path)
    prefix = str(info["prefix"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # SIGKILL cannot be caught: the namespaces and their processes are still there ...
    assert len(our_namespaces(prefix)) == 4
    assert all(alive(pid) for pid in info["pids"])  # type: ignore[attr-defined]
    # ... until the next run's start-up sweep (a new Lab sweeps by default).
    with Lab(SMALL, workdir=tmp_path / "next") as lab:
        assert our_namespaces(prefix) == []
        assert len(our_namespaces(lab.ids.prefix)) == 4
    for pid in info["pids"]:  # type: ignore[attr-defined]
        assert not alive(pid)
    wait_gone(lambda: link_exists(str(info["root_if"])))


def test_sweep_leaves_foreign_and_live_namespaces_alone() -> None:
    live = RunIds(pid=os.getpid(), run="zzzzz").netns("x")  # ours, owner alive
    foreign = f"wklabtest-{os.getpid()}-x"  # not our naming scheme at all
    subprocess.run(["ip", "netns", "add", live], check=True)
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        swept = netops.sweep()
        assert live not in [p.name for p in swept]
        names = netops.list_namespaces()
        assert live in names and foreign in names
    finally:
        subprocess.run(["ip", "netns", "del", live], check=False)
        subprocess.run(["ip", "netns", "del", foreign], check=False)
