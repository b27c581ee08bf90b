"""Presence: which replica of the pool holds each registered key (pure policy, no I/O).

Every replica tells the others which keys are registered with it, each with a
*version*: a hybrid logical clock in microseconds, ``max(wall clock, newest
version this replica has seen for the key + 1)``. So a registration made
after another one was announced always carries a larger version, even
between replicas whose clocks disagree, and a replica that restarted (and
forgot what it had seen) still issues versions near the wall clock rather
than from zero. "Newest proof wins" across the pool means: the largest
version wins (ties: the larger replica id, so every replica agrees).

Routing a frame for key ``k`` on this replica (``route``):

* registered here and not superseded -> deliver locally (agents that reach
  every replica directly are registered everywhere: each replica serves them
  itself, no mesh hop);
* registered here but a newer registration exists elsewhere -> the caller
  decides (the forwarder keeps a local connection that is still active and
  follows the newer one when the local one has gone quiet: a half-dead TCP
  connection of an agent that moved);
* registered only elsewhere -> the replica with the newest version.

Bounds: at most ``max_keys`` entries per remote replica (a replica cannot
hold more registrations than its connection limit) and ``max_replicas``
remote replicas; ``PresenceFull`` tells the caller to drop that link.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

R = TypeVar("R", bound=Hashable)  # a remote replica's identity


class PresenceFull(Exception):
    """A replica announced more keys (or more replicas joined) than the bounds allow."""


class Presence(Generic[R]):
    def __init__(self, max_keys: int, max_replicas: int) -> None:
        self.max_keys = max_keys
        self.max_replicas = max_replicas
        self.local: dict[bytes, int] = {}
        self.remote: dict[R, dict[bytes, int]] = {}
        # key -> (version, replica) of the newest remote registration
        self.best: dict[bytes, tuple[int, R]] = {}
        self._clock = 0

    # --- this replica's registrations -------------------------------------------------

    def register_local(self, key: bytes, now_us: int) -> int:
        """A key registered here; returns its version (to announce)."""
        seen = self.best.get(key)
        floor = max(self._clock + 1, seen[0] + 1 if seen else 0, self.local.get(key, -1) + 1)
        version = max(now_us, floor)
        self._clock = version
        self.local[key] = version
        return version

    def unregister_local(self, key: bytes) -> int | None:
        """A key left this replica; returns the version to withdraw (None: unknown)."""
        return self.local.pop(key, None)

    def local_entries(self) -> list[tuple[bytes, int]]:
        return list(self.local.items())

    # --- what other replicas announce -------------------------------------------------

    def add(self, replica: R, key: bytes, version: int) -> None:
        table = self.remote.get(replica)
        if table is None:
            if len(self.remote) >= self.max_replicas:
                raise PresenceFull(f"more than {self.max_replicas} replicas")
            table = self.remote[replica] = {}
        if key not in table and len(table) >= self.max_keys:
            raise PresenceFull(f"replica announced more than {self.max_keys} keys")
        table[key] = version
        best = self.best.get(key)
        if best is None or _newer((version, replica), best):
            self.best[key] = (version, replica)
        elif best[1] == replica:  # its own entry changed to an older version
            self._recompute(key)

    def remove(self, replica: R, key: bytes, version: int) -> None:
        """Withdraw ``key`` from ``replica`` if its entry still has ``version``
        (a late withdrawal must not remove a newer registration)."""
        table = self.remote.get(replica)
        if table is None or table.get(key) != version:
            return
        del table[key]
        best = self.best.get(key)
        if best is not None and best[1] == replica:
            self._recompute(key)

    def reset(self, replica: R) -> None:
        """Forget everything ``replica`` announced (its link closed or it resent all)."""
        table = self.remote.pop(replica, None)
        if not table:
            return
        for key in table:
            best = self.best.get(key)
            if best is not None and best[1] == replica:
                self._recompute(key)

    def _recompute(self, key: bytes) -> None:
        found: tuple[int, R] | None = None
        for replica, table in self.remote.items():
            version = table.get(key)
            if version is not None and (found is None or _newer((version, replica), found)):
                found = (version, replica)
        if found is None:
            self.best.pop(key, None)
        else:
            self.best[key] = found

    # --- routing ---------------------------------------------------------------------

    def route(self, key: bytes) -> R | None:
        """The replica holding the newest remote registration of ``key``, if any."""
        best = self.best.get(key)
        return best[1] if best is not None else None

    def superseded(self, key: bytes) -> R | None:
        """The replica whose registration of ``key`` is newer than ours (else None)."""
        best = self.best.get(key)
        mine = self.local.get(key)
        if best is None or mine is None or best[0] <= mine:
            return None
        return best[1]

    def __len__(self) -> int:
        """Entries held (local and remote): the presence table's size."""
        return len(self.local) + sum(len(t) for t in self.remote.values())


def _newer(a: tuple[int, R], b: tuple[int, R]) -> bool:
    if a[0] != b[0]:
        return a[0] > b[0]
    return str(a[1]) > str(b[1])
