"""Teardown guarantees: every live lab is torn down at exit and on SIGTERM/SIGHUP.

Labs register a teardown callable while they exist. Three paths lead to it:

* normal exit of the ``with`` block (``Lab.__exit__``), also on exceptions
  and on Ctrl-C (Python turns SIGINT into ``KeyboardInterrupt``, which
  unwinds the block);
* interpreter exit (``atexit``) for labs that were never closed;
* SIGTERM / SIGHUP, whose default action would kill the process without any
  cleanup: our handler tears every live lab down, restores the previous
  disposition and re-raises the signal, so the process still ends the way it
  would have (or a previously installed Python handler still runs).

A SIGKILL cannot be caught; the start-up sweep of the next run removes what
such a run left behind (see :func:`wirekube_lab.netops.sweep`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_live: dict[int, Callable[[], None]] = {}
_installed = False
_signals_installed = False
_previous: dict[int, Any] = {}
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def register(key: int, teardown: Callable[[], None]) -> None:
    _install()
    with _lock:
        _live[key] = teardown


def unregister(key: int) -> None:
    with _lock:
        _live.pop(key, None)


def teardown_all() -> None:
    with _lock:
        pending = list(_live.items())
        _live.clear()
    for _, teardown in reversed(pending):
        try:
            teardown()
        except Exception:
            log.exception("lab teardown failed")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    teardown_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, previous)
    os.kill(os.getpid(), signum)


def _install() -> None:
    global _installed, _signals_installed
    with _lock:
        first = not _installed
        _installed = True
        want_signals = (
            not _signals_installed and threading.current_thread() is threading.main_thread()
        )
        if want_signals:
            _signals_installed = True
    if first:
        atexit.register(teardown_all)
    if want_signals:  # signal handlers can only be installed from the main thread
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                _previous[sig] = signal.getsignal(sig)
                signal.signal(sig, _on_signal)
