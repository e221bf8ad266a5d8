"""What a node receiving partitions logs and reports (zkv/node/transfer.py Transfers): a line
per partition at DEBUG only, INFO progress at most every PROGRESS_EVERY seconds and one INFO
summary when the change's whole set is received; queued transfers reported as not started. No
sockets: the cluster state is a stub."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from zkv.node.transfer import DONE, PROGRESS_EVERY, Transfers


class _Core:
    me = "d"

    def __init__(self) -> None:
        self.t = 100.0
        self.cfg = SimpleNamespace(transfer_rate=1 << 20)

    def now(self) -> float:
        return self.t


def _rings(partitions: int, epoch: int, first: int = 0):
    """ownership.Rings as Transfers.replan reads it: `partitions` (from `first` on) coming to
    d from a."""
    return SimpleNamespace(
        moving=True, state=SimpleNamespace(epoch=epoch),
        incoming=lambda me: {p: ["a"] for p in range(first, first + partitions)},
        current=SimpleNamespace(partition_range=lambda p: (p << 8, (p + 1) << 8)))


def test_a_join_logs_one_info_summary_not_a_line_per_partition(caplog):
    """A joiner logged "partition N (N=3) received (0 keys, 0 bytes)" at INFO for each of its
    256+ partitions."""
    core = _Core()
    tr = Transfers(core, None)
    tr.replan({3: _rings(256, epoch=7)}, 3)
    caplog.set_level(logging.DEBUG, logger="zkv.transfer")
    for i, part in enumerate(tr.parts.values()):
        core.t += 0.1  # 25.6 s in all: progress twice
        part.phase, part.keys, part.done_bytes = DONE, 2, 100
        tr._finished(part)
        if i == 10:
            tr.replan({3: _rings(256, epoch=7)}, 3)  # (the same set planned again: no reset)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 256 and debug[0] == "partition 0 (N=3) received (2 keys, 100 bytes)"
    assert info[-1] == ("received every partition of this change: 256 partition(s) (epoch 7), "
                        "512 keys, 25600 bytes in 25.6 s")
    progress = info[:-1]
    assert len(progress) == int(25.6 // PROGRESS_EVERY), info
    assert all(x.startswith("receiving partitions: ") and " of 256 received so far, " in x
               for x in progress), progress
    caplog.clear()  # a later change: its own summary
    tr.replan({3: _rings(4, epoch=8, first=1000)}, 3)
    for part in tr.parts.values():
        part.phase = DONE
        tr._finished(part)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "4 partition(s) (epoch 8)" in info[0]


def test_a_transfer_not_started_yet_is_reported_as_such():
    """`zkv status` counted queued partitions (transfer_concurrency run at once) as streaming,
    their bytes_total 0 in the byte ratio: the status document says which have started."""
    core = _Core()
    tr = Transfers(core, None)
    tr.replan({3: _rings(3, epoch=7)}, 3)
    a, b, c = tr.parts.values()
    a.started, a.done_bytes, a.total = 99.0, 10, 50  # running
    b.phase = DONE
    assert [x["started"] for x in tr.status(core.t)] == [True, True, False]
    # (a queued one read "streaming" in its phase too: a tool summing phases was misled)
    assert [x["phase"] for x in tr.status(core.t)] == ["streaming", "done", "queued"]
    # a finished transfer reads all done: its estimate ran over what it moved (106478 of
    # 109438 bytes "done", with a rate and an eta: an outside membership run)
    b.done_bytes, b.total = 106478, 109438
    st = tr.status(core.t)[1]
    assert st["bytes_done"] == st["bytes_total"] == 106478 and st["eta_s"] is None
