"""The leader-election loop: read the Lease, write what ``election`` plans.

One asyncio task. Every retry period it GETs the Lease and, when the pure
``Elector`` says so, creates it or PUTs it back with the resourceVersion it
read (a concurrent writer makes that fail with 409: someone else won this
round, nothing is recorded). ``is_leader()`` is computed from the last
successful renewal and the renew deadline at the moment it is asked, so a
leader cut off from the API stops acting on time even if this loop is stuck
in a request. On cancellation (SIGTERM) a leader releases the Lease: the
standby takes over on its next attempt instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable

from wirekube_gateway.election.elector import Action, Elector, LeaseRecord
from wirekube_gateway.kube import ApiException, ControllerApi
from wirekube_gateway.timers import (
    ELECTION_REQUEST_TIMEOUT_S,
    RELEASE_TIMEOUT_S,
    RETRY_JITTER,
    RETRY_PERIOD_S,
)

log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElection:
    def __init__(
        self,
        api: ControllerApi,
        namespace: str,
        name: str,
        elector: Elector,
        retry_period_s: float = RETRY_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.elector = elector
        self.retry_period_s = retry_period_s
        self.clock = clock
        self.changed = asyncio.Event()  # set on every change of leadership
        self.leading = False  # as of the last check (for logs and edges)
        self.became_leader = 0  # times this process acquired leadership
        self.last_attempt = 0.0  # monotonic; for liveness
        self._resource_version = ""

    @property
    def identity(self) -> str:
        return self.elector.identity

    def is_leader(self) -> bool:
        return self.elector.is_leader(self.clock())

    def _edge(self) -> None:
        now = self.is_leader()
        if now == self.leading:
            return
        self.leading = now
        if now:
            self.became_leader += 1
            log.info("became leader", extra={"identity": self.identity, "lease": self.name})
        else:
            log.warning(
                "not leading any more",
                extra={"identity": self.identity, "holder": self.elector.holder or "(none)"},
            )
        self.changed.set()

    async def run(self) -> None:
        try:
            while True:
                await self._attempt()
                self._edge()
                delay = self.retry_period_s
                if not self.leading:
                    delay *= 1 + random.uniform(0, RETRY_JITTER)
                await asyncio.sleep(delay)
        finally:
            await self._release()

    async def _attempt(self) -> None:
        started = self.clock()
        self.last_attempt = started
        try:
            obj = await asyncio.to_thread(
                self.api.get_lease, self.namespace, self.name, ELECTION_REQUEST_TIMEOUT_S
            )
            current = None
            if obj is not None:
                self._resource_version = str(obj["metadata"].get("resourceVersion", ""))
                current = LeaseRecord.from_spec(obj.get("spec") or {})
            attempt = self.elector.plan(current, started, _utcnow())
            if attempt.action is Action.NONE or attempt.record is None:
                return
            spec = attempt.record.to_spec()
            if attempt.action is Action.CREATE:
                written = await asyncio.to_thread(
                    self.api.create_lease,
                    self.namespace,
                    self.name,
                    spec,
                    ELECTION_REQUEST_TIMEOUT_S,
                )
            else:
                written = await asyncio.to_thread(
                    self.api.replace_lease,
                    self.namespace,
                    self.name,
                    self._resource_version,
                    spec,
                    ELECTION_REQUEST_TIMEOUT_S,
                )
            self._resource_version = str(written["metadata"].get("resourceVersion", ""))
            was = self.leading
            self.elector.succeeded(attempt.record, started)
            if not was:
                log.info(
                    "acquired the lease",
                    extra={"identity": self.identity, "why": attempt.reason},
                )
        except ApiException as exc:
            if exc.status in (409, 422):
                log.debug("lost a lease race", extra={"status": exc.status})
            else:
                log.warning(
                    "leader election request failed",
                    extra={"status": exc.status, "error": str(exc.reason)},
                )
        except Exception as exc:  # connection refused, timeouts, TLS...
            log.warning(
                "leader election request failed", extra={"error": f"{type(exc).__name__}: {exc}"}
            )

    async def _release(self) -> None:
        record = self.elector.release(_utcnow())
        self.elector.released()
        self.leading = False
        if record is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.to_thread(
                    self.api.replace_lease,
                    self.namespace,
                    self.name,
                    self._resource_version,
                    record.to_spec(),
                    RELEASE_TIMEOUT_S,
                ),
                RELEASE_TIMEOUT_S + 1,
            )
            log.info("released the lease", extra={"identity": self.identity})
