"""Model-based test of LogStore against a dict (as bitcask's QuickCheck suite does).

Rules: put (the C fast path and the locked Python path), put_many (some batches holding a
bad item, which must write nothing), get, delete, close/reopen, compact, rotate (tiny
segments), truncate the tail of the newest segment, flip a byte in a segment and in a hints
file. Before any damage the store
must equal the model exactly. After damage a key may be lost, revert to a value it held
before, or be reported in corrupt_keys(), but never read as a value it never had.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zkv.errors import InvalidRequest
from zkv.storage import LogStore

KEYS = st.sampled_from([b"a", b"b", b"c", b"dd", b"eee", b"key-%d" % 5, b"\x00", b"z" * 300])
VALUES = st.one_of(st.binary(max_size=40), st.just(b"compressible " * 500))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="zkv-model-")
        self.store = self._open()
        self.model: dict[bytes, bytes | None] = {}
        self.history: dict[bytes, set[bytes | None]] = {}
        self.uncertain: set[bytes] = set()
        # a segment was damaged: a later scan of it (a reopen, a bad hints file) may read a
        # key another way than the read before it did (see `get`)
        self.segment_damage = False

    def _open(self) -> LogStore:
        return LogStore(self.dir, segment_bytes=512, compress_threshold=1000,
                        compact_dead_ratio=None)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _damaged(self) -> None:
        self.uncertain |= set(self.history)
        self.segment_damage = True

    def _files(self, ext: str) -> list[str]:
        return sorted(os.path.join(self.dir, f) for f in os.listdir(self.dir) if f.endswith(ext))

    @rule(k=KEYS, v=VALUES)
    def put(self, k, v):
        self.store.put(k, v)
        self.model[k] = v
        self.history.setdefault(k, {None}).add(v)
        self.uncertain.discard(k)

    @rule(k=KEYS, v=VALUES)
    def put_slow_path(self, k, v):
        LogStore.put(self.store, k, v)  # the locked Python path the C put falls back to
        self.model[k] = v
        self.history.setdefault(k, {None}).add(v)
        self.uncertain.discard(k)

    @rule(items=st.lists(st.tuples(KEYS, VALUES), max_size=12), bad_at=st.none() | st.integers(0, 12))
    def put_many(self, items, bad_at):
        if bad_at is not None:
            items = list(items)
            items.insert(min(bad_at, len(items)), (b"", b"empty key"))
            try:
                self.store.put_many(items)
            except InvalidRequest:
                return  # nothing written: the model stays as it is
            raise AssertionError("put_many accepted an empty key")
        self.store.put_many(items)
        for k, v in items:
            self.model[k] = v
            self.history.setdefault(k, {None}).add(v)
            self.uncertain.discard(k)

    @rule(k=KEYS)
    def delete(self, k):
        self.store.delete(k)
        self.model[k] = None
        self.history.setdefault(k, {None})
        self.uncertain.discard(k)

    @rule(k=KEYS)
    def get(self, k):
        got = self.store.get(k)
        if k in self.uncertain:
            assert got in self.history.get(k, {None}) or k in self.store.corrupt_keys(), (k, got)
            # it stays uncertain until written again. None: lost for now, but a later flip of
            # the same byte can make the record valid again and a reopen (scan) bring it back.
            # A value: a later scan of the damaged segment may still find the key's newest
            # record corrupt and report it lost (a tombstone flipped at offset 0 read as the
            # older value after a reopen, then None and corrupt_keys() once a bad hints file
            # made the segment be scanned: Hypothesis found it, tests/test_storage_model.py
            # ::test_a_read_after_damage_is_not_final)
        else:
            assert got == self.model.get(k), (k, got, self.model.get(k))

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()

    @rule()
    def compact(self):
        self.store.compact()

    @rule()
    def rotate(self):
        with self.store._lock:
            self.store._rotate()

    @rule(cut=st.integers(1, 200))
    def truncate_tail(self, cut):
        self.store.close()
        files = self._files(".data")
        if files:
            path = files[-1]
            size = os.path.getsize(path)
            if size:
                os.truncate(path, max(0, size - cut))
                hint = path[:-5] + ".hint"
                if os.path.exists(hint):
                    os.unlink(hint)  # the store's own hints would describe the longer file
                self._damaged()
        self.store = self._open()

    @rule(which=st.integers(0, 1 << 30), where=st.integers(0, 1 << 30), reopen=st.booleans())
    def flip_segment_byte(self, which, where, reopen):
        self.store.flush()
        files = [f for f in self._files(".data") if os.path.getsize(f)]
        if not files:
            return
        path = files[which % len(files)]
        self._flip(path, where % os.path.getsize(path))
        self._damaged()
        if reopen:
            self.reopen()

    @rule(which=st.integers(0, 1 << 30), where=st.integers(0, 1 << 30))
    def flip_hint_byte(self, which, where):
        self.store.close()
        files = [f for f in self._files(".hint") if os.path.getsize(f)]
        if files:
            path = files[which % len(files)]
            self._flip(path, where % os.path.getsize(path))
        self.store = self._open()  # a bad hints file falls back to a scan: nothing lost

    @staticmethod
    def _flip(path: str, off: int) -> None:
        with open(path, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))

    @precondition(lambda self: not self.uncertain)
    @invariant()
    def same_as_model(self):
        live = {k: v for k, v in self.model.items() if v is not None}
        assert len(self.store) == len(live)
        assert set(self.store.keys()) == set(live)


StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("ZKV_MODEL_EXAMPLES", "150")), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase


def test_a_read_after_damage_is_not_final():
    """The case Hypothesis found: b's tombstone is the first record of a segment, whose first
    byte is flipped. After a reopen b reads as its older value; after a bad hints file makes
    that segment be scanned, b reads None and is in corrupt_keys(). Both readings are allowed
    after damage (revert to a value it held, or reported corrupt); the model keeps b uncertain
    across them."""
    machine = StoreMachine()
    try:
        big = b"compressible " * 500
        machine.put(k=b"a", v=b"")
        machine.put_many(bad_at=None, items=[(b"a", b""), (b"a", b""), (b"a", b"\x00"),
                                             (b"a", big), (b"b", big), (b"z" * 300, big)])
        machine.delete(k=b"b")
        machine.flip_segment_byte(reopen=False, where=0, which=1)
        machine.reopen()
        machine.delete(k=b"a")
        machine.get(k=b"b")
        assert machine.store.get(b"b") == big and "b" not in machine.store.corrupt_keys()
        machine.flip_hint_byte(where=0, which=1)
        machine.get(k=b"b")
        assert machine.store.get(b"b") is None and b"b" in machine.store.corrupt_keys()
        assert b"b" in machine.uncertain
    finally:
        machine.teardown()
