"""LogStore: the embedded, crash-safe, Bitcask-like key-value engine (DESIGN.md §2.8, §3.3).

Writes append CRC-checked records (format: zkv/_core/record.pxd) to one active segment file;
a segment that reaches ``segment_bytes`` becomes immutable and gets a hints file (its fsync
and hints are written by a thread of their own, `_Sealer`, not by the write that filled it).
The keydir (zkv/_core/keydir.pyx, a C hash table) maps each key to its latest record, so a
read is one lookup plus one copy out of a read-only mmap. Reopening loads hints files (no values
read) and scans only segments without valid hints, truncating a torn tail of the active
segment.
Compaction (zkv/storage/compaction.py) rewrites live records off the hot path.

Durability (``sync``): ``"none"`` leaves records in a 64 KiB user-space buffer and the page
cache (a crash may lose recent writes); ``"interval"`` writes and fsyncs at most every
``sync_interval_ms`` from a background thread; ``"always"`` makes ``put``/``delete`` return
only once the record is on disk, with group commit: writers append under the store lock, then
one of them (the leader) writes the buffer and fsyncs once for every record appended so far
while the others wait on a condition variable.

Preallocation: the active segment's file is extended ahead of the writes in zero-filled steps
(posix_fallocate, done by the keydir) of a multiple of ``PREALLOC`` bytes, a quarter of what it
has (up to 8 ``PREALLOC``), so the fdatasync of a group commit usually has no file size change
to journal (on ext4 about a third cheaper than an appending fdatasync), and the active
segment's mapping, redone at each step (`_get_slow`), is redone ~19 times up to 64 MiB rather
than 64. The mapping a remap replaces is unmapped on a thread of its own (`_Unmapper`):
unmapping costs in proportion to the pages read through it, and it stalled the loop turn that
read the first record past the old mapping (`benchmarks/store_remap.py`: the reader's CPU per
remap grew to 0.5-1 ms at 46-64 MiB, and is ~0.1-0.15 ms at any size now). The logical end
of the active segment is the keydir's ``active_end``; the file is trimmed to it (ftruncate +
fsync) before the segment is sealed at rotation or close, so immutable segments and hints
never see the zeros. After a crash the zero tail is the end of the log: an all-zero header
fails the record checks (version 1 required, and the CRC), the scan stops there as at a torn
tail, and the open truncates it.

Write path: ``put`` is the keydir's C method (``KeyDir.put``) except with ``sync="always"``:
one call validates, encodes into the write buffer and indexes the record. It steps aside to
the locked Python path (``_put_locked``: compression, segment rotation, keys awaiting repair)
when it cannot do the whole put itself, and whenever another thread holds the store lock, a
C ``StoreLock`` it can see; since the C call never releases the GIL it is atomic with respect
to every critical section. ``put_many`` takes a batch in one C loop (one group commit).

Out of space: ``min_free_bytes`` is a reserve the store keeps free on its file system.
While the free space is under it, or after writing records out failed (ENOSPC, EDQUOT, EIO),
``put``, ``put_many`` and ``delete`` raise ``StorageFull`` before changing anything, and
``get`` keeps working. Records already buffered when a write-out failed stay buffered (and
readable), the record of the write whose own write-out failed (a put that filled the buffer,
or the segment at rotation) too: that write returns, as every write does whose record is
buffered, and the next is refused. So a write that raises changed nothing, whatever the sync
mode. ``check_space()`` (a node calls it every gossip round) retries writing them and lifts
the refusal once they are out and the reserve is free again. Refusing early, with the reserve
still free, is what keeps a full disk from failing the writes a caller was already told were
made (segment rotation, hints files and compaction need room too): Elasticsearch's
flood-stage watermark, as one cheap ``statvfs``. ``close()`` on a disk that still takes
nothing raises ``StorageFull`` saying what it could not write out (under ``sync="always"``
only refused writes; otherwise the last buffered ones, which put() had returned for); the
store is closed all the same, its lock released, so a ``with`` block never leaves it held.

A failed fsync (EIO from ``fdatasync``/``fsync`` of a segment) refuses writes until the store is
opened again, whatever ``check_space()`` finds: Linux marks the pages it could not write clean
(or drops them), so a later fsync can succeed without them and nothing written since the last
good fsync is known to be on disk (PostgreSQL's "fsyncgate", 2018). Retrying would acknowledge
writes on top of a hole. A reopen (a node restart) reads back what is really there: a record
that did not reach the disk fails its CRC and is dropped.

Thread safety: every public method may be called from several threads.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import queue
import resource
import shutil
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zstandard

from zkv._core import keydir as _kdmod
from zkv._core import record
from zkv._core.keydir import KeyDir
from zkv.errors import CorruptRecord, InvalidRequest, StorageFull
from zkv.repeatlog import RepeatLog
from zkv.storage.corrupt import CorruptKeys
from zkv.storage.hints import hints_size, read_hints, write_hints
from zkv.storage.lock import DirLock
from zkv.storage.segment import (
    TMP_SUFFIX,
    Segment,
    data_name,
    free_bytes,
    fsync_dir,
    hint_name,
    parse_name,
    written_end,
)

log = logging.getLogger("zkv.storage")

SYNC_MODES = ("none", "interval", "always")
WRITE_BUFFER = 64 * 1024
PREALLOC = 1 << 20  # the active segment's file grows in zero-filled multiples of this many bytes
_NEED_READ = _kdmod.NEED_READ
_CORRUPT = _kdmod.CORRUPT
_TOMB = record.TOMBSTONE
IDLE_COMPACT_EVERY = 30.0  # s between looks at the dead share by check_space()
SPACE_COMPACT_EVERY = 30.0  # s between compactions started for writes refused for space
GATHER_S = 0.0002  # longest a group-commit leader waits for the writers of its last group
_WAIT, _DONE, _LEAD, _RETRY = 0, 1, 2, 3  # group-commit follower roles
_REMAP_MIN = 1 << 20  # unmapped bytes of the active segment before a remap
_ZSTD = record.ZSTD

Progress = Callable[[int, int], None]


class _Worker:
    """A daemon thread serving a queue, started when first needed (one per process for each
    kind of work); a forked child starts afresh (its own queue, lock and thread: the parent's
    thread does not run there, and its lock may have been held at the fork)."""

    name = "zkv-worker"

    def __init__(self) -> None:
        self._fresh()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def _put(self, item: object) -> None:
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name,
                                                    daemon=True)
                    self._thread.start()
        self._q.put(item)

    def _run(self) -> None:
        raise NotImplementedError


class _Unmapper(_Worker):
    """Drops the mappings a store replaced, on a thread of its own. Unmapping costs in
    proportion to the pages read through the mapping (module docstring), and the store
    replaces a mapping in the middle of a read (the active segment is remapped as it grows:
    `_get_slow`), which made it the longest part of a node's loop turn that met it.
    CPython's mmap releases the GIL while it unmaps, so the reader's thread goes on
    meanwhile. One thread for every store of the process (`_Worker`)."""

    name = "zkv-unmap"

    def drop(self, buffers: list) -> None:
        """Unmap `buffers` (the caller keeps no reference to them) soon, on the thread."""
        self._put(buffers)

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until everything handed to `drop` so far is dropped; False on `timeout`."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._q.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        get = self._q.get
        while True:
            item = get()
            if isinstance(item, threading.Event):
                item.set()
            del item  # the last reference: each buffer's mmap is unmapped here


_UNMAPPER = _Unmapper()


class _Sealer(_Worker):
    """Seals the segments stores rotate out, on a thread of its own: fsync, then the hints
    file. Both used to run inside the put that filled the segment, under the store lock: at
    64 MiB, 25 ms of CPU (the hints' walk) and 40-100 ms of wall time in all (the fsync), a
    stall of a node's loop once per 64 MiB written (`benchmarks/turn_profile/run.py`: each
    node's longest turn, a frame of replica writes; `benchmarks/store_rotation.py`). A store
    counts what it queued and what was done (`LogStore._seal_done`): a durability claim waits
    for the fsync of every segment rotated out before it, compaction and close for the whole
    seal. One thread for every store of the process, started when first needed. It holds a
    store only while sealing one of its segments (its queue holds weak references), so a
    store dropped without close() is still collected, and its close (`__del__`) seals what is
    left on its own thread; stores still open at interpreter exit are closed by
    `_close_forgotten` while this thread still runs (`_Worker`)."""

    name = "zkv-seal"

    def wake(self, store: LogStore) -> None:
        """`store` queued a segment (LogStore._pending): seal it soon."""
        self._put(weakref.ref(store))

    def _run(self) -> None:
        get = self._q.get
        while True:
            store = get()()
            if store is not None:
                store._seal_next()
            del store


_SEALER = _Sealer()
_OPEN: weakref.WeakSet[LogStore] = weakref.WeakSet()  # stores not closed yet


@atexit.register
def _close_forgotten() -> None:
    """At interpreter exit, close what the program left open: its buffered records written
    out, its segments sealed while the sealer's thread still runs (a store the sealer held a
    reference to was never collected, so `__del__` never closed it)."""
    for store in list(_OPEN):
        try:
            store.close()
        except Exception:
            log.exception("closing %s at exit failed", store.path)


def _forked_child() -> None:
    """In a forked child, the stores the parent has open are closed without a word to their
    files: the child shares the parent's directory lock (a flock belongs to the open file both
    hold), so its exit closing them (`_close_forgotten`) released the parent's lock and let a
    second writer in, whose acknowledged writes were then lost; and its writes through them
    were lost without an error (an outside run). Any use now raises InvalidRequest."""
    for store in list(_OPEN):
        store._closed = True
        store._kd.close()  # (no I/O: it forgets the fd and drops this process's mappings)
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_child)


class _Zstd(threading.local):
    """A zstd compressor and decompressor per thread, made once: building a context cost more
    than its use (a 1 KiB JSON value: 17 us to compress with a new compressor, 2.7 us with a
    reused one; 14 against 1.2 us to decompress), and one may not serve two threads at once."""

    def __init__(self) -> None:
        self.compress = zstandard.ZstdCompressor(level=3).compress
        self.decompress = zstandard.ZstdDecompressor().decompress


_ZSTD_CTX = _Zstd()


CORRUPT_LOGGED = 10  # corrupt records found on read logged one by one per segment


def _mib(n: int) -> str:
    """A byte count for a message, to two decimals in MiB (whole MiB hid the difference
    between 1.9 MiB free and a 1.9 MiB reserve: "1 MiB free ... under the reserve of 1 MiB")."""
    return f"{n / (1 << 20):.2f} MiB"


class LogStore:
    """A log-structured key-value store in one directory (one process at a time).

    ``LogStore(path, sync="none")``; ``put(k, v)``, ``get(k)``, ``delete(k)``, ``close()``.
    Keys are 1 byte .. ``max_key_size`` bytes, values 0 .. ``max_value_size`` bytes, both
    ``bytes``. Values over ``compress_threshold`` bytes are stored zstd-compressed when that
    helps. ``compact_dead_ratio``: start a background compaction when dead bytes reach this
    share of the data (checked at each segment rotation); None disables it. ``progress``:
    ``callback(done, total)`` for opening and compaction. ``readonly``: no writes, a shared
    lock (several readers may open the directory while no writer holds it).
    ``min_free_bytes``: writes are refused (``StorageFull``) while less is free on the file
    system, as ``check_space()`` last found: the store does not look at the free space by
    itself, so a program embedding it calls ``check_space()`` now and then (a node does every
    gossip round); a failed write-out refuses them too (module docstring, "Out of space").
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync: str = "none",
        *,
        sync_interval_ms: int = 50,
        segment_bytes: int = 64 << 20,
        max_key_size: int = 65536,
        max_value_size: int = 16 << 20,
        compress_threshold: int = 4096,
        compact_dead_ratio: float | None = 0.5,
        progress: Progress | None = None,
        readonly: bool = False,
        min_free_bytes: int = 0,
    ) -> None:
        if sync not in SYNC_MODES:
            raise InvalidRequest(f"sync must be one of {SYNC_MODES}, not {sync!r}")
        if not 64 <= segment_bytes <= 1 << 30:
            raise InvalidRequest("segment_bytes must be between 64 and 1 GiB")
        if not 1 <= max_key_size <= record.MAX_KEY:
            raise InvalidRequest(f"max_key_size must be between 1 and {record.MAX_KEY}")
        if not 0 <= max_value_size <= (1 << 31):
            raise InvalidRequest("max_value_size must be between 0 and 2 GiB")
        # the rest checked here too, before the directory is locked: a bad value used to fail
        # deep in the keydir (OverflowError) with the lock held until the garbage collector
        if compress_threshold is not None and not 0 <= compress_threshold <= 1 << 62:
            raise InvalidRequest("compress_threshold must be None or between 0 and 2**62")
        if not 0 <= sync_interval_ms <= 1 << 31:
            raise InvalidRequest("sync_interval_ms must be between 0 and 2**31")
        if compact_dead_ratio is not None and not 0 < compact_dead_ratio <= 1:
            raise InvalidRequest("compact_dead_ratio must be None or in (0, 1]")
        self.path = os.fspath(path)
        self.sync = sync
        self.readonly = readonly
        self._segment_bytes = segment_bytes
        self._interval = max(1, sync_interval_ms) / 1000.0
        self._cthresh = compress_threshold if compress_threshold is not None else 1 << 62
        self._max_value = max_value_size
        self._dead_ratio = compact_dead_ratio
        self._idle_compact_at = 0.0
        self._space_compact_at = 0.0  # (monotonic) no compaction for space before this
        # (bytes of input segments done, of total) while a compaction runs, else None
        self.compacting: tuple[int, int] | None = None
        if min_free_bytes < 0:
            raise InvalidRequest("min_free_bytes must be >= 0")
        self.min_free_bytes = min_free_bytes
        # why writes are refused (None: they are not): the reserve is not free, and/or a
        # write-out failed (its records stay buffered until check_space() writes them out)
        self._low_space: str | None = None
        self._write_failed: str | None = None
        # the directory's fsync after a rotation could not open the directory (out of file
        # descriptors): why writes are refused until check_space() syncs it (_no_fds)
        self._dir_unsynced: str | None = None
        self._sync_broken: str | None = None  # an fsync failed: refused until reopened
        self._progress = progress
        self._always = sync == "always"
        self._closed = True
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise NotADirectoryError(f"{self.path}: not a directory (a store is one)")
        if not readonly:
            os.makedirs(self.path, exist_ok=True)
        elif not os.path.isdir(self.path):
            raise FileNotFoundError(self.path)
        self._dirlock = DirLock(self.path, shared=readonly)
        self._compact_lock = threading.Lock()  # one compaction at a time
        # group commit state, guarded by _glock (see _commit)
        self._glock = threading.Lock()
        self._durable = 0  # highest keydir seq known to be on disk
        self._syncing = False  # a leader is gathering or syncing
        self._queue: list[list] = []  # followers: [seq, lock held until woken, thread id, role]
        self._groups: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
        self._want = 0  # while the leader gathers: followers it waits for (0: not gathering)
        self._gathered: threading.Lock | None = None  # released when _want followers queued
        self._kd = KeyDir(max_key_size, max_value_size, WRITE_BUFFER)
        # appends, rotation, segment table; a C lock the keydir's fast put can see (see put())
        self._lock = self._kd.lock
        self._segs: dict[int, Segment] = {}
        self._active: Segment | None = None
        self._next_fid = 0
        self._next_major = 1
        self._corrupt = CorruptKeys()  # (indexed by partition: corrupt_in)
        self._corrupt_logged: dict[int, int] = {}  # segment -> corrupt records found on read
        # records that failed their check (CRC, or not the record the keydir points at) when
        # read, by a get or a compaction, since the open (stats "corrupt_records"; a node
        # exports it as zkv_corrupt_records_total): each once, its keydir entry goes with it
        self.corrupt_records = 0
        # corrupt regions the open skipped: the records in them are gone, and where a key was
        # unreadable nothing says which key lost its newest version (an older one now reads)
        self.damaged_regions = 0
        # segments with such a region never get a hints file: hints list only good records,
        # so the next open, trusting them, would find the key whose newest record is the
        # corrupt one at its older version again, and not in corrupt_keys (it scans instead)
        self._damaged: set[int] = set()
        self._compactor: threading.Thread | None = None
        self._compactions = 0
        # bytes -> seconds to wait before rewriting them: set by a node to share its I/O
        # budget with compaction (compaction.py, "Pacing"); None: compaction runs flat out
        self.throttle: Callable[[int], float] | None = None
        self._stop = threading.Event()
        self._sync_errors = RepeatLog(log)  # (a full disk: each tick, one traceback per 10 s)
        self._syncer: threading.Thread | None = None
        # segments rotated out, counted: queued for the sealer (_Sealer), fsynced, sealed
        # (fsynced and given their hints); guarded by _seal_cv
        self._seal_cv = threading.Condition(threading.Lock())
        self._rotated = self._synced = self._sealed = 0
        self._pending: deque[tuple[Segment, Any]] = deque()  # (segment, its mapping) to seal
        try:
            self._open()
            # hot path: get() is the keydir's C method, falling back to _get_slow for the rare
            # cases
            self._kd.slow = self._get_slow
            self.get = self._kd.get  # type: ignore[method-assign]
            if not self._always and not readonly:
                # hot path: put() is the keydir's C method too (see put() for when it steps
                # aside)
                self._kd.put_policy(segment_bytes, self._cthresh, self._put_locked)
                self.put = self._kd.put  # type: ignore[method-assign]
        except BaseException:  # (whatever failed: the directory is not left locked)
            self._kd.close()
            for s in self._segs.values():
                s.close()
            self._dirlock.release()
            raise
        self._closed = False
        self._pid = os.getpid()  # (a forked child's copy is closed: _forked_child)
        _OPEN.add(self)
        if sync == "interval" and not readonly:
            self._syncer = threading.Thread(target=self._sync_loop, name="zkv-sync", daemon=True)
            self._syncer.start()

    # ------------------------------------------------------------------ opening
    def _new_fid(self) -> int:
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def _open(self) -> None:
        files: dict[tuple[int, int], set[str]] = {}
        for fn in os.listdir(self.path):
            if fn.endswith(TMP_SUFFIX):
                if not self.readonly:
                    log.warning("removing leftover temporary file %s", os.path.join(self.path, fn))
                    os.unlink(os.path.join(self.path, fn))
                continue
            parsed = parse_name(fn)
            if parsed:
                files.setdefault(parsed[0], set()).add(parsed[1])
        # (a name an orphan hints file still holds is never given to a new segment)
        top = max(files, default=(0, 0))
        lost_files: list[tuple[tuple[int, int], list]] = []  # (name, its hints' entries)
        for name, kinds in list(files.items()):
            if "data" not in kinds:
                orphan = os.path.join(self.path, hint_name(name))
                # A compaction stopped between unlinking an input and its hints leaves this,
                # harmlessly: its outputs, named after its newest input, hold the records.
                # With no compaction output newer than it the data file was lost otherwise
                # (rm, a restore, a disk): the keys whose newest record it held read their
                # older versions (deletes undone) or nothing. That is damage: counted (a node
                # refills), its keys listed as corrupt, and the hints, its only record of
                # which keys, kept until a compaction after it makes them a leftover.
                if any(n > name and n[1] > 0 and "data" in files[n] for n in files):
                    log.warning("segment %s has hints (%d bytes) but no data file: %s",
                                data_name(name), os.path.getsize(orphan),
                                "left as it is (read-only)" if self.readonly else
                                "removing them (harmless after an interrupted compaction; "
                                "else the keys it held lost their values here)")
                    if not self.readonly:
                        os.unlink(orphan)
                else:
                    data = read_hints(orphan)
                    entries = record.parse_hints(data) if data is not None else None
                    if data is not None and not isinstance(data, bytes):
                        data.close()
                    log.error("segment %s has hints (%d bytes) but no data file, and no "
                              "compaction output is newer: the data file was lost, and the "
                              "keys it held lost their values here (%s; hints kept)",
                              data_name(name), os.path.getsize(orphan),
                              "hints unreadable" if entries is None else
                              f"it named {len(entries)} record(s)")
                    self.damaged_regions += 1
                    lost_files.append((name, entries or []))
                del files[name]
        ordered = sorted(files)
        # the last close sealed every segment: each has its hints (the newest may be empty
        # instead: nothing to lose). False after a crash, kill -9 or power loss, whose
        # unsynced tail may be gone: right after a rotation the newest is empty, but the one
        # before it, rotated out and not sealed yet, has no hints. (Conservative: a segment
        # whose hints could not be written or that has a corrupt region makes it False too.)
        self.closed_cleanly = all("hint" in files[n] for n in ordered[:-1]) and (
            not ordered or "hint" in files[ordered[-1]] or os.path.getsize(
                os.path.join(self.path, data_name(ordered[-1]))) == 0)
        if files or lost_files:
            self._next_major = top[0] + 1
        corrupt: list[bytes] = []
        kd = self._kd
        total = len(ordered)
        # room for every hints entry at once: no rehash or array growth between files
        room = [hints_size(os.path.join(self.path, hint_name(n))) for n in ordered
                if "hint" in files[n]]
        kd.reserve(sum(r[0] for r in room), sum(r[1] for r in room))
        for i, name in enumerate(ordered):
            last = i == total - 1
            st = os.stat(os.path.join(self.path, data_name(name)))
            fid = self._new_fid()
            loaded = False
            cut: list = []  # hints entries naming records past the segment's end
            data = read_hints(os.path.join(self.path, hint_name(name))) \
                if "hint" in files[name] else None
            if data is not None:
                got = kd.load_hints(data, fid, st.st_size)
                loaded = got >= 0
                if got == -2:
                    cut = [e for e in record.parse_hints(data) or () if e[1] + e[2] > st.st_size]
                if not isinstance(data, bytes):
                    data.close()
            # the newest segment takes the next appends, unless another directory entry links
            # its file too (a snapshot moved into place, `cp -al`): appending there would write
            # into the store or snapshot it was linked from; or it lost its tail (`cut`: its
            # hints stay, the damage's evidence). A new active segment starts instead.
            active = last and name[1] == 0 and not self.readonly and st.st_nlink == 1 \
                and not cut
            seg = Segment(fid, name, self.path, writable=active)
            self._segs[seg.fid] = seg
            if cut:
                # Its hints were written when it was whole (a clean close): records are gone
                # from its end, and the keys whose newest record they were read older
                # versions (deletes undone) or nothing. Not a crash's torn tail (that
                # segment has no hints): damage. Its keydir entries pointed past the file
                # (the newest's past its write buffer: a SIGSEGV); it is scanned instead.
                log.error("segment %s is shorter (%d bytes) than its hints file says: %d "
                          "record(s) lost from its end, e.g. for key(s) %s; scanning it "
                          "(its hints kept)", seg.path, st.st_size, len(cut),
                          ", ".join(repr(e[4][:64]) for e in cut[:3]))
                self.damaged_regions += 1
                self._damaged.add(seg.fid)  # (no new hints file: the old one is the evidence)
            elif data is not None and not loaded:
                log.warning("hints file %s is bad; scanning its segment", seg.hint_path)
            if active and data is not None:  # appends are coming: the hints would go stale
                os.unlink(seg.hint_path)
                fsync_dir(self.path)
            # mapped up to the first hole at most (segment.written_end: a hole's page read
            # through a mapping on a full tmpfs is SIGBUS); past it the file holds no record
            mm = seg.remap(written_end(seg.fd, seg.size))
            if not loaded:
                # the newest segment may end in a torn record and/or a preallocated zero tail
                tail = last and name[1] == 0
                end, _n, bad_keys, bad = kd.scan_load(mm if mm is not None else b"", seg.fid, tail)
                corrupt.extend(bad_keys)
                if bad:
                    log.warning("segment %s: %d corrupt region(s) skipped", seg.path, bad)
                    self.damaged_regions += bad
                if end < seg.size:
                    torn = len(mm[end:].rstrip(b"\0")) if mm is not None else 0
                    if torn:
                        log.warning("segment %s: torn tail of %d bytes %s at offset %d", seg.path,
                                    torn, "truncated" if active else "ignored", end)
                    else:
                        log.info("segment %s: preallocated tail of %d zero bytes dropped at "
                                 "offset %d", seg.path, seg.size - end, end)
                    if active:
                        mm = None
                        seg.mm = None
                        os.ftruncate(seg.fd, end)
                        os.fsync(seg.fd)
                        seg.size = end
                        mm = seg.remap()
                    else:  # readonly: leave the file, index and map only the log
                        seg.size = end
                if bad:
                    self._damaged.add(seg.fid)  # (no hints file for it, ever: see __init__)
                if not active and not self.readonly and seg.fid not in self._damaged:
                    try:  # (a full disk: the open goes on, the next one scans again)
                        write_hints(seg.hint_path, mm if mm is not None else b"")
                    except OSError as exc:
                        log.warning("no hints file for %s (%s)", seg.path, exc)
                        try:
                            os.unlink(seg.hint_path + TMP_SUFFIX)
                        except FileNotFoundError:
                            pass
            kd.map_segment(seg.fid, mm if mm is not None else b"")
            if cut:
                self._lose(cut, name, corrupt)
            if active:
                self._active = seg
            if self._progress:
                self._progress(i + 1, total)
        kd.trim()  # the reserve counted every hints entry, overwritten keys included
        for name, entries in lost_files:
            self._lose(entries, name, corrupt)
        if not self.readonly and self._active is None:
            self._start_active()
        if self._active is not None:
            kd.set_active(self._active.fid, self._active.fd, self._active.size, PREALLOC)
        self._corrupt = CorruptKeys(k for k in corrupt if kd.lookup(k) is None)
        if self.damaged_regions:
            # records were lost, as with a crash's unsynced tail: a node takes a new dot id
            # (core._dots_base), since the versions it holds may not name the last dots it
            # issued (a cut newest segment keeps its hints, so every segment had them)
            self.closed_cleanly = False
        self._gate()
        if self._corrupt:
            log.warning("%s: %d key(s) lost to corruption need repair", self.path, len(self._corrupt))

    def _lose(self, entries: list, name: tuple[int, int], corrupt: list[bytes]) -> None:
        """Hints `entries` of segment `name` name records that are gone (its data file, or
        its tail): each key whose entry now is older than it (or absent) lost its newest
        record, and must not read its older version (a value back, a delete undone): its
        entry is dropped and it joins `corrupt` (as a scan does for a record failing its
        CRC). A key a newer segment loaded since holds is kept; one whose lost record and
        older entry are both deletes (or that has none) lost nothing that reads."""
        kd = self._kd
        segs = self._segs
        # (a hints file has an entry per record, in the log's order: a key's last is its
        # newest, the one whose loss matters; a put before a lost delete lost nothing more)
        newest = {key: flags for _h, _off, _size, flags, key in entries}
        for key, flags in newest.items():
            e = kd.lookup(key)
            if e is not None and segs[e[0]].name > name:
                continue  # (a later segment's: newer)
            if flags & _TOMB and (e is None or e[3] & _TOMB):
                continue
            if e is not None:
                kd.remove_if(key, e[0], e[1])
            corrupt.append(key)

    def _start_active(self, sync_dir: bool = True) -> None:
        """A new, empty active segment; its directory entry fsynced now, or (`sync_dir`
        False, at a rotation) by the sealer before the rotation counts as fsynced: a
        directory's fsync waits for the file system's journal, tens of milliseconds while
        other files are being written (a compaction, a seal), and it held the store lock."""
        seg = Segment(self._new_fid(), (self._next_major, 0), self.path, writable=True)
        self._next_major += 1
        if sync_dir:
            fsync_dir(self.path)
        self._segs[seg.fid] = seg
        self._active = seg

    # ------------------------------------------------------------------ writes
    def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``. InvalidRequest (nothing written) for bad input.

        Unless ``sync="always"``, an open store replaces this method by ``KeyDir.put``: one C
        call that validates, encodes, buffers and indexes the record when it needs no
        compression and no segment rotation, no thread holds the store lock and no key awaits
        repair; any other put it hands to ``_put_locked`` (this path, under the lock). Both
        keep the records in call order and give the same errors."""
        seq = self._put_locked(key, value)
        if self._always:
            self._commit(seq)

    def _put_locked(self, key: bytes, value: bytes) -> int:
        """Append one put under the store lock (rotating when the segment is full); its seq."""
        if value.__class__ is bytes and len(value) > self._cthresh:
            return self._put_big(key, value)
        with self._lock:
            self._refuse_if_full()
            if self._kd.append(key, value, 0) >= self._segment_bytes:
                self._rotate_after_append()
            if self._corrupt:
                self._repaired((key,))
            return self._kd.seq

    def _put_big(self, key: bytes, value: bytes) -> int:
        if len(value) > self._max_value:
            raise InvalidRequest(f"value of {len(value)} bytes is over the {self._max_value}-byte limit")
        value, flags = self._compress(value)
        with self._lock:
            self._refuse_if_full()
            if self._kd.append(key, value, flags) >= self._segment_bytes:
                self._rotate_after_append()
            if self._corrupt:
                self._repaired((key,))
            return self._kd.seq

    @staticmethod
    def _compress(value: bytes) -> tuple[bytes, int]:
        packed = _ZSTD_CTX.compress(value)
        if len(packed) < len(value):
            return packed, _ZSTD
        return value, 0

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Store every ``(key, value)`` pair in order, as that many ``put`` calls would, in one
        call (the per-record work is one C loop). If any pair is bad, InvalidRequest names it
        and nothing is written. With ``sync="always"`` one group commit covers the batch."""
        items = list(items)  # private: the C loop reads it without re-checking
        kd = self._kd
        kd.check_batch(items)
        n = len(items)
        seg_bytes = self._segment_bytes
        with self._lock:
            self._refuse_if_full()
            i = 0
            rotate = True  # (after a rotation failed, the rest of the batch stays in this one)
            while i < n:
                i = kd.append_batch(items, i, self._cthresh, seg_bytes if rotate else 1 << 62)
                if i < n and (kd.active_end < seg_bytes or not rotate):  # (a value to compress)
                    key, value = items[i]
                    value, flags = self._compress(value)
                    kd.append(key, value, flags)
                    i += 1
                if rotate and kd.active_end >= seg_bytes:
                    rotate = self._rotate_after_append()
            if self._corrupt:
                self._repaired(k for k, _v in items)
            seq = kd.seq
        if self._always:
            self._commit(seq)

    def _repaired(self, keys: Iterable[bytes]) -> None:
        """Keys just rewritten no longer need repair. Holds self._lock."""
        for k in keys:
            self._corrupt.discard(k)
        self._gate()

    def _gate(self) -> None:
        """The keydir's C put steps aside (to the locked path) while a key awaits repair or
        writes are refused. Holds self._lock (or the store is not open yet)."""
        self._kd.put_gate = 1 if (self._corrupt or self.write_error) else 0

    def _refuse_if_full(self) -> None:
        """StorageFull, before anything is written, while writes are refused. Holds self._lock."""
        self._note_append_failure()
        why = self.write_error
        if why is not None:
            raise StorageFull(why)

    def _note_append_failure(self) -> None:
        """A write-out the keydir did inside an append (its buffer full) failed: it kept the
        records buffered, returned normally (the put is buffered, as every put is until a
        write-out) and closed its C put (``put_gate``); refuse writes from here as after any
        failed write-out. Holds self._lock."""
        err = self._kd.write_errno
        if err and self._write_failed is None:
            self._failed(OSError(err, os.strerror(err)))

    def _failed(self, exc: OSError) -> StorageFull:
        """Writing out failed: refuse writes until check_space() writes the buffer out.
        Holds self._lock."""
        was = self._write_failed
        self._write_failed = (f"writing {self.path} failed: "
                              f"{exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}"
                              + self._fds_hint(exc))
        if was is None:
            log.error("%s; writes are refused until it can write again (check_space)",
                      self._write_failed)
        self._gate()
        return StorageFull(self._write_failed)

    def _sync_failed(self, exc: OSError, locked: bool) -> None:
        """An fsync of a segment failed: refuse writes until the store is opened again (see the
        module docstring). `locked`: the caller holds self._lock. The caller re-raises."""
        if exc.errno == errno.EBADF:
            return  # (the segment was sealed, which fsyncs, and closed meanwhile)
        if self._sync_broken is None:
            self._sync_broken = (
                f"fsync in {self.path} failed "
                f"({exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}): what was written "
                "since the last good fsync may not be on disk; writes are refused until the "
                "node restarts (check the disk first)")
            log.error("%s", self._sync_broken)
        # the keydir's C put checks no lock: refused from now on, not from when this thread
        # gets the lock (the sealer's thread calls this; the locked _gate() agrees)
        self._kd.put_gate = 1
        if locked:
            self._gate()
        else:
            with self._lock:
                self._gate()

    def _fds_hint(self, exc: OSError) -> str:
        """What to do about `exc` if it is the process running out of file descriptors (each
        segment holds two: its file and its mapping's), else ""."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return ""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        return (f" (this process's open-file limit, ulimit -n, is {limit}; this store has "
                f"{len(self._segs)} segments, two descriptors each: raise the limit, e.g. "
                "LimitNOFILE= in its systemd unit)")

    def _no_fds(self, exc: OSError) -> None:
        """The sealer could not open the directory to fsync it (out of file descriptors): the
        segment's own fsync went through. Writes are refused until check_space() syncs the
        directory; an fsync failure it is not (that one refused writes until a restart, and
        said to check the disk: an outside run)."""
        with self._lock:
            if self._dir_unsynced is None:
                self._dir_unsynced = (f"syncing the directory {self.path} failed: "
                                      f"{exc.strerror}{self._fds_hint(exc)}")
                log.error("%s; writes are refused until it can", self._dir_unsynced)
            self._gate()

    @property
    def write_error(self) -> str | None:
        """Why writes are refused now (None: they are taken); see check_space()."""
        why = (self._sync_broken or self._low_space or self._write_failed
               or self._dir_unsynced)
        if why is None and self._kd.write_errno:  # (noted by the next write: _refuse_if_full)
            why = f"writing {self.path} failed: {os.strerror(self._kd.write_errno)}"
        return why

    def check_space(self) -> str | None:
        """Look again (one statvfs, and a write-out if one failed): why writes are refused now,
        or None when they are taken. Records a failed write-out left buffered are written out
        first; writes resume once that worked and ``min_free_bytes`` are free."""
        if self._closed or self.readonly:
            return None
        with self._lock:
            self._note_append_failure()
            if self._dir_unsynced is not None:
                try:
                    fsync_dir(self.path)
                except OSError:
                    pass
                else:
                    log.info("%s: the directory is synced again", self.path)
                    self._dir_unsynced = None
            if self._write_failed is not None:
                try:
                    self._kd.flush()
                except OSError as exc:
                    self._failed(exc)
                else:
                    log.info("%s: the buffered records are written out", self.path)
                    self._write_failed = None
            low = None
            free = free_bytes(self.path) if self.min_free_bytes else None
            if free is not None and free < self.min_free_bytes:
                low = (f"{_mib(free)} free on the file system of {self.path}, under the "
                       f"reserve of {_mib(self.min_free_bytes)}")
            self._low_space = low
            self._gate()
            self._idle_autocompact()
            if free is not None and low is not None:
                self._compact_for_space(self.min_free_bytes - free)
            return self.write_error

    def _compact_for_space(self, short: int) -> None:
        """Writes are refused for space, `short` bytes under the reserve: compact in the
        background if the dead records could free that much. Only a rotation checked for
        compaction, and with writes refused none came: a node whose disk was two thirds dead
        records refused writes (deletes too) until an operator stepped in (an outside run).
        At most once per SPACE_COMPACT_EVERY s. Holds self._lock."""
        now = time.monotonic()
        if self._dead_ratio is None or now < self._space_compact_at:
            return
        dead = self._total_bytes() - self._kd.live_bytes
        # (one segment too: compaction seals the active one first; a store under a segment's
        # size, 64 MiB, 95% dead records, refused writes for good: an outside run)
        if dead >= short:
            self._space_compact_at = now + SPACE_COMPACT_EVERY
            if self._start_compactor() is not None:
                log.warning("%s: %s of dead records, writes refused for space: compacting",
                            self.path, _mib(dead))

    def _total_bytes(self) -> int:
        """Bytes of every segment, the active one's written part included. Holds
        self._lock."""
        total = sum(s.size for s in self._segs.values() if s is not self._active)
        return total + (self._kd.active_end if self._active is not None else 0)

    def delete(self, key: bytes) -> None:
        """Write a tombstone for ``key`` (kept through compaction until released)."""
        with self._lock:
            self._refuse_if_full()
            if self._kd.append(key, b"", _TOMB) >= self._segment_bytes:
                self._rotate_after_append()
            seq = self._kd.seq
            if self._corrupt:
                self._repaired((key,))
        if self._always:
            self._commit(seq)

    def _rotate_after_append(self) -> bool:
        """`_rotate` for a write whose record is appended already: a failure refuses the next
        writes (logged by _failed) but not this one, whose record stays buffered and readable
        like any record a write-out has not reached yet (raising would tell the caller a
        write failed that is in the store). False if the rotation failed. Holds self._lock."""
        try:
            self._rotate()
        except StorageFull:
            return False
        return True

    def _rotate(self) -> None:
        """Seal the active segment (flush, fsync, hints) and start a new one. Holds self._lock.
        StorageFull if that fails (the record that filled the segment stays buffered, the old
        segment stays active, and check_space() decides when writes resume)."""
        seg = self._active
        try:
            self._rotate_now()
        except OSError as exc:
            if seg is not None and self._active is seg:  # still active: its appends go on, so
                try:  # no hints file may describe it (a reopen would trust it and miss them)
                    os.unlink(seg.hint_path)
                except FileNotFoundError:
                    pass
            raise self._failed(exc) from exc

    def _rotate_now(self) -> None:
        """Everything written goes to the old segment's file, which is trimmed and mapped for
        reads; a new active segment takes the next writes; the old one's fsync and hints are
        the sealer's (_Sealer), off the writer's thread."""
        kd, seg = self._kd, self._active
        assert seg is not None
        kd.flush()
        self._trim(seg)
        mm = seg.remap()  # (what may fail comes before the switch: the old one stays active)
        self._start_active(sync_dir=False)
        new = self._active
        assert new is not None
        kd.set_active(new.fid, new.fd, 0, PREALLOC)
        self._map(seg.fid, mm)
        with self._seal_cv:
            self._rotated += 1
            self._pending.append((seg, mm))
        _SEALER.wake(self)
        self._maybe_autocompact()

    def _trim(self, seg: Segment) -> None:
        """Trim the flushed active segment to its logical end (dropping the preallocated
        tail), so neither its mapping nor its hints see the zeros. Holds self._lock."""
        seg.size = self._kd.active_end
        if os.fstat(seg.fd).st_size != seg.size:
            os.ftruncate(seg.fd, seg.size)

    def _seal(self, seg: Segment) -> None:
        """Trim the flushed active segment and fsync it, before its hints are written (at
        close). Holds self._lock."""
        self._trim(seg)
        try:
            os.fsync(seg.fd)
        except OSError as exc:
            self._sync_failed(exc, locked=True)
            raise

    def _seal_next(self) -> bool:
        """Seal the oldest segment still queued (the sealer's thread, or close()'s); False if
        none is."""
        with self._seal_cv:
            if not self._pending:
                return False
            seg, mm = self._pending.popleft()
        self._seal_now(seg, mm)
        return True

    def _seal_now(self, seg: Segment, mm) -> None:
        """The sealer's work for one segment rotated out (in rotation order): fsync (and the
        directory's, for the segment that replaced it), then its hints file (none after a
        failed fsync: the reopen scans the segment, checking each record's CRC, rather than
        trust an index of what may not be on disk). Each step is counted whatever happens: a
        durability claim, compaction and close wait for them."""
        try:
            ok = False
            try:
                os.fsync(seg.fd)
            except OSError as exc:
                self._sync_failed(exc, locked=False)  # (refuses writes; said once)
            else:
                try:
                    fsync_dir(self.path)  # (the next segment's entry: _start_active)
                    ok = True
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self._no_fds(exc)  # (no hints: they need a descriptor too)
                    else:
                        self._sync_failed(exc, locked=False)
            finally:
                with self._seal_cv:
                    self._synced += 1
                    self._seal_cv.notify_all()
            if ok and seg.fid not in self._damaged:
                write_hints(seg.hint_path, mm if mm is not None else b"")
        except Exception as exc:  # (a .tmp hints file left is removed at the next open)
            log.warning("no hints file for %s (%s): a reopen scans the segment", seg.path,
                        exc)
        finally:
            with self._seal_cv:
                self._sealed += 1
                self._seal_cv.notify_all()

    def _seal_done(self, upto: int, synced_only: bool = False) -> bool:
        """Wait until the first `upto` segments rotated out are sealed (or only fsynced);
        False if an fsync failed (writes are refused then). Holds no store lock."""
        with self._seal_cv:
            while (self._synced if synced_only else self._sealed) < upto:
                self._seal_cv.wait()
        return self._sync_broken is None

    def _idle_autocompact(self) -> None:
        """check_space()'s look at the dead share, at most every IDLE_COMPACT_EVERY s: a
        store whose records went dead after its last rotation (a handoff store whose hints
        were all delivered, values overwritten or deleted and then no more writes) was
        checked only when a segment next filled, so it kept its dead segments for good.
        Holds self._lock."""
        now = time.monotonic()
        if now < self._idle_compact_at:
            return
        self._idle_compact_at = now + IDLE_COMPACT_EVERY
        self._maybe_autocompact()

    def _maybe_autocompact(self) -> None:
        if self._dead_ratio is None or (self._compactor and self._compactor.is_alive()):
            return
        total = self._total_bytes()
        dead = total - self._kd.live_bytes
        if total > 0 and dead >= self._dead_ratio * total and len(self._segs) > 1:
            self._start_compactor()

    def _commit(self, seq: int) -> None:
        """Group commit: return once record ``seq`` is on disk, fsyncing as the batch leader.

        The first writer to find no sync in progress leads: it flushes the write buffer and
        fdatasyncs once for every record appended so far. Writers arriving meanwhile queue,
        each blocked on its own lock; when the sync ends the leader releases those it covered
        (they return without touching a shared lock) and hands the lead to the first one it did
        not cover. Before flushing, a leader waits (at most GATHER_S) until every thread of the
        last two groups is queued: writers released together come back together, and without
        the wait the first of them to return would sync before the rest have appended, so steady
        writers settle into two alternating half-size groups (measured: 8 writer threads,
        groups of 3.9 on average; with the wait 7.9). A lone writer never waits.
        """
        glock = self._glock
        glock.acquire()
        while self._durable < seq:
            if self._sync_broken is not None:  # a sync failed: a retry could "succeed" without
                glock.release()  # this record's pages (see the module docstring)
                raise StorageFull(self._sync_broken)
            if self._syncing:  # follow: queue and sleep until the leader wakes us
                w: list[Any] = [seq, threading.Lock(), threading.get_ident(), _WAIT]
                w[1].acquire()
                self._queue.append(w)
                if self._want and len(self._queue) >= self._want:
                    self._want = 0
                    assert self._gathered is not None  # set with _want
                    self._gathered.release()
                glock.release()
                try:
                    w[1].acquire()
                except BaseException:  # interrupted: leave the queue, pass on a lead given to us
                    with glock:
                        if w in self._queue:
                            self._queue.remove(w)
                        elif w[3] == _LEAD:
                            self._syncing = False
                            for o in self._queue:
                                o[3] = _RETRY
                                o[1].release()
                            self._queue.clear()
                    raise
                if w[3] == _DONE:
                    return
                glock.acquire()
                if w[3] == _RETRY:
                    continue
                # _LEAD: the previous leader handed us the sync (self._syncing stays True)
            else:
                self._syncing = True
            self._lead()
            return
        glock.release()

    def _lead(self) -> None:
        """Gather, flush, fdatasync, wake the covered followers, hand on the lead. Entered with
        _glock held and self._syncing True; returns with _glock released."""
        glock, queue = self._glock, self._queue
        target = 0
        locked = True
        try:
            g1, g2 = self._groups
            want = len(g1 | g2) - 1  # followers to wait for (this thread leads)
            if len(queue) < want:
                gathered = threading.Lock()
                gathered.acquire()
                self._want, self._gathered = want, gathered
                glock.release()
                locked = False
                gathered.acquire(timeout=GATHER_S)
                glock.acquire()
                locked = True
                self._want, self._gathered = 0, None
            self._groups = (frozenset([threading.get_ident(), *(w[2] for w in queue)]), g1)
            glock.release()
            locked = False
            with self._lock:
                try:
                    self._kd.flush()
                except OSError as exc:
                    raise self._failed(exc) from exc
                assert self._active is not None
                fd = self._active.fd
                target = self._kd.seq
                rotated = self._rotated
            try:
                os.fdatasync(fd)
            except OSError as exc:
                if self._active is not None and fd == self._active.fd:
                    target = 0
                    self._sync_failed(exc, locked=False)
                    raise
                # the segment was sealed (which fsyncs) and closed meanwhile
            if not self._seal_done(rotated, synced_only=True):  # the records before `fd`'s
                target = 0
                raise StorageFull(self._sync_broken or "fsync failed")
        finally:
            if not locked:
                glock.acquire()
            try:
                self._want, self._gathered = 0, None
                if target > self._durable:
                    self._durable = target
                rest = []
                for w in queue:
                    if target and w[0] <= target:
                        w[3] = _DONE
                        w[1].release()
                    else:
                        rest.append(w)
                if not rest:
                    self._syncing = False
                elif target:  # hand the lead to the oldest follower not covered
                    nxt = rest.pop(0)
                    nxt[3] = _LEAD
                    nxt[1].release()
                else:  # this sync failed: everyone retries, one of them leads
                    self._syncing = False
                    for w in rest:
                        w[3] = _RETRY
                        w[1].release()
                    rest = []
                queue[:] = rest
            finally:
                glock.release()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._interval):
            if self._kd.write_errno and self._write_failed is None:
                with self._lock:
                    self._note_append_failure()  # (said now, not at the next write)
            if self._write_failed is not None or self._sync_broken is not None:
                continue  # (check_space retries a write-out; _failed / _sync_failed logged why)
            try:
                self._flush_and_sync()
            except StorageFull:
                pass  # (logged by _failed)
            except Exception:  # logged (once per 10 s), retried next tick
                if self._sync_broken is None:  # (a failed fsync: said once by _sync_failed)
                    self._sync_errors.exception("background fsync failed")

    def _flush_and_sync(self) -> None:
        with self._lock:
            if self._active is None:
                return
            target = self._kd.seq
            if target <= self._durable:
                return  # nothing appended since the last sync (an idle node's every tick)
            try:
                self._kd.flush()
            except OSError as exc:
                raise self._failed(exc) from exc
            fd = self._active.fd
            rotated = self._rotated
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._sync_failed(exc, locked=False)
            raise
        if not self._seal_done(rotated, synced_only=True):  # the records before `fd`'s
            raise StorageFull(self._sync_broken or "fsync failed")
        with self._glock:
            if target > self._durable:
                self._durable = target

    def write_out(self) -> None:
        """Hand every buffered record to the OS without fsync: it then survives a crash of
        this process (SIGKILL), though not of the machine. The cluster calls this once per
        loop turn before acknowledging writes."""
        self._check_open()
        if self.readonly:
            return
        with self._lock:
            if self._active is not None:
                try:
                    self._kd.flush()
                except OSError as exc:
                    raise self._failed(exc) from exc

    def flush(self) -> None:
        """Write every buffered record and fsync it now. Every segment rotated out is sealed
        (fsynced, its hints written) by then: until the next write, nothing but a compaction
        writes in the directory (a copy of it is a consistent backup)."""
        self._check_open()
        if not self.readonly:
            self._flush_and_sync()
            if not self._seal_done(self._rotated):  # (every rotation before this call, at least)
                raise StorageFull(self._sync_broken or "fsync failed")

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        """The value, or None if absent, deleted or corrupt (then listed in corrupt_keys())."""
        r = self._kd.get_value(key)
        if r is None:
            if key.__class__ is not bytes:
                raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
            return None
        if r.__class__ is bytes:
            return r  # type: ignore[return-value]  # (mypy does not narrow on __class__)
        return self._get_slow(key, r)  # type: ignore[arg-type]

    def _get_slow(self, key: bytes, code: int) -> bytes | None:
        self._check_open()
        kd = self._kd
        with self._lock:
            e = kd.lookup(key)
            if e is None or e[3] & _TOMB:
                return None
            fid, off, size, flags, _h = e
            if code == _CORRUPT:
                self._mark_corrupt(key, fid, off, "CRC mismatch")
                return None
            rec = kd.read_record(fid, off, size)
            if rec is None:
                seg = self._segs.get(fid)
                if seg is None:
                    self._mark_corrupt(key, fid, off, "segment missing")
                    return None
                if seg is self._active:
                    # a record just written past the mapping (the cluster's read-after-write
                    # pattern). Remapping per read cost ~30 us, a pread per read less but still
                    # more than the mapping (put + write_out + get of one key: 4.9-6.7 us
                    # against 2.0-3.3 us). The file is preallocated in steps (module
                    # docstring), so it is mapped to its allocated end, once per step, and the
                    # reads of what is written until it grows again take the C fast path.
                    # Without a preallocated tail (fallocate failed): pread, and remap once the
                    # unmapped tail is worth an mmap. (Mapped bytes past the written end are never
                    # read: a keydir entry points at written records only.)
                    flushed = kd.active_end - kd.buffered
                    mapped = kd.mapped_length(fid)
                    end = os.fstat(seg.fd).st_size
                    if (end > flushed and end > mapped) or flushed - mapped > _REMAP_MIN:
                        self._map(fid, seg.remap(end))
                    rec = kd.read_record(fid, off, size)
                if rec is None:
                    rec = seg.pread(off, size)
            try:
                rflags, rkey, val, rsize = record.decode(rec)
                if rkey != key or rsize != size:
                    raise CorruptRecord("record does not match its keydir entry")
                if rflags & _ZSTD:
                    val = _ZSTD_CTX.decompress(val)
            except (CorruptRecord, zstandard.ZstdError) as exc:
                self._mark_corrupt(key, fid, off, str(exc))
                return None
            return val

    def _map(self, fid: int, mm) -> None:
        """Serve segment `fid`'s reads from `mm` (None: nothing mapped), and have what it
        replaces unmapped now, on the unmapping thread (`_Unmapper`). Kept until close, every
        step of the active segment left one mapping behind, and compacted-away files stayed
        mapped, their disk space held until the process exited (240 MB written: 278 mappings,
        230 of deleted files). Nothing holds a pointer into a mapping between two keydir
        calls (reads copy, under the GIL), so dropping it anywhere after is safe."""
        self._kd.map_segment(fid, mm if mm is not None else b"")
        retired = self._kd.take_retired()
        if retired:
            _UNMAPPER.drop(retired)

    def unmapped(self, timeout: float = 10.0) -> bool:
        """Wait until every mapping replaced so far is unmapped (False: not within
        `timeout` s). close() waits for it."""
        return _UNMAPPER.wait(timeout)

    def _mark_corrupt(self, key: bytes, fid: int, off: int, why: str) -> None:
        seg = self._segs.get(fid)
        n = self._corrupt_logged[fid] = self._corrupt_logged.get(fid, 0) + 1
        if n <= CORRUPT_LOGGED or n % 1000 == 0:  # (a truncated segment: a line per key read
            # was 1,169 ERROR lines at once; corrupt_keys() lists them all)
            log.error("corrupt record for key %r in %s at offset %d (%s): needs repair%s",
                      key[:64], seg.path if seg else f"fid {fid}", off, why,
                      f" ({n} in this segment so far; the next are counted, every 1000th "
                      "logged)" if n >= CORRUPT_LOGGED else "")
        self._kd.remove_if(key, fid, off)
        self._corrupt.add(key)
        self.corrupt_records += 1
        self._kd.put_gate = 1

    def __contains__(self, key: object) -> bool:
        self._check_open()  # (closed: the keydir still holds what it held; get raises too)
        return self._kd.contains(key)

    def __len__(self) -> int:
        self._check_open()
        return len(self._kd)

    def keys(self) -> Iterator[bytes]:
        """Live keys (a snapshot taken when called)."""
        self._check_open()
        return iter(self._kd.keys())

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of live keys (keys snapshotted when called; values read lazily).
        (Not a generator itself: one snapshotted at its first ``next()``, which yielded a key
        put between the call and that first step: an outside run.)"""
        return self._items(self._kd.keys())

    def _items(self, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        for k in keys:
            v = self.get(k)
            if v is not None:
                yield k, v

    def set_sync_interval_ms(self, ms: int) -> None:
        """The background fsync's period from its next round (``sync="interval"``)."""
        self._interval = max(1, ms) / 1000.0

    def snapshot(self, dest: str) -> dict:
        """Hard-link this store's segments, as they are now, into the new directory `dest` (on
        the same file system): a copy of every record written so far, taken in milliseconds
        without copying data, that later writes and compactions leave as it is (segments are
        never written once sealed, compaction writes new files, and an unlinked original
        stays readable through the link). The active segment is sealed first (rotated, so
        its buffered records are in its file and the next writes go to a new one); hints
        files are linked where the sealer wrote them already (a segment without one is
        scanned when the copy is opened). `dest` opens as a LogStore, in place too: it never
        appends to a linked segment (`_open`). Returns {"files", "bytes"}.
        FileExistsError if `dest` exists; StorageFull if the rotation cannot be written."""
        os.mkdir(dest)
        files = size = 0
        try:
            with self._lock:  # (compaction swaps its segments under it, unlinks them after)
                if self._kd.active_end > 0:
                    self._refuse_if_full()
                    self._rotate()
                for seg in sorted(self._segs.values(), key=lambda s: s.name):
                    if seg is self._active:
                        continue
                    os.link(seg.path, os.path.join(dest, os.path.basename(seg.path)))
                    files += 1
                    size += seg.size
                    try:
                        os.link(seg.hint_path,
                                os.path.join(dest, os.path.basename(seg.hint_path)))
                        files += 1
                    except FileNotFoundError:
                        pass  # (not written yet, or none: the copy's open scans the segment)
            fsync_dir(dest)
            fsync_dir(os.path.dirname(os.path.abspath(dest)))
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # (no partial copy left to be trusted)
            raise
        return {"files": files, "bytes": size}

    def key_hashes(self, lo: int = 0, hi: int = 2**64 - 1) -> list[tuple[bytes, int]]:
        """``[(key, hash)]`` of live keys whose zkv_hash64 is in [lo, hi], without reading values."""
        return self._kd.hash_range(max(0, lo), min(hi, 2**64 - 1))

    def record_size(self, key: bytes) -> int:
        """Bytes the key's record takes on disk (0 if absent), from the keydir (no read)."""
        entry = self._kd.lookup(key)
        return entry[2] if entry else 0

    def partition_bytes(self, q_bits: int) -> tuple[list[int], list[tuple[bytes, int]]]:
        """Record bytes of the live keys per partition of a 2**q_bits ring, the keys whose
        first byte is 0 (a namespace's) apart as (key, size): KeyDir.partition_bytes."""
        self._check_open()
        with self._lock:
            return self._kd.partition_bytes(q_bits)

    def tombstones(self) -> list[bytes]:
        """Keys whose latest record is a tombstone."""
        return self._kd.keys(True)

    def release_tombstones(self, keys: Iterable[bytes]) -> int:
        """Let compaction drop these tombstones (those still tombstones); returns how many.

        Release is in memory: after a reopen, tombstones must be released again."""
        kd = self._kd
        with self._lock:
            return sum(1 for k in keys if kd.release(k))

    def is_corrupt(self, key: bytes) -> bool:
        """Is `key` in corrupt_keys() (its newest record failed its CRC or was lost, and no
        write repaired it since)? Its get() returns None then, which is no "absent": a
        replica must not answer that the key is gone; zkv dump --store asks it per key read. (No
        lock: one set lookup.)"""
        return key in self._corrupt

    def corrupt_keys(self) -> list[bytes]:
        """Keys whose record failed its CRC and that need repair from a replica."""
        with self._lock:
            return sorted(self._corrupt)

    def corrupt_in(self, p: int, q_bits: int) -> list[bytes]:
        """The corrupt_keys() in partition `p` of a ring of 2**q_bits partitions
        (zkv._core.ring.partition_of), in no useful order: that partition's keys are looked
        at, not every corrupt key (storage/corrupt.py)."""
        with self._lock:
            return self._corrupt.in_partition(p, q_bits)

    # ------------------------------------------------------------------ compaction
    def compact(self, progress: Progress | None = None) -> dict:
        """Compact now (blocking): rewrite live records and unreleased tombstones, drop the rest.

        Returns ``{"bytes_before", "bytes_after", "records", "dropped_tombstones",
        "segments_before", "segments_after", "seconds"}``."""
        self._check_open()
        if self.readonly:
            raise InvalidRequest("store opened readonly")
        from zkv.storage.compaction import compact

        outer = progress or self._progress

        def report(done: int, total: int) -> None:
            self.compacting = (done, total)
            if outer is not None:
                outer(done, total)

        self.compacting = (0, 0)
        try:
            stats = compact(self, report)
        finally:
            self.compacting = None
        self._compactions += 1
        return stats

    def _pace(self, nbytes: int) -> None:
        """Called by compaction before it rewrites `nbytes`: wait for the throttle; a close
        meanwhile abandons the compaction."""
        throttle = self.throttle
        delay = throttle(nbytes) if throttle is not None else 0.0
        if delay > 0 and self._stop.wait(delay):
            from zkv.storage.compaction import Aborted

            raise Aborted("store closed during a paced compaction")

    def compact_async(self) -> threading.Thread | None:
        """Start compaction in a background thread; None if one is already running."""
        self._check_open()
        with self._lock:
            return self._start_compactor()

    def _start_compactor(self) -> threading.Thread | None:
        if self.readonly or (self._compactor and self._compactor.is_alive()):
            return None

        def run() -> None:
            from zkv.storage.compaction import Aborted

            try:
                self.compact()
            except Aborted:
                log.info("compaction of %s abandoned: the store is closing", self.path)
            except Exception as exc:
                if isinstance(exc, StorageFull) or (isinstance(exc, OSError) and exc.errno in (
                        errno.ENOSPC, errno.EDQUOT)):
                    # (its outputs removed: nothing changed) sized to the free space at its
                    # start, the writes meanwhile took it (an outside run logged a traceback
                    # for it); tried again later
                    log.warning("compaction of %s abandoned, nothing changed: %s", self.path,
                                exc)
                elif not self._closed:
                    log.exception("background compaction failed")

        t = threading.Thread(target=run, name="zkv-compact", daemon=True)
        self._compactor = t
        t.start()
        return t

    # ------------------------------------------------------------------ admin
    def stats(self) -> dict:
        """Counters: keys, tombstones, segments, bytes (total/live/dead), keydir memory, ..."""
        self._check_open()
        kd = self._kd
        with self._lock:
            total = self._total_bytes()
            live = kd.live_bytes
            n = len(kd)
            return {
                "keys": n,
                "tombstones": kd.tombstone_count,
                "segments": len(self._segs),
                "total_bytes": total,
                "live_bytes": live,
                "dead_bytes": total - live,
                "dead_ratio": (total - live) / total if total else 0.0,
                "keydir_bytes": kd.memory_bytes(),
                "keydir_bytes_per_key": kd.memory_bytes() / kd.count if kd.count else 0.0,
                "corrupt": len(self._corrupt),  # keys awaiting repair
                "corrupt_records": self.corrupt_records,
                "damaged_regions": self.damaged_regions,
                "compactions": self._compactions,
                "sync": self.sync,
                "buffered_bytes": kd.buffered,
                "write_error": self.write_error,
                "compacting": self.compacting,
                "free_bytes": free_bytes(self.path),
            }

    def _check_open(self) -> None:
        if self._closed:
            if self._pid != os.getpid():
                raise InvalidRequest(
                    f"this store was opened by process {self._pid}, before a fork: its lock and "
                    "files belong to that process; open the directory in this one (once that "
                    "one has closed it)")
            raise InvalidRequest("store is closed")

    def close(self) -> None:
        """Flush, fsync, write the active segment's hints (fast reopen) and release the lock."""
        if self._closed:
            return
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        c = self._compactor
        if c is not None and c.is_alive():
            c.join()
        # a compaction another thread runs (compact() called directly): stopped at its next
        # chunk (it checks _stop), and waited for; one that starts meanwhile (autocompaction
        # by a put still running) finds the store closed once it has the lock
        with self._compact_lock:
            self._close_compacted()

    def _close_compacted(self) -> None:
        """close() once no compaction runs. Holds self._compact_lock."""
        while True:  # every segment rotated out sealed, with the lock held from then on
            with self._lock:
                with self._seal_cv:
                    rotated = self._rotated if self._sealed < self._rotated else 0
                if not rotated:
                    self._close_locked()
                    return
            while self._seal_next():  # what is still queued, sealed here
                pass
            if sys.is_finalizing():  # interpreter exit: the sealer's thread no longer runs, and
                with self._lock:  # a segment it had begun stays without hints (the reopen
                    self._close_locked()  # scans it)
                return
            self._seal_done(rotated)  # what the sealer's thread has begun

    def _close_locked(self) -> None:
        """close()'s work once no seal is pending. Holds self._lock."""
        self._closed = True
        _OPEN.discard(self)
        kd, seg = self._kd, self._active
        try:
            if seg is not None:
                buffered = kd.buffered
                try:
                    kd.flush()
                    buffered = 0  # (written out: only the fsync below may fail now)
                    self._seal(seg)
                except OSError as exc:  # (a full disk): the store closes all the same
                    raise self._close_failed(exc, buffered) from None
                # no hints after a failed fsync: the reopen scans the segment, checking
                # each record's CRC, rather than trust an index of what may not be on disk
                if seg.size and self._sync_broken is None and seg.fid not in self._damaged:
                    mm = seg.remap()
                    try:
                        write_hints(seg.hint_path, mm)
                    except OSError as exc:  # (its records are on disk: only the index is not)
                        log.warning("no hints file for %s (%s): a reopen scans the segment",
                                    seg.path, exc)
                        try:
                            os.unlink(seg.hint_path + TMP_SUFFIX)
                        except FileNotFoundError:
                            pass
                    seg.mm = None
                    del mm
        finally:
            kd.close()
            for s in self._segs.values():
                s.close()
            self._segs.clear()
            self._active = None
            _UNMAPPER.wait()  # (the files' space, if they were compacted away, freed)
            self._dirlock.release()

    def _close_failed(self, exc: OSError, buffered: int) -> StorageFull:
        """close()'s StorageFull when the buffer's last write-out or the active segment's fsync
        failed, saying what that cost (the store is closed all the same: a `with` block's exit
        must not leave it locked). Holds self._lock."""
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        if not buffered:  # (written out; the fsync failed)
            return StorageFull(f"closing {self.path}: sealing its active segment failed ({why}): "
                               f"the writes since its last fsync (sync={self.sync!r}) were "
                               "written out but may not survive a power loss; a reopen checks "
                               "every record it reads back")
        if self.sync == "always":  # every put returned after its own write-out and fsync
            lost = f"{buffered} bytes of refused writes dropped; nothing acknowledged is lost"
        else:
            lost = (f"the last {buffered} bytes of buffered writes are lost (sync={self.sync!r}: "
                    "put() returns before its write-out)")
        return StorageFull(f"closing {self.path}: writing out failed ({why}); {lost}")

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort for forgotten stores
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"LogStore({self.path!r}, sync={self.sync!r})"


__all__ = ["LogStore", "SYNC_MODES"]
