"""Admission: proof of key possession (relayproto.handshake) plus the optional allow-list.

``Authenticator`` hands each new connection a ``ServerHandshake`` and, once the
proof verified, decides whether the proven key may register: with the
allow-list enabled only keys published in a WireKubePeer's ``spec.publicKey``
are admitted. The allow-list is filled by ``k8s.py`` (the only module that
imports the Kubernetes client) through ``AllowList.replace``/``add``/``remove``;
translation from a WireKubePeer dict to a key is the pure ``peer_key``.

A key rotation announces the instant the node switches to its new key
(``wirekube_common.keyswitch``): until then the node's relay links still
register under the old key, so the old key stays admitted until that instant
and ``ROTATION_GRACE_S`` (``retained``), then leaves the list, which closes any
registration still using it. Meanwhile frames addressed to the old key go
to the node's new registration (``AllowList.moved``): the node re-registers
under its new key at the instant, while the other nodes still address it by
the old one for a moment (until they swap its peer entry, just after), and
those packets are still for it (its WireGuard still decrypts the old
sessions).

Until the first full list of WireKubePeers arrived, an enabled allow-list
admits nobody (reason ``allowlist-not-ready``): failing closed is right for a
security control, and clients retry with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wirekube_common import keyswitch, wgkey
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


# How long after its announced switch instant a rotated node's old key is
# still admitted: the node switches on a timer at the instant, a pass's length
# late at worst; its links then re-register under the new key and close the
# old registrations themselves. Past this, the old key is a leftover.
ROTATION_GRACE_S = 1.0


def retained(
    previous: Mapping[str, bytes],
    current: Mapping[str, bytes],
    announced: Mapping[str, float | None],
    kept: Mapping[str, tuple[bytes, float]],
    now: float,
) -> dict[str, tuple[bytes, float]]:
    """Old keys still admitted after a rotation: peer name -> (key, until).

    ``previous``/``current``: each WireKubePeer's key before and after this
    change; ``announced``: the switch instant of the peers whose key changed.
    A key replaced with an announced instant stays until
    ``keyswitch.old_key_until(instant, now) + ROTATION_GRACE_S``; one replaced
    without an instant, or whose peer is gone, leaves at once.
    """
    out = {
        name: (key, until)
        for name, (key, until) in kept.items()
        if until > now and name in current and current[name] != key
    }
    for name, key in current.items():
        old = previous.get(name)
        instant = announced.get(name)
        if old is None or old == key or instant is None:
            continue
        until = keyswitch.old_key_until(instant, now) + ROTATION_GRACE_S
        if until > now:
            out[name] = (old, until)
    return out


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
        # Rotations in flight: old key -> the same node's new key (``retained``).
        # Replaced whole by the writer, read on the loop's hot path.
        self.moved: Mapping[bytes, bytes] = {}

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
