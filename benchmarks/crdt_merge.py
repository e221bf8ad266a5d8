"""The client-side cost of ORSet values: decode and merge (`python benchmarks/crdt_merge.py`).

An updater of a big set decodes and merges every sibling on the client, on an AsyncClient's
loop too: one 10k-element set, and 60 siblings of 2,000 shared elements (each sibling adds 5
of its own and removes one). CPU time, best of 5."""

from __future__ import annotations

import time

from zkv.crdt import ORSet


def best(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    big = ORSet()
    for i in range(10_000):
        big.add(f"elem-{i}", actor="a0")
    one = big.encode()
    base = ORSet()
    for i in range(2_000):
        base.add(f"e{i}", actor="a0")
    sibs = []
    for k in range(60):
        s = ORSet.decode(base.encode())
        for i in range(5):
            s.add(f"x{k}-{i}", actor=f"a{k + 1}")
        s.remove(f"e{k}")
        sibs.append(s.encode())
    print(f"decode of one 10k-element set:        {best(lambda: ORSet.decode(one)) * 1e3:7.1f} ms")
    print(f"from_siblings of one 10k-element set: "
          f"{best(lambda: ORSet.from_siblings([one])) * 1e3:7.1f} ms")
    merged = ORSet.from_siblings(sibs)
    print(f"from_siblings of 60 x 2,000 elements:  "
          f"{best(lambda: ORSet.from_siblings(sibs)) * 1e3:7.1f} ms ({len(merged)} elements)")


if __name__ == "__main__":
    main()
