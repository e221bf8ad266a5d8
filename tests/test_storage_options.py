"""LogStore's options: a bad one is an InvalidRequest naming it, raised before the directory
is locked, and a constructor that fails for any reason leaves the directory unlocked."""

from __future__ import annotations

import pytest

from zkv.errors import InvalidRequest
from zkv.storage import LogStore


@pytest.mark.parametrize("bad", [
    {"compress_threshold": -1},
    {"compress_threshold": 2**64},
    {"sync_interval_ms": -5},
    {"compact_dead_ratio": 0},
    {"compact_dead_ratio": 1.5},
])
def test_a_bad_option_is_refused_and_the_directory_left_unlocked(tmp_path, bad):
    with pytest.raises(InvalidRequest, match=next(iter(bad))):
        LogStore(tmp_path, **bad)
    with LogStore(tmp_path) as store:  # (no garbage collection needed first)
        store.put(b"k", b"v")


def test_a_constructor_failing_after_the_lock_releases_it(tmp_path, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("put_policy failed")

    from zkv.storage import logstore

    class Broken(logstore.KeyDir):
        put_policy = broken

    monkeypatch.setattr(logstore, "KeyDir", Broken)
    with pytest.raises(RuntimeError, match="put_policy failed"):
        LogStore(tmp_path)
    monkeypatch.undo()
    with LogStore(tmp_path) as store:
        store.put(b"k", b"v")


def test_a_closed_store_refuses_every_read_not_only_get(tmp_path):
    """keys(), len(), `in` and stats() on a closed store answered from what it held when
    open; get, items and put raised. Each now raises InvalidRequest."""
    s = LogStore(str(tmp_path / "d"))
    s.put(b"k", b"v")
    s.close()
    for call in (lambda: list(s.keys()), lambda: len(s), lambda: b"k" in s, s.stats,
                 lambda: s.get(b"k"), lambda: s.put(b"k", b"w")):
        with pytest.raises(InvalidRequest, match="closed"):
            call()


def test_a_segment_whose_data_file_is_missing_is_named_and_its_hints_kept(tmp_path, caplog):
    """A sealed segment's data file lost (its hints, the last record of which keys it held,
    were removed without a word at the next open, later with a WARNING): with no compaction
    output newer than it, that is no compaction's leftover but damage: an ERROR names it and
    the hints stay (test_storage_damage has the keys it lost)."""
    import logging
    import os

    d = str(tmp_path / "d")
    s = LogStore(d, segment_bytes=4096, compact_dead_ratio=None)
    for i in range(200):
        s.put(b"k%03d" % i, b"v" * 40)
    s.close()
    sealed = sorted(f for f in os.listdir(d) if f.endswith(".data"))[0]
    os.unlink(os.path.join(d, sealed))
    with caplog.at_level(logging.WARNING, logger="zkv.storage"):
        s = LogStore(d)
    assert s.damaged_regions == 1
    s.close()
    said = [r for r in caplog.records if "no data file" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR", said
    assert sealed in said[0].getMessage() and "lost their values" in said[0].getMessage()
    assert os.path.exists(os.path.join(d, sealed.replace(".data", ".hint")))


def test_hints_left_by_an_interrupted_compaction_are_removed_with_a_warning(tmp_path, caplog):
    """The compaction's outputs (named after its newest input) are on disk and it stopped
    between unlinking an input's data file and its hints: harmless, no damage."""
    import logging
    import os

    d = str(tmp_path / "d")
    s = LogStore(d, segment_bytes=4096, compact_dead_ratio=None)
    for i in range(200):
        s.put(b"k%03d" % i, b"v" * 40)
    s.close()
    names = sorted(f for f in os.listdir(d) if f.endswith(".data"))
    s = LogStore(d, segment_bytes=4096, compact_dead_ratio=None)
    s.compact()
    s.close()
    hint = os.path.join(d, names[0].replace(".data", ".hint"))
    open(hint, "wb").close()  # (as the unlink of the input's hints never happened)
    with caplog.at_level(logging.WARNING, logger="zkv.storage"):
        s = LogStore(d)
    assert s.damaged_regions == 0
    assert all(s.get(b"k%03d" % i) == b"v" * 40 for i in range(200))
    s.close()
    said = [r for r in caplog.records if "no data file" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING", said
    assert not os.path.exists(hint)
