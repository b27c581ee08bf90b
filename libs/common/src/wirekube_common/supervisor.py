"""One supervisor per process: every long-running task starts here.

When any task ends — by an exception or by returning, which for a forever-loop
is a bug too — all the others are cancelled and ``run`` raises, so the process
exits non-zero and Kubernetes restarts it. A SIGTERM/SIGINT cancels everything
and ``run`` returns normally: a clean shutdown. Half-alive processes (a dead
watch loop in a pod that still answers health checks) are the failure mode this
exists to rule out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
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
#: The exit status when worker threads were left behind.
EXIT_THREADS_STUCK = 1


def run_main(main: Coroutine[Any, Any, None]) -> int:
    """``asyncio.run`` for a service's entry point: 0 on a clean shutdown,
    1 when a task failed (Kubernetes restarts the process).

    Once the tasks have stopped, ``asyncio.run`` (and then the interpreter)
    waits for every worker thread to finish, with no limit: a thread stuck
    in a pass would keep a stopping process alive until the kubelet kills
    it. So a watchdog armed when the tasks end exits the process after
    ``THREADS_BOUND_S``, saying what the threads still running were doing."""
    watchdog = threading.Timer(THREADS_BOUND_S, _exit_without_threads)
    watchdog.daemon = True

    async def arming(main: Coroutine[Any, Any, None]) -> None:
        try:
            await main
        finally:
            watchdog.start()

    try:
        asyncio.run(arming(main))
    except TaskFailed as exc:
        log.error("exiting: %s", exc)
        return 1
    finally:
        # The interpreter's exit waits for them as well: the watchdog stays
        # armed while any is left.
        if not _blocking_threads():
            watchdog.cancel()
    return 0


def _blocking_threads() -> list[threading.Thread]:
    """The threads the interpreter waits for at exit: all but daemons and the main one."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if not t.daemon and t is not main]


def _exit_without_threads() -> None:
    frames = sys._current_frames()
    busy = [
        f"{t.name}:\n{''.join(traceback.format_stack(frames[t.ident]))}"
        for t in _blocking_threads()
        if t.ident in frames
    ]
    log.error(
        "worker threads still running %.0fs after the tasks stopped; exiting without them\n%s",
        THREADS_BOUND_S,
        "\n".join(busy),
    )
    logging.shutdown()
    os._exit(EXIT_THREADS_STUCK)
