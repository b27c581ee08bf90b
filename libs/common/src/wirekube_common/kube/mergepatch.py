"""JSON merge patches (RFC 7386) for status writes: the smallest patch from
the status last seen to the one wanted. Pure; the agent's and the
controller's status writes share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 patch turning ``old`` into ``new`` (``{}`` when equal).
    Removed keys become null; a key absent from ``old`` whose new value is
    null is left out (absent and null are the same to a merge patch)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
