"""A one-file container image as an OCI image-layout archive (for ``ctr import``).

The lab's cluster add-ons are single static binaries built from source
(``tools/kubenode/build.sh``): the pod sandbox's ``pause`` and CoreDNS. An
image for such a binary needs no base and no builder: one uncompressed layer
holding the file, a config naming it as the entrypoint, a manifest and an
index. :func:`image_archive` returns the archive's bytes (pure: same input,
same bytes), so it is unit-tested by reading it back.

containerd 1.6 names an imported image after the index's
``io.containerd.image.name`` annotation; ``org.opencontainers.image.ref.name``
carries the tag for other readers of the layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from dataclasses import dataclass

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
# Fixed timestamps keep archives byte-identical from one build to the next.
EPOCH = 0

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_arch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(frozen=True)
class ImageFile:
    path: str  # inside the image, absolute
    data: bytes
    mode: int = 0o755


def _tar(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_archive(
    reference: str,
    files: list[ImageFile],
    entrypoint: list[str],
    *,
    arch: str | None = None,
    user: str = "0",
) -> bytes:
    """An OCI layout tarball holding one image called ``reference`` (``repo:tag``)."""
    if ":" not in reference.rsplit("/", 1)[-1]:
        raise ValueError(f"image reference needs a tag: {reference!r}")
    if not files or any(not f.path.startswith("/") for f in files):
        raise ValueError("an image needs files with absolute paths")
    layer = _tar([(f.path.lstrip("/"), f.data, f.mode) for f in files])
    config = _json(
        {
            "architecture": arch or host_arch(),
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": _digest(layer), "size": len(layer)}],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MANIFEST_TYPE,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    )
    blobs = [(f"blobs/sha256/{_digest(b)[7:]}", b, 0o644) for b in (layer, config, manifest)]
    layout = ("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644)
    return _tar([layout, ("index.json", index, 0o644), *blobs])
