"""The node's one I/O budget (zkv/node/transfer.py IOBudget) and compaction paced by it
(issue 11: transfers, hint delivery, anti-entropy and compaction share one budget)."""

from __future__ import annotations

import threading
import time

from zkv.node.transfer import MAX_DEBT_S, IOBudget
from zkv.storage import LogStore


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_reserve_waits_for_the_debt_ahead_and_the_debt_is_capped():
    clock = Clock()
    b = IOBudget(1000, clock)
    assert b.reserve(500) == 0.0  # one second of burst
    assert b.reserve(1000) == 0.5  # 500 owed: half a second at 1000 B/s
    assert b.wait() == 0.5  # transfers wait for it too
    clock.t = 0.5
    assert b.wait() == 0.0  # paid off
    b.charge(10**9)  # hint delivery / anti-entropy never wait, but the debt is capped ...
    assert b.wait() == MAX_DEBT_S
    # ... so compaction, reserving after them, is slowed by at most that much: never starved
    assert b.reserve(1000) <= MAX_DEBT_S + 1.0


def test_compaction_rewrites_within_the_budget(tmp_path):
    s = LogStore(tmp_path / "db", segment_bytes=64 * 1024, compact_dead_ratio=None)
    for round_ in range(3):
        for i in range(300):
            s.put(b"k%d" % i, bytes([round_]) * 1000)
    reserved: list[int] = []
    s.throttle = lambda n: reserved.append(n) or 0.0
    stats = s.compact()
    assert sum(reserved) == stats["bytes_after"] > 0  # every byte rewritten was reserved
    assert all(n <= 1 << 20 for n in reserved)
    assert all(s.get(b"k%d" % i) == bytes([2]) * 1000 for i in range(300))
    s.close()


def test_closing_the_store_abandons_a_paced_compaction(tmp_path):
    s = LogStore(tmp_path / "db", segment_bytes=64 * 1024, compact_dead_ratio=None)
    for round_ in range(2):
        for i in range(300):
            s.put(b"k%d" % i, bytes([round_]) * 1000)
    asked = threading.Event()

    def slow(n: int) -> float:
        asked.set()
        return 3600.0  # an hour's wait: only a close ends it

    s.throttle = slow
    t = s.compact_async()
    assert t is not None and asked.wait(10)
    started = time.monotonic()
    s.close()  # interrupts the wait; the compaction is abandoned, nothing lost
    assert not t.is_alive() and time.monotonic() - started < 30
    s2 = LogStore(tmp_path / "db", compact_dead_ratio=None)
    assert all(s2.get(b"k%d" % i) == bytes([1]) * 1000 for i in range(300))
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "db").iterdir())
    s2.close()
