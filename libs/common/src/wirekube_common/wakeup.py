"""An asyncio event that any thread may set.

Informer threads, the reconcile worker thread and raw-socket callbacks all
need to wake a coroutine. ``asyncio.Event`` is not thread-safe, so each
service grew its own "remember the loop, call_soon_threadsafe" wrapper; this
is the one place for it. The loop is bound by the first ``wait``; a ``set``
before that just records the flag (nobody can be waiting yet).
"""

from __future__ import annotations

import asyncio
import threading


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def set(self) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    __call__ = set

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        await self._event.wait()
