"""Hints files: write one atomically for an immutable segment, read one back.

The format (header, per-record entries with the key hash, CRC trailer) is defined in
zkv/_core/record.pxd; the builder and the loader are C (record.build_hints, KeyDir.load_hints).
"""

from __future__ import annotations

import os

from zkv._core import record


def write_hints(path: str, segment_image, end: int = -1, fsync: bool = True) -> int:
    """Build the hints of ``segment_image`` and write them to ``path`` via a temp file + rename."""
    data = record.build_hints(segment_image, end)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return len(data)


def read_hints(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
