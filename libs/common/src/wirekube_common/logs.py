"""Structured logging for every service: one JSON object per line on stderr.

Fields passed as ``extra={...}`` become top-level keys, so log pipelines can
filter on ``peer``/``node``/``reason`` without regexes. ``WIREKUBE_LOG_FORMAT=text``
switches to a human format for the lab and local runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        # Milliseconds: the lab's start-up story happens within a few seconds.
        stamp = f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d}"
        base = f"{stamp} {record.levelname[0]} {record.name}: {record.getMessage()}"
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(service: str, level: str | None = None, fmt: str | None = None) -> None:
    level = (level or os.environ.get("WIREKUBE_LOG_LEVEL", "info")).upper()
    fmt = fmt or os.environ.get("WIREKUBE_LOG_FORMAT", "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The kubernetes client logs every request at DEBUG and urllib3 retries at
    # WARNING; both drown the agent's own story.
    for noisy in ("kubernetes", "urllib3", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
