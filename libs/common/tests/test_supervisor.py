import asyncio
import random
import signal
import subprocess
import sys
import time

import pytest

from wirekube_common import supervisor
from wirekube_common.retry import MAX_BACKOFF_S, backoff_delays


async def forever(log: list[str], name: str) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        log.append(f"{name} stopped")


def test_first_failure_stops_all_and_raises() -> None:
    log: list[str] = []

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("watch died")

    async def main() -> None:
        await supervisor.run({"a": lambda: forever(log, "a"), "boom": boom})

    with pytest.raises(supervisor.TaskFailed, match="boom"):
        asyncio.run(main())
    assert log == ["a stopped"]


def test_a_task_that_returns_is_a_failure_too() -> None:
    async def quits() -> None:
        return None

    with pytest.raises(supervisor.TaskFailed, match="returned"):
        asyncio.run(supervisor.run({"quits": quits}))


def test_stop_event_is_a_clean_shutdown() -> None:
    log: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, stop.set)
        await supervisor.run({"a": lambda: forever(log, "a")}, stop=stop)

    asyncio.run(main())
    assert log == ["a stopped"]


def test_backoff_is_bounded_and_jittered() -> None:
    delays = backoff_delays(rng=random.Random(1))
    values = [next(delays) for _ in range(50)]
    assert all(0 <= v <= MAX_BACKOFF_S for v in values)
    assert max(values[-10:]) > 1.0  # it does grow


# A service whose worker thread is stuck (a wedged pass) when SIGTERM comes:
# the tasks stop, and the process must not wait for the thread for ever.
_STUCK_SERVICE = """
import asyncio, sys, threading, time
from wirekube_common import supervisor

supervisor.THREADS_BOUND_S = float(sys.argv[1])

def stuck_pass():
    threading.Event().wait()  # never set

async def main():
    async def passes():
        await asyncio.to_thread(stuck_pass)

    async def ready():
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        await asyncio.Event().wait()

    await supervisor.run({"reconcile": passes, "ready": ready})

sys.exit(supervisor.run_main(main()))
"""


def _terminate_service(bound: float, code: str = _STUCK_SERVICE) -> tuple[int, str, float]:
    """Start the service, SIGTERM it once ready: its exit status, its
    stderr, and how long it took to exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(bound)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        return proc.returncode, err, time.monotonic() - t0
    finally:
        proc.kill()


def test_a_stopping_process_does_not_wait_for_a_stuck_thread_beyond_the_bound() -> None:
    status, err, took = _terminate_service(bound=1.0)
    assert status == supervisor.EXIT_STUCK
    assert 1.0 <= took < 10, took
    # it says which thread was stuck, and where
    assert "still running 1s after the tasks stopped" in err, err
    assert "in stuck_pass" in err, err


# a pass that ends 3 s after it started ("ready" comes after 0.2 s)
_CLEAN_SERVICE = _STUCK_SERVICE.replace("threading.Event().wait()", "time.sleep(3)")


def test_a_clean_shutdown_waits_for_a_pass_that_finishes_in_time() -> None:
    status, err, took = _terminate_service(bound=8.0, code=_CLEAN_SERVICE)
    assert status == 0, err
    assert "still running" not in err
    assert took > 2, "the pass was not waited for"


# A service whose event loop is blocked (a synchronous call that never
# returns) when SIGTERM comes: the loop never runs the shutdown, and the
# process must end all the same, saying where it was stuck.
_BLOCKED_LOOP_SERVICE = """
import asyncio, sys, time
from wirekube_common import supervisor

supervisor.SHUTDOWN_BOUND_S = float(sys.argv[1])

def blocking_call():
    while True:
        time.sleep(0.1)

async def main():
    async def blocks():
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        blocking_call()

    await supervisor.run({"blocks": blocks})

sys.exit(supervisor.run_main(main()))
"""


def test_a_process_whose_loop_is_blocked_still_ends_after_sigterm() -> None:
    status, err, took = _terminate_service(bound=2.0, code=_BLOCKED_LOOP_SERVICE)
    assert status == supervisor.EXIT_STUCK
    assert 2.0 <= took < 10, took
    assert "not ended 2s after SIGTERM" in err, err
    assert "in blocking_call" in err, err  # the main thread's stack
