"""rotate-key: the request and reading its progress off the peer. Pure."""

from __future__ import annotations

import pytest

from wirekube_cli import rotate
from wirekube_cli.__main__ import main

T0 = 1_800_000_000.0


def peer(handled: str | None, rotated_at: str | None, last_handshake: str | None) -> dict:
    annotations = {}
    if handled is not None:
        annotations[rotate.HANDLED_ANNOTATION] = handled
    if rotated_at is not None:
        annotations[rotate.ROTATED_AT_ANNOTATION] = rotated_at
    status = {"lastHandshake": last_handshake} if last_handshake else {}
    return {
        "metadata": {"name": "node-a", "annotations": annotations},
        "spec": {"publicKey": "NEW="},
        "status": status,
    }


def test_request_ids_are_fresh_and_the_patch_sets_only_the_annotation() -> None:
    a, b = rotate.request_id(T0), rotate.request_id(T0)
    assert a != b and a.startswith("20270115T") and len(a) <= rotate.MAX_REQUEST_LEN
    assert rotate.annotation_patch(a) == {
        "metadata": {"annotations": {rotate.REQUEST_ANNOTATION: a}}
    }


def test_progress_published_then_handshake() -> None:
    assert not rotate.progress(None, "r1").published
    # another request handled: not ours yet
    assert not rotate.progress(peer("r0", "2027-01-15T08:00:00.000Z", None), "r1").published
    published = rotate.progress(
        peer("r1", "2027-01-15T08:00:00.500Z", "2027-01-15T07:59:00Z"), "r1"
    )
    assert published.published and not published.handshake and not published.done
    assert published.public_key == "NEW="
    # lastHandshake is to the second: the same second as the rotation counts
    done = rotate.progress(peer("r1", "2027-01-15T08:00:00.500Z", "2027-01-15T08:00:00Z"), "r1")
    assert done.done


@pytest.mark.parametrize("garbage", ["soon", "2027-01-15T08:00:00", "9" * 80])
def test_progress_with_a_malformed_time_never_claims_a_handshake(garbage: str) -> None:
    assert not rotate.progress(peer("r1", garbage, "2027-01-15T08:00:00Z"), "r1").handshake
    assert not rotate.progress(peer("r1", "2027-01-15T08:00:00Z", garbage), "r1").handshake


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate-key", "--help"]) == 0
    assert "--wait" in capsys.readouterr().out
    assert main(["rotate-key"]) == 2
    assert main(["rotate-key", "n1", "--timeout", "soon"]) == 2
