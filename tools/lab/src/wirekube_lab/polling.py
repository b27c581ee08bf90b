"""Small helpers the integration suites share: poll until a condition holds,
and a free loopback TCP port."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    cond: Callable[[], T | None],
    timeout: float,
    what: str,
    every: float = 0.2,
    transient: tuple[type[Exception], ...] = (OSError,),
) -> T:
    """Poll ``cond`` until it returns something truthy and return that.

    Exceptions in ``transient`` (an API server restarting, a process not yet
    listening) count as "not yet"; the last one is shown on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except transient as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
