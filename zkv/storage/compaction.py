"""Compaction: rewrite the live records of every immutable segment, then swap atomically.

Bitcask's merge (Sheehy & Smith 2010, §"Merge"), made crash-safe by file ordering:
1. Under the store lock, rotate the active segment; the inputs are all immutable segments
   (or, when their live records do not fit the free space, the oldest that do: `_fitting`),
   the newest named (M, s), once the sealer has fsynced them and written their hints. Outputs
   are named (M, s+1), (M, s+2), ...: they replay after every input and before anything
   written later (see segment.py).
2. Without the store lock, for each input the keydir copies out (C, one call per MiB of it)
   the records its entries still point at — live values and unreleased tombstones; released
   tombstones and CRC-bad records stay behind. Outputs are written under ``.tmp`` names with
   their hints, and fsynced.
3. Under the store lock: rename outputs (data, then hints) and map them. Then repoint each
   moved key only if its entry still points at the old location (a put or delete that
   happened meanwhile wins), MOVE_CHUNK keys per hold of the store lock. Under it again:
   purge entries still pointing at inputs (released tombstones; CRC-bad
   records -> corrupt_keys), drop the inputs from the segment table. Then, without the
   lock, fsync the directory.
Pacing: when the store has a ``throttle`` (a node sets its shared I/O budget, see
zkv/node/transfer.py IOBudget.reserve), step 2 writes its outputs PACE_CHUNK bytes at a time,
each after the throttle's wait; closing the store interrupts the wait and abandons the
compaction (its ``.tmp`` outputs are removed; nothing else changed). Without pacing too, a
close abandons it before the next chunk of step 2, and waits for it otherwise (step 3 on).
4. Delete inputs oldest first. A crash before step 3's renames leaves only ``.tmp`` files
   (removed on open); a crash after leaves inputs and outputs side by side, which replays to
   the same state, and deleting oldest-first means a surviving tombstone is never older than a
   surviving value it hides.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from zkv._core import record
from zkv.errors import StorageFull
from zkv.storage.segment import (
    TMP_SUFFIX,
    Segment,
    data_name,
    free_bytes,
    fsync_dir,
    hint_name,
)

if TYPE_CHECKING:
    from zkv.storage.logstore import LogStore, Progress

log = logging.getLogger("zkv.storage")
PACE_CHUNK = 1 << 20  # bytes rewritten per throttle reservation
MOVE_CHUNK = 1 << 13  # keys repointed per store-lock hold (step 3; ~1-3 ms)
_between_moves: Callable[[], None] | None = None  # (tests: called between those holds)
COLLECT_CHUNK = 1 << 20  # segment bytes walked per keydir call (~0.35 ms holding the GIL)
# room a compaction leaves free on the file system, and what it counts per byte of live records
# it rewrites (the records, and hints: a hint entry is ~20 bytes + the key, per record)
ROOM_MARGIN = 1 << 20
OUTPUT_FACTOR = 1.5


class Aborted(Exception):
    """The store was closed during the compaction (close() stops it at its next chunk or
    throttle wait, and waits for it), or before it began."""


class _Output:
    def __init__(self, directory: str, name: tuple[int, int]) -> None:
        self.name = name
        self.data_path = os.path.join(directory, data_name(name))
        self.hint_path = os.path.join(directory, hint_name(name))
        self.fd = os.open(self.data_path + TMP_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self.records = 0
        self.chunks: list[tuple[int, bytes, int]] = []  # (src fid, moves, base offset)

    def add(self, src_fid: int, recs: bytes, moves: bytes,
              pace: Callable[[int], None] | None = None) -> None:
        view = memoryview(recs)
        while view:
            chunk = view[:PACE_CHUNK]
            view = view[len(chunk):]
            if pace is not None:
                pace(len(chunk))
            while chunk:
                chunk = chunk[os.write(self.fd, chunk) :]
        self.chunks.append((src_fid, moves, self.size))
        self.size += len(recs)
        self.records += len(moves) // 8

    def finish(self) -> None:
        os.fsync(self.fd)
        with open(self.data_path + TMP_SUFFIX, "rb") as f:
            image = f.read()
        hints = record.build_hints(image)
        hfd = os.open(self.hint_path + TMP_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(hfd, hints)
            os.fsync(hfd)
        finally:
            os.close(hfd)
        os.close(self.fd)
        self.fd = -1

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        for p in (self.data_path + TMP_SUFFIX, self.hint_path + TMP_SUFFIX):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def compact(store: LogStore, progress: Progress | None = None) -> dict:
    """Compact ``store`` (see the module docstring); returns statistics."""
    t0 = time.monotonic()
    kd = store._kd
    with store._compact_lock:
        if store._closed:  # (it waited for close(), which holds the lock throughout)
            raise Aborted("store closed before the compaction began")
        with store._lock:
            if kd.active_end > 0:
                store._rotate()
            inputs = sorted(
                (s for s in store._segs.values() if s is not store._active), key=lambda s: s.name
            )
            every = len(inputs)
            inputs = _fitting(store, inputs)
            before = sum(s.size for s in inputs)
            if not inputs:
                return _stats(0, 0, 0, 0, 0, 0, t0)
            if len(inputs) < every:
                log.warning("compaction of %s: the oldest %d of %d segments (the others' live "
                            "records do not fit the free space now)", store.path, len(inputs),
                            every)
            major, minor = inputs[-1].name
            rotated = store._rotated
        if not store._seal_done(rotated):  # every input fsynced and given its hints first
            raise StorageFull(store.write_error or "fsync failed")
        outputs: list[_Output] = []
        done = 0
        try:
            for seg in inputs:
                image = seg.mm
                start, end = 0, (len(image) if image is not None else 0)
                while start < end:  # a MiB per call: each holds the GIL (keydir.pyx)
                    if store._stop.is_set():  # close() waits for this compaction: stop now
                        raise Aborted("store closed during a compaction")
                    recs, moves, start = kd.collect_live_from(image, seg.fid, start,
                                                              COLLECT_CHUNK)
                    time.sleep(0)  # the GIL to a waiting thread now, not at its next switch
                    if recs:
                        if not outputs or outputs[-1].size >= store._segment_bytes:
                            if outputs:
                                outputs[-1].finish()
                            outputs.append(_Output(store.path, (major, minor + len(outputs) + 1)))
                        outputs[-1].add(seg.fid, recs, moves,
                                        store._pace if store.throttle is not None else None)
                done += seg.size
                if progress:
                    progress(done, before)
            if outputs:
                outputs[-1].finish()
        except BaseException:
            for out in outputs:
                out.abandon()
            raise
        dropped = 0
        mapped: list[tuple[_Output, Segment]] = []
        with store._lock:
            for out in outputs:
                os.rename(out.data_path + TMP_SUFFIX, out.data_path)
                os.rename(out.hint_path + TMP_SUFFIX, out.hint_path)
            for out in outputs:
                seg = Segment(store._new_fid(), out.name, store.path, writable=False)
                mm = seg.remap()
                kd.map_segment(seg.fid, mm if mm is not None else b"")
                store._segs[seg.fid] = seg
                mapped.append((out, seg))
        # Repoint the moved keys at most MOVE_CHUNK at a time, letting the store lock (and the
        # GIL) go between holds: all of them in one hold stalled every get and put for ~0.3 us
        # per moved key (0.49 s at 1M keys, 1.3-1.7 s at 4M: an outside run). Safe meanwhile:
        # inputs and outputs are both mapped and in the segment table (a get finds a key at
        # either place; a snapshot links both, which replays as a crash here does: the outputs
        # after the inputs), a move applies only if the key's entry still points at its old
        # record (a put, delete or drop made between holds wins), and close() waits for us.
        for out, seg in mapped:
            for src_fid, moves, base in out.chunks:
                step = MOVE_CHUNK * 8  # (8 bytes a move; a collect chunk is ~1 MiB of records)
                for lo in range(0, len(moves), step):
                    part = moves if len(moves) <= step else moves[lo:lo + step]
                    with store._lock:
                        kd.apply_moves(part, src_fid, seg.fid, base)
                    if _between_moves is not None:
                        _between_moves()
                    time.sleep(0)  # the GIL to a waiting thread now
        with store._lock:
            for key, flags in kd.purge_fids([s.fid for s in inputs]):
                if flags & record.TOMBSTONE:
                    dropped += 1
                else:
                    log.error("compaction: record for key %r failed its CRC; needs repair", key[:64])
                    store._corrupt.add(key)
                    store.corrupt_records += 1
                    kd.put_gate = 1  # puts of that key must clear it (LogStore._repaired)
            for s in inputs:
                del store._segs[s.fid]
                kd.unmap_segment(s.fid)
            kd.release_maps()  # unmapped now: their files' space is freed once unlinked
        # the renames on disk before any input goes (without the store lock: a directory's
        # fsync waits for the journal, tens of milliseconds while other files are written)
        fsync_dir(store.path)
        # a record the collection left behind as dead may have been superseded by a write made
        # during this compaction that is still only in the write buffer (sync="none"/"interval")
        # or not yet fsynced (a group commit in flight): deleting the inputs before that write
        # is on disk loses the key's last durable version with a crash in between (neither the
        # old nor the new value is then found). Write out and fsync everything appended so far.
        try:
            store._flush_and_sync()
        except BaseException:  # (the inputs stay on disk, replayed as before; their files
            for s in inputs:   # are no longer the store's: closed, not leaked)
                s.close()
            raise
        for s in inputs:  # oldest first: see the module docstring
            for p in (s.path, s.hint_path):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        fsync_dir(store.path)
        for s in inputs:
            s.close()
        after = sum(o.size for o in outputs)
        stats = _stats(before, after, sum(o.records for o in outputs), dropped, len(inputs),
                       len(outputs), t0)
        log.info("compaction of %s: %s", store.path, stats)
        return stats


def _fitting(store: LogStore, inputs: list[Segment]) -> list[Segment]:
    """The oldest of `inputs` whose live records (and their hints) fit the file system's free
    space: a compaction writes them all before it deletes any input, and a disk near full
    (the case that most needs one) failed it with ENOSPC though one segment of mostly dead
    records would have freed most of it (an outside run). A prefix in replay order, so that a
    tombstone dropped with its input hides nothing left in an older segment; cut only where
    the next segment's major differs, so that the outputs' names, (M, s+1), ..., after the
    last input (M, s), are free. StorageFull if not even the oldest fit. Holds store._lock."""
    free = free_bytes(store.path)
    if free is None:
        return inputs
    room = free - ROOM_MARGIN
    kd = store._kd
    if kd.live_bytes * OUTPUT_FACTOR <= room:  # (the common case: no per-segment walk)
        return inputs
    live = kd.live_by_fid()
    need, cut = 0.0, 0
    for i, seg in enumerate(inputs):
        need += live.get(seg.fid, 0) * OUTPUT_FACTOR
        if need > room and need > 0:  # (dead records only: nothing to write, whatever room)
            break
        if i + 1 == len(inputs) or inputs[i + 1].name[0] != seg.name[0]:
            cut = i + 1
    if cut == 0:
        raise StorageFull(
            f"compacting {store.path} needs about {need / (1 << 20):.1f} MiB free to rewrite "
            f"the live records of its oldest segment(s) first; "
            f"{max(room + ROOM_MARGIN, 0) / (1 << 20):.1f} MiB are free")
    return inputs[:cut]


def _stats(before: int, after: int, records: int, dropped: int, nin: int, nout: int,
           t0: float) -> dict:
    return {
        "bytes_before": before,
        "bytes_after": after,
        "records": records,
        "dropped_tombstones": dropped,
        "segments_before": nin,
        "segments_after": nout,
        "seconds": time.monotonic() - t0,
    }
