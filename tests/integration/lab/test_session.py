"""``wirekube-lab up / exec / down`` as a user runs them, including ``down``
after the keeper of ``up`` was killed (SIGKILL: no teardown ran)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from wirekube_lab import netops

LAB = str(Path(sys.executable).parent / "wirekube-lab")
TOPOLOGY = {
    "name": "session",
    "networks": {"ses-home": {"nat": {"kind": "address-restricted"}}},
    "hosts": {
        "ses-a": {"network": "ses-home", "role": "node"},
        "ses-relay": {"network": "internet", "role": "relay"},
    },
    "mesh": {"relay": {"mode": "auto", "provider": "external"}},
}


def lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LAB, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_down_removes_what_a_killed_up_left(tmp_path: Path) -> None:
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(TOPOLOGY))
    state_dir = tmp_path / "state"
    try:
        up = lab("up", str(topo), "--state-dir", str(state_dir))
        assert up.returncode == 0, up.stderr + (state_dir / "keeper.log").read_text()[-3000:]
        state = json.loads((state_dir / "state.json").read_text())
        assert str(state_dir / "kubeconfig") in up.stdout
        keeper = int(state["pid"])
        again = lab("up", str(topo), "--state-dir", str(state_dir))
        assert again.returncode != 0 and "already up" in again.stderr
        hostname = lab(
            "exec", "ses-a", "--state-dir", str(state_dir), "--", "ip", "-o", "-4", "addr"
        )
        assert state["addresses"]["ses-a"] in hostname.stdout

        os.kill(keeper, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(keeper) and time.monotonic() < deadline:
            time.sleep(0.1)
        prefix = f"wklab-{keeper}-"
        left = [n for n in netops.list_namespaces() if n.startswith(prefix)]
        assert left, "a killed keeper leaves its namespaces behind"
        assert alive(int(state["agents"]["ses-a"]))  # and its agent, in its namespace
    finally:
        down = lab("down", "--state-dir", str(state_dir))
    assert down.returncode == 0 and "gone" in down.stdout, down.stdout + down.stderr
    assert not [n for n in netops.list_namespaces() if n.startswith(prefix)]
    deadline = time.monotonic() + 10
    pids = [int(state["agents"]["ses-a"]), *map(int, state["controlplane_pids"].values())]
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "agent or control plane outlived the lab"
    assert not (state_dir / "state.json").exists()
    assert lab("exec", "ses-a", "--state-dir", str(state_dir), "--", "true").returncode == 2
    assert lab("down", "--state-dir", str(state_dir)).returncode == 0  # nothing up: harmless
