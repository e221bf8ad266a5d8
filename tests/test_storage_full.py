"""The engine on a full disk: writes refused up front (StorageFull) with nothing changed, reads
kept, the records a failed write-out left buffered written once there is room, and nothing a
caller was told is stored lost across a reopen. The real ENOSPC cases run on a small tmpfs the
test mounts (root, as in CI) and unmounts."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
from ops_helpers import small_tmpfs

from zkv.errors import InvalidRequest, StorageFull
from zkv.storage import LogStore


def test_under_the_reserve_writes_are_refused_and_reads_kept(tmp_path):
    store = LogStore(tmp_path, min_free_bytes=1 << 60)  # more than any disk has
    try:
        store.put(b"a", b"1")  # not refused yet: nothing looked at the disk
        why = store.check_space()
        assert why is not None and "under the reserve" in why and str(tmp_path) in why
        assert store.write_error == why and store.stats()["write_error"] == why
        for write in (lambda: store.put(b"b", b"2"), lambda: store.put(b"c", b"x" * 10_000),
                      lambda: store.delete(b"a"), lambda: store.put_many([(b"d", b"4")])):
            with pytest.raises(StorageFull, match="under the reserve"):
                write()
        assert store.get(b"a") == b"1" and store.get(b"b") is None and len(store) == 1
        store.min_free_bytes = 0
        assert store.check_space() is None and store.write_error is None
        store.put(b"b", b"2")
        store.delete(b"a")
    finally:
        store.close()
    with LogStore(tmp_path) as again:
        assert dict(again.items()) == {b"b": b"2"}


def test_a_negative_reserve_is_refused(tmp_path):
    with pytest.raises(InvalidRequest, match="min_free_bytes"):
        LogStore(tmp_path, min_free_bytes=-1)


@pytest.fixture
def small_fs() -> Iterator[str]:
    with small_tmpfs("3m") as where:
        yield where


def _fill(store: LogStore, written: dict[bytes, bytes], value_size: int,
          pending: dict[bytes, bytes] | None = None) -> StorageFull:
    """Put values until the engine refuses one; each put that returned and was written out
    (write_out returned) goes into `written`, one that returned but was not into `pending`.
    The refusal."""
    if pending is None:
        pending = {}
    rng = random.Random(7)  # (incompressible: the engine compresses values over 4 KiB)
    for i in range(10_000):
        key, value = b"k%05d" % i, rng.randbytes(value_size)
        try:
            store.put(key, value)
            pending[key] = value
            store.write_out()
        except StorageFull as exc:
            return exc
        written.update(pending)
        pending.clear()
    raise AssertionError("the disk never filled")


def _put_until_refused(store: LogStore, seed: int) -> tuple[dict[bytes, bytes], bytes]:
    """Plain puts of 900 random bytes until one raises StorageFull: those that returned, and
    the refused one's key."""
    rng = random.Random(seed)
    acked: dict[bytes, bytes] = {}
    for i in range(100_000):
        key, value = b"k%05d" % i, rng.randbytes(900)
        try:
            store.put(key, value)
        except StorageFull:
            return acked, key
        acked[key] = value
    raise AssertionError("the disk never filled")


def test_a_full_disk_refuses_writes_keeps_reads_and_loses_nothing(small_fs):
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (512 << 10))
    path = os.path.join(small_fs, "db")
    store = LogStore(path, segment_bytes=1 << 20)
    written: dict[bytes, bytes] = {}
    pending: dict[bytes, bytes] = {}
    try:
        refusal = _fill(store, written, 20_000, pending)
        assert "No space left on device" in str(refusal), refusal
        assert written and pending and store.write_error is not None
        # the records the failed write-out left buffered read whole (one was cut on disk)
        assert all(store.get(k) == v for k, v in pending.items())
        assert store.corrupt_keys() == []
        # refused up front now: nothing changes, the held values still read
        with pytest.raises(StorageFull, match="No space left"):
            store.put(b"late", b"v")
        with pytest.raises(StorageFull):
            store.delete(next(iter(written)))
        assert store.get(b"late") is None
        assert all(store.get(k) == v for k, v in written.items())
        assert store.check_space() is not None  # still no room: still refusing
        os.unlink(filler)  # the operator frees space
        assert store.check_space() is None
        store.put(b"late", b"v")
        store.write_out()
        written[b"late"] = b"v"
    finally:
        store.close()
    with LogStore(path) as again:
        got = dict(again.items())
    assert all(got.get(k) == v for k, v in written.items())


@pytest.mark.parametrize("segment_bytes", [128 << 10, 1 << 20])
def test_a_full_disk_at_rotation_leaves_a_store_that_reopens_whole(small_fs, segment_bytes):
    """The disk fills at a write-out (128 KiB segments) or in a rotation (1 MiB: sealing,
    hints, a new file), where a failure must not leave a hints file describing a segment
    appends go on to. Then the process stops (a close that may not fit) and starts again."""
    path = os.path.join(small_fs, "db")
    written: dict[bytes, bytes] = {}
    store = LogStore(path, segment_bytes=segment_bytes)
    try:
        _fill(store, written, 30_000)
    finally:
        try:
            store.close()
        except StorageFull:
            pass  # (the close's write-out may not fit: what it names lost is not checked)
    # the operator grows the file system: room for the reopen's own bookkeeping (hints)
    subprocess.run(["mount", "-o", "remount,size=6m", small_fs], check=True)
    with LogStore(path) as again:
        got = dict(again.items())
    assert all(got.get(k) == v for k, v in written.items())



def _eio(fd: int) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize("sync", ["always", "interval", "none"])
def test_a_failed_fsync_refuses_writes_until_the_store_is_opened_again(tmp_path, monkeypatch,
                                                                       sync):
    """fdatasync fails once (EIO) and works again after: the pages it could not write may be
    gone while a later fsync succeeds, so writes stay refused (StorageFull naming the fsync)
    until a reopen, check_space() does not lift it, reads go on, and everything acknowledged
    before the failure is there after the reopen. (always: the group commit's sync; interval:
    the background syncer's; none: an explicit flush().)"""
    import time

    real = os.fdatasync
    store = LogStore(tmp_path, sync=sync, sync_interval_ms=5)
    try:
        for i in range(50):
            store.put(b"k%d" % i, b"v%d" % i)
        store.flush()  # every one of them on disk
        monkeypatch.setattr(os, "fdatasync", _eio)
        if sync == "always":
            with pytest.raises(OSError):
                store.put(b"late", b"x")  # not acknowledged: its sync failed
        elif sync == "interval":
            store.put(b"late", b"x")  # acknowledged unsynced, as interval promises
            deadline = time.monotonic() + 10
            while store.write_error is None and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            store.put(b"late", b"x")
            with pytest.raises(OSError):
                store.flush()
        monkeypatch.setattr(os, "fdatasync", real)  # the next fsync would "succeed"
        why = store.write_error
        assert why is not None and "fsync in" in why and "Input/output error" in why, why
        for write in (lambda: store.put(b"new", b"1"), lambda: store.delete(b"k1"),
                      lambda: store.put_many([(b"new2", b"2")])):
            with pytest.raises(StorageFull, match="fsync in .* failed"):
                write()
        assert store.check_space() == why  # retrying is not lifting
        assert store.get(b"k7") == b"v7" and store.get(b"new") is None
    finally:
        monkeypatch.setattr(os, "fdatasync", real)
        store.close()
    with LogStore(tmp_path, sync=sync) as again:  # a restart: writes taken again
        assert again.write_error is None
        assert all(again.get(b"k%d" % i) == b"v%d" % i for i in range(50))
        again.put(b"new", b"1")
        assert again.get(b"new") == b"1"


def _eio_on_segments(real):
    """os.fsync failing with EIO for segment files (.data) only."""
    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".data"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)
    return fsync


@pytest.mark.parametrize("sync", ["none", "always"])
def test_a_failed_fsync_sealing_a_segment_refuses_writes_and_loses_nothing_acknowledged(
        tmp_path, monkeypatch, sync):
    """The fsync that seals a full segment (on the sealer's thread, after the rotation) fails:
    writes are refused from then on, also once fsync works again; with sync="always" the write
    that rotated is not acknowledged (its commit waits for that fsync), and a reopen has every
    write acknowledged before."""
    real = os.fsync
    store = LogStore(tmp_path, sync=sync, segment_bytes=64 << 10)
    acked = {}
    try:
        monkeypatch.setattr(os, "fsync", _eio_on_segments(real))
        with pytest.raises(StorageFull, match="fsync in .* failed"):
            for i in range(100_000):
                store.put(b"k%d" % i, b"x" * 100)
                acked[b"k%d" % i] = b"x" * 100
            store.flush()  # (the sealer not run yet, under "none": flush waits for its fsync)
        monkeypatch.setattr(os, "fsync", real)
        end, rotating = 0, 0  # the put whose record filled the first segment
        while end < 64 << 10:
            end += 16 + len(b"k%d" % rotating) + 100
            rotating += 1
        if sync == "always":  # its commit waited for the seal, which failed
            assert len(acked) == rotating - 1
        else:  # (acknowledged without waiting: refused once the sealer failed)
            assert rotating <= len(acked) <= 100_000
        with pytest.raises(StorageFull, match="fsync in .* failed"):
            store.put(b"after", b"1")
        assert store.check_space() is not None  # retrying is not lifting
    finally:
        monkeypatch.setattr(os, "fsync", real)
        store.close()
    with LogStore(tmp_path) as again:
        assert all(again.get(k) == v for k, v in acked.items())
        again.put(b"after", b"1")


@pytest.mark.parametrize("sync", ["none", "interval"])
def test_a_full_disk_without_write_out_refuses_puts_that_change_nothing(small_fs, sync):
    """Without write_out (an embedder's plain puts), the write-out that meets the full disk is
    the one a put does when the 64 KiB buffer fills: that put's record stays buffered, and
    every later write is refused with StorageFull, changing nothing, until check_space()
    finds room and writes the buffer out; nothing a put returned for is lost by close."""
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (2 << 20))
    path = os.path.join(small_fs, "db")
    store = LogStore(path, sync=sync, sync_interval_ms=60_000, compact_dead_ratio=None)
    try:
        acked, key = _put_until_refused(store, 3)
        assert store.get(key) is None and "No space left" in (store.write_error or "")
        for j in range(20):
            with pytest.raises(StorageFull):
                store.put(b"more%02d" % j, b"x" * 900)
        with pytest.raises(StorageFull):
            store.put_many([(b"many", b"m")])
        with pytest.raises(StorageFull):
            store.delete(next(iter(acked)))
        assert all(store.get(b"more%02d" % j) is None for j in range(20))
        assert store.get(b"many") is None
        assert all(store.get(k) == v for k, v in acked.items())
        assert store.check_space() is not None  # still full
        os.unlink(filler)
        assert store.check_space() is None and store.write_error is None
        store.put(b"after", b"y")
        acked[b"after"] = b"y"
    finally:
        store.close()
    with LogStore(path) as again:
        assert dict(again.items()) == acked
        assert again.corrupt_keys() == [] and again.damaged_regions == 0


def test_a_write_out_that_meets_a_full_disk_leaves_no_hole_in_the_segment(small_fs):
    """The preallocation's posix_fallocate fails on a full disk and so does the pwrite after
    it; once space is freed the next step must not allocate from past what was written,
    leaving a hole (read through a mapping on a full tmpfs, a hole is SIGBUS)."""
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (2 << 20))
    path = os.path.join(small_fs, "db")
    store = LogStore(path, compact_dead_ratio=None)
    try:
        for i in range(100_000):
            try:
                store.put(b"k%05d" % i, random.Random(i).randbytes(900))
            except StorageFull:
                break
        os.unlink(filler)
        assert store.check_space() is None
        store.put(b"after", b"y")
        store.write_out()
        seg = store._active
        assert seg is not None
        st = os.fstat(seg.fd)
        assert st.st_blocks * 512 >= st.st_size  # every page allocated (written or fallocated)
    finally:
        store.close()


_REOPEN = """
import sys
from zkv.storage import LogStore
with LogStore(sys.argv[1]) as s:
    print(len(s), s.get(b"k0001").decode())
"""


def test_reopening_a_segment_with_a_hole_on_a_full_tmpfs_does_not_crash(small_fs):
    """A segment whose file runs on past its records into a hole (left by an older version, or
    another tool) on a full tmpfs: the open maps no further than the first hole, so its scan
    never touches a page it cannot have (SIGBUS killed the interpreter)."""
    path = os.path.join(small_fs, "db")
    with LogStore(path, compact_dead_ratio=None) as store:
        for i in range(100):
            store.put(b"k%04d" % i, b"v%d" % i)
    (data,) = [f for f in os.listdir(path) if f.endswith(".data")]
    os.unlink(os.path.join(path, data[:-5] + ".hint"))  # (the reopen scans the segment)
    with open(os.path.join(path, data), "r+b") as f:
        f.truncate(os.fstat(f.fileno()).st_size + (1 << 20))  # 1 MiB of hole
    fd = os.open(os.path.join(small_fs, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\1" * 4096):
            pass
    except OSError:
        pass  # (the file system is full)
    finally:
        os.close(fd)
    run = subprocess.run([sys.executable, "-c", _REOPEN, path], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["100", "v1"]


@pytest.mark.parametrize("sync", ["none", "always"])
def test_closing_on_a_full_disk_says_what_it_could_not_write_and_releases_the_store(small_fs,
                                                                                   sync):
    """close() with the disk still full raised a bare OSError (ENOSPC). It raises StorageFull
    saying what was lost (under sync="always": no acknowledged write), and the store is
    closed and unlocked: a reopen once there is room has every write that close() did not
    name as lost."""
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (2 << 20))
    path = os.path.join(small_fs, "db")
    store = LogStore(path, sync=sync, compact_dead_ratio=None)
    acked, _ = _put_until_refused(store, 5)
    with pytest.raises(StorageFull, match="closing .*No space left on device") as why:
        store.close()
    if sync == "always":
        assert "nothing acknowledged is lost" in str(why.value)
    else:
        assert "buffered writes are lost" in str(why.value)
    with pytest.raises(InvalidRequest, match="closed"):
        store.get(b"k00000")
    os.unlink(filler)
    with LogStore(path) as again:  # (the lock was released)
        got = dict(again.items())
    kept = [k for k in acked if got.get(k) == acked[k]]
    assert all(got.get(k) in (None, acked[k]) for k in acked)  # nothing corrupt
    if sync == "always":
        assert len(kept) == len(acked)
    else:
        assert 0 < len(kept) < len(acked)


def test_a_close_whose_fsync_alone_fails_says_the_writes_were_written_out(tmp_path,
                                                                          monkeypatch):
    """An fsync failing at close (EIO) was reported as "the last N bytes of buffered writes
    are lost" although the write-out had worked and a reopen read every key (a review)."""
    store = LogStore(str(tmp_path / "db"), sync="none")
    for i in range(50):
        store.put(b"k%02d" % i, b"v" * 100)
    monkeypatch.setattr(os, "fsync", _eio)
    with pytest.raises(StorageFull, match="sealing its active segment failed") as why:
        store.close()
    assert "written out but may not survive a power loss" in str(why.value)
    assert "lost" not in str(why.value)
    monkeypatch.undo()
    with LogStore(str(tmp_path / "db")) as again:
        assert len(again) == 50


def _oldest_segment_overwritten(path: str, **kw) -> tuple[LogStore, dict[bytes, bytes]]:
    """A store of 4 MiB segments holding ~16 MiB of live records, whose oldest segment's keys
    were all written again: that segment is dead records only."""
    rng = random.Random(7)
    store = LogStore(path, segment_bytes=4 << 20, **kw)
    acked = {b"k%05d" % i: rng.randbytes(1000) for i in range(16_000)}
    for k, v in acked.items():
        store.put(k, v)
    store.flush()
    oldest = min(store._segs.values(), key=lambda s: s.name).fid
    again = [k for k in acked if store._kd.lookup(k)[0] == oldest]
    assert len(again) > 3000
    for k in again:
        acked[k] = rng.randbytes(1000)
        store.put(k, acked[k])
    store.flush()
    return store, acked


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_compaction_on_a_nearly_full_disk_rewrites_the_oldest_segments_that_fit():
    """A compaction writes every live record before it deletes an input: on a disk near full
    (the case that most needs one) it failed with ENOSPC and freed nothing, though the oldest
    segment held dead records only (an outside run: `zkv compact` on a node refusing writes).
    It now compacts the oldest segments whose live records fit the free space, and says so;
    when not even the oldest fits, StorageFull says how much room it needs."""
    with small_tmpfs("24m") as fs:
        path = os.path.join(fs, "s")
        store, acked = _oldest_segment_overwritten(path, compact_dead_ratio=None)
        try:
            before, segments, free = store.stats(), len(store._segs), _free(fs)
            assert before["live_bytes"] * 1.5 > free  # (everything would not fit)
            stats = store.compact()
            assert 1 <= stats["segments_before"] < segments - 1, stats
            assert store.stats()["dead_bytes"] < before["dead_bytes"] - (3 << 20)
            assert _free(fs) > free + (3 << 20)
            assert all(store.get(k) == v for k, v in acked.items())
            with open(os.path.join(fs, "filler"), "wb") as fh:  # 2 MiB left
                fh.write(b"\0" * (_free(fs) - (2 << 20)))
            with pytest.raises(StorageFull, match=r"needs about .* MiB free to rewrite"):
                store.compact()  # (the oldest now: live records only, more than the room)
            assert all(store.get(k) == v for k, v in acked.items())
        finally:
            store.close()
        with LogStore(path) as reopened:
            assert dict(reopened.items()) == acked


def test_writes_refused_for_space_start_a_compaction_that_frees_the_dead_records():
    """Compaction was checked only at a segment's rotation, and with writes refused (deletes
    too) none came: a node with two thirds of its disk dead records stayed refusing writes
    (an outside run). Refused for space, with dead records enough to get back over the
    reserve, the store compacts in the background, and then takes writes again."""
    with small_tmpfs("24m") as fs:
        path = os.path.join(fs, "s")
        store, acked = _oldest_segment_overwritten(path)
        try:
            store.min_free_bytes = _free(fs) + (2 << 20)
            assert "under the reserve" in (store.check_space() or "")
            compactor = store._compactor
            assert compactor is not None
            compactor.join(60)
            assert store.check_space() is None, store.write_error
            store.put(b"after", b"v")
            assert all(store.get(k) == v for k, v in acked.items())
        finally:
            store.close()


def test_running_out_of_file_descriptors_refuses_writes_until_there_are_some_again(tmp_path):
    """Out of file descriptors at a rotation (each segment holds two), a node logged "fsync
    failed ... writes are refused until the node restarts (check the disk first)": wrong on
    both counts (an outside run under ulimit -n 64). Writes are refused saying the process
    is out of descriptors and what to raise, and taken again once there are some."""
    script = f"""
import os, resource
from zkv.errors import StorageFull
from zkv.storage import LogStore
store = LogStore({str(tmp_path / 's')!r}, segment_bytes=64 << 10, compact_dead_ratio=None)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 12, hard))
why, acked = None, {{}}
for i in range(100_000):
    key = b"k%06d" % i
    try:
        store.put(key, b"v" * 1000)
    except StorageFull as exc:
        why = str(exc)
        break
    acked[key] = b"v" * 1000
assert why is not None, "never ran out"
print("REFUSED", why)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("AGAIN", store.check_space())
store.put(b"after", b"x")
store.close()
with LogStore({str(tmp_path / 's')!r}) as again:
    assert all(again.get(k) == v for k, v in acked.items()) and again.get(b"after") == b"x"
print("OK", len(acked))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    refused = next(x for x in out.stdout.splitlines() if x.startswith("REFUSED"))
    assert "open-file limit, ulimit -n, is" in refused and "fsync" not in refused, refused
    assert "until the node restarts" not in refused
    assert "AGAIN None" in out.stdout and "OK" in out.stdout, out.stdout


def test_a_completely_full_disk_still_compacts_segments_of_dead_records_only():
    """Not a byte free: the oldest segments holding dead records only need no room (nothing
    to rewrite), so a compaction frees them instead of refusing for want of room."""
    with small_tmpfs("24m") as fs:
        path = os.path.join(fs, "s")
        store, acked = _oldest_segment_overwritten(path, compact_dead_ratio=None)
        try:
            with open(os.path.join(fs, "filler"), "wb", buffering=0) as fh:
                with pytest.raises(OSError):
                    while True:
                        fh.write(b"\0" * 65536)
            assert _free(fs) < (1 << 20)
            stats = store.compact()
            assert stats["segments_before"] >= 1 and stats["segments_after"] == 0, stats
            assert _free(fs) > (3 << 20)
            assert all(store.get(k) == v for k, v in acked.items())
        finally:
            store.close()


def test_a_store_of_one_segment_refusing_writes_for_space_compacts_too():
    """A store under one segment's size (64 MiB by default: a single active segment), 95%
    dead records, refused writes for good: compaction for space needed two segments (an
    outside run). Compaction seals the active one itself: it runs, and writes come back.
    (Without a reserve the write-out that met the full disk is still buffered, and sealing
    the segment needs it written: the reserve is that room.)"""
    with small_tmpfs("16m") as fs:
        path = os.path.join(fs, "s")
        store = LogStore(path, min_free_bytes=4 << 20)
        rng = random.Random(3)
        try:
            acked: dict[bytes, bytes] = {}
            for i in range(100_000):
                key = b"k%d" % (i % 5)
                value = rng.randbytes(100_000)
                try:
                    store.put(key, value)
                    store.flush()
                except StorageFull:
                    break
                acked[key] = value
                if store.check_space() is not None:
                    break
            assert len(store._segs) == 1 and store.write_error is not None
            store.check_space()  # (refused: it starts the compaction)
            assert store._compactor is not None
            store._compactor.join(60)
            assert store.check_space() is None, store.write_error
            store.put(b"after", b"v")
            assert all(store.get(k) == v for k, v in acked.items())
        finally:
            store.close()
