"""Replica: applies versions to the local storage engine and serves reads. No sockets here.

A replica stores, per key, the encoded DVV set (`zkv._core.dvv`) as the engine's value.
Writes arriving from a coordinator are merged with `sync` (never overwritten), so a replica
can receive the same or an older version any number of times, in any order, and converge.
When the node stands in for an unreachable owner (sloppy quorum), the same operations take
`hint=owner` and go to the hint store (`handoff.Hints`) instead of the main store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from zkv._core import dvv
from zkv.node.handoff import Hints
from zkv.storage import LogStore

log = logging.getLogger("zkv.replica")


class Replica:
    def __init__(self, node_id: str, store: LogStore, hints: Hints | None = None,
                 sibling_warn: int = 25) -> None:
        self.node_id = node_id
        self.store = store
        self.hints = hints
        self.sibling_warn = sibling_warn
        self.dirty = False  # written since the last flush (group commit per loop turn)
        # observers called after every local change: (key, old_encoded|None, new_encoded|None)
        self.on_change: list[Callable[[bytes, bytes | None, bytes | None], None]] = []
        self.on_siblings: Callable[[bytes, int, bool], None] | None = None
        # incoming versions to ignore (a tombstone this replica just reaped echoing back)
        self.ignore: Callable[[bytes, bytes], bool] | None = None

    def read(self, key: bytes, hint: str | None = None) -> bytes:
        """The encoded DVV set held for `key` (or as a hint for owner `hint`); b"" when none."""
        if hint:
            return self.hints.get(hint, key)
        return self.store.get(key) or b""

    def coordinate(self, key: bytes, context: bytes, value: bytes | None,
                   hint: str | None = None) -> bytes:
        """Apply a client write as the coordinator: new dot, retire what the context covers."""
        if hint:
            # base the new dot on every version this node holds for the key (main store and
            # hints for any owner), so this node never issues the same dot twice
            self.dirty = True
            base = self.store.get(key)
            for owner in self.hints.owners_of(key):
                base = dvv.sync_encoded(base, self.hints.get(owner, key) or None)
            new = dvv.update_encoded(base, context, value, self.node_id)
            return self.hints.merge(hint, key, new)
        old = self.store.get(key)
        new = dvv.update_encoded(old, context, value, self.node_id)
        self._store(key, old, new)
        return new

    def merge(self, key: bytes, incoming: bytes, hint: str | None = None) -> bytes:
        """Sync a version from another replica (write fan-out, read repair, handoff, AAE)."""
        if hint:
            self.dirty = True
            return self.hints.merge(hint, key, incoming)
        old = self.store.get(key)
        if old is None and self.ignore is not None and self.ignore(key, incoming):
            return incoming
        new = dvv.sync_encoded(old, incoming)
        if new != old:
            self._store(key, old, new)
        return new

    def _store(self, key: bytes, old: bytes | None, new: bytes) -> None:
        self.store.put(key, new)
        self.dirty = True
        for fn in self.on_change:
            fn(key, old, new)

    def note_siblings(self, key: bytes, count: int, write: bool = False) -> None:
        if count > self.sibling_warn:
            log.warning("key %r has %d siblings (warn above %d)", key[:64], count, self.sibling_warn)
        if self.on_siblings is not None:
            self.on_siblings(key, count, write)

    def reap(self, key: bytes) -> bytes | None:
        """Drop a tombstone for good (the caller established every owner holds it)."""
        old = self.store.get(key)
        if old is None:
            return None
        self.store.delete(key)
        self.store.release_tombstones([key])
        self.dirty = True
        for fn in self.on_change:
            fn(key, old, None)
        return old

    def flush(self, durable: bool = True) -> None:
        """End of a loop turn: hand the turn's writes to the OS (a process crash loses
        nothing), and with `durable` fsync them (one fsync for the whole turn)."""
        if self.dirty:
            for store in (self.store, self.hints.store if self.hints else None):
                if store is None:
                    continue
                if durable:
                    store.flush()
                else:
                    store.write_out()
            self.dirty = False
