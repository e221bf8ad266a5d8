"""Inspect zkv storage files: list the records of a segment (.data) or the entries of a hints
file (.hint), check CRCs, and summarise a whole data directory.

    python tools/inspect_data.py DIR              # per-segment summary
    python tools/inspect_data.py FILE.data [-v]   # records (offset, size, flags, key, crc)
    python tools/inspect_data.py FILE.hint [-v]   # hints entries, or "BAD" if its CRC fails
"""

from __future__ import annotations

import argparse
import os
import sys

import _checkout  # noqa: F401  (which zkv: tools/_checkout.py)

from zkv._core import record


def _flags(f: int) -> str:
    if f < 0:
        return "?"
    return "".join(n for b, n in ((record.TOMBSTONE, "T"), (record.ZSTD, "Z")) if f & b) or "-"


def inspect_data(path: str, verbose: bool) -> int:
    with open(path, "rb") as f:
        image = f.read()
    recs = record.scan(image)
    bad = [r for r in recs if not r[4]]
    if verbose:
        for off, size, flags, key, ok in recs:
            print(f"{off:>12} {size:>9} {_flags(flags):>2} {'ok ' if ok else 'BAD'} {key[:60]!r}")
    print(f"{path}: {len(image)} bytes, {len(recs) - len(bad)} good records, {len(bad)} bad regions")
    return 1 if bad else 0


def inspect_hint(path: str, verbose: bool) -> int:
    with open(path, "rb") as f:
        data = f.read()
    entries = record.parse_hints(data)
    if entries is None:
        print(f"{path}: BAD hints file ({len(data)} bytes; the segment will be scanned)")
        return 1
    if verbose:
        for h, off, size, flags, key in entries:
            print(f"{h:016x} {off:>12} {size:>9} {_flags(flags):>2} {key[:60]!r}")
    print(f"{path}: {len(entries)} entries")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    if os.path.isdir(a.path):
        rc = 0
        for fn in sorted(os.listdir(a.path)):
            full = os.path.join(a.path, fn)
            if fn.endswith(".data"):
                rc |= inspect_data(full, a.verbose)
            elif fn.endswith(".hint"):
                rc |= inspect_hint(full, a.verbose)
        return rc
    if a.path.endswith(".hint"):
        return inspect_hint(a.path, a.verbose)
    return inspect_data(a.path, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
