"""The storage engine's keydir: a C hash table from key to its latest record (see keydir.pyx)."""

NEED_READ: int
CORRUPT: int
COMPRESSED: int
RELEASED: int

class StoreLock:
    """The store's mutex, visible to C: KeyDir.put appends by itself only while it is free."""

    def acquire(self) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

class KeyDir:
    """Key -> (fid, offset, size, flags, hash), plus the active write buffer and read maps."""

    lock: StoreLock  # read-only: the owner's store lock
    slow_put: object  # callable(key, value): put()'s locked slow path
    put_gate: int  # nonzero: every put() takes slow_put (keys await repair)
    write_errno: int  # errno of the last failed write-out; 0 once a flush() works

    def __init__(self, max_key: int = 65536, max_value: int = ..., write_buffer: int = 65536) -> None: ...
    def __len__(self) -> int:
        """Live (non-tombstone) keys."""
    @property
    def count(self) -> int:
        """Entries including tombstones."""
    @property
    def tombstone_count(self) -> int: ...
    @property
    def live_bytes(self) -> int:
        """Sum of the record sizes entries point at."""
    def live_by_fid(self) -> dict[int, int]:
        """``{fid: bytes}``: the record sizes entries point at, per segment."""
    def memory_bytes(self) -> int:
        """Bytes allocated by slots, entries and the key arena."""
    def contains(self, key: object) -> bool: ...
    def lookup(self, key: object) -> tuple[int, int, int, int, int] | None:
        """``(fid, offset, size, flags, hash)`` or None."""
    def set(self, key: bytes, fid: int, offset: int, size: int, flags: int) -> None: ...
    def remove(self, key: object) -> bool: ...
    def remove_if(self, key: object, fid: int, offset: int) -> bool:
        """Remove only if the entry still points at (fid, offset)."""
    def release(self, key: object) -> bool:
        """Mark a tombstone as droppable by compaction."""
    def keys(self, tombstones: bool = False) -> list[bytes]: ...
    def partition_bytes(self, q_bits: int, split: bool = True
                        ) -> tuple[list[int], list[tuple[bytes, int]]]: ...
    def hash_range(self, lo: int = 0, hi: int = ...) -> list[tuple[bytes, int]]:
        """``[(key, hash)]`` of live keys with lo <= hash <= hi."""
    def fid_bytes(self) -> dict[int, int]: ...
    def longest_run(self) -> int: ...
    def purge_fids(self, fids: object) -> list[tuple[bytes, int]]:
        """Remove entries still pointing at these segments; ``[(key, flags)]``."""
    def reserve(self, entries: int, key_bytes: int = 0) -> None:
        """Room for ``entries`` more keys and ``key_bytes`` of key bytes, without rehashing."""
    def trim(self) -> None:
        """Give back reserved room the entries do not use."""
    def load_hints(self, data: object, fid: int, limit: int = 0xFFFFFFFFFFFFFFFF) -> int:
        """Insert a hints file's entries; -1 (nothing inserted) if it is bad: exactly when
        ``record.hints_ok`` is False (e.g. an entry's key is empty or over MAX_KEY); -2
        (nothing inserted) if a good file names a record ending past ``limit`` (the
        segment's size: it lost its tail since)."""
    def scan_load(self, data: object, fid: int, active: bool = False) -> tuple[int, int, list[bytes], int]:
        """Index a segment image: ``(valid_end, records, corrupt_keys, bad_regions)``."""
    def collect_live(self, data: object, fid: int) -> tuple[bytes, bytes]:
        """Records of ``fid`` still pointed at, and their (old, new) u32 offset pairs."""
    def collect_live_from(self, data: object, fid: int, start: int,
                          limit: int) -> tuple[bytes, bytes, int]:
        """collect_live from record boundary ``start`` up to the first boundary at or past
        ``start + limit`` (0: the end); also the offset where it stopped."""
    def apply_moves(self, moves: bytes, src_fid: int, dst_fid: int, dst_base: int) -> int:
        """Repoint moved keys whose entry still points at the old location; count moved."""
    def map_segment(self, fid: int, data: object) -> None: ...
    def mapped_length(self, fid: int) -> int: ...
    def unmap_segment(self, fid: int) -> None: ...
    def take_retired(self) -> list[memoryview]: ...
    def release_maps(self, all: bool = False) -> None: ...
    def set_active(self, fid: int, fd: int, size: int, prealloc: int = 0) -> None:
        """Appends go to ``fid``/``fd`` at offset ``size`` (pwrite: open the fd without
        O_APPEND); ``prealloc`` > 0 extends the file in zero-filled steps of that many bytes
        ahead of the writes (the caller trims it to ``active_end`` when sealing)."""
    @property
    def active_end(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def seq(self) -> int: ...
    def flush(self) -> None:
        """Write the buffer to the active fd (no fsync); OSError (records kept) if it fails."""
    def append(self, key: object, value: object, flags: int = 0) -> int:
        """Validate (zkv.InvalidRequest), encode, buffer and index one record; new active end.
        No I/O error: a write-out it does that fails sets ``write_errno`` and ``put_gate``."""
    def put_policy(self, segment_bytes: int, compress_over: int, slow_put: object) -> None:
        """Enable put(): records reaching ``segment_bytes`` and values over ``compress_over``
        bytes go to ``slow_put(key, value)``."""
    def put(self, key: object, value: object) -> None:
        """LogStore.put in one call: append unless the lock is held, put_gate is set, or the
        record needs compression or a rotation; then (and for every error) ``slow_put``."""
    def check_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        """InvalidRequest naming the first bad ``(key, value)`` pair, if any."""
    def append_batch(self, items: list[tuple[bytes, bytes]], start: int, compress_over: int,
                     segment_bytes: int) -> int:
        """Append checked pairs from ``start`` until one needs compression (stop before it) or
        the segment reaches ``segment_bytes`` (stop after it); index of the first not done."""
    slow: object
    def get(self, key: object) -> bytes | None:
        """get_value, raising InvalidRequest for non-bytes keys and calling ``slow(key, code)``."""
    def get_value(self, key: object) -> bytes | int | None:
        """Value bytes, None (absent/tombstone) or NEED_READ / CORRUPT / COMPRESSED."""
    def read_record(self, fid: int, offset: int, size: int) -> bytes | None: ...
    def close(self) -> None: ...
