"""The bridge's local UDP port per relayed peer, kept across agent restarts.

WireGuard's endpoint for a relayed peer is the bridge socket
``127.0.0.1:<port>``. The interface outlives the agent (kernel WireGuard, or
a wireguard-go the agent adopts), the bridge does not: it dies with the
agent's pod. A new bridge that bound new ports would leave every relayed
peer's endpoint pointing at nothing until the new agent rewrote it, after a
full pass. So the agent writes the ports here whenever they change, and the
next bridge binds the same ones (``RelayBridge(ports=)``); WireGuard's
packets for a relayed peer flow again the moment the new bridge is up.

The file is ``<state-dir>/relay-ports.json``, ``{base64 key: port}``, written
to a temp file and renamed. A file that cannot be read is no worse than none.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

FILE = "relay-ports.json"


def path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE)


def load(state_dir: str | None) -> dict[bytes, int]:
    if not state_dir:
        return {}
    try:
        with open(path(state_dir), encoding="utf-8") as f:
            doc = json.load(f)
        return {
            base64.b64decode(k, validate=True): int(v) for k, v in doc.items() if 0 < int(v) < 65536
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError, binascii.Error) as exc:
        log.warning("relay ports in %s unreadable (%s); new ports", path(state_dir), exc)
        return {}


def save(state_dir: str | None, ports: Mapping[bytes, int]) -> None:
    if not state_dir:
        return
    doc = {base64.b64encode(k).decode(): p for k, p in sorted(ports.items())}
    target = path(state_dir)
    tmp = target + ".tmp"
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only state dir costs a relayed gap at restart, no more
        log.warning("cannot keep the relay ports in %s: %s", target, exc)
