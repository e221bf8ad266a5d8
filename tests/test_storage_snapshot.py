"""LogStore.snapshot: the copy opens to exactly what the store held when it was taken, whatever
the store does after (writes, deletes, overwrites, rotations, compactions, closing)."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.errors import StorageFull
from zkv.storage import LogStore

KEYS = [b"k%d" % i for i in range(12)]
op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(min_size=0, max_size=3000)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(b"")),
    st.tuples(st.just("compact"), st.just(b""), st.just(b"")),
)


def _apply(store: LogStore, model: dict, ops: list) -> None:
    for kind, key, value in ops:
        if kind == "put":
            store.put(key, value)
            model[key] = value
        elif kind == "delete":
            store.delete(key)
            model.pop(key, None)
        else:
            store.compact()


@settings(max_examples=40, deadline=None)
@given(before=st.lists(op, max_size=40), after=st.lists(op, max_size=40),
       sync=st.sampled_from(["none", "interval", "always"]),
       reopen=st.booleans())
def test_a_snapshot_opens_to_the_state_it_was_taken_at(tmp_path_factory, before, after, sync,
                                                        reopen):
    d = tmp_path_factory.mktemp("snap")
    model: dict[bytes, bytes] = {}
    store = LogStore(str(d / "live"), sync=sync, segment_bytes=8192, compact_dead_ratio=None)
    try:
        _apply(store, model, before)
        info = store.snapshot(str(d / "copy"))
        taken = dict(model)
        wrote = any(kind != "compact" for kind, _, _ in before)
        assert (info["files"] > 0 and info["bytes"] > 0) if wrote else info["bytes"] >= 0
        _apply(store, model, after)
        if reopen:  # the live store closed and opened again: the copy is still its own
            store.close()
            store = LogStore(str(d / "live"), sync=sync, segment_bytes=8192,
                             compact_dead_ratio=None)
        assert dict(store.items()) == model  # the live store is unaffected by the snapshot
    finally:
        store.close()
    with LogStore(str(d / "copy"), sync="none", compact_dead_ratio=None) as copy:
        assert dict(copy.items()) == taken
        assert sorted(copy.tombstones()) == sorted(
            {k for kind, k, _ in before if kind == "delete"} - set(taken))


def test_a_snapshot_does_not_overwrite_and_leaves_nothing_when_it_fails(tmp_path):
    with LogStore(str(tmp_path / "live"), segment_bytes=8192) as store:
        store.put(b"a", b"1")
        os.mkdir(tmp_path / "taken")
        with pytest.raises(FileExistsError):
            store.snapshot(str(tmp_path / "taken"))
        assert os.listdir(tmp_path / "taken") == []
        store._write_failed = "writing failed: ENOSPC (test)"  # writes refused (a full disk)
        with pytest.raises(StorageFull):
            store.snapshot(str(tmp_path / "full"))
        assert not os.path.exists(tmp_path / "full")
        store._write_failed = None
        store.snapshot(str(tmp_path / "ok"))
    with LogStore(str(tmp_path / "ok")) as copy:
        assert copy.get(b"a") == b"1"


def test_snapshots_taken_while_writers_and_compactions_run_are_each_a_moment(tmp_path):
    """Snapshots taken from another thread while a writer overwrites keys and compactions
    swap segments: each opens, every record in it reads back, and it holds for each key a
    value the writer had put by the end of the snapshot, no older than what it had put by its
    start (values carry the writer's sequence number)."""
    import threading

    store = LogStore(str(tmp_path / "live"), sync="none", segment_bytes=16384,
                     compact_dead_ratio=0.3)
    done = threading.Event()
    progress = {k: -1 for k in KEYS}  # key -> the last sequence number put

    def writer() -> None:
        seq = 0
        while not done.is_set():
            for k in KEYS:
                store.put(k, b"%d:" % seq + b"x" * 200)
                progress[k] = seq
                seq += 1

    t = threading.Thread(target=writer)
    t.start()
    taken = []
    try:
        # At least 30 snapshots, and on until a compaction has finished meanwhile (a busy
        # host can take 30 before the background one ends; one is also asked for at the 10th)
        deadline = time.monotonic() + 120
        while len(taken) < 30 or (store.stats()["compactions"] == 0
                                  and time.monotonic() < deadline):
            i = len(taken)
            if i == 10:
                store.compact_async()
            before = dict(progress)
            store.snapshot(str(tmp_path / f"s{i}"))
            taken.append((before, dict(progress)))
        compactions = store.stats()["compactions"]
    finally:
        done.set()
        t.join()
        store.close()
    assert compactions > 0  # (segments were swapped while snapshots were taken)
    for i, (before, after) in enumerate(taken):
        with LogStore(str(tmp_path / f"s{i}"), compact_dead_ratio=None) as copy:
            for k in KEYS:
                v = copy.get(k)
                if before[k] < 0:
                    continue  # (not written before the snapshot began: may or may not be in)
                assert v is not None, (i, k)
                seq = int(v.split(b":")[0])
                assert before[k] <= seq <= after[k] + len(KEYS), (i, k, before[k], seq, after[k])


def test_a_snapshot_opened_and_written_in_place_leaves_the_store_and_other_snapshots_alone(
        tmp_path):
    """A snapshot's segments are links to the store's (and to those of the snapshots taken
    before it): a copy opened where it is and written to (a restore done by moving the
    snapshot into place) appends to a segment of its own, never to a linked one."""
    live = LogStore(str(tmp_path / "live"), segment_bytes=8192, compact_dead_ratio=None)
    try:
        for i in range(30):
            live.put(b"k%d" % i, b"v" * 500)
        live.snapshot(str(tmp_path / "a"))
        live.snapshot(str(tmp_path / "b"))  # (links the same segments: nothing new written)
        sizes = {fn: os.path.getsize(tmp_path / "live" / fn)
                 for fn in os.listdir(tmp_path / "live") if fn.endswith(".data")}
        with LogStore(str(tmp_path / "a"), segment_bytes=8192, compact_dead_ratio=None) as a:
            for i in range(30):
                a.put(b"k%d" % i, b"written to the copy")
            a.put(b"new", b"only in the copy")
        assert {fn: os.path.getsize(tmp_path / "live" / fn) for fn in sizes} == sizes
        assert live.get(b"k3") == b"v" * 500 and live.get(b"new") is None
    finally:
        live.close()
    for where in ("live", "b"):
        with LogStore(str(tmp_path / where), compact_dead_ratio=None) as other:
            assert other.get(b"new") is None, where
            assert all(other.get(b"k%d" % i) == b"v" * 500 for i in range(30)), where
    with LogStore(str(tmp_path / "a"), compact_dead_ratio=None) as a:
        assert a.get(b"new") == b"only in the copy" and a.get(b"k3") == b"written to the copy"
