"""The managed-relay loop: observe (caches) → desired + plan (pure) → apply (leader only).

Informers keep caches of the WireKubeMesh (one, by name), the objects this
controller owns in the relay namespace (Deployment, Services,
PodDisruptionBudget; selected by its labels) and the Nodes (for a NodePort's
address). Any change, a change of leadership or a tick wakes one pass:

1. the mesh → ``desired.desired`` (nothing when the provider is not
   ``managed`` or the mesh is gone; a spec it will not build keeps the
   objects as they are and says why in the status);
2. the mesh Secret: created once with fresh random bytes when missing, never
   rewritten; deleted with the rest when it is ours and no longer wanted;
3. ``plan.plan`` → server-side applies, deletions and Events;
4. ``status.relay`` of the mesh: the address agents will use (the shared rule
   of ``wirekube_common.relayaddress``) and why, and the replica counts.

Standbys observe and decide but never write. The Lease is the gateway
controller's: one leader runs both reconcilers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wirekube_common.crd import InvalidObject, Mesh
from wirekube_common.kube.mergepatch import merge_patch
from wirekube_common.kube.rest import ApiException, Rest
from wirekube_common.kube.watch import Informer
from wirekube_common.relayaddress import NodeAddresses, RelayAddress, choose, status_host
from wirekube_common.wakeup import Wakeup
from wirekube_gateway.election.leader import LeaderElection
from wirekube_gateway.managedrelay import desired as d
from wirekube_gateway.managedrelay.kube import (
    MESHES_PATH,
    NODES_PATH,
    WATCHED_KINDS,
    RelayApi,
    collection_path,
)
from wirekube_gateway.managedrelay.plan import Apply, Delete, Key, Note, plan
from wirekube_gateway.managedrelay.status import relay_status
from wirekube_gateway.timers import (
    DEBOUNCE_S,
    MESH_SECRET_BYTES,
    SECRET_CHECK_S,
    TICK_S,
    WRITE_TIMEOUT_S,
)

log = logging.getLogger(__name__)


@dataclass
class RelayStats:
    passes: int = 0
    last_pass: float = 0.0  # monotonic; for liveness
    write_errors: int = 0
    last_error: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


class ManagedRelayController:
    def __init__(
        self,
        new_rest: Callable[[], Rest],
        election: LeaderElection,
        config: d.RelayConfig,
        mesh_name: str,
        clock: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.election = election
        self.config = config
        self.mesh_name = mesh_name
        self.clock = clock
        self.random_bytes = random_bytes
        self.api = RelayApi(new_rest(), config.namespace)
        self.wake = Wakeup()
        self.stop_threads = threading.Event()
        self.mesh = Informer(
            "wirekubemesh",
            new_rest(),
            MESHES_PATH,
            self.wake.set,
            field_selector=f"metadata.name={mesh_name}",
        )
        self.owned = {
            kind: Informer(
                f"managed-relay-{kind.lower()}s",
                new_rest(),
                collection_path(kind, config.namespace),
                self.wake.set,
                label_selector=d.OWNED_SELECTOR,
            )
            for kind in WATCHED_KINDS
        }
        self.nodes = Informer("nodes", new_rest(), NODES_PATH, self.wake.set)
        self.informers = (self.mesh, *self.owned.values(), self.nodes)
        # Each informer blocks a thread for as long as it runs. Threads of
        # our own: in asyncio's default pool (min(32, cores + 4) workers) they
        # would starve the other reconciler's and the election's requests.
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.informers), thread_name_prefix="managed-relay-watch"
        )
        self.stats = RelayStats()
        # Applied, not yet seen back: (resourceVersion seen before, hash applied).
        self._pending: dict[Key, tuple[str, str]] = {}
        self._secret: dict[str, Any] | None = None
        self._secret_checked = -SECRET_CHECK_S
        self._problem_logged = ""

    # -- wiring ------------------------------------------------------------------
    def tasks(self) -> dict[str, Callable[[], Any]]:
        """The supervised tasks: one per informer and the loop."""
        out: dict[str, Callable[[], Any]] = {
            f"watch-{i.name}": functools.partial(self._watch, i) for i in self.informers
        }
        out["managed-relay"] = self.run
        return out

    async def _watch(self, informer: Informer) -> None:
        """``run_informer`` on our own threads: when it ends for any reason,
        every informer of this reconciler stops too."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._threads, informer.run, self.stop_threads)
        finally:
            self.stop_threads.set()
            informer.stop()

    def stop(self) -> None:
        self.stop_threads.set()
        for informer in self.informers:
            informer.stop()
        self._threads.shutdown(wait=False)

    # -- scheduling ----------------------------------------------------------------
    async def run(self) -> None:
        while not all(i.synced.is_set() for i in self.informers):
            self.stats.last_pass = self.clock()
            await asyncio.sleep(0.2)
        leadership = self.election.changed
        while True:
            try:
                await asyncio.to_thread(self.reconcile)
            except Exception:
                log.exception("managed relay pass failed; retrying on the next tick")
            self.stats.passes += 1
            self.stats.last_pass = self.clock()
            waiters = [
                asyncio.create_task(self.wake.wait()),
                asyncio.create_task(leadership.wait()),
            ]
            await asyncio.wait(waiters, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if self.wake.is_set():
                await asyncio.sleep(DEBOUNCE_S)
            self.wake.clear()

    # -- one pass ------------------------------------------------------------------
    def _observed(self) -> dict[Key, dict[str, Any]]:
        out: dict[Key, dict[str, Any]] = {}
        for kind, informer in self.owned.items():
            for name, obj in informer.snapshot().items():
                out[(kind, name)] = obj
        return out

    def reconcile(self) -> None:
        leading = self.election.is_leader()
        obj = self.mesh.get(self.mesh_name)
        mesh: Mesh | None = None
        problem: str | None = None
        if obj is not None:
            try:
                mesh = Mesh.from_dict(obj)
            except InvalidObject as exc:
                self._log_problem(f"WireKubeMesh {self.mesh_name} is invalid: {exc}")
                return  # keep everything as it is; the agents say the same
        wanted: list[dict[str, Any]] = []
        if mesh is not None and d.wants_managed(mesh):
            try:
                wanted = d.desired(mesh, self.config)
            except d.InvalidManagedRelay as exc:
                problem = str(exc)
                self._log_problem(problem)
        if problem is None:
            self._problem_logged = ""
        observed = self._observed()
        if leading:
            managed = mesh is not None and d.wants_managed(mesh)
            if managed and problem is None:
                assert mesh is not None
                self._ensure_secret(mesh)
            elif not managed:
                self._remove_secret()
            if problem is None:
                self._execute(plan(wanted, observed), mesh)
            if mesh is not None and obj is not None:
                self._write_status(mesh, obj, observed, problem)

    def _log_problem(self, problem: str) -> None:
        if problem != self._problem_logged:
            self._problem_logged = problem
            log.warning("managed relay not reconciled: %s", problem)

    # -- the mesh secret ---------------------------------------------------------
    def _read_secret(self, force: bool = False) -> dict[str, Any] | None:
        now = self.clock()
        if force or now - self._secret_checked >= SECRET_CHECK_S:
            self._secret = self.api.get_secret(d.SECRET, WRITE_TIMEOUT_S)
            self._secret_checked = now
        return self._secret

    @staticmethod
    def _ours(secret: Mapping[str, Any]) -> bool:
        labels = (secret.get("metadata") or {}).get("labels") or {}
        return labels.get(d.MANAGED_BY_LABEL) == d.MANAGED_BY

    @staticmethod
    def _owner_uid(secret: Mapping[str, Any]) -> str:
        refs = (secret.get("metadata") or {}).get("ownerReferences") or []
        return str(refs[0].get("uid", "")) if refs else ""

    def _ensure_secret(self, mesh: Mesh) -> None:
        try:
            secret = self._read_secret()
            stale = secret is not None and self._ours(secret)
            if stale and self._owner_uid(secret or {}) not in ("", mesh.metadata.uid):
                # Left from a deleted mesh (no garbage collector ran): its owner
                # is gone, so a garbage collector may remove it at any moment.
                # Replace it, loudly.
                self._delete_secret(secret or {}, "its WireKubeMesh was deleted")
                secret = None
                self._note(mesh, "MeshSecretReplaced",
                           f"Secret {d.SECRET} belonged to a deleted WireKubeMesh; "
                           "created a new one (relay replicas pick it up as they restart)",
                           warning=True)  # fmt: skip
            if secret is not None:
                return
            body = d.mesh_secret(mesh, self.config, self.random_bytes(MESH_SECRET_BYTES))
            try:
                self._secret = self.api.create_secret(body, WRITE_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self._read_secret(force=True)  # someone made one: keep theirs
                return
            self._secret_checked = self.clock()
            log.info("created the relay mesh Secret %s/%s", self.config.namespace, d.SECRET)
            self._note(mesh, "MeshSecretCreated",
                       f"created Secret {self.config.namespace}/{d.SECRET} (relay pool secret)")  # fmt: skip
        except Exception as exc:
            self._failed("mesh Secret", exc)

    def _remove_secret(self) -> None:
        try:
            secret = self._read_secret()
            if secret is not None and self._ours(secret):
                self._delete_secret(secret, "the mesh no longer asks for a managed relay")
        except Exception as exc:
            self._failed("mesh Secret", exc)

    def _delete_secret(self, secret: Mapping[str, Any], why: str) -> None:
        uid = str((secret.get("metadata") or {}).get("uid", ""))
        self.api.delete("Secret", d.SECRET, uid, WRITE_TIMEOUT_S)
        self._secret = None
        log.info("deleted the relay mesh Secret: %s", why)

    # -- applying ------------------------------------------------------------------
    def _execute(self, ops: list[Apply | Delete | Note], mesh: Mesh | None) -> None:
        observed = self._observed()
        held = False  # the last Apply was not sent: its Note is not news either
        for op in ops:
            if isinstance(op, Note):
                if mesh is not None and not held:
                    self._note(mesh, op.reason, op.message, op.warning)
                continue
            if isinstance(op, Apply):
                meta = op.obj["metadata"]
                k = (str(op.obj["kind"]), str(meta["name"]))
                seen = observed.get(k)
                seen_rv = str((seen or {}).get("metadata", {}).get("resourceVersion", ""))
                mark = (seen_rv, str(meta["annotations"][d.APPLIED_HASH]))
                held = True
                if self._pending.get(k) == mark:
                    continue  # our last apply is on its way back through the watch
                try:
                    self.api.apply(op.obj, WRITE_TIMEOUT_S)
                except Exception as exc:
                    self._failed(f"apply {k[0]}/{k[1]}", exc)
                    continue
                held = False
                self._pending[k] = mark
                log.info("applied %s %s/%s: %s", k[0], self.config.namespace, k[1], op.why)
            else:
                try:
                    self.api.delete(op.kind, op.name, op.uid, WRITE_TIMEOUT_S)
                except Exception as exc:
                    self._failed(f"delete {op.kind}/{op.name}", exc)
                    continue
                self._pending.pop((op.kind, op.name), None)
                log.info("deleted %s %s/%s: %s", op.kind, self.config.namespace, op.name, op.why)

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats.write_errors += 1
        self.stats.last_error = f"{what}: {exc}"
        if isinstance(exc, ApiException) and exc.status == 409:
            log.debug("%s raced another writer; retrying next pass", what)
        else:
            log.warning("%s failed: %s", what, exc)

    def _note(self, mesh: Mesh, reason: str, message: str, warning: bool = False) -> None:
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)
        try:
            self.api.record_event(
                mesh.metadata.name, mesh.metadata.uid, reason, message, warning, WRITE_TIMEOUT_S
            )
        except Exception as exc:  # events are best effort
            log.debug("event not recorded: %s", exc)

    # -- status --------------------------------------------------------------------
    def address(self, mesh: Mesh, current: str | None) -> RelayAddress:
        managed = mesh.spec.relay.managed
        port = managed.port if managed else 3478
        service = self.owned["Service"].get(d.SERVICE)
        nodes = [NodeAddresses.from_object(n) for n in self.nodes.snapshot().values()]
        return choose(service, nodes, port, current=current)

    def _write_status(
        self,
        mesh: Mesh,
        obj: Mapping[str, Any],
        observed: Mapping[Key, Mapping[str, Any]],
        problem: str | None,
    ) -> None:
        status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
        current = (status or {}).get("relay")
        current = current if isinstance(current, Mapping) else None
        if d.wants_managed(mesh):
            address = self.address(mesh, status_host(obj))  # sticky: the address in use
            managed = mesh.spec.relay.managed
            desired_status = relay_status(
                address,
                managed.replicas if managed else 1,
                observed.get(("Deployment", d.DEPLOYMENT)),
                f"{self.config.namespace}/{d.SERVICE}",
                mesh.metadata.generation,
                problem,
            )
            if current is not None:
                patch: dict[str, Any] | None = merge_patch(current, desired_status) or None
            else:
                patch = desired_status
        else:
            patch = None if current is None else {}
        if patch is None:
            return
        body = {"relay": patch if patch else None}
        try:
            self.api.patch_mesh_status(mesh.metadata.name, mesh.metadata.uid, body, WRITE_TIMEOUT_S)
        except Exception as exc:
            self._failed("mesh status", exc)
