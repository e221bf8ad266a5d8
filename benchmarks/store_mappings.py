"""How many memory mappings of its own files a LogStore holds as it writes and compacts.

The active segment is remapped as it grows (in steps) and compaction unmaps its inputs;
the store should keep about one mapping per live segment file, and none of a deleted one
(a mapping of an unlinked file keeps its disk space in use). Linux only (/proc/self/maps).

    python benchmarks/store_mappings.py

Writes 60,000 x 4 KB values over 5,000 keys (8 MiB segments, auto-compaction at 50% dead),
reading each key right after writing it (the cluster's read-after-write pattern), and
prints (mappings of the store's files, of deleted ones) every 10,000 puts and after a final
compaction.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from zkv.storage import LogStore


def main() -> None:
    d = tempfile.mkdtemp()
    s = LogStore(d, sync="none", segment_bytes=8 << 20)

    def mapped() -> tuple[int, int]:
        lines = [x for x in open("/proc/self/maps").read().splitlines() if d in x]
        return len(lines), sum(1 for x in lines if "(deleted)" in x)

    v = os.urandom(4000)
    try:
        for i in range(60000):
            k = b"k%d" % (i % 5000)
            s.put(k, v)
            s.write_out()
            s.get(k)
            if i % 10000 == 9999:
                print(f"{i + 1} puts: mappings of the store's files, deleted ones: {mapped()}",
                      flush=True)
        s.compact()
        print(f"after compact: {mapped()}")
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
