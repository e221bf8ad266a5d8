"""CPU time of processes, read from /proc/<pid>/stat (Linux): what `zkv bench --throughput`
divides by the operations completed to get CPU per operation.

A process's utime + stime covers all of its threads (libzmq's I/O thread included). Where
/proc is missing (not Linux) the figures are None and the report says so.
"""

from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_seconds(pid: int) -> float | None:
    """utime + stime of `pid` in seconds; None when it cannot be read (gone, not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = data[data.rindex(b")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of stat(5)
    except (IndexError, ValueError):
        return None


def total_seconds(pids: list[int]) -> float | None:
    """The summed CPU seconds of `pids`; None if any of them cannot be read."""
    total = 0.0
    for pid in pids:
        s = process_seconds(pid)
        if s is None:
            return None
        total += s
    return total


def self_seconds() -> float:
    """This process's own CPU seconds, every thread (getrusage: microsecond resolution, where
    /proc/self/stat counts clock ticks)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (getrusage)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def per_op_us(seconds: float | None, ops: int) -> float | None:
    """CPU microseconds per operation (None when unknown or nothing completed)."""
    if seconds is None or ops <= 0:
        return None
    return 1e6 * seconds / ops
