"""Rate-limited logging of an error that repeats: one traceback, then a count.

A failure that recurs on every loop turn or tick (a full disk: "[Errno 28] No space left on
device" on each write-out) logged ~16,000 tracebacks in 20 s through the node's "error in the
reactor loop; continuing", onto the same full disk. `RepeatLog.exception` logs the first
occurrence of each distinct error (type and message) with its traceback; repeats within
`every` seconds are only counted, and the next occurrence after that logs one line saying how
many there were, with the traceback again. Distinct errors remembered are capped (`MAX_KINDS`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

MAX_KINDS = 64


class RepeatLog:
    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.every = every
        self.clock = clock
        self.seen: dict[tuple[str, str], list] = {}  # error -> [when last logged, repeats since]

    def exception(self, what: str) -> None:
        """Log the exception being handled under `what`, unless it is a repeat (counted)."""
        exc = sys.exc_info()[1]
        key = (type(exc).__name__, str(exc)[:200])
        now = self.clock()
        seen = self.seen.get(key)
        if seen is not None and now - seen[0] < self.every:
            seen[1] += 1
            return
        if seen is not None and seen[1]:
            self.log.exception("%s (%d more times in the last %.0f s)", what, seen[1],
                               now - seen[0])
        else:
            self.log.exception(what)
        if seen is None and len(self.seen) >= MAX_KINDS:
            self.seen.clear()
        self.seen[key] = [now, 0]
