"""ParsedCache: each object parsed once per resourceVersion; deleted ones forgotten."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wirekube_agent.k8s.parsed import ParsedCache


def obj(rv: str, value: int) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}, "value": value}


def test_parses_once_per_version_and_skips_what_the_parser_rejects() -> None:
    calls: list[str] = []

    def parse(name: str, o: Mapping[str, Any]) -> int | None:
        calls.append(name)
        return None if o["value"] < 0 else int(o["value"])

    cache = ParsedCache(parse)
    assert cache.update({"a": obj("1", 1), "bad": obj("1", -1)}) == {"a": 1}
    assert cache.update({"a": obj("1", 1), "bad": obj("1", -1)}) == {"a": 1}
    assert sorted(calls) == ["a", "bad"]  # the rejected one is not parsed (or reported) again
    assert cache.update({"a": obj("2", 5)}) == {"a": 5}  # new version: parsed again
    assert calls[-1] == "a"
    cache.update({})
    assert cache.update({"a": obj("2", 5)}) == {"a": 5}  # deleted, then back: parsed again
    assert calls.count("a") == 3
