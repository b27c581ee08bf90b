"""Handles of processes the lab starts inside its namespaces.

A :class:`LabProcess` wraps one ``Popen`` started through ``ip netns exec``
(which ``exec``s the target, so the PID is the real process). Output goes to
``<workdir>/<host>/<name>.log``. Each process starts in its own session so a
terminal's Ctrl-C reaches only the lab owner, which then stops everything
in order. The owning :class:`~wirekube_lab.lab.Lab` stops every handle by PID
at teardown, and then kills by PID anything else left in its namespaces
(children such as a daemonised wireguard-go).

``ip netns exec`` always gives the process a private mount namespace (it
remounts ``/sys``). ``private_wireguard_dir`` uses that: a fresh tmpfs on
``/run/wireguard`` (= ``/var/run/wireguard``) is mounted before the target is
exec'd, so every lab node may call its interface ``wire_kube``. Commands that
must see that directory (``wg show``) run through :meth:`LabProcess.exec`,
which enters the process's own mount and network namespaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

WIREGUARD_RUN_DIR = "/run/wireguard"
#: How long a process that ignored SIGTERM has to write its stacks after SIGABRT.
ABORT_GRACE_S = 2.0
_PRIVATE_WG = (
    f"mkdir -p {WIREGUARD_RUN_DIR} && "
    f'mount -t tmpfs -o mode=0755 wklab-wireguard {WIREGUARD_RUN_DIR} && exec "$@"'
)


class LabCommandError(subprocess.CalledProcessError):
    """A command run in a lab host failed; ``str()`` includes its output."""

    def __str__(self) -> str:
        out = (self.stdout or "").strip()
        err = (self.stderr or "").strip()
        text = f"{' '.join(map(str, self.cmd))} exited {self.returncode}"
        if err:
            text += f"\nstderr: {err[-2000:]}"
        if out:
            text += f"\nstdout: {out[-2000:]}"
        return text


def run_checked(
    argv: Sequence[str], check: bool, timeout: float, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
    )
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def netns_argv(ns: str, argv: Sequence[str], private_wireguard_dir: bool = False) -> list[str]:
    """The full command line that runs ``argv`` inside network namespace ``ns``."""
    prefix = ["ip", "netns", "exec", ns]
    if private_wireguard_dir:
        return [*prefix, "sh", "-c", _PRIVATE_WG, "wklab-spawn", *argv]
    return [*prefix, *argv]


@dataclass
class LabProcess:
    """A tracked process in a lab host."""

    host: str
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code.

        A process that outlives the grace gets SIGABRT first: the lab's Python
        processes run with ``PYTHONFAULTHANDLER`` (``spawn``), so one that
        hangs on its way out leaves every thread's stack in its log."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGABRT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(ABORT_GRACE_S)
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    return self.popen.wait(5)
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until a line of the log matches ``pattern`` (regex); raise if it exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if not self.alive:
                raise RuntimeError(
                    f"{self.host}/{self.name} exited {self.returncode} before logging "
                    f"{pattern!r}:\n{self.log_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.host}/{self.name} did not log {pattern!r} within {timeout}s:\n"
                    f"{self.log_text()[-2000:]}"
                )
            time.sleep(0.02)

    def exec(
        self, argv: Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this process's mount and network namespaces (sees its tmpfs)."""
        return run_checked(
            ["nsenter", "-t", str(self.pid), "-m", "-n", *argv], check=check, timeout=timeout
        )


def spawn(
    host: str,
    ns: str,
    argv: Sequence[str],
    log_path: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    private_wireguard_dir: bool = False,
    cwd: Path | None = None,
) -> LabProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Stacks on a fatal signal, and on the SIGABRT of a stop that timed out.
    full_env = dict(os.environ) | {"PYTHONFAULTHANDLER": "1"}
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            netns_argv(ns, argv, private_wireguard_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    return LabProcess(host=host, name=name, argv=list(argv), log_path=log_path, popen=popen)
