"""``zkv compact --data-dir DIR``: compact a stopped node's storage directory by hand.

Shows a progress bar when stderr is a terminal (rich), then prints the compaction stats.
The main ``zkv`` CLI dispatches here: ``compact_cli.main(argv)``. A compaction leaves behind
records that fail their CRC (and the open skips damaged regions): their keys would then be
gone without a trace, so each is named on stderr and the exit status is 4 (cli.EXIT_DAMAGED).
"""

from __future__ import annotations

import argparse
import json
import sys

from zkv.errors import ZkvError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zkv compact", description=__doc__.splitlines()[0],
        epilog="exit status: 0 compacted; 1 an error; 2 a command line it cannot take; 4 "
        "compacted, but records that failed their CRC were dropped (each key is named on "
        "stderr: repair it from a replica) or damaged regions skipped")
    parser.add_argument("--data-dir", required=True, help="storage directory (a LogStore)")
    parser.add_argument("--release-tombstones", action="store_true",
                        help="also drop every tombstone (only safe when no replica needs them)")
    parser.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    args = parser.parse_args(argv)
    import os

    if not os.path.isdir(args.data_dir):
        why = "is not a directory" if os.path.exists(args.data_dir) else "does not exist"
        print(f"zkv compact: {args.data_dir} {why}", file=sys.stderr)
        return 1
    # a zkv-node --data-dir holds two stores: data/ (replicas) and handoff/ (hints kept for
    # absent owners; named hints/ before 0.2, and still so until the node next starts)
    node_dir = os.path.exists(os.path.join(args.data_dir, "cluster.json"))
    dirs = ([os.path.join(args.data_dir, d) for d in ("data", "handoff", "hints")] if node_dir
            else [args.data_dir])
    if not node_dir and not any(f.startswith("seg-") and f.endswith(".data")
                                for f in os.listdir(args.data_dir)):
        # (it opened any directory as a new store, leaving a LOCK and an empty segment)
        print(f"zkv compact: {args.data_dir} holds no zkv store (no seg-*.data files, no "
              "cluster.json): give a node's --data-dir or a LogStore's directory",
              file=sys.stderr)
        return 1
    rc = 0
    for d in dirs:
        if os.path.isdir(d):
            if len(dirs) > 1:
                print(f"{d}:")
            got = _compact_one(d, args)
            rc = 1 if 1 in (rc, got) else max(rc, got)  # (an error outranks damage: 4)
    return rc


def _compact_one(path: str, args) -> int:
    from zkv.storage import LogStore

    try:
        store = LogStore(path, compact_dead_ratio=None)
    except ZkvError as exc:
        print(f"zkv compact: {exc}", file=sys.stderr)
        return 1
    try:
        if args.release_tombstones:
            store.release_tombstones(store.tombstones())
        if sys.stderr.isatty():
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("compacting", total=None)
                stats = store.compact(
                    progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
        else:
            stats = store.compact()
        # (found by the open's scan, by reads, or left behind by this compaction: after it the
        # records are gone from the disk, and nothing but this list names their keys)
        dropped, regions = store.corrupt_keys(), store.damaged_regions
    finally:
        store.close()
    stats["corrupt_keys"], stats["damaged_regions"] = len(dropped), regions
    if args.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:20} {v:.3f}" if isinstance(v, float) else f"{k:20} {v}")
    if not dropped and not regions:
        return 0
    from zkv.cli import EXIT_DAMAGED, _shown_key

    for key in dropped:
        print(f"zkv compact: dropped a corrupt record, needs repair: {_shown_key(key).decode()}",
              file=sys.stderr)
    print(f"zkv compact: {path}: STORE DAMAGED: {len(dropped)} key(s) whose record failed its "
          f"CRC dropped (named above) and {regions} damaged region(s) skipped (keys that "
          "cannot be told); start the node and repair them from the other replicas (`zkv "
          "repair --node` it; anti-entropy does it too)", file=sys.stderr)
    return EXIT_DAMAGED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
