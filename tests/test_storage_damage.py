"""Damaged records found by the open's scan: the key whose newest record is damaged is named
in corrupt_keys() and reads as absent (never its older version), across later reopens too,
and a damaged header does not make up a key that never existed."""

from __future__ import annotations

import os

import pytest

from zkv._core import record
from zkv.storage import LogStore


def _store_with_an_overwritten_key(path) -> tuple[str, int]:
    """`acct` written twice, far apart, so the versions sit in different segments; the path
    and offset of its newest record, whose segment's hints file is gone (the open scans it)."""
    with LogStore(path, segment_bytes=4096, compact_dead_ratio=None) as s:
        s.put(b"acct", b"balance=100 (OLD)")
        for i in range(40):
            s.put(b"pad%02d" % i, b"p" * 200)
        s.put(b"acct", b"balance=0 (NEW)")
        for i in range(5):
            s.put(b"tail%02d" % i, b"t" * 200)
    for name in sorted(os.listdir(path)):
        if name.endswith(".data"):
            seg = os.path.join(path, name)
            with open(seg, "rb") as f:
                image = f.read()
            for off, size, _flags, key, _ok in record.scan(image):
                if key == b"acct" and b"NEW" in image[off:off + size]:
                    hint = seg[:-5] + ".hint"
                    if os.path.exists(hint):
                        os.unlink(hint)
                    return seg, off
    raise AssertionError("no new record")


@pytest.mark.parametrize("where,flip", [
    (4, 0x01),    # version
    (5, 0x80),    # flags
    (6, 0x01),    # reserved
    (8, 0x08),    # klen, low byte (4 -> 12: a longer key that never existed)
    (11, 0x01),   # klen, high byte
    (15, 0x01),   # vlen, high byte
    (0, 0x01),    # crc
    (23, 0x01),   # value
])
def test_a_damaged_newest_record_never_brings_back_the_older_value(tmp_path, where, flip):
    seg, off = _store_with_an_overwritten_key(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(off + where)
        b = f.read(1)
        f.seek(off + where)
        f.write(bytes([b[0] ^ flip]))
    for _ in range(2):  # (the first open must leave nothing a second one trusts instead)
        with LogStore(tmp_path) as s:
            assert s.get(b"acct") is None
            assert s.corrupt_keys() == [b"acct"]
            assert s.damaged_regions == 1
            assert s.get(b"pad00") == b"p" * 200 and s.get(b"tail04") == b"t" * 200
    with LogStore(tmp_path) as s:
        s.put(b"acct", b"balance=5 (REPAIRED)")  # the repair clears it
        assert s.corrupt_keys() == []
    with LogStore(tmp_path) as s:
        assert s.get(b"acct") == b"balance=5 (REPAIRED)"


def test_many_corrupt_records_found_by_reads_are_logged_a_few_and_counted(tmp_path, caplog):
    """A truncated or overwritten segment read back key by key logged one ERROR line per
    key (1,169 at once in an outside run). The first CORRUPT_LOGGED of a segment are logged,
    then every 1000th; corrupt_keys() still names every one."""
    from zkv.storage.logstore import CORRUPT_LOGGED

    path = str(tmp_path / "db")
    with LogStore(path) as store:
        for i in range(300):
            store.put(b"k%03d" % i, bytes([i % 251]) * 1000)
    (seg,) = [f for f in os.listdir(path) if f.endswith(".data")]
    with open(os.path.join(path, seg), "r+b") as fh:  # the middle third: garbage
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size // 3)
        fh.write(b"\xa5" * (size // 3))
    with caplog.at_level("ERROR", logger="zkv.storage"), LogStore(path) as again:
        got = {i: again.get(b"k%03d" % i) for i in range(300)}
        bad = [i for i, v in got.items() if v is None]
        assert len(bad) > 50 and all(got[i] == bytes([i % 251]) * 1000
                                     for i in got if i not in bad)
        assert sorted(again.corrupt_keys()) == [b"k%03d" % i for i in bad]
    lines = [r for r in caplog.records if "corrupt record for key" in r.getMessage()]
    assert len(lines) == CORRUPT_LOGGED, len(lines)
    assert "the next are counted" in lines[-1].getMessage()
