"""Names of everything a lab run creates, derived from one per-run identity.

Every network namespace of a run is called ``wklab-<pid>-<run>-<entity>``:
``pid`` is the owner process, ``run`` five random base-36 characters. The
owner PID lets a later run recognise leftovers of a run that died without
tearing down (SIGKILL, power loss): if no process with that PID exists, the
namespaces are stale and are swept. Parsing is strict so the sweep never
touches a namespace it did not create.

Names that live in a *shared* kernel namespace must be unique per run too:
the root-side veth of the control-plane link (``wkl<run>cp``, the root
namespace's interface names are global) and WireGuard interface names
(``wk<run><n>``, because ``/var/run/wireguard`` is shared by all network
namespaces). Both stay within the kernel's 15-character interface-name limit.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass

NETNS_PREFIX = "wklab-"
IFNAMSIZ = 15
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_RUN_RE = re.compile(
    r"^wklab-(?P<pid>[1-9][0-9]{0,9})-(?P<run>[a-z0-9]{5})-(?P<entity>[a-z0-9-]+)$"
)


@dataclass(frozen=True)
class RunIds:
    """The identity of one lab run."""

    pid: int
    run: str

    @classmethod
    def new(cls) -> RunIds:
        return cls(pid=os.getpid(), run="".join(secrets.choice(_ALPHABET) for _ in range(5)))

    @property
    def prefix(self) -> str:
        return f"{NETNS_PREFIX}{self.pid}-{self.run}-"

    def netns(self, entity: str) -> str:
        return self.prefix + entity

    @property
    def control_ifname(self) -> str:
        return f"wkl{self.run}cp"

    def wireguard_ifname(self, index: int) -> str:
        name = f"wk{self.run}{index}"
        if len(name) > IFNAMSIZ:
            raise ValueError(f"interface index {index} too large")
        return name


@dataclass(frozen=True)
class ParsedNetns:
    name: str
    pid: int
    run: str
    entity: str


def parse_netns(name: str) -> ParsedNetns | None:
    """Recognise one of our namespace names; None for anything else."""
    match = _RUN_RE.match(name)
    if match is None:
        return None
    return ParsedNetns(name=name, pid=int(match["pid"]), run=match["run"], entity=match["entity"])


def stale_namespaces(names: list[str], alive: set[int]) -> list[ParsedNetns]:
    """Our namespaces whose owner PID is not in ``alive`` (pure; the caller probes PIDs)."""
    out: list[ParsedNetns] = []
    for name in names:
        parsed = parse_netns(name)
        if parsed is not None and parsed.pid not in alive:
            out.append(parsed)
    return out
