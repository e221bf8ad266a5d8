"""Instructions per simulated client operation: the simulator's load, counted by valgrind.

CPU seconds on this shared VM move by tens of percent between runs of the same code (the
simulator's --load gave 10,400-15,500 ops per CPU second for one commit within an hour);
instruction counts do not move at all: the simulation is deterministic and so is the
interpreter's work for it. Both lengths of one load (`--short` and `--long` operations per
client) run under `valgrind --tool=cachegrind --cache-sim=no`; their difference divided by
the operations in between removes start-up, imports and the cluster's setup.

    python benchmarks/sim_instructions.py [--client many] [--src CHECKOUT ...]
    python benchmarks/sim_instructions.py --sweep [--src CHECKOUT ...]

`--sweep` counts a sweep's seeds instead (`tools/simulate.py --seeds K --first 40000`, the
default scenario: a few hundred operations per seed, most of each seed's work the nodes'
background over its virtual seconds): one seed against 1 + `--seeds`, per seed and per client
operation in between.

Each `--src` is a checkout (its extensions built in place) run with its own tests/sim and
zkv first on sys.path; the default is this one. PYTHONHASHSEED is fixed. Instructions are a
proxy for the CPU time of interpreted code, not a measure of it: a change that saves
instructions but touches more memory (or the collector walking a bigger heap) can still
cost time; compare CPU seconds alternating runs too (RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import logging, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
logging.disable(logging.WARNING)
if sys.argv[2] == "sweep":  # the first sys.argv[3] seeds of a sweep: the command itself, which
    # every checkout has (a checkout measured may predate any helper), its count read back
    import contextlib, io, re
    sys.path.insert(0, sys.argv[1] + "/tools")
    import simulate
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        simulate.main(["--seeds", sys.argv[3], "--first", "40000"])
    print(re.search(r"; (\d+) client operations", out.getvalue()).group(1))
else:
    from sim import scenario
    print(scenario.load(client=sys.argv[2], ops_per_client=int(sys.argv[3])))
"""


def instructions(src: str, client: str, ops: int) -> tuple[int, int]:
    """(instructions, client operations) of one load of `ops` operations per client (client
    "sweep": of a sweep's first `ops` seeds)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=src)
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         os.path.realpath(sys.executable), "-c", CHILD, src, client, str(ops)],
        capture_output=True, text=True, env=env, cwd=src, check=True)
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if m is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", "")), int(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", choices=["sim", "core", "many"], default="many")
    ap.add_argument("--src", action="append", help="a checkout to measure (repeatable)")
    ap.add_argument("--short", type=int, default=400, help="operations per client, short run")
    ap.add_argument("--long", type=int, default=1200, help="operations per client, long run")
    ap.add_argument("--sweep", action="store_true", help="count a sweep's seeds instead")
    ap.add_argument("--seeds", type=int, default=5, help="with --sweep: seeds in between")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    for src in args.src or [os.path.dirname(HERE)]:
        src = os.path.abspath(src)
        if args.sweep:
            (i_short, n_short), (i_long, n_long) = (instructions(src, "sweep", k)
                                                    for k in (1, 1 + args.seeds))
            print(f"{src}: sweep, {(i_long - i_short) / args.seeds:,.0f} instructions per seed, "
                  f"{(i_long - i_short) / (n_long - n_short):,.0f} per client operation "
                  f"(seeds 40001-{40000 + args.seeds}: {n_long - n_short} operations, background "
                  "work included)", flush=True)
            continue
        (i_short, n_short), (i_long, n_long) = (instructions(src, args.client, n)
                                                for n in (args.short, args.long))
        per_op = (i_long - i_short) / (n_long - n_short)
        print(f"{src}: {args.client} client, {per_op:,.0f} instructions per client operation "
              f"({n_long - n_short} operations between a load of {n_short} and one of "
              f"{n_long})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
