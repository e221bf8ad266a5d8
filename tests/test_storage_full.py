"""The engine on a full disk: writes refused up front (StorageFull) with nothing changed, reads
kept, the records a failed write-out left buffered written once there is room, and nothing a
caller was told is stored lost across a reopen. The real ENOSPC cases run on a small tmpfs the
test mounts (root, as in CI) and unmounts."""

from __future__ import annotations

import os
import random
import subprocess
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
        except OSError:
            pass  # (closing writes the active segment's hints: may not fit; a crash's state)
    # the operator grows the file system: room for the reopen's own bookkeeping (hints)
    subprocess.run(["mount", "-o", "remount,size=6m", small_fs], check=True)
    with LogStore(path) as again:
        got = dict(again.items())
    assert all(got.get(k) == v for k, v in written.items())

