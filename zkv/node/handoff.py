"""Hinted handoff: the store of versions a stand-in holds for an owner that was unreachable
(Dynamo's "hints"; the storage engine's `.hint` index files, Bitcask's term, are another
thing and keep their name on disk). No sockets here.

With a sloppy quorum a write goes to the first N *reachable* nodes of the key's extended
preference list; a node standing in for owner X stores the version as a hint for X in its own
LogStore (`DATA_DIR/handoff`), so hints survive a restart. When gossip shows X up again the
node delivers hints in throttled batches (`batch` per tick); each hint is deleted only after
X acknowledged it, and only if it did not change meanwhile. Delivery is a DVV sync on the
owner, so nothing there is overwritten.

Hint record (the LogStore value), format version 1:
    version      u8      1
    created_ms   u64 LE  wall-clock ms when the first version for (owner, key) arrived
    dvv          rest    the encoded DVV set
LogStore key: owner id (utf-8) + b"\\x00" + key (owner ids never contain NUL).

The same store keeps the reap journal (antientropy.py, "reap memory"): under the reserved
owner "~reaped" (no node id has a "~"), one record per tombstone this node reaped recently,
so the memory that keeps late copies of deleted writes out survives a restart. Format 1:
    version      u8      1
    reaped_ms    u64 LE  wall-clock ms of the reap
    digest       16 B    antientropy.vdigest of the reaped tombstone
    dvv          rest    the reaped tombstone (encoded DVV set)
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from zkv._core import dvv
from zkv.errors import ZkvError
from zkv.node.namespaces import is_lww
from zkv.storage import LogStore
from zkv.wire import DEFAULT_MAX_KEY, DEFAULT_MAX_VALUE

_HEAD = struct.Struct("<BQ")  # version u8, created_ms u64 = 9 bytes
HINT_HEAD = _HEAD.size  # bytes before the DVV in a hint record
HINT_VERSION = 1
REAPED = "~reaped"  # the reap journal's reserved owner
_REAP = struct.Struct("<BQ16s")  # version u8, reaped_ms u64, digest 16 bytes = 25 bytes
REAP_HEAD = _REAP.size  # a journaled reap's bytes before the tombstone it reaped
REAP_VERSION = 1
ENGINE_MAX_KEY = 65536  # LogStore's largest key
MAX_OWNER = 255  # bytes of an owner id in a hint's key (node ids are at most 64 characters)


def join_versions(key: bytes, a: bytes | None, b: bytes | None) -> bytes:
    """Two encoded versions of stored key `key` (None: none) joined as replicas join them:
    DVV sync, or for a key of an lww namespace `dvv.lww_sync` (collapsed, and never without a
    value when either had one)."""
    return (dvv.lww_sync_encoded if is_lww(key) else dvv.sync_encoded)(a, b)


class HandoffStore:
    def __init__(self, path: str, wall_ms: Callable[[], int], sync: str = "interval",
                 store=None, max_key_size: int = DEFAULT_MAX_KEY,
                 max_value_size: int = DEFAULT_MAX_VALUE, min_free_bytes: int = 0) -> None:
        # `store`: any engine with LogStore's interface (the simulator's in-memory one);
        # limits: a hint's key is owner + NUL + key, its value a whole version plus 9 bytes
        if store is None:
            # the engine's keys stop at 64 KiB: a key within owner id + 1 byte of that
            # cannot be kept as a hint (its write still reaches the reachable owners)
            store = LogStore(path, sync=sync, compact_dead_ratio=0.5,
                             max_key_size=min(ENGINE_MAX_KEY, max_key_size + MAX_OWNER + 1),
                             max_value_size=max_value_size + _HEAD.size,
                             min_free_bytes=min_free_bytes)
        self.store = store
        self.wall_ms = wall_ms
        # owner -> {key: (created_ms, size)}: the backlog, rebuilt from the store on start
        self.index: dict[str, dict[bytes, tuple[int, int]]] = {}
        self.reaped: set[bytes] = set()  # keys the reap journal holds
        self.store.release_tombstones(self.store.tombstones())  # delivered hints: drop for good
        reaped = REAPED.encode()
        for skey, value in self.store.items():
            owner, _, key = skey.partition(b"\x00")
            if owner == reaped:
                self.reaped.add(key)
            elif len(value) >= _HEAD.size and value[0] == HINT_VERSION:
                created = _HEAD.unpack_from(value)[1]
                self.index.setdefault(owner.decode(), {})[key] = (created, len(value))

    @staticmethod
    def _skey(owner: str, key: bytes) -> bytes:
        return owner.encode() + b"\x00" + key

    def get(self, owner: str, key: bytes) -> bytes:
        """The hinted version held for `owner`; b"" when none."""
        raw = self.store.get(self._skey(owner, key))
        if not raw or len(raw) < _HEAD.size or raw[0] != HINT_VERSION:
            return b""
        return raw[_HEAD.size:]

    def _put(self, owner: str, key: bytes, version: bytes) -> None:
        known = self.index.setdefault(owner, {}).get(key)
        created = known[0] if known else self.wall_ms()
        raw = _HEAD.pack(HINT_VERSION, created) + version
        self.store.put(self._skey(owner, key), raw)
        self.index[owner][key] = (created, len(raw))

    def merge(self, owner: str, key: bytes, incoming: bytes) -> bytes:
        new = join_versions(key, self.get(owner, key) or None, incoming)
        self._put(owner, key, new)
        return new

    def owners_of(self, key: bytes) -> list[str]:
        return [o for o, keys in self.index.items() if key in keys]

    def owners(self) -> list[str]:
        return [o for o, keys in self.index.items() if keys]

    def batch(self, owner: str, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, version) hints for `owner`, oldest first."""
        keys = sorted(self.index.get(owner, {}).items(), key=lambda kv: kv[1][0])[:limit]
        return [(k, v) for k, _ in keys if (v := self.get(owner, k))]

    def delivered(self, owner: str, key: bytes, sent: bytes) -> bool:
        """The owner acknowledged `sent`: drop the hint unless it changed meanwhile."""
        if self.get(owner, key) != sent:
            return False
        skey = self._skey(owner, key)
        self.store.delete(skey)
        self.store.release_tombstones([skey])
        self.index.get(owner, {}).pop(key, None)
        return True

    # ---- the reap journal ---------------------------------------------------------------
    def remember_reap(self, key: bytes, digest: bytes, version: bytes) -> None:
        try:
            self.store.put(self._skey(REAPED, key),
                           _REAP.pack(REAP_VERSION, self.wall_ms(), digest[:16]) + version)
        except (ValueError, ZkvError):  # too large to journal: remembered until a restart
            return
        self.reaped.add(key)

    def forget_reap(self, key: bytes) -> None:
        if key in self.reaped:
            self.reaped.discard(key)
            skey = self._skey(REAPED, key)
            self.store.delete(skey)
            self.store.release_tombstones([skey])

    def reaps(self) -> list[tuple[bytes, int, bytes, bytes]]:
        """(key, reaped_ms, digest, tombstone) of every journaled reap (unreadable records:
        dropped)."""
        out = []
        for key in list(self.reaped):
            raw = self.store.get(self._skey(REAPED, key))
            if raw and len(raw) > _REAP.size and raw[0] == REAP_VERSION:
                _, ms, digest = _REAP.unpack_from(raw)
                out.append((key, ms, digest, raw[_REAP.size:]))
            else:
                self.forget_reap(key)
        return out

    def backlog(self, now_ms: int | None = None) -> dict[str, dict]:
        now_ms = self.wall_ms() if now_ms is None else now_ms
        out = {}
        for owner, keys in self.index.items():
            if keys:
                oldest = min(c for c, _ in keys.values())
                out[owner] = {"count": len(keys), "bytes": sum(s for _, s in keys.values()),
                              "oldest_age_s": round(max(0, now_ms - oldest) / 1000, 3)}
        return out

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()
