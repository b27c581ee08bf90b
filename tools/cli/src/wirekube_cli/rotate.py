"""``wirekubectl rotate-key NODE``: ask a node's agent for a new WireGuard key pair.

The request is the Node annotation ``wirekube.io/rotate-key`` set to a fresh
id (docs/keyrotation.md); the agent rotates once per distinct value and
records the value it handled on its WireKubePeer, in the same write that
publishes the new public key. With ``--wait`` the command follows that peer
until (1) the request is recorded as handled, i.e. the new key is published,
and (2) its status shows a WireGuard handshake made under the new key (the
agent publishes the first handshake after its switch at once). ``progress``
reads both off the peer object and is pure.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wirekube_common.kube.times import unix_or_none

REQUEST_ANNOTATION = "wirekube.io/rotate-key"
HANDLED_ANNOTATION = "wirekube.io/key-rotation-handled"
ROTATED_AT_ANNOTATION = "wirekube.io/key-rotated-at"
# The agent reacts within a reconcile pass of the Node watch event; its first
# handshake under the new key follows within a WireGuard handshake. A minute
# covers a loaded node and an API server that is slow to fan out.
DEFAULT_WAIT_S = 60.0
POLL_S = 0.5
# What the agent accepts as a request (wirekube_agent.keys.rotation.MAX_REQUEST_LEN).
MAX_REQUEST_LEN = 253


def request_id(now: float) -> str:
    """A fresh, sortable request id: UTC time plus a random suffix (two
    requests in one second are still distinct)."""
    stamp = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}"


def annotation_patch(request: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {REQUEST_ANNOTATION: request}}}


@dataclass(frozen=True)
class Progress:
    published: bool  # the agent handled the request: its new public key is out
    public_key: str | None
    handshake: bool  # a handshake under the new key is reported

    @property
    def done(self) -> bool:
        return self.published and self.handshake


def progress(peer: Mapping[str, Any] | None, request: str) -> Progress:
    if not peer:
        return Progress(False, None, False)
    meta = peer.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    key = (peer.get("spec") or {}).get("publicKey")
    published = annotations.get(HANDLED_ANNOTATION) == request
    if not published:
        return Progress(False, key if isinstance(key, str) else None, False)
    rotated_at = unix_or_none(annotations.get(ROTATED_AT_ANNOTATION))
    handshake_at = unix_or_none((peer.get("status") or {}).get("lastHandshake"))
    # lastHandshake is written to the second (truncated): compare at that grain.
    handshake = (
        rotated_at is not None and handshake_at is not None and handshake_at >= int(rotated_at)
    )
    return Progress(True, key if isinstance(key, str) else None, handshake)
