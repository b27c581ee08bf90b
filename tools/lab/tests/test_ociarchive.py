"""ociarchive: a one-file image, read back as an OCI image layout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from wirekube_lab.ociarchive import ImageFile, image_archive


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_archive_is_a_valid_layout_whose_digests_match() -> None:
    data = image_archive(
        "registry.k8s.io/pause:3.10.1", [ImageFile("/pause", b"\x7fELF")], ["/pause"], arch="amd64"
    )
    files = _members(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:3.10.1"
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "3.10.1"
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(blob).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files["blobs/sha256/" + desc["digest"][7:]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["architecture"] == "amd64"
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"][7:]]
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = tar.getmember("pause")
        assert member.mode == 0o755
        assert tar.extractfile(member).read() == b"\x7fELF"  # type: ignore[union-attr]


def test_same_input_same_bytes() -> None:
    args = ("x/y:1", [ImageFile("/bin/y", b"abc")], ["/bin/y"])
    assert image_archive(*args, arch="arm64") == image_archive(*args, arch="arm64")


@pytest.mark.parametrize(
    ("ref", "files"),
    [("x/y", [ImageFile("/y", b"")]), ("x/y:1", []), ("x/y:1", [ImageFile("y", b"")])],
)
def test_bad_input_is_refused(ref: str, files: list[ImageFile]) -> None:
    with pytest.raises(ValueError):
        image_archive(ref, files, ["/y"])
