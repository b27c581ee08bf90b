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
import signal
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


def run_main(main: Coroutine[Any, Any, None]) -> int:
    """``asyncio.run`` for a service's entry point: 0 on a clean shutdown,
    1 when a task failed (Kubernetes restarts the process)."""
    try:
        asyncio.run(main)
    except TaskFailed as exc:
        log.error("exiting: %s", exc)
        return 1
    return 0
