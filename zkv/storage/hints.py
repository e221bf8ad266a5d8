"""Hints files: write one atomically for an immutable segment, read one back.

The format (header, per-record entries with the key hash, CRC trailer) is defined in
zkv/_core/record.pxd; the builder and the loader are C (record.build_hints, KeyDir.load_hints).
"""

from __future__ import annotations

import mmap
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


def read_hints(path: str) -> bytes | mmap.mmap | None:
    """The hints file as a read-only mapping (bytes if empty), None if it does not exist.

    A mapping, not a read: the loader walks it once, so copying it into a fresh buffer would
    cost more (page faults, zeroing, the copy) than the walk. Close it after loading."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        mm.madvise(mmap.MADV_SEQUENTIAL)
        return mm
    finally:
        os.close(fd)


def hints_size(path: str) -> tuple[int, int]:
    """``(entries, key bytes)`` a hints file claims in its header, or (0, 0) if unreadable:
    enough to reserve keydir room for every hints file before loading any."""
    try:
        with open(path, "rb") as f:
            head = f.read(record.HINT_HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return 0, 0
    if len(head) < record.HINT_HEADER_SIZE or head[:4] != record.HINT_MAGIC:
        return 0, 0
    count = int.from_bytes(head[8:16], "little")
    keys = size - record.HINT_HEADER_SIZE - record.HINT_TRAILER_SIZE - count * record.HINT_ENTRY_SIZE
    if count > size or keys < 0:
        return 0, 0
    return count, keys
