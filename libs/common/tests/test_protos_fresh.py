"""The committed gRPC stubs match what scripts/gen-protos.sh generates from protos/."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from wirekube_common.protos.wirekube.relay.v1 import admin_pb2, admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "libs/common/src/wirekube_common/protos"


def _files(base: Path) -> set[str]:
    return {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_protos_are_fresh(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen-protos.sh"), str(tmp_path)], check=True, env=env
    )
    fresh, committed = _files(tmp_path), _files(COMMITTED)
    assert fresh == committed, "run scripts/gen-protos.sh: file set differs"
    stale = [p for p in sorted(fresh) if not filecmp.cmp(tmp_path / p, COMMITTED / p, False)]
    assert not stale, f"run scripts/gen-protos.sh: stale {stale}"


def test_stubs_import_and_describe_relay_admin() -> None:
    svc = admin_pb2.DESCRIPTOR.services_by_name["RelayAdmin"]
    assert {m.name for m in svc.methods} == {"GetStats", "ListPeers"}
    assert hasattr(admin_pb2_grpc, "RelayAdminStub")
