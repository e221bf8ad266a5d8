"""CPU time of processes, read from /proc/<pid>/stat (Linux): what `zkv bench --throughput`
divides by the operations completed to get CPU per operation.

A process's utime + stime covers all of its threads (libzmq's I/O thread included);
`thread_seconds` splits it by kind of thread, so a report can say how much of a node's CPU is
its own loop and how much libzmq's I/O thread. Where /proc is missing (not Linux) the figures
are None and the report says so.
"""

from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_seconds(path: str) -> tuple[bytes, float] | None:
    """(command name, utime + stime in seconds) of a /proc stat file; None if unreadable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    try:
        close = data.rindex(b")")
        fields = data[close + 2:].split()
        return (data[data.index(b"(") + 1:close],
                (int(fields[11]) + int(fields[12])) / TICKS)  # fields 14 and 15 of stat(5)
    except (IndexError, ValueError):
        return None


def process_seconds(pid: int) -> float | None:
    """utime + stime of `pid` in seconds; None when it cannot be read (gone, not Linux)."""
    got = _stat_seconds(f"/proc/{pid}/stat")
    return None if got is None else got[1]


def thread_seconds(pids: list[int]) -> dict[str, float] | None:
    """CPU seconds of the threads of `pids`, summed by kind: "main" (each process's first
    thread: a node's loop), "zmq" (libzmq's I/O threads, named ZMQbg/IO/<n>) and "other"
    (libzmq's reaper, the engine's fsync and compaction threads, ...). None if a process
    cannot be read. A thread that ends between two readings drops out of the later one, so
    deltas of this split are exact only for threads alive throughout (a node's are)."""
    out = {"main": 0.0, "zmq": 0.0, "other": 0.0}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for tid in tids:
            got = _stat_seconds(f"/proc/{pid}/task/{tid}/stat")
            if got is None:
                continue  # ended meanwhile
            name, seconds = got
            kind = ("main" if tid == str(pid) else
                    "zmq" if name.startswith(b"ZMQbg/IO") else "other")
            out[kind] += seconds
    return out


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
