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
    kept = [p for p in dict.fromkeys(items) if m.holds(*p)]  # (remembered, oldest first)
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
    s, ctx, wids = None, b"", []
    for i in range(10):
        w = os.urandom(16)
        wids.append(w)
        s = dvv.update(s, ctx, b"v%d" % i, "b~1", w)
        ctx = dvv.put_context(s, ctx, w)
        m.note(b"k", s.encode())
    late = dvv.update(None, b"", b"v0", "a~1", wids[0])
    both = dvv.sync(late, s).encode()
    fresh = dvv.RetiredWids()
    assert fresh.strip(b"k", both) is both  # (what a restart without the file did)
    fresh.load(m.export())
    assert dvv.DVVSet.decode(fresh.strip(b"k", both)).values() == [b"v9"]
    assert fresh.holds(b"k", wids[0]) and not fresh.holds(b"k", wids[9])
