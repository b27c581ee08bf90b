"""Admission: proof of key possession (relayproto.handshake) plus the optional allow-list.

``Authenticator`` hands each new connection a ``ServerHandshake`` and, once the
proof verified, decides whether the proven key may register: with the
allow-list enabled only keys published in a WireKubePeer's ``spec.publicKey``
are admitted. The allow-list is filled by ``client/k8s.py`` (the only module that
imports the Kubernetes client) through ``AllowList.replace``/``add``/``remove``;
translation from a WireKubePeer dict to a key is the pure ``peer_key``.

Until the first full list of WireKubePeers arrived, an enabled allow-list
admits nobody (reason ``allowlist-not-ready``): failing closed is right for a
security control, and clients retry with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wirekube_common import wgkey
from wirekube_common.relayproto import frames as f
from wirekube_common.relayproto.handshake import HandshakeError, ServerHandshake

log = logging.getLogger(__name__)


def peer_key(obj: Mapping[str, Any]) -> bytes | None:
    """The WireGuard public key of a WireKubePeer object, or None if absent/invalid."""
    spec = obj.get("spec") or {}
    text = spec.get("publicKey") if isinstance(spec, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        return wgkey.decode(text)
    except wgkey.InvalidKey:
        return None


class AllowList:
    """Thread-safe set of admitted keys, written by the watcher thread, read on the loop.

    ``on_removed`` is called (from the writer's thread) with keys that left the
    set, so the server can close their connections.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.ready = not enabled
        self._keys: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()
        self.on_removed: Callable[[set[bytes]], None] | None = None

    def allows(self, key: bytes) -> str | None:
        """None when admitted, else a reason label."""
        if not self.enabled:
            return None
        if not self.ready:
            return "allowlist-not-ready"
        return None if key in self._keys else "not-allowed"

    def replace(self, keys: Iterable[bytes]) -> None:
        with self._lock:
            new = frozenset(keys)
            removed = set(self._keys - new)
            self._keys = new
            self.ready = True
        self._notify(removed)

    def __len__(self) -> int:
        return len(self._keys)

    def _notify(self, removed: set[bytes]) -> None:
        if removed and self.enabled and self.on_removed is not None:
            self.on_removed(removed)


class Authenticator:
    def __init__(self, relay_id: str, allowlist: AllowList) -> None:
        self.relay_id = relay_id
        self.allowlist = allowlist

    def new_handshake(self) -> ServerHandshake:
        return ServerHandshake(self.relay_id)

    def admit(self, key: bytes) -> None:
        """Raise HandshakeError when a key with a valid proof may still not register."""
        reason = self.allowlist.allows(key)
        if reason is not None:
            raise HandshakeError(reason, f.CLOSE_NOT_ALLOWED)
