"""dockerarchive: shared layers once, every image's manifest entry and tags kept."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from wirekube_lab.dockerarchive import merge, merge_indexes, merge_plan, merged


def test_plan_takes_each_content_named_member_once_and_no_index_file() -> None:
    plan = merge_plan(
        [["base.tar", "a.tar", "a.json", "manifest.json"], ["base.tar", "b.tar", "repositories"]]
    )
    assert plan == [(0, "base.tar"), (0, "a.tar"), (0, "a.json"), (1, "b.tar")]


def test_indexes_concatenate_manifests_and_merge_repositories() -> None:
    manifest, repos = merge_indexes(
        [[{"RepoTags": ["x/a:1"]}], [{"RepoTags": ["x/b:1"]}]],
        [{"x/a": {"1": "ida"}}, {"x/a": {"2": "ida2"}, "x/b": {"1": "idb"}}],
    )
    assert [e["RepoTags"] for e in json.loads(manifest)] == [["x/a:1"], ["x/b:1"]]
    assert json.loads(repos) == {"x/a": {"1": "ida", "2": "ida2"}, "x/b": {"1": "idb"}}


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_merge_writes_the_union_and_is_reused_while_sources_are_unchanged(tmp_path: Path) -> None:
    a = _archive(
        tmp_path / "a.tar",
        {"base.tar": b"B" * 100, "a.tar": b"A", "manifest.json": b'[{"RepoTags":["a:1"]}]'},
    )
    b = _archive(
        tmp_path / "b.tar",
        {"base.tar": b"B" * 100, "b.tar": b"b", "manifest.json": b'[{"RepoTags":["b:1"]}]'},
    )
    out = merge([a, b], tmp_path / "all.tar")
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == [
            "a.tar",
            "b.tar",
            "base.tar",
            "manifest.json",
            "repositories",
        ]
        entries = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert [e["RepoTags"] for e in entries] == [["a:1"], ["b:1"]]
    first = merged([a, b], tmp_path / "m.tar").stat().st_mtime_ns
    assert merged([a, b], tmp_path / "m.tar").stat().st_mtime_ns == first
