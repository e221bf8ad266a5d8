"""The hints file contract shared by record.hints_ok / record.parse_hints (the inspector's
reader) and KeyDir.load_hints (the engine's loader): one judgement of what a good file is."""

from __future__ import annotations

import struct

import pytest

from zkv._core import record
from zkv._core.keydir import KeyDir


def _hints(keys: list[bytes]) -> bytes:
    """A hints file (format: record.pxd) with one entry per key and a good CRC."""
    body = record.HINT_MAGIC + bytes([record.HINT_VERSION, 0, 0, 0]) + struct.pack("<Q", len(keys))
    off = 0
    for key in keys:
        size = record.HEADER_SIZE + len(key)
        body += struct.pack("<QIIIB3x", record.key_hash(key), off, size, len(key), 0) + key
        off += size
    return body + struct.pack("<I", record.crc32c(body))


def test_a_well_formed_hints_file_is_good_for_both_readers():
    data = _hints([b"a", b"bb"])
    assert data == record.build_hints(record.encode(b"a", b"") + record.encode(b"bb", b""))
    assert record.hints_ok(data)
    assert [e[4] for e in record.parse_hints(data)] == [b"a", b"bb"]
    assert KeyDir().load_hints(data, 1) == 2


@pytest.mark.parametrize("bad", [b"", b"k" * (record.MAX_KEY + 1)],
                         ids=["empty key", "key over MAX_KEY"])
def test_a_key_no_record_can_have_is_refused_by_both_readers(bad):
    """An entry whose key length is outside 1..MAX_KEY (a record's bounds: the engine never
    writes such a key) in a file whose CRC checks: KeyDir.load_hints refused it (-1, the
    segment is scanned) while parse_hints returned it (tools/inspect_data.py called the file
    good) and hints_ok said True. Both refuse it now, each in its documented way."""
    data = _hints([b"a", bad, b"c"])
    assert not record.hints_ok(data)
    assert record.parse_hints(data) is None
    kd = KeyDir()
    assert kd.load_hints(data, 1) == -1
    assert len(kd) == 0  # nothing inserted
