"""Segment files: naming, ordering and the open-file handle (fd + read-only mmap).

A segment is ``seg-<major:010d>-<minor:04d>.data`` with its hints file beside it (``.hint``).
Segments replay in (major, minor) order, later records winning. New active segments get a new
major with minor 0; compaction of inputs whose newest name is (M, s) writes its outputs as
(M, s+1), (M, s+2), ...: after every input and before every segment written later, so a crash
that leaves inputs and outputs side by side still replays to the same state.
"""

from __future__ import annotations

import mmap
import os
import re

_NAME = re.compile(r"^seg-(\d{10,})-(\d{4,})\.(data|hint)$")
TMP_SUFFIX = ".tmp"


def data_name(name: tuple[int, int]) -> str:
    return f"seg-{name[0]:010d}-{name[1]:04d}.data"


def hint_name(name: tuple[int, int]) -> str:
    return f"seg-{name[0]:010d}-{name[1]:04d}.hint"


def parse_name(filename: str) -> tuple[tuple[int, int], str] | None:
    """``((major, minor), "data"|"hint")`` for a segment file name, else None."""
    m = _NAME.match(filename)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2))), m.group(3)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(path: str) -> int | None:
    """Bytes free to unprivileged writers on `path`'s file system (None if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def written_end(fd: int, size: int) -> int:
    """Where the file's first hole starts (``size`` if it has none, or the file system cannot
    say): the end of what the log may hold. A segment is written front to back (pwrite from
    the write buffer's base, the preallocated tail by posix_fallocate), so no record lies
    past a hole. Reading a hole through a mapping is not safe: on a full tmpfs the page
    cannot be allocated and the reader dies of SIGBUS; opening a store maps no further.
    (ext4 and XFS report a preallocated, never-written tail as a hole too.)"""
    try:
        return min(size, os.lseek(fd, 0, os.SEEK_HOLE))
    except OSError:
        return size


class Segment:
    """One open segment file: fid (in-process id), name, fd, size and a read mapping."""

    __slots__ = ("fid", "name", "path", "fd", "size", "mm")

    def __init__(self, fid: int, name: tuple[int, int], directory: str, writable: bool) -> None:
        self.fid = fid
        self.name = name
        self.path = os.path.join(directory, data_name(name))
        # no O_APPEND: the keydir pwrites at the logical end, which may lie before the end of
        # a preallocated (zero-filled) tail; ``size`` is the logical size once the owner sets it
        flags = (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY
        self.fd = os.open(self.path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.mm: mmap.mmap | None = None

    @property
    def hint_path(self) -> str:
        return self.path[: -len(".data")] + ".hint"

    def remap(self, length: int | None = None) -> mmap.mmap | None:
        """Map the first ``length`` bytes (default: the whole file) read-only."""
        length = self.size if length is None else length
        self.mm = mmap.mmap(self.fd, length, access=mmap.ACCESS_READ) if length > 0 else None
        return self.mm

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        # mappings are left to the garbage collector: a concurrent reader may still hold one
        self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
