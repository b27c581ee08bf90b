"""The handover between an old and a new agent on one node: messages and
both sides' state machines. Pure (sans-IO): ``wire.py`` moves the bytes and
the file descriptors, ``giver.py`` and ``taker.py`` act on the decisions.

Why a handover: the node's WireGuard interface outlives the agent, but the
relay bridge (the UDP socket per relayed peer that WireGuard sends to, and
the registered relay links) lives in the agent's pod. With a surge rollout
(``maxSurge: 1``) the new agent starts while the old one still runs; it
takes the old bridge's sockets over (SCM_RIGHTS: the same sockets, so not a
datagram queued in them is lost), registers its own relay links (the relay
keeps the newest registration of a key and closes the old one), and only
then does the old agent let go.

The conversation, over a unix stream socket in the node's state dir
(``<state-dir>/handover.sock``, a hostPath both pods see)::

    new -> old  {"op": "request", "version": 1}
    old -> new  {"op": "offer", "version": 1, "keys": [b64 key, ...]}
                followed by one socket per key (SCM_RIGHTS)
             or {"op": "refuse", "reason": "..."}
    new -> old  {"op": "registering"}  (its bridge is about to register)
    old -> new  {"op": "quiet"}        (the old bridge stopped reading the sockets)
    new -> old  {"op": "done"}     (its first pass ran and its relay links are up)

"registering" closes the one window where a datagram could be lost: the
relay closes the old link when the new one registers, and a datagram the old
bridge had just read and written into that link would be dropped with it.
So the old bridge stops reading just before the new one registers; for
those milliseconds WireGuard's datagrams wait in the sockets, and the new
bridge reads them once its link is up.

On the request the old agent stops its control loop (no pass, no status
write, no key rotation), releases the metrics port (the kubelet's probes
then reach the new agent) and tells its relay links not to reconnect once
the relay closes them. On "done" it retires for good: it stops its bridge
and waits for SIGTERM, touching nothing. If the new agent goes away before
"done" (EOF) or does not finish within ``GIVER_TIMEOUT_S``, the old agent
resumes as if nothing happened. The new agent gives itself
``TAKER_DEADLINE_S`` (shorter): past it, it says "done" anyway if its first
pass ran (it runs the node; its relay links are late), and otherwise exits
and its container restarts, so that two agents never run the data plane at
once. No answer to
the request within ``OFFER_TIMEOUT_S``, no socket, or a refusal: the new
agent starts alone, as without a handover.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

VERSION = 1
SOCKET_NAME = "handover.sock"
#: The new agent waits this long for the old one's offer, then starts alone.
#: The old one first lets its current pass finish (seconds on a loaded node).
OFFER_TIMEOUT_S = 10.0
#: The new agent must send "done" within this of the offer, else it exits.
TAKER_DEADLINE_S = 20.0
#: The old agent waits this long for "done", then resumes. Longer than the
#: taker's deadline: a slow new agent exits before the old one resumes.
GIVER_TIMEOUT_S = 30.0
#: The new agent waits this long for "quiet", then registers anyway.
QUIESCE_TIMEOUT_S = 1.0
#: Most sockets in one SCM_RIGHTS message (the kernel's SCM_MAX_FD is 253).
FDS_PER_MESSAGE = 200


class ProtocolError(ValueError):
    """A message that is not what this side expects."""


@dataclass(frozen=True)
class Request:
    version: int


@dataclass(frozen=True)
class Offer:
    keys: tuple[bytes, ...]  # one socket follows per key, in this order


@dataclass(frozen=True)
class Refuse:
    reason: str


@dataclass(frozen=True)
class Registering:
    pass


@dataclass(frozen=True)
class Quiet:
    pass


@dataclass(frozen=True)
class Done:
    pass


Message = Request | Offer | Refuse | Registering | Quiet | Done


def encode(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Request):
        return {"op": "request", "version": msg.version}
    if isinstance(msg, Offer):
        return {
            "op": "offer",
            "version": VERSION,
            "keys": [base64.b64encode(k).decode() for k in msg.keys],
        }
    if isinstance(msg, Refuse):
        return {"op": "refuse", "reason": msg.reason}
    if isinstance(msg, Registering):
        return {"op": "registering"}
    if isinstance(msg, Quiet):
        return {"op": "quiet"}
    return {"op": "done"}


def decode(obj: Any) -> Message:
    """A message from its JSON object; ProtocolError when malformed."""
    if not isinstance(obj, dict):
        raise ProtocolError("a message is a JSON object")
    op = obj.get("op")
    try:
        if op == "request":
            return Request(int(obj["version"]))
        if op == "offer":
            if int(obj["version"]) != VERSION:
                raise ProtocolError(f"offer of version {obj['version']}")
            keys = tuple(base64.b64decode(k, validate=True) for k in obj["keys"])
            if any(len(k) != 32 for k in keys):
                raise ProtocolError("a key is 32 bytes")
            if len(set(keys)) != len(keys):
                raise ProtocolError("a key offered twice")
            return Offer(keys)
        if op == "refuse":
            return Refuse(str(obj.get("reason", "")))
        if op == "registering":
            return Registering()
        if op == "quiet":
            return Quiet()
        if op == "done":
            return Done()
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"malformed {op}: {exc}") from exc
    raise ProtocolError(f"unknown op {op!r}")


def fd_chunks(count: int) -> list[int]:
    """How many sockets each SCM_RIGHTS message carries, in order."""
    return [min(FDS_PER_MESSAGE, count - i) for i in range(0, count, FDS_PER_MESSAGE)]


# --- the old agent's side -------------------------------------------------------------


class GiverState(enum.Enum):
    SERVING = "serving"  # running normally; a request may come
    OFFERED = "offered"  # frozen, sockets given; waiting for "done"
    RETIRED = "retired"  # the new agent took over: touch nothing until SIGTERM


class Act(enum.Enum):
    OFFER = "offer"  # freeze, release the port, give the sockets
    QUIESCE = "quiesce"  # stop reading the sockets (the new bridge registers now)
    REFUSE = "refuse"
    RETIRE = "retire"  # stop the bridge, stay frozen
    RESUME = "resume"  # unfreeze, serve the port again, links reconnect
    NOTHING = "nothing"


@dataclass
class Giver:
    state: GiverState = GiverState.SERVING
    deadline: float = 0.0
    refusal: str = ""

    def on_request(self, msg: Message, now: float, timeout: float = GIVER_TIMEOUT_S) -> Act:
        if not isinstance(msg, Request):
            self.refusal = f"expected a request, got {type(msg).__name__}"
            return Act.REFUSE
        if msg.version != VERSION:
            self.refusal = f"version {msg.version} not spoken (this agent speaks {VERSION})"
            return Act.REFUSE
        if self.state is not GiverState.SERVING:
            self.refusal = f"already {self.state.value}"
            return Act.REFUSE
        self.state = GiverState.OFFERED
        self.deadline = now + timeout
        return Act.OFFER

    def on_message(self, msg: Message | None) -> Act:
        """The taker's next message (None: its end closed, or it was malformed)."""
        if self.state is not GiverState.OFFERED:
            return Act.NOTHING
        if isinstance(msg, Registering):
            return Act.QUIESCE  # and still waiting for done
        if isinstance(msg, Done):
            self.state = GiverState.RETIRED
            return Act.RETIRE
        self.state = GiverState.SERVING
        return Act.RESUME

    def on_tick(self, now: float) -> Act:
        if self.state is GiverState.OFFERED and now >= self.deadline:
            self.state = GiverState.SERVING
            return Act.RESUME
        return Act.NOTHING


# --- the new agent's side -------------------------------------------------------------


class TakerState(enum.Enum):
    ASKING = "asking"  # request sent, waiting for the offer
    HOLDING = "holding"  # the old sockets are ours; finishing the first pass
    DONE = "done"  # "done" sent: the old agent retires
    ALONE = "alone"  # no handover: start as without one


@dataclass
class Taker:
    state: TakerState = TakerState.ASKING
    deadline: float = 0.0
    why_alone: str = ""

    def on_reply(self, msg: Message | None, now: float, deadline: float = TAKER_DEADLINE_S) -> None:
        """The old agent's answer (None: no answer in time, or its end closed)."""
        if self.state is not TakerState.ASKING:
            raise ProtocolError(f"a reply while {self.state.value}")
        if isinstance(msg, Offer):
            self.state = TakerState.HOLDING
            self.deadline = now + deadline
            return
        self.state = TakerState.ALONE
        if isinstance(msg, Refuse):
            self.why_alone = f"the old agent refused: {msg.reason}"
        elif msg is None:
            self.why_alone = "the old agent did not answer"
        else:
            self.why_alone = f"unexpected {type(msg).__name__} from the old agent"

    def ready(self, first_pass_done: bool, relay_wanted: bool, relay_up: bool) -> bool:
        """Send "done" now? After the first pass, and once our relay links are
        up where a relay is wanted (the old links are closed by then)."""
        return (
            self.state is TakerState.HOLDING and first_pass_done and (relay_up or not relay_wanted)
        )

    def overdue(self, now: float) -> bool:
        return self.state is TakerState.HOLDING and now >= self.deadline

    def sent_done(self) -> None:
        self.state = TakerState.DONE


def adopted_sockets(keys: Iterable[bytes], fds: Iterable[int]) -> dict[bytes, int]:
    """Pair the offer's keys with the descriptors received (same order)."""
    keys, fds = list(keys), list(fds)
    if len(keys) != len(fds):
        raise ProtocolError(f"{len(keys)} keys offered, {len(fds)} sockets received")
    return dict(zip(keys, fds, strict=True))
