"""The replica's late-copy memory kept across restarts: DATA_DIR/retired, a file holding
`dvv.RetiredWids.export()` (its format, with byte counts, is in dvv.pyx: a version byte, the
digests' seed, the pairs oldest first, a checksum; 1 MB at the default 65,536 pairs).

The memory (replica.py, "Late copies of overwritten writes") lets a late copy of a write
overwritten here be retired where it arrives; kept in RAM only, a node restarted since the
overwrite let such a copy back beside the newest value. So the node loads the file at start,
writes it on a clean stop and, while the memory changes, every SAVE_EVERY seconds from the
background scheduler (background.py), on the loop's thread: a crash loses what the memory
took in at most the last SAVE_EVERY seconds. Each write is atomic (a temp file, then a rename,
so the file is a whole export, old or new); the clean stop's also fsyncs the file and the
directory, the periodic ones do not (export() and the write of 1 MB into the page cache cost
the loop ~1-2 ms; the fsyncs, 3-8 ms more on an idle disk, far more on a busy one: a review).
A power loss can then leave an empty or partial file: damaged, so an empty memory, as below.

A missing, short or damaged file (or one of another format version) means an empty memory
and one log line, never a refused start: the memory only ever retires what rule R allows, and
without it a late copy comes back as a sibling, as before the file existed.

Why a file and not a rebuild at start by walking the stored versions (note() each): that
reads every value of the store (0.18 us a version for note() alone, and the reads besides:
seconds on a store of 1M keys), and it would not know which pairs are the newest 65,536. The
file is 1 MB whatever the store holds; loading it takes ~10-30 ms (README, Known limits).
"""

from __future__ import annotations

import logging
import os

from zkv._core import dvv
from zkv.node.membership import discard_tmp
from zkv.storage.segment import fsync_dir

log = logging.getLogger("zkv.latefile")

NAME = "retired"  # under the data dir
SAVE_EVERY = 10.0  # seconds between writes of the file while the memory changes
MAX_BYTES = 17 + 16 * (1 << 22)  # a file read at most (4M pairs: a longer one is damaged)


class LateFile:
    """Where the memory `memory` is kept (`path`; None: nowhere, as in the simulator)."""

    def __init__(self, path: str | None, memory: dvv.RetiredWids) -> None:
        self.path = path
        self.memory = memory
        self.saved = memory.added  # `memory.added` when the file last matched it
        self.next_save = 0.0
        self.failing = False  # the last write failed (logged once until one works again)

    def load(self) -> int:
        """Fill the memory from the file; the pairs it holds then (0 when there is no file,
        or none that can be read: logged, and the memory stays empty)."""
        if not self.path:
            return 0
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except FileNotFoundError:
            # (a new node, or one of a version before the file: nothing to say at INFO, where
            # a node that cannot start printed it above its one-line error)
            log.debug("no %s: the memory of overwritten writes starts empty", self.path)
            return 0
        except OSError as exc:
            log.warning("ignoring unreadable %s (%s): the memory of overwritten writes starts "
                        "empty", self.path, exc)
            return 0
        try:
            held = self.memory.load(data)
        except ValueError as exc:
            log.warning("ignoring %s (%s): the memory of overwritten writes starts empty",
                        self.path, exc)
            return 0
        self.saved = self.memory.added
        log.info("loaded %s: %d overwritten writes remembered", self.path, held)
        return held

    def tick(self, now: float) -> None:
        """From the background scheduler: write the file if the memory changed since, at
        most every SAVE_EVERY seconds. A failed write is logged (once until one works) and
        tried again at the next."""
        if now < self.next_save or self.memory.added == self.saved:
            return
        self.next_save = now + SAVE_EVERY
        self.save(durable=False)

    def save(self, durable: bool = True) -> bool:
        """Write the file now if the memory changed since it was last written (a clean stop,
        and `tick` with `durable` False: no fsync); whether the file holds the memory
        afterwards. OSError is logged, not raised (the memory is an aid: nothing acknowledged
        depends on it)."""
        if not self.path:
            return False
        added = self.memory.added
        if added == self.saved:
            return True
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(self.memory.export())
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            if durable:
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            discard_tmp(tmp)
            if not self.failing:
                log.warning("could not write %s (%s): tried again every %d s; a restart "
                            "meanwhile forgets what was overwritten since the last write",
                            self.path, exc, SAVE_EVERY)
            self.failing = True
            return False
        if self.failing:
            log.warning("wrote %s again", self.path)
        self.failing = False
        self.saved = added
        return True
