"""Kubernetes timestamps: ``Time`` (RFC 3339, seconds) and ``MicroTime``
(microseconds, used by Leases), always UTC with a ``Z``. Pure."""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


def from_unix(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def format_time(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """Parse either form (and any RFC 3339 offset); raises ValueError."""
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r}: no time zone")
    return when.astimezone(UTC)


def unix_or_none(text: object) -> float | None:
    """Seconds since the epoch of an annotation or status timestamp, or None
    when it is missing or not a timestamp (annotations are anyone's input:
    length-bounded before parsing)."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return None
