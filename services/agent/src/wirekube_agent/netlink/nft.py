"""Our nftables table through the ``nft`` command: list, apply, delete.

Thin on purpose: what the rules are and how they are diffed is pure
(``wirekube_agent.gateway.natrules``); this module only runs ``nft -j list table``,
feeds a transaction to ``nft -f -`` (all of it applies or none does) and
deletes the table. Only ``table ip wirekube`` is ever named, so nothing here
can touch another program's rules. (``nft`` rather than raw netlink: its
JSON listing and script input are stable interfaces, and the agent image
ships it.)
"""

from __future__ import annotations

import json
import logging
import subprocess
from typing import Any

from wirekube_agent.gateway.natrules import FAMILY, TABLE, Observed, counters, parse_listing

log = logging.getLogger(__name__)

NFT = "nft"
# nft finishes in milliseconds; a hung binary must not hang the reconcile pass.
NFT_TIMEOUT_S = 10.0
# What nft says when the table does not exist (ENOENT).
_MISSING = "No such file or directory"


class NftError(RuntimeError):
    pass


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [NFT, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NftError(f"{NFT} not found: install nftables") from exc
    except subprocess.TimeoutExpired as exc:
        raise NftError(f"{NFT} {' '.join(args)} timed out") from exc


def listing() -> dict[str, Any] | None:
    """``nft -j list table ip wirekube`` as JSON; None when the table does not exist."""
    proc = _run(["-j", "list", "table", FAMILY, TABLE])
    if proc.returncode != 0:
        if _MISSING in proc.stderr:
            return None
        raise NftError(f"nft list failed: {proc.stderr.strip()}")
    try:
        doc = json.loads(proc.stdout)
    except ValueError as exc:
        raise NftError(f"nft printed invalid JSON: {exc}") from exc
    return doc if isinstance(doc, dict) else None


def observed() -> Observed:
    doc = listing()
    return parse_listing(doc) if doc is not None else Observed()


def rule_counters() -> dict[str, tuple[int, int]]:
    """Rule comment -> (packets, bytes) for every rule in our table."""
    doc = listing()
    return counters(doc) if doc is not None else {}


def apply(script: str) -> None:
    """Run one ``nft -f -`` transaction (atomic: all or nothing)."""
    proc = _run(["-f", "-"], stdin=script)
    if proc.returncode != 0:
        raise NftError(f"nft -f failed: {proc.stderr.strip()}\n--- script ---\n{script}")


def delete_table() -> bool:
    """Remove our table and every rule in it; False when there was none."""
    proc = _run(["delete", "table", FAMILY, TABLE])
    if proc.returncode == 0:
        return True
    if _MISSING in proc.stderr:
        return False
    raise NftError(f"nft delete table failed: {proc.stderr.strip()}")
