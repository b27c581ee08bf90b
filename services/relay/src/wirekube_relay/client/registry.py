"""Registry: which connection currently owns each registered WireGuard key (pure policy).

Policy, documented in docs/relay-protocol.md:

* A key is registered only after its holder proved possession (client/auth.py), so
  an impostor can never create, replace or evict an entry.
* A *second valid* registration of a key already registered replaces the
  first ("newest proof wins"): it proves possession too, and the usual cause
  is an agent that restarted or reconnected before the relay noticed its old
  TCP connection was dead. The replaced connection is told CLOSE(replaced).
* Unregistering is conditional on the entry still belonging to the closing
  connection, so a late close of a replaced connection cannot remove its
  successor.

The forwarder reads ``table`` (a plain dict) directly on the hot path.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

C = TypeVar("C")


class Listener(Protocol):
    """Told of every change of ownership (the replica mesh announces them)."""

    def registered(self, key: bytes) -> None: ...

    def unregistered(self, key: bytes) -> None: ...


class Registry(Generic[C]):
    def __init__(self) -> None:
        self.table: dict[bytes, C] = {}
        self.listener: Listener | None = None

    def register(self, key: bytes, conn: C) -> C | None:
        """Make ``conn`` the owner of ``key``; returns the connection it replaced, if any."""
        old = self.table.get(key)
        self.table[key] = conn
        if self.listener is not None:
            self.listener.registered(key)
        return old if old is not conn else None

    def unregister(self, key: bytes, conn: C) -> bool:
        if self.table.get(key) is conn:
            del self.table[key]
            if self.listener is not None:
                self.listener.unregistered(key)
            return True
        return False

    def get(self, key: bytes) -> C | None:
        return self.table.get(key)

    def __len__(self) -> int:
        return len(self.table)

    def snapshot(self) -> list[tuple[bytes, C]]:
        return list(self.table.items())
