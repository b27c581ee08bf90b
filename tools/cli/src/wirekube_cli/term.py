"""The terminal: colour only where a person reads it, a progress indicator on
stderr for anything that waits. ``NO_COLOR`` (no-color.org) and ``--no-color``
turn colour off; a pipe or file never gets escape codes."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

_CODES = {"green": "32", "yellow": "33", "red": "31", "bold": "1", "dim": "2", "cyan": "36"}
# The indicator appears only for waits longer than this: most commands answer
# faster, and a flash of spinner is noise.
SPINNER_DELAY_S = 0.3
SPINNER_FRAME_S = 0.1


def colour_enabled(stream: TextIO, flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    if os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


class Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str) -> str:
        if not self.enabled or colour not in _CODES:
            return text
        return f"\033[{_CODES[colour]}m{text}\033[0m"


PLAIN = Style(False)

PATH_COLOURS = {"direct": "green", "relay": "yellow", "mixed": "cyan", "down": "red"}
SEVERITY_COLOURS = {"ok": "green", "warning": "yellow", "error": "red", "info": "dim"}


@contextlib.contextmanager
def progress(message: str, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with ``message`` on ``stream`` (stderr) while the block runs,
    only when that stream is a terminal."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        if done.wait(SPINNER_DELAY_S):
            return
        for frame in itertools.cycle("|/-\\"):
            out.write(f"\r{frame} {message}")
            out.flush()
            if done.wait(SPINNER_FRAME_S):
                break
        out.write("\r" + " " * (len(message) + 2) + "\r")
        out.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
