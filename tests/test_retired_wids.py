"""dvv.RetiredWids export() / load() (the late-copy memory as bytes), and the node keeping that
memory across a restart (zkv/node/latefile.py): a late copy of a write overwritten before a
clean stop or a crash is retired where it arrives after it, as it was before."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv._core import dvv

PROPS = settings(max_examples=100, deadline=None)
pairs = st.lists(st.tuples(st.binary(min_size=1, max_size=40),
                           st.binary(min_size=1, max_size=32)),
                 max_size=60)


def _noted_chain(memory: dvv.RetiredWids, n: int) -> tuple[dvv.DVVSet, list[bytes]]:
    """n puts to key b"k", each chained on the last one's context under a new write id, each
    version noted by `memory`: (the last version, the write ids in order)."""
    s, ctx, wids = None, b"", []
    for i in range(n):
        w = os.urandom(16)
        wids.append(w)
        s = dvv.update(s, ctx, b"v%d" % i, "b~1", w)
        ctx = dvv.put_context(s, ctx, w)
        memory.note(b"k", s.encode())
    assert s is not None
    return s, wids


def _filled(cap: int, items) -> dvv.RetiredWids:
    m = dvv.RetiredWids(cap)
    for key, wid in items:
        m.add(key, wid)
    return m


@PROPS
@given(pairs, st.integers(1, 80), st.integers(1, 80))
def test_an_export_loads_back_as_the_same_memory(items, cap, cap2):
    """load(export()) holds the same pairs (the newest cap2 of them into a smaller memory) in
    the same order: exporting again gives the same bytes, and the next pair added forgets the
    same oldest one."""
    m = _filled(cap, items)
    data = m.export()
    assert len(data) == 17 + 16 * len(m) and data[0] == dvv.RETIRED_FORMAT_VERSION
    other = dvv.RetiredWids(cap2)
    assert other.load(data) == min(len(m), cap2) and other.added == 0
    kept: list = []  # (remembered, oldest first: a pair forgotten and added again is new)
    for p in items:
        if p not in kept:
            kept = (kept + [p])[-cap:]
    assert all(m.holds(*p) for p in kept) and len(kept) == len(m)
    assert all(other.holds(*p) for p in kept[len(kept) - min(len(kept), cap2):])
    if cap2 >= len(m):
        assert all(other.holds(*p) for p in kept) and len(other) == len(m)
    if cap2 == cap:
        assert other.export() == data
        m.add(b"new", b"id")
        other.add(b"new", b"id")
        assert m.export() == other.export() and other.added == 1


@PROPS
@given(pairs, st.data())
def test_a_short_long_or_damaged_export_is_refused_and_changes_nothing(items, data):
    m = _filled(64, items)
    good = m.export()
    target = _filled(8, [(b"k", b"w")])
    before = target.export()
    cut = data.draw(st.integers(0, len(good) - 1))
    bad = [good[:cut], good + data.draw(st.binary(min_size=1, max_size=20))]
    at = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad.append(good[:at] + bytes([good[at] ^ flip]) + good[at + 1:])
    bad.append(data.draw(st.binary(max_size=200)))
    for blob in bad:
        if blob == good:
            continue
        with pytest.raises(ValueError):
            target.load(blob)
        assert target.export() == before and target.holds(b"k", b"w")
    with pytest.raises(TypeError):
        target.load(bytearray(good))


def test_a_loaded_memory_strips_a_late_copy_as_the_one_that_noted_it():
    """The digests are under the memory's own seed: the export carries it, so a memory
    loaded elsewhere recognises the pairs (a new memory's own seed would not)."""
    m = dvv.RetiredWids()
    s, wids = _noted_chain(m, 10)
    late = dvv.update(None, b"", b"v0", "a~1", wids[0])
    both = dvv.sync(late, s).encode()
    fresh = dvv.RetiredWids()
    assert fresh.strip(b"k", both) is both  # (what a restart without the file did)
    fresh.load(m.export())
    assert dvv.DVVSet.decode(fresh.strip(b"k", both)).values() == [b"v9"]
    assert fresh.holds(b"k", wids[0]) and not fresh.holds(b"k", wids[9])


def _chain(coordinate, key: bytes, n: int) -> bytes:
    """A first put and n - 1 puts chained on it (each with the last one's context) through
    `coordinate`; the first put's write id."""
    first = b"1" * 16
    v = coordinate(key, b"", b"v1", wid=first)
    ctx = dvv.put_context(v, b"", first)
    for i in range(2, n + 1):
        wid = bytes([i]) * 16
        v = coordinate(key, ctx, b"v%d" % i, wid=wid)
        ctx = dvv.put_context(v, ctx, wid)
    listed = {w for ws in dvv.DVVSet.decode(v).retired_wids() for w in ws}
    assert (first in listed) == (n <= 5)  # (past 4 overwrites only the memory has it)
    return first


@pytest.mark.parametrize("stop", ["clean", "crash"])
def test_a_late_copy_stays_retired_after_a_restart(tmp_path, stop):
    """A put hedged to two coordinators: this node answers it and eight puts chained on it
    (past the 4 ids a set lists as retired), then it stops, cleanly or by a crash after the
    background scheduler wrote its memory, and is started again on its data dir. Then the
    other coordinator's late copy of the first put arrives: it is retired here, not kept
    beside the newest value, and a late retry of it makes no new dot. (Before the memory was
    kept on disk, the restarted node kept the late copy as a sibling.)"""
    from zkv.config import NodeConfig
    from zkv.node.core import NodeCore
    from zkv.node.membership import load_cluster
    from zkv.node.replica import Replica
    from zkv.node.stores import open_stores
    from zkv.storage import LogStore

    cfg = NodeConfig(id="d", listen="tcp://127.0.0.1:1", gossip="tcp://127.0.0.1:2",
                     data_dir=str(tmp_path / "d"), ring_size=16, n=3, rack="r")
    path = str(tmp_path / "d" / "cluster.json")

    def boot(incarnation: int) -> NodeCore:
        store, handoff = open_stores(cfg)
        return NodeCore(cfg, store, handoff, incarnation=incarnation, now=0.0,
                        saved=load_cluster(path), cluster_path=path)

    core = boot(1)
    first = _chain(core.replica.coordinate, b"k", 9)
    if stop == "clean":
        core.close_stores()
    else:
        core.tick(30.0)  # (the background scheduler's round writes the memory's file)
        core.replica.flush()
        _chain(core.replica.coordinate, b"k2", 3)  # (noted after it: lost with the crash)
        assert len(core.replica.retired) == 10
        core.store.close()  # (what the process wrote reaches the next start, as in a crash)
        core.handoff.close()
    assert os.path.getsize(tmp_path / "d" / "retired") == 17 + 16 * 8
    core = boot(2)
    assert len(core.replica.retired) == 8 and core.replica.retired.holds(b"k", first)
    a = Replica("a", LogStore(str(tmp_path / "a"), sync="none"))
    late = a.coordinate(b"k", b"", b"v1", wid=first)
    assert dvv.DVVSet.decode(core.replica.merge(b"k", late)).values() == [b"v9"]
    held = core.store.get(b"k")
    assert dvv.DVVSet.decode(held).values() == [b"v9"]
    assert core.replica.coordinate(b"k", b"", b"v1", wid=first) == held
    assert core.replica.late_retired == 2
    a.store.close()
    core.close_stores()


@pytest.mark.parametrize("damage", ["short", "garbage", "version", "empty", "missing"])
def test_a_damaged_memory_file_means_an_empty_memory_and_one_line(tmp_path, caplog, damage):
    """The file is an aid: a missing, short or damaged one (or of another format version)
    starts the node with an empty memory and says so in one log line; it never refuses a
    start. The next write of the file replaces it with a whole one."""
    import logging

    from zkv.config import NodeConfig
    from zkv.node.core import NodeCore
    from zkv.node.membership import load_cluster
    from zkv.node.stores import open_stores

    cfg = NodeConfig(id="d", listen="tcp://127.0.0.1:1", gossip="tcp://127.0.0.1:2",
                     data_dir=str(tmp_path / "d"), ring_size=16, n=3, rack="r")
    path = str(tmp_path / "d" / "cluster.json")
    os.makedirs(cfg.data_dir)
    good = _filled(100, [(b"k", b"w%d" % i) for i in range(5)]).export()
    bad = {"short": good[:-3], "garbage": os.urandom(len(good)), "empty": b"",
           "version": b"\x02" + good[1:], "missing": None}[damage]
    if bad is not None:
        with open(tmp_path / "d" / "retired", "wb") as fh:
            fh.write(bad)
    store, handoff = open_stores(cfg)
    with caplog.at_level(logging.DEBUG, logger="zkv.latefile"):  # (missing: at DEBUG)
        core = NodeCore(cfg, store, handoff, incarnation=1, now=0.0, saved=load_cluster(path),
                        cluster_path=path)
    lines = [r for r in caplog.records if r.name == "zkv.latefile"]
    assert len(lines) == 1 and "starts empty" in lines[0].getMessage()
    assert len(core.replica.retired) == 0
    _chain(core.replica.coordinate, b"k", 6)
    core.close_stores()
    with open(tmp_path / "d" / "retired", "rb") as fh:
        assert dvv.RetiredWids().load(fh.read()) == 5
    assert not os.path.exists(tmp_path / "d" / "retired.tmp")


def test_retired_wids_memory_is_bounded_per_key_and_strips_only_with_a_survivor():
    """RetiredWids: note() takes the retired lists of a key's set's live siblings (a set
    without any costs nothing), remembers at most `cap` (key, id) pairs (the oldest forgotten
    first), and strip() retires remembered pairs only from a set of two or more siblings of
    which one stays. Per key, as rule R is: the same id on another key is another write (a
    review: one memory for all keys retired another key's unread writes, and a write reusing
    an id and value on a second key was answered but never stored)."""
    with pytest.raises(ValueError):
        dvv.RetiredWids(0)
    m = dvv.RetiredWids(6)
    s, wids = _noted_chain(m, 10)
    assert len(m) == 6 and m.cap == 6
    assert [i for i, w in enumerate(wids) if m.holds(b"k", w)] == [3, 4, 5, 6, 7, 8]
    assert not any(m.holds(b"other", w) for w in wids)
    blind = dvv.update(None, b"", b"x", "b~1", b"").encode()  # (format 1: no ids at all)
    assert m.note(b"k", blind) == 0 and m.strip(b"k", blind) is blind
    late = dvv.update(None, b"", b"v3", "a~1", wids[3])
    both = dvv.sync(late, s).encode()
    assert sorted(dvv.DVVSet.decode(both).values()) == [b"v3", b"v9"]
    assert dvv.DVVSet.decode(m.strip(b"k", both)).values() == [b"v9"]
    assert m.strip(b"other", both) is both  # another key's write of that id: kept
    only_late = late.encode()
    assert m.strip(b"k", only_late) is only_late  # nothing that overwrote it is here: kept
    two_late = dvv.sync(late, dvv.update(None, b"", b"v4", "c~1", wids[4])).encode()
    assert m.strip(b"k", two_late) is two_late
    for truncated in (b"\x03", b"\x03\x01\x00", both[:-1]):
        with pytest.raises(ValueError):
            m.note(b"k", truncated)
    with pytest.raises(TypeError):
        m.strip(b"k", bytearray(both))
    with pytest.raises(ValueError):
        m.add(b"k", b"")
    m.add(b"z", wids[0])
    assert m.holds(b"z", wids[0]) and not m.holds(b"k", wids[0])
