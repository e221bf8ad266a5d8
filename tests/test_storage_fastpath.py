"""The engine's C write path and fast reopen (issue 12): ``put`` as one KeyDir call with its
locked slow path, ``put_many``, deferred keydir inserts, the store lock, mapped hints files.

Behaviour only: which path a put takes is observed through the slow-path callback, never
through timing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from zkv._core import record
from zkv._core.keydir import NEED_READ, KeyDir, StoreLock
from zkv.errors import InvalidRequest
from zkv.storage import LogStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_py(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---------------------------------------------------------------- store lock
def test_store_lock_is_a_mutex():
    lk = StoreLock()
    assert not lk.locked()
    with lk:
        assert lk.locked()
        got = []
        t = threading.Thread(target=lambda: (lk.acquire(), got.append(1), lk.release()))
        t.start()
        t.join(0.05)
        assert not got  # the other thread waits
    t.join()
    assert got == [1] and not lk.locked()
    with pytest.raises(RuntimeError):
        lk.release()


# ---------------------------------------------------------------- keydir: deferred inserts
def _value(kd, fd, key):
    """The key's value through the keydir: from the buffer, or pread once flushed."""
    r = kd.get_value(key)
    if r != NEED_READ:
        return r
    fid, off, size, _flags, _h = kd.lookup(key)
    _fl, k, v, _sz = record.decode(os.pread(fd, size, off))
    assert k == key
    return v


def test_appended_keys_visible_to_every_reader(tmp_path):
    """Appends defer their index insert; every read of the table must see them at once."""
    fd = os.open(str(tmp_path / "seg"), os.O_RDWR | os.O_CREAT, 0o644)
    kd = KeyDir(write_buffer=4096)
    kd.set_active(0, fd, 0)
    model = {}
    rng = random.Random(3)
    try:
        for i in range(5000):
            k = b"k%d" % rng.randrange(1500)
            if rng.random() < 0.15:
                kd.append(k, b"", 1)  # tombstone
                model[k] = None
            else:
                v = b"v%d" % i
                kd.append(k, v)
                model[k] = v
            live = {a: b for a, b in model.items() if b is not None}
            assert _value(kd, fd, k) == model[k]
            assert kd.contains(k) == (model[k] is not None)
            if i % 97 == 0:
                assert len(kd) == len(live)
                assert kd.count == len(model)
                assert kd.tombstone_count == len(model) - len(live)
                assert sorted(kd.keys()) == sorted(live)
                assert sorted(k for k, _h in kd.hash_range()) == sorted(live)
                assert sum(kd.fid_bytes().values()) == kd.live_bytes
        # an explicit set after appends wins over them (order kept)
        kd.append(b"late", b"1")
        kd.set(b"late", 7, 0, 99, 0)
        assert kd.lookup(b"late")[:3] == (7, 0, 99)
        kd.flush()
        for k, v in model.items():
            assert _value(kd, fd, k) == v
    finally:
        kd.close()
        os.close(fd)


def test_reserve_keeps_lookups_and_ranges(tmp_path):
    kd = KeyDir()
    keys = [b"key-%d" % i for i in range(3000)]
    for i, k in enumerate(keys[:1000]):
        kd.set(k, 0, i, 20, 0)
    kd.reserve(100000, 1 << 20)
    for i, k in enumerate(keys[1000:], 1000):
        kd.set(k, 0, i, 20, 0)
    assert len(kd) == 3000
    assert all(kd.lookup(k)[1] == i for i, k in enumerate(keys))
    assert sorted(k for k, _h in kd.hash_range()) == sorted(keys)


# ---------------------------------------------------------------- put: fast and slow paths
def test_put_steps_aside_for_the_slow_path(tmp_path):
    with LogStore(str(tmp_path), segment_bytes=4096, compress_threshold=100,
                  compact_dead_ratio=None) as s:
        slow, deferred = [], []

        def record_slow(k, v):
            slow.append(k)
            if s._lock.locked():  # held by this test's thread: the real slow path would wait
                deferred.append((k, v))
            else:
                s._put_locked(k, v)

        s._kd.put_policy(4096, 100, record_slow)
        s.put(b"fast", b"x")
        assert slow == [] and s.get(b"fast") == b"x"
        with s._lock:  # a thread in a critical section: no append may slip in
            end = s._kd.active_end
            s.put(b"while-locked", b"x")
            assert s._kd.active_end == end
        assert slow == [b"while-locked"]
        s._put_locked(*deferred.pop())
        s.put(b"big", b"c" * 500)  # compression
        assert slow[-1] == b"big" and s.get(b"big") == b"c" * 500
        s._kd.put_gate = 1  # keys await repair
        s.put(b"gated", b"x")
        assert slow[-1] == b"gated"
        s._kd.put_gate = 0
        n = len(slow)
        while s.stats()["segments"] == 1:  # the put that fills the segment rotates
            s.put(b"fill-%d" % len(slow), b"y" * 50)
        assert len(slow) == n + 1
        for bad in [(b"", b"v"), ("str", b"v"), (b"k", "str"), (b"k" * 70000, b"v")]:
            with pytest.raises(InvalidRequest):
                s.put(*bad)
        assert s.get(b"while-locked") == b"x" and s.get(b"gated") == b"x"


def test_put_after_close_and_readonly(tmp_path):
    d = str(tmp_path)
    s = LogStore(d)
    s.put(b"k", b"v")
    s.close()
    with pytest.raises(InvalidRequest):
        s.put(b"k2", b"v")
    with pytest.raises(InvalidRequest):
        s.put_many([(b"k2", b"v")])
    with LogStore(d, readonly=True) as r:
        with pytest.raises(InvalidRequest):
            r.put(b"k2", b"v")
        with pytest.raises(InvalidRequest):
            r.put_many([(b"k2", b"v")])
        assert r.get(b"k") == b"v" and r.get(b"k2") is None


def test_put_clears_corrupt_key(tmp_path):
    d = str(tmp_path)
    with LogStore(d) as s:
        s.put(b"victim", b"v" * 50)
        s.put(b"other", b"o")
        s.flush()
        fid, off, size, _f, _h = s._kd.lookup(b"victim")
        with open(s._segs[fid].path, "r+b") as f:
            f.seek(off + size - 1)
            b = f.read(1)
            f.seek(off + size - 1)
            f.write(bytes([b[0] ^ 0xFF]))
        s._kd.unmap_segment(fid)  # read the damaged bytes from the file
        assert s.get(b"victim") is None and s.corrupt_keys() == [b"victim"]
        s.put(b"victim", b"repaired")
        assert s.corrupt_keys() == [] and s.get(b"victim") == b"repaired"
        s.put(b"after", b"fast again")
        assert s.get(b"after") == b"fast again"


def test_threads_put_through_rotation_and_compaction(tmp_path):
    d = str(tmp_path)
    per, nthreads = 1500, 4
    with LogStore(d, segment_bytes=8192, compact_dead_ratio=0.3) as s:
        stop = threading.Event()
        errors = []

        def writer(t):
            try:
                for i in range(per):
                    s.put(b"t%d-%d" % (t, i % 400), b"%d-%d" % (t, i))
                    if i % 50 == 0:
                        s.put_many([(b"m%d-%d" % (t, j), b"%d" % i) for j in range(20)])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def compactor():
            while not stop.is_set():
                s.compact()

        ts = [threading.Thread(target=writer, args=(t,)) for t in range(nthreads)]
        c = threading.Thread(target=compactor)
        c.start()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        stop.set()
        c.join()
        assert not errors
        want = {}
        for t in range(nthreads):
            for i in range(per):
                want[b"t%d-%d" % (t, i % 400)] = b"%d-%d" % (t, i)
            for j in range(20):
                want[b"m%d-%d" % (t, j)] = b"%d" % ((per - 1) // 50 * 50)
        assert {k: s.get(k) for k in want} == want and len(s) == len(want)
    with LogStore(d) as s:
        assert {k: s.get(k) for k in want} == want and len(s) == len(want)


# ---------------------------------------------------------------- put_many
def test_put_many_equals_puts(tmp_path):
    d = str(tmp_path)
    rng = random.Random(5)
    items = []
    for i in range(600):
        k = b"k%d" % rng.randrange(200)
        v = b"big-%d " % i * 300 if i % 37 == 0 else b"v%d" % i  # some compressed
        items.append((k, v))
    model = dict(items)
    with LogStore(d, segment_bytes=2048, compress_threshold=1000,
                  compact_dead_ratio=None) as s:
        s.put_many(items[:300])
        s.put_many(iter(items[300:]))  # any iterable
        s.put_many([])
        assert s.stats()["segments"] > 3  # rotated inside batches
        assert {k: s.get(k) for k in model} == model and len(s) == len(model)
    with LogStore(d) as s:
        assert {k: s.get(k) for k in model} == model and len(s) == len(model)


@pytest.mark.parametrize("bad", [(b"", b"v"), ("str", b"v"), (b"k", None), (b"k",),
                                 [b"k", b"v"], (b"k", b"v" * 2000)])
def test_put_many_bad_item_writes_nothing(tmp_path, bad):
    with LogStore(str(tmp_path), max_value_size=1000) as s:
        s.put(b"before", b"1")
        end = s._kd.active_end
        with pytest.raises(InvalidRequest, match="item 2"):
            s.put_many([(b"a", b"1"), (b"b", b"2"), bad, (b"c", b"3")])
        assert s._kd.active_end == end and len(s) == 1 and s.get(b"a") is None


def test_put_many_sync_always_one_commit(tmp_path):
    with LogStore(str(tmp_path), sync="always") as s:
        s.put_many([(b"k%d" % i, b"v%d" % i) for i in range(100)])
        assert s._durable >= s._kd.seq  # on disk when it returned
        assert all(s.get(b"k%d" % i) == b"v%d" % i for i in range(100))


KILLED_WRITER = """
import sys
from zkv.storage import LogStore
s = LogStore(sys.argv[1], sync=sys.argv[2], segment_bytes=16384)
i = 0
while True:
    if i % 3 == 0:
        s.put_many([(b"key-%d" % (i + j), b"value-%d-" % (i + j) * 5) for j in range(10)])
        i += 10
    else:
        s.put(b"key-%d" % i, b"value-%d-" % i * 5)
        i += 1
    if sys.argv[2] == "none":
        s.write_out()  # what the cluster does before acknowledging
    sys.stdout.write("%d\\n" % (i - 1))
    sys.stdout.flush()
"""


@pytest.mark.parametrize("sync", ["none", "always"])
def test_sigkill_keeps_acknowledged_puts_and_batches(tmp_path, sync):
    """sync="none" + write_out: a killed process loses nothing handed to the OS;
    sync="always": nothing acknowledged is lost (the kernel is not crashed here, so this
    checks the write path reached the file, in both put and put_many)."""
    d = str(tmp_path)
    rng = random.Random(13)
    for _round in range(2):
        p = run_py(KILLED_WRITER, d, sync)
        deadline = time.monotonic() + 30
        line = p.stdout.readline()  # at least one acknowledged write
        while time.monotonic() < deadline and not line:
            line = p.stdout.readline()
        time.sleep(rng.uniform(0.1, 0.4))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        lines = (line + out).decode().split()
        assert lines, "writer never acknowledged a put"
        acked = int(lines[-1])
        with LogStore(d) as s:
            for i in range(acked + 1):
                assert s.get(b"key-%d" % i) == b"value-%d-" % i * 5, i


# ---------------------------------------------------------------- reopen from hints
def test_empty_or_lying_hints_file_falls_back_to_scan(tmp_path, caplog):
    d = str(tmp_path)
    with LogStore(d, segment_bytes=256) as s:
        for i in range(60):
            s.put(b"k%d" % i, b"v%d" % i)
    hints = sorted(f for f in os.listdir(d) if f.endswith(".hint"))
    open(os.path.join(d, hints[0]), "wb").close()  # empty
    with open(os.path.join(d, hints[1]), "r+b") as f:  # header claims 2**60 entries
        f.seek(8)
        f.write((1 << 60).to_bytes(8, "little"))
    with LogStore(d) as s:
        assert all(s.get(b"k%d" % i) == b"v%d" % i for i in range(60)) and len(s) == 60
    assert caplog.text.count("hints file") >= 2


def test_reopen_many_segments_with_overwrites(tmp_path):
    """The whole-directory reserve counts every hints entry; overwrites across segments must
    still leave one entry per key pointing at its newest record."""
    d = str(tmp_path)
    model = {}
    with LogStore(d, segment_bytes=1024, compact_dead_ratio=None) as s:
        for i in range(3000):
            k = b"k%d" % (i % 250)
            s.put(k, b"%d" % i)
            model[k] = b"%d" % i
            if i % 7 == 0:
                s.delete(b"k%d" % ((i * 3) % 250))
                model[b"k%d" % ((i * 3) % 250)] = None
    with LogStore(d) as s:
        assert {k: s.get(k) for k in model} == model
        assert len(s) == sum(v is not None for v in model.values())


def test_reopen_of_overwritten_data_gives_back_reserved_room(tmp_path):
    """Reopen reserves room for every hints entry; with each key in ten segments, the unused
    room goes back (keydir memory stays that of the live keys)."""
    d = str(tmp_path)
    with LogStore(d, segment_bytes=1 << 18, compact_dead_ratio=None) as s:
        for _round in range(10):
            for i in range(5000):
                s.put(b"key-%06d" % i, b"v" * 50)
    with LogStore(d) as s:
        st = s.stats()
        assert st["keys"] == 5000 and st["segments"] > 10
        assert st["keydir_bytes_per_key"] <= 64 + 10
        assert all(s.get(b"key-%06d" % i) == b"v" * 50 for i in range(0, 5000, 7))


# ---------------------------------------------------------------- reads of fresh writes
@pytest.mark.parametrize("segment_bytes", [64 << 20, 3 << 20])
def test_read_after_write_through_the_preallocated_tail(tmp_path, segment_bytes):
    """The replica's pattern: write, hand to the OS (end of turn), read back. The active
    segment is mapped up to its preallocated end, so these reads come from the mapping;
    across several PREALLOC steps (and rotations) every read gives the value just written,
    the fast path serves it once the file has a preallocated tail, and a reopen reads the
    same."""
    from zkv.storage.logstore import PREALLOC

    rng = random.Random(7)
    s = LogStore(str(tmp_path), segment_bytes=segment_bytes)
    want: dict[bytes, bytes] = {}
    written = 0
    while written < 5 * PREALLOC:
        key = b"k%d" % rng.randrange(300)
        value = rng.randbytes(rng.randrange(1, 4000))
        s.put(key, value)
        s.write_out()
        want[key] = value
        written += len(key) + len(value) + 16
        assert s.get(key) == value
        if os.path.getsize(s._active.path) > s._kd.active_end:  # preallocated (fs allows)
            assert s._kd.get_value(key) == value  # mapped now: the C fast path serves it
    for key, value in want.items():
        assert s.get(key) == value
    s.close()
    s = LogStore(str(tmp_path), segment_bytes=segment_bytes)
    assert {k: s.get(k) for k in want} == want
    s.close()
