"""Closing a store while another thread works in it: close() waits for (or stops) a running
compaction however it was started, and the store reopens whole."""

from __future__ import annotations

import os
import threading
import time

from zkv.storage import LogStore


def test_close_waits_for_a_compaction_another_thread_runs(tmp_path):
    store = LogStore(tmp_path, segment_bytes=8192, compact_dead_ratio=None)
    values = {}
    for r in range(4):
        for i in range(300):
            values[b"k%03d" % i] = b"%d-%d" % (r, i) * 40
            store.put(b"k%03d" % i, values[b"k%03d" % i])
    started = threading.Event()
    outcome: list[object] = []

    def progress(done: int, total: int) -> None:
        if not started.is_set():
            started.set()
            time.sleep(0.2)  # (still compacting when close() is called)

    def run() -> None:
        try:
            outcome.append(store.compact(progress))
        except Exception as exc:  # (abandoned: the store closed)
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    store.close()
    alive = t.is_alive()
    t.join(30)
    assert not alive  # close returned only once the compaction was over
    assert len(outcome) == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    with LogStore(tmp_path) as again:
        assert dict(again.items()) == values
        assert again.corrupt_keys() == [] and again.damaged_regions == 0
