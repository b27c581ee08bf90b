"""The new agent's side of the handover (protocol.py): ask a live old agent
on this node for its relay sockets, then tell it when we are done."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

from wirekube_agent.handover import protocol, wire
from wirekube_agent.handover.giver import path

log = logging.getLogger(__name__)


class Handover:
    """A handover in progress: the old agent's sockets are in ``sockets``
    (descriptors, ours) until given to our bridge."""

    def __init__(self, conn: socket.socket, sockets: dict[bytes, int], machine: protocol.Taker):
        self.conn = conn
        self.sockets = sockets
        self.machine = machine
        self.offered_at = time.monotonic()

    def quiesce(self, timeout: float = protocol.QUIESCE_TIMEOUT_S) -> bool:
        """Our bridge is about to register: the old one stops reading the
        sockets. False (and we go on) when it did not say so in time."""
        if self.machine.state is not protocol.TakerState.HOLDING:
            return False
        started = time.monotonic()
        try:
            wire.send_json(self.conn, protocol.encode(protocol.Registering()))
            self.conn.settimeout(timeout)
            obj = wire.recv_json(self.conn)
            quiet = obj is not None and isinstance(protocol.decode(obj), protocol.Quiet)
        except (OSError, ValueError) as exc:
            log.warning("handover: the old bridge did not quiesce (%s)", exc)
            return False
        finally:
            self.conn.settimeout(None)
        log.info("handover: the old bridge is quiet (%.3fs)", time.monotonic() - started)
        return quiet

    def done(self) -> None:
        """Our first pass ran and our relay links are up: the old agent retires.
        An old agent already gone (its pod deleted) needs no telling."""
        try:
            wire.send_json(self.conn, protocol.encode(protocol.Done()))
        except OSError as exc:
            log.info("handover: the old agent is gone already (%s)", exc)
        finally:
            self.machine.sent_done()
            self.conn.close()

    def abandon(self) -> None:
        """Give up (the old agent resumes when our end closes)."""
        self.conn.close()


def take_over(state_dir: str, timeout: float = protocol.OFFER_TIMEOUT_S) -> Handover | None:
    """Ask the old agent, if one listens, for the node. None: start alone."""
    where = path(state_dir)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(where)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None  # no old agent (first start, crash, reboot, or a version without handover)
    except OSError as exc:
        conn.close()
        log.warning("handover: cannot reach %s (%s); starting alone", where, exc)
        return None
    machine = protocol.Taker()
    started = time.monotonic()
    reply: protocol.Message | None = None
    fds: list[int] = []
    try:
        wire.send_json(conn, protocol.encode(protocol.Request(protocol.VERSION)))
        obj = wire.recv_json(conn)
        reply = protocol.decode(obj) if obj is not None else None
        if isinstance(reply, protocol.Offer):
            fds = wire.recv_fds(conn, len(reply.keys))
    except (OSError, ValueError) as exc:
        log.warning("handover: %s", exc)
        reply = None
    machine.on_reply(reply, time.monotonic())
    if machine.state is not protocol.TakerState.HOLDING:
        log.info("handover: %s; starting alone", machine.why_alone)
        conn.close()
        return None
    assert isinstance(reply, protocol.Offer)
    try:
        sockets = protocol.adopted_sockets(reply.keys, fds)
    except protocol.ProtocolError as exc:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        log.warning("handover: %s; starting alone", exc)
        conn.close()
        return None
    conn.settimeout(None)
    log.info(
        "handover: took %d relay sockets from the old agent in %.2fs",
        len(sockets),
        time.monotonic() - started,
    )
    return Handover(conn, sockets, machine)
