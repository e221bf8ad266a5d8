"""How `zkv bench`'s child processes (client workers, the echo server, the partition run)
take Ctrl-C: the terminal sends SIGINT to the whole process group, and each child printed a
KeyboardInterrupt traceback (four to seven of them, ~130 lines) after the parent's "zkv bench:
interrupted". A child calls `quiet_interrupt()` first; then SIGINT ends it without a word:
at once (`unwind=False`: a client worker or the echo server, whose sockets die with it), or as
SystemExit, which runs its finally blocks (`unwind=True`: the partition run, which stops the
nodes it started). The parent, interrupted too, stops the rest."""

from __future__ import annotations

import os
import signal


def _leave(signum, frame) -> None:
    os._exit(128 + signum)


def _unwind(signum, frame) -> None:
    raise SystemExit(128 + signum)


def quiet_interrupt(unwind: bool = False) -> None:
    signal.signal(signal.SIGINT, _unwind if unwind else _leave)
