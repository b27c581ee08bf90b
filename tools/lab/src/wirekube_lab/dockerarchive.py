"""One docker-archive holding several images, each shared layer once.

``make images`` saves one docker-archive per service; the four share their
Debian base layer (~230 MB), so importing all four into a node's containerd
writes that layer four times (``ctr import`` hashes and stores every byte it
reads; duplicates are discarded only at commit). A lab node imports the
merged archive instead: ~37% fewer bytes, measured 1.85 GB -> 1.16 GB.

In a docker-archive every file but two is named after its content's digest
(layer tarballs, configs, legacy layer directories), so the union of the
members by name is the union of the images; ``manifest.json`` (a list, one
entry per image) is concatenated and ``repositories`` (repo -> tag -> id)
merged. :func:`merge_plan` is that decision, pure; :func:`merge` streams the
members into the new tar and publishes it with one rename.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

INDEX_FILES = ("manifest.json", "repositories")


def merge_plan(
    members: Sequence[Sequence[str]],
) -> list[tuple[int, str]]:
    """``(archive index, member name)`` to copy: each content-named member once."""
    seen: set[str] = set()
    plan: list[tuple[int, str]] = []
    for index, names in enumerate(members):
        for name in names:
            if name in INDEX_FILES or name in seen:
                continue
            seen.add(name)
            plan.append((index, name))
    return plan


def merge_indexes(
    manifests: Iterable[list[dict[str, Any]]], repositories: Iterable[dict[str, Any]]
) -> tuple[bytes, bytes]:
    """The merged ``manifest.json`` and ``repositories`` (a later archive wins a clash)."""
    entries: list[dict[str, Any]] = []
    for manifest in manifests:
        entries.extend(manifest)
    repos: dict[str, dict[str, str]] = {}
    for repo in repositories:
        for name, tags in repo.items():
            repos.setdefault(name, {}).update(tags)
    return json.dumps(entries).encode(), json.dumps(repos).encode()


def merge(sources: Sequence[Path], dest: Path) -> Path:
    """Write ``dest`` holding every image of ``sources`` (atomically: tmp + rename)."""
    tars = [tarfile.open(src) for src in sources]  # noqa: SIM115 - closed below
    try:
        names = [t.getnames() for t in tars]
        manifests, repos = [], []
        for t in tars:
            manifests.append(json.load(_extract(t, "manifest.json")))
            repo = t.getmember("repositories") if "repositories" in t.getnames() else None
            repos.append(json.load(_extract(t, "repositories")) if repo else {})
        manifest_json, repositories_json = merge_indexes(manifests, repos)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with tarfile.open(tmp, "w") as out:
            for index, name in merge_plan(names):
                member = tars[index].getmember(name)
                data = tars[index].extractfile(member) if member.isfile() else None
                out.addfile(member, data)
            for name, blob in (
                ("manifest.json", manifest_json),
                ("repositories", repositories_json),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                info.mode = 0o644
                out.addfile(info, io.BytesIO(blob))
        tmp.rename(dest)
        return dest
    finally:
        for t in tars:
            t.close()


def _extract(tar: tarfile.TarFile, name: str) -> Any:
    f = tar.extractfile(name)
    if f is None:
        raise ValueError(f"{tar.name}: {name} is not a file")
    return f


def merged(sources: Sequence[Path], dest: Path) -> Path:
    """``dest`` merged from ``sources``, rebuilt only when a source changed (size, mtime)."""
    key = json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in sources])
    stamp = dest.with_suffix(".key")
    if dest.is_file() and stamp.is_file() and stamp.read_text() == key:
        return dest
    merge(sources, dest)
    stamp.write_text(key)
    return dest
