"""One supervisor per process: every long-running task starts here.

When any task ends — by an exception or by returning, which for a forever-loop
is a bug too — all the others are cancelled and ``run`` raises, so the process
exits non-zero and Kubernetes restarts it. A SIGTERM/SIGINT cancels everything
and ``run`` returns normally: a clean shutdown. Half-alive processes (a dead
watch loop in a pod that still answers health checks) are the failure mode this
exists to rule out.

A process that cannot stop is the other half: ``run_main`` bounds how long a
shutdown may take, from the signal and from the tasks' end, and a process
past either bound exits with every thread's stack in its log (the stuck
place is the bug to fix; the kubelet's SIGKILL would leave no trace of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


class TaskFailed(RuntimeError):
    pass


async def run(tasks: dict[str, TaskFactory], stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (tests) there are no signal handlers; the
        # caller sets `stop` instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            # The loop learns of the signal through its wakeup fd, written in
            # C, and calls ``stop.set`` when it next turns; the Python-level
            # handler it installed does nothing. Ours arms the process's
            # shutdown bound: a loop that never turns again still ends.
            signal.signal(sig, _on_signal)
    running = {asyncio.create_task(factory(), name=name): name for name, factory in tasks.items()}
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*running, stopper]:
            task.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)
    if stopper in done:
        log.info("shutdown requested; all tasks stopped")
        return
    for task in done:
        name = running[task]
        exc = task.exception() if not task.cancelled() else None
        log.error("task %s ended (%s); stopping the process", name, exc or "returned")
        raise TaskFailed(f"task {name} ended: {exc or 'returned'}") from exc


#: How long a process that has stopped its tasks waits for its worker
#: threads (``asyncio.to_thread``: a reconcile pass, a netlink call) before it
#: exits without them. Well inside the pods' termination grace (30 s), so a
#: wedged pass costs a liveness restart this much, not the whole grace and a
#: SIGKILL.
THREADS_BOUND_S = 10.0
#: How long a process may take to end after SIGTERM/SIGINT, whatever it is
#: doing: a blocked event loop never runs the shutdown at all. Inside the
#: pods' termination grace (30 s), with room for the threads' bound.
SHUTDOWN_BOUND_S = 20.0
#: The exit status when a bound was passed.
EXIT_STUCK = 1


class _Bound:
    """Ends the process at a deadline unless it ended first: status
    ``EXIT_STUCK``, with the stack of every thread still running in
    the log. Armed from the main thread only (signal handlers run there), so
    it takes no lock: a handler that interrupts ``arm`` could not take it."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self._deadline = float("inf")

    def arm(self, seconds: float, why: str) -> None:
        """Exit ``seconds`` from now, unless an earlier deadline is armed."""
        deadline = time.monotonic() + seconds
        if deadline >= self._deadline:
            return
        self._deadline = deadline
        previous, self._timer = self._timer, threading.Timer(seconds, _exit_stuck, (why,))
        self._timer.daemon = True
        self._timer.start()
        if previous is not None:
            previous.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


#: The running process's bound (``run_main``); None outside it (tests that
#: call ``run`` in-process must not be exited).
_bound: _Bound | None = None


def _on_signal(signum: int, _frame: object) -> None:
    if _bound is not None:
        name = signal.Signals(signum).name
        _bound.arm(SHUTDOWN_BOUND_S, f"not ended {SHUTDOWN_BOUND_S:.0f}s after {name}")


def run_main(main: Coroutine[Any, Any, int | None]) -> int:
    """``asyncio.run`` for a service's entry point: ``main``'s status (0 if it
    returns None) on a clean shutdown, 1 when a task failed (Kubernetes
    restarts the process).

    Once the tasks have stopped, ``asyncio.run`` (and then the interpreter)
    waits for every worker thread to finish, with no limit: a thread stuck
    in a pass would keep a stopping process alive until the kubelet kills
    it. So the process's bound is armed when ``main`` ends
    (``THREADS_BOUND_S``), and from the first SIGTERM/SIGINT
    (``SHUTDOWN_BOUND_S``): whichever comes first ends it."""
    global _bound
    bound = _bound = _Bound()

    async def bounded(main: Coroutine[Any, Any, int | None]) -> int | None:
        try:
            return await main
        finally:
            bound.arm(
                THREADS_BOUND_S,
                f"worker threads still running {THREADS_BOUND_S:.0f}s after the tasks stopped",
            )

    try:
        status = asyncio.run(bounded(main))
    except TaskFailed as exc:
        log.error("exiting: %s", exc)
        return 1
    finally:
        # The interpreter's exit waits for them as well: the bound stays
        # armed while any is left.
        if not _blocking_threads():
            bound.cancel()
    return status or 0


def _blocking_threads() -> list[threading.Thread]:
    """The threads the interpreter waits for at exit: all but daemons and the main one."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if not t.daemon and t is not main]


def _exit_stuck(why: str) -> None:
    frames = sys._current_frames()
    me = threading.get_ident()
    stacks = [
        f"{t.name}:\n{''.join(traceback.format_stack(frames[t.ident]))}"
        for t in threading.enumerate()
        if t.ident in frames and t.ident != me and (t is threading.main_thread() or not t.daemon)
    ]
    log.error("%s; exiting\n%s", why, "\n".join(stacks))
    logging.shutdown()
    os._exit(EXIT_STUCK)
