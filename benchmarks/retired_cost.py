"""What a replica write pays for the late-copy memory (dvv.RetiredWids), beside the sync it
follows: note() of a stored version and strip() of a merged one, on a key's set after a chain
of 10 puts (one sibling listing 4 retired ids), timeit, best of 5.

    python benchmarks/retired_cost.py
"""

from __future__ import annotations

import os
import timeit

from zkv._core import dvv


def main() -> None:
    memory = dvv.RetiredWids()
    s, ctx = None, b""
    for _ in range(10):
        wid = os.urandom(16)
        s = dvv.update(s, ctx, b"x" * 100, "n1~1", wid)
        ctx = dvv.put_context(s, ctx, wid)
    enc, key = s.encode(), b"user:12345"
    memory.note(key, enc)
    n = 100_000

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6

    print(f"note {best(lambda: memory.note(key, enc)):.3f} us  "
          f"strip {best(lambda: memory.strip(key, enc)):.3f} us  "
          f"sync_plausible {best(lambda: dvv.sync_plausible(enc, enc)):.3f} us  "
          f"(a {len(enc)}-byte set, best of 5 x {n:,})")


if __name__ == "__main__":
    main()
