"""``zkv compact --data-dir DIR``: compact a stopped node's storage directory by hand.

Shows a progress bar when stderr is a terminal (rich), then prints the compaction stats.
The main ``zkv`` CLI dispatches here: ``compact_cli.main(argv)``.
"""

from __future__ import annotations

import argparse
import json
import sys

from zkv.errors import ZkvError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zkv compact", description=__doc__.splitlines()[0])
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
            rc = max(rc, _compact_one(d, args))
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
    finally:
        store.close()
    if args.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:20} {v:.3f}" if isinstance(v, float) else f"{k:20} {v}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
