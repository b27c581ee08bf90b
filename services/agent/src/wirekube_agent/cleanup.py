"""Removing what an agent leaves behind: all of it, or only what is stale.

``cleanup`` removes everything of the mesh from the node: the interface
(kernel or wireguard-go tun), every route in our table, our ip rules and our
nftables table (``table ip wirekube``, the gateway's forward/SNAT rules). The
agent runs it when its node leaves the mesh.

``cleanup_stale`` is ``wirekube-agent cleanup``, the DaemonSet's
initContainer. It runs before *every* agent start, and most starts are not
after a crash or a reboot but a rollout or a kubelet restart of a healthy
agent, whose interface (kernel WireGuard lives in the host's network
namespace, outside the pod) still carries the node's traffic. Removing it
would cut every tunnel of the node until the new agent rebuilt them. So the
interface and the routes, rules and nftables table that go with it stay when
the interface is this node's: it answers and holds the node's persisted
private key, or holds no key at all yet (a device the platform created, which
no agent configured). Everything goes, as ``cleanup``, when the interface is
stale: unreadable (a tun whose wireguard-go died, a wedged daemon), of another
kind, or keyed with a key that is not the node's (state from a previous
installation or a lost key). With no interface, routes through it are gone
with it and the rules and nftables table left are stale. A pristine device
keeps its interface but loses the rules and table: no agent wrote them for it.
The new agent adopts what stays and converges by diff (``dataplane``).
(An agent stopped mid key rotation, after storing the new key and before
switching the device to it, leaves a device with the old key: judged stale
and rebuilt, one outage, as every restart was before.)

Idempotent; touches nothing it does not own. IP forwarding is left as it
is: cleanup cannot know who turned it on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from wirekube_common import wgkey
from wirekube_common.wireguard.types import DeviceState

log = logging.getLogger(__name__)

KEY_FILE = "private.key"  # keys.KEY_FILE: read here, never created

Verdict = Literal["keep", "keep-interface", "remove"]


@dataclass(frozen=True)
class Found:
    """What the initContainer sees of the interface."""

    kind: str | None  # link kind: None (absent), "wireguard", "tun", ...
    device: DeviceState | None  # None: the device did not answer
    node_key: bytes | None  # the node's persisted private key (None: none readable)


def judge(found: Found) -> tuple[Verdict, str]:
    """Keep everything, keep only the interface, or remove everything; and why. Pure."""
    if found.kind is None:
        return "remove", "no interface: whatever of ours is left is stale"
    if found.kind not in ("wireguard", "tun"):
        return "remove", f"a {found.kind} link, not a WireGuard device"
    if found.device is None:
        return "remove", "the device does not answer (no daemon behind the tun?)"
    if found.device.private_key is None:
        if found.device.peers:
            return "remove", "peers but no private key"
        return "keep-interface", "a device no agent configured yet"
    if found.node_key is None:
        return "remove", "the node has no persisted key to match the device's"
    if found.device.private_key != found.node_key:
        return "remove", "keyed with a key that is not the node's"
    return "keep", "this node's healthy interface"


def read_node_key(state_dir: str) -> bytes | None:
    try:
        with open(os.path.join(state_dir, KEY_FILE), encoding="ascii") as f:
            return wgkey.decode(f.read().strip())
    except (OSError, UnicodeDecodeError, wgkey.InvalidKey):
        return None


def read_device(kind: str | None, interface: str) -> DeviceState | None:
    """The device's configuration through the API of its kind; None if it does not answer."""
    try:
        if kind == "wireguard":
            from wirekube_agent.netlink import wireguard  # noqa: PLC0415 - kernel only

            return wireguard.get(interface)
        if kind == "tun":
            from wirekube_common.wireguard.uapi import UapiClient  # noqa: PLC0415

            return UapiClient(interface).get()
    except Exception as exc:  # any failure to read means: cannot be trusted
        log.info("cleanup: cannot read %s: %s", interface, exc)
    return None


def _sysfs_tun(interface: str) -> bool:
    return os.path.exists(f"/sys/class/net/{interface}/tun_flags")


def cleanup_stale(interface: str, state_dir: str) -> dict[str, int]:
    """The initContainer: remove only stale state (module docstring)."""
    node_key = read_node_key(state_dir)
    kept = {"interface": 0, "routes": 0, "rules": 0, "nft_table": 0, "kept": 1}
    # Without netlink where it can: a tun whose wireguard-go answers with the
    # node's key is kept. pyroute2's import (netlink/) alone took 1 s on a loaded lab
    # node, and every agent restart (relayed peers' outage) waits for this.
    # Only "keep" is decided here: anything else takes the full path below.
    if _sysfs_tun(interface):
        found = Found("tun", read_device("tun", interface), node_key)
        verdict, why = judge(found)
        if verdict == "keep":
            log.info("cleanup: %s: %s (%s)", interface, verdict, why)
            return kept
    from wirekube_agent.netlink import link, session  # noqa: PLC0415 - see above

    with session() as ipr:
        kind = link.kind(ipr, interface)
    found = Found(kind, read_device(kind, interface), node_key)
    verdict, why = judge(found)
    log.info("cleanup: %s: %s (%s)", interface, verdict, why)
    if verdict == "keep":
        return kept
    return cleanup(interface, keep_interface=verdict == "keep-interface") | {"kept": 0}


def cleanup(interface: str, keep_interface: bool = False) -> dict[str, int]:
    """Remove everything of the mesh from the node (leaving the mesh)."""
    # netlink imports pyroute2: cleanup_stale's fast path avoids it.
    from wirekube_agent.netlink import link, nft, routes, rules, session  # noqa: PLC0415

    with session() as ipr:
        removed = {
            "interface": 0 if keep_interface else int(link.delete(ipr, interface)),
            "routes": routes.flush(ipr),
            "rules": rules.delete_all_ours(ipr),
        }
    try:
        removed["nft_table"] = int(nft.delete_table())
    except nft.NftError as exc:  # no nft binary: there can be no table of ours either
        log.warning("cleanup: cannot remove the nftables table: %s", exc)
        removed["nft_table"] = 0
    log.info(
        "cleanup: interface %s removed=%d, %d routes, %d rules, nft table removed=%d",
        interface,
        removed["interface"],
        removed["routes"],
        removed["rules"],
        removed["nft_table"],
    )
    return removed
