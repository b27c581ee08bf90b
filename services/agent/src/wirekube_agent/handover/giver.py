"""The old agent's side of the handover (protocol.py): a thread that listens
on ``<state-dir>/handover.sock`` and, asked by a new agent, gives it the
relay bridge's sockets and steps back. The decisions are ``protocol.Giver``'s;
the agent supplies what each step does (``Steps``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wirekube_agent.handover import protocol, wire
from wirekube_agent.handover.protocol import Act

log = logging.getLogger(__name__)

#: A connection must send its request within this.
REQUEST_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Steps:
    """What the agent does at each decision (run on the giver's thread)."""

    offer: Callable[[], dict[bytes, int]]  # freeze, release the port; the sockets (ours to close)
    quiesce: Callable[[], None]  # the bridge stops reading the sockets
    retire: Callable[[], None]  # the new agent took over: let go of the bridge
    resume: Callable[[], None]  # the handover failed: carry on as before


def path(state_dir: str) -> str:
    return os.path.join(state_dir, protocol.SOCKET_NAME)


class GiverServer:
    """Listens for a new agent; ``start`` binds (replacing a stale or an
    older agent's socket file: the newest agent is the one to ask)."""

    def __init__(self, state_dir: str, steps: Steps, timeout: float = protocol.GIVER_TIMEOUT_S):
        self.path = path(state_dir)
        self.steps = steps
        self.timeout = timeout
        self.machine = protocol.Giver()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._run, name="handover", daemon=True)
        self._stop = threading.Event()

    def start(self) -> GiverServer:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._listener.bind(self.path)
        os.chmod(self.path, 0o600)  # root's agents only: it hands out sockets
        self._listener.listen(4)
        self._listener.settimeout(0.5)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    @property
    def retired(self) -> bool:
        return self.machine.state is protocol.GiverState.RETIRED

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.retired:
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    log.warning("handover: accept failed: %s", exc)
                    self._stop.wait(0.5)
                    continue
                with conn:
                    self._serve(conn)
        finally:
            self._listener.close()  # retired: the new agent listens at the path now

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        try:
            obj = wire.recv_json(conn)
            msg = protocol.decode(obj) if obj is not None else None
        except (OSError, ValueError) as exc:
            log.warning("handover: unreadable request: %s", exc)
            return
        if msg is None:
            return
        act = self.machine.on_request(msg, time.monotonic(), self.timeout)
        if act is Act.REFUSE:
            log.warning("handover: refused: %s", self.machine.refusal)
            with contextlib.suppress(OSError):
                wire.send_json(conn, protocol.encode(protocol.Refuse(self.machine.refusal)))
            return
        log.info("handover: a new agent asks for the node; stepping back")
        sockets = self.steps.offer()
        try:
            wire.send_json(conn, protocol.encode(protocol.Offer(tuple(sockets))))
            wire.send_fds(conn, list(sockets.values()))
            log.info("handover: gave %d relay sockets; waiting for done", len(sockets))
        except OSError as exc:
            log.warning("handover: the new agent went away (%s)", exc)
            self._act(self.machine.on_message(None))
            return
        finally:
            for fd in sockets.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wait_done(conn)

    def _wait_done(self, conn: socket.socket) -> None:
        while True:
            remaining = self.machine.deadline - time.monotonic()
            if remaining <= 0:
                log.warning("handover: no done within %.0fs; resuming", self.timeout)
                self._act(self.machine.on_tick(time.monotonic()))
                return
            conn.settimeout(min(remaining, 1.0))
            try:
                obj = wire.recv_json(conn)
            except TimeoutError:
                continue
            except (OSError, ValueError) as exc:
                log.warning("handover: %s", exc)
                obj = None
            try:
                msg = protocol.decode(obj) if obj is not None else None
            except protocol.ProtocolError as exc:
                log.warning("handover: %s", exc)
                msg = None
            if msg is None:
                log.warning("handover: the new agent went away before done; resuming")
            act = self.machine.on_message(msg)
            if act is Act.QUIESCE:
                self.steps.quiesce()
                try:
                    wire.send_json(conn, protocol.encode(protocol.Quiet()))
                except OSError as exc:
                    log.warning("handover: %s", exc)
                continue
            self._act(act)
            return

    def _act(self, act: Act) -> None:
        if act is Act.RETIRE:
            log.info("handover: done; the new agent has the node (waiting for SIGTERM)")
            self.steps.retire()
        elif act is Act.RESUME:
            self.steps.resume()
