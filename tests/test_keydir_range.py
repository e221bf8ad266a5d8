"""The keydir's hash-range query (a ring partition's keys, for anti-entropy and handoff) equals
a brute-force filter, through growth, deletes (backward-shift) and wrap-around of the slots."""

from __future__ import annotations

import mmh3
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.storage import LogStore

U64 = 2**64 - 1


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3000),
    deletes=st.integers(0, 100),
    ranges=st.lists(st.tuples(st.integers(0, U64), st.integers(0, U64)), min_size=1,
                    max_size=8),
    seed=st.integers(0, 1 << 30),
)
def test_hash_range_equals_brute_force(tmp_path_factory, n, deletes, ranges, seed):
    d = tmp_path_factory.mktemp("kr")
    with LogStore(str(d), sync="none") as s:
        keys = [b"k%d-%d" % (seed, i) for i in range(n)]
        for k in keys:
            s.put(k, b"v")
        for k in keys[: min(deletes, n)]:
            s.delete(k)
        live = {k: mmh3.hash64(k, signed=False)[0] for k in keys[min(deletes, n):]}
        assert sorted(s.key_hashes()) == sorted(live.items())
        for a, b in ranges + [(0, U64), (0, 0), (U64, U64)]:
            lo, hi = min(a, b), max(a, b)
            want = sorted((k, h) for k, h in live.items() if lo <= h <= hi)
            assert sorted(s.key_hashes(lo, hi)) == want
        # partitions of a 256-partition ring: every key exactly once
        step = 1 << 56
        total = []
        for p in range(256):
            total += s.key_hashes(p * step, (p + 1) * step - 1)
        assert sorted(total) == sorted(live.items())
