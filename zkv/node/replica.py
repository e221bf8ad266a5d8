"""Replica: applies versions to the local storage engine and serves reads. No sockets here.

A replica stores, per key, the encoded DVV set (`zkv._core.dvv`) as the engine's value.
Writes arriving from a coordinator are merged with `sync` (never overwritten), so a replica
can receive the same or an older version any number of times, in any order, and converge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from zkv._core import dvv
from zkv.storage import LogStore

log = logging.getLogger("zkv.replica")


class Replica:
    def __init__(self, node_id: str, store: LogStore, sibling_warn: int = 25) -> None:
        self.node_id = node_id
        self.store = store
        self.sibling_warn = sibling_warn
        self.dirty = False  # written since the last flush (group commit per loop turn)
        # observers called after every local change: (key, old_encoded|None, new_encoded)
        self.on_change: list[Callable[[bytes, bytes | None, bytes], None]] = []
        self.on_siblings: Callable[[bytes, int], None] | None = None

    def read(self, key: bytes) -> bytes:
        """The encoded DVV set held for `key`; b"" when none."""
        return self.store.get(key) or b""

    def coordinate(self, key: bytes, context: bytes, value: bytes | None) -> bytes:
        """Apply a client write as the coordinator: new dot, retire what the context covers."""
        old = self.store.get(key)
        new = dvv.update_encoded(old, context, value, self.node_id)
        self._store(key, old, new)
        return new

    def merge(self, key: bytes, incoming: bytes) -> bytes:
        """Sync a version from another replica (write fan-out, read repair, handoff, AAE)."""
        old = self.store.get(key)
        new = dvv.sync_encoded(old, incoming)
        if new != old:
            self._store(key, old, new)
        return new

    def _store(self, key: bytes, old: bytes | None, new: bytes) -> None:
        self.store.put(key, new)
        self.dirty = True
        for fn in self.on_change:
            fn(key, old, new)

    def note_siblings(self, key: bytes, count: int) -> None:
        if count > self.sibling_warn:
            log.warning("key %r has %d siblings (warn above %d)", key[:64], count, self.sibling_warn)
        if self.on_siblings is not None:
            self.on_siblings(key, count)

    def flush(self) -> None:
        if self.dirty:
            self.store.flush()
            self.dirty = False
