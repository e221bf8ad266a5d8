"""One process per data directory: an exclusive ``fcntl.flock`` on ``DIR/LOCK``.

The kernel drops a flock when its process dies, so a lock file left by a killed process is
simply taken over; the pid written in the file only serves the error message and the log.
A clean release empties the file, so only a process that died holding it is reported (every
clean restart said "taking over stale lock ... left by dead process" before).
"""

from __future__ import annotations

import fcntl
import logging
import os

from zkv.errors import StoreLocked
from zkv.local import pid_alive

log = logging.getLogger("zkv.storage")

LOCK_NAME = "LOCK"


class DirLock:
    """Hold the directory lock from construction until :meth:`release`."""

    def __init__(self, directory: str, shared: bool = False) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder and pid_alive(holder) else (
                "another process, or a read-only opener (the pid it names, "
                f"{holder}, is gone)" if holder else "another process")
            raise StoreLocked(
                f"storage directory {directory!r} is in use by {who} (lock file {self.path}); "
                "stop that process or use another --data-dir"
            ) from None
        previous = _read_pid(fd)
        if previous and previous != os.getpid() and not shared:
            log.warning("taking over stale lock %s left by dead process %s", self.path, previous)
        if not shared:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:  # (a full disk: the lock holds all the same; the pid
                log.warning("could not write the pid to %s (%s)", self.path, exc)  # is a note)
        self.fd = fd
        self.shared = shared

    def release(self) -> None:
        if self.fd >= 0:
            try:
                if not self.shared:
                    os.ftruncate(self.fd, 0)  # released cleanly: nobody to report
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).split()
        return int(raw[0]) if raw else None
    except (OSError, ValueError):
        return None
