"""The node's WireGuard private key: generated once, kept across restarts.

Stored base64 in ``<state-dir>/private.key`` with mode 0600, written to a temp
file and renamed so a crash never leaves a truncated key (a new key would
force every other node to reconfigure). The public key is derived, never
stored, so the two can never disagree.
"""

from __future__ import annotations

import logging
import os

from wirekube_common import wgkey

log = logging.getLogger(__name__)

KEY_FILE = "private.key"


def load_or_create(state_dir: str) -> bytes:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, KEY_FILE)
    try:
        with open(path, encoding="ascii") as f:
            key = wgkey.decode(f.read().strip())
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return key
    except FileNotFoundError:
        pass
    except (wgkey.InvalidKey, UnicodeDecodeError) as exc:
        # Keep the unreadable file for forensics rather than silently replacing it.
        os.replace(path, path + ".corrupt")
        log.error("private key at %s unreadable (%s); generated a new one", path, exc)
    key = wgkey.generate_private_key()
    _store(state_dir, key)
    log.info(
        "generated a new WireGuard key pair",
        extra={"public_key": wgkey.encode(wgkey.public_key(key))},
    )
    return key


def rotate(state_dir: str) -> bytes:
    """A new key pair replacing the stored one (key rotation, ``keyrotation``).

    Stored before anyone learns of it: an agent that dies right after
    publishing the new public key restarts with the matching private key.
    """
    key = wgkey.generate_private_key()
    _store(state_dir, key)
    return key


def _store(state_dir: str, key: bytes) -> None:
    """Write the key atomically: temp file, fsync, rename, fsync the directory."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, KEY_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(wgkey.encode(key) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
