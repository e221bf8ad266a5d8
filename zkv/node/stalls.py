"""Loop stalls: turns of the node's loop long enough that every request behind them waited.

A node does everything on one thread, a turn at a time (transport.py); while a turn runs,
requests, replica answers and heartbeats queue. A long turn (a collection of a large heap,
the file system blocking a write during writeback, a machine so loaded the node waits for a
core, a very large batch) delays them all, and peers' failure detectors hear silence. Each
turn's busy time, from the end of its poll (where it waits for input) to the end of its
flush, is handed to `TurnWatch.end` by the transport: at SLOW or more it is counted
(zkv_slow_turns_total); at LOG or more it is also logged, at most once per LOG_EVERY seconds
(that line says how many more there were and the longest). A turn during which the node
found its process stood still (stopped, a frozen VM: NodeCore._resumed, which counts it in
zkv_stood_still_total and logs it) is not blamed for that time (`stood_still`): it is no
slow turn unless its work took long besides. No clock here: the transport and the core pass
their own times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

SLOW = 0.1  # s: a turn this long is counted
LOG = 1.0  # s: ... and logged (rate-limited)
LOG_EVERY = 10.0  # s between log lines


class TurnWatch:
    __slots__ = ("began", "on_slow", "log", "logged_at", "unlogged", "longest", "still")

    def __init__(self, log: logging.Logger, on_slow: Callable[[], None] | None = None) -> None:
        self.began = 0.0  # when the current turn's poll returned
        self.on_slow = on_slow
        self.log = log
        self.logged_at = float("-inf")
        self.unlogged = 0  # turns over LOG since the last line, not logged themselves
        self.longest = 0.0  # the longest of those
        self.still = 0.0  # seconds of the current turn the process stood still

    def stood_still(self, start: float, end: float) -> None:
        """The process stood still from `start` to `end` (NodeCore._resumed, within a turn):
        the part of it in the current turn is not the turn's work."""
        self.still += max(0.0, end - max(start, self.began))

    def end(self, now: float) -> None:
        """The current turn ended at `now` (it began at `self.began`)."""
        took = now - self.began - self.still
        self.still = 0.0
        if took < SLOW:
            return
        if self.on_slow is not None:
            self.on_slow()
        if took < LOG:
            return
        if now - self.logged_at < LOG_EVERY:
            self.unlogged += 1
            self.longest = max(self.longest, took)
            return
        more = (f" ({self.unlogged} more over {LOG:g} s since the last such line, the longest "
                f"{self.longest:.2f} s)") if self.unlogged else ""
        self.log.warning("a loop turn took %.2f s%s: every request queued meanwhile waited as "
                         "long (a machine short of CPU, a disk blocking writes, or a long "
                         "garbage collection)", took, more)
        self.logged_at, self.unlogged, self.longest = now, 0, 0.0
