"""One live lab for every wirekubectl test, brought up the way a user does it:
``wirekube-lab up topology.yaml`` (real apiserver, agents, relay, STUN), torn
down with ``wirekube-lab down`` at the end of the module.

``lab_cli`` runs commands against it: ``wirekubectl`` from the root namespace
(the kubeconfig ``up`` printed) or, with ``host=``, inside a lab host through
``wirekube-lab exec`` (where the STUN servers and the relay's admin API are
reachable; nothing in the root namespace routes to the lab's addresses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TOPOLOGY = HERE / "topology.yaml"
BIN = Path(sys.executable).parent
WIREKUBECTL = str(BIN / "wirekubectl")
WIREKUBE_LAB = str(BIN / "wirekube-lab")
# The topology's settled paths, as `wirekubectl paths -o json` reports them.
EXPECTED = {
    ("node-1", "node-2"): "direct",
    ("node-1", "node-5"): "direct",
    ("node-1", "node-6"): "relay",
    ("node-2", "node-5"): "relay",
    ("node-2", "node-6"): "relay",
    ("node-5", "node-6"): "relay",
}
# `up` waits for steady state itself; this covers the status writes catching
# up with the paths (a few seconds) on a loaded machine.
SETTLE_TIMEOUT_S = 60.0


@dataclass
class LiveLab:
    state_dir: Path
    state: dict[str, Any]
    up_output: str

    @property
    def kubeconfig(self) -> str:
        return str(self.state["kubeconfig"])

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(WIREKUBE_LAB_STATE_DIR=str(self.state_dir), KUBECONFIG=self.kubeconfig)
        env.update(extra)
        return env

    def cli(
        self, *args: str, host: str | None = None, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [WIREKUBECTL, *args]
        if host is not None:
            argv = [WIREKUBE_LAB, "exec", host, "--", *argv]
        return subprocess.run(
            argv,
            env=self.env(),
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            input=input,
        )

    def lab(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WIREKUBE_LAB, *args],
            env=self.env(),
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            input=input,
        )

    def json(self, *args: str, host: str | None = None) -> Any:
        done = self.cli(*args, "-o", "json", host=host)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = SETTLE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(1.0)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def matrix_pairs(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(p["a"], p["b"]): p["path"] for p in doc["pairs"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    state_dir = tmp_path_factory.mktemp("cli-lab")
    started = time.monotonic()
    up = subprocess.run(
        [WIREKUBE_LAB, "up", str(TOPOLOGY), "--state-dir", str(state_dir)],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    try:
        log = state_dir / "keeper.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        assert up.returncode == 0, f"wirekube-lab up failed:\n{up.stdout}\n{up.stderr}\n{tail}"
        lab = LiveLab(state_dir, json.loads((state_dir / "state.json").read_text()), up.stdout)
        lab.wait(
            "the expected path table",
            lambda: matrix_pairs(lab.json("paths")) == EXPECTED,
        )
        print(f"lab up and settled in {time.monotonic() - started:.1f} s")
        yield lab
    finally:
        down = subprocess.run(
            [WIREKUBE_LAB, "down", "--state-dir", str(state_dir)],
            capture_output=True,
            check=False,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
