"""Run the deterministic cluster simulation (tests/sim) from the command line.

    python tools/simulate.py --seed 11 --loss 0.02 --partitions 2   # replay one run
    python tools/simulate.py --seeds 10000 --loss 0.02 --crashes 1   # many seeds, long
    python tools/simulate.py --load                                  # the harness's speed

A run prints its fault log and any broken promise; the exit code is the number of failing
seeds (capped at 100). Every failure prints the command that replays it exactly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from sim.harness import Faults  # noqa: E402
from sim.scenario import load, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="run this one seed, verbosely")
    ap.add_argument("--seeds", type=int, default=100, help="run seeds 0..N-1")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--ops", type=int, default=40, help="operations per client")
    ap.add_argument("--load", action="store_true", help="measure client operations per CPU "
                    "second at --nodes nodes, 8 clients with no think time")
    for name, value in vars(Faults()).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args(argv)
    if args.load:
        logging.disable(logging.WARNING)
        cpu = time.process_time()
        ops = load(nodes=args.nodes)
        cpu = time.process_time() - cpu
        print(f"load: {ops} client operations at {args.nodes} nodes in {cpu:.2f} CPU s = "
              f"{ops / cpu:,.0f} ops per CPU second")
        return 0
    faults = Faults(**{k: getattr(args, k) for k in vars(Faults())})
    seeds = [args.seed] if args.seed is not None else range(args.seeds)
    failed = 0
    ops = 0
    cpu = time.process_time()
    for seed in seeds:
        rep = run(seed, faults, nodes=args.nodes, ops_per_client=args.ops)
        ops += rep.ops
        if args.seed is not None:
            print("\n".join(rep.log))
            print(f"ops {rep.ops} ({rep.ok_ops} ok), settled after {rep.settle_time}s, "
                  f"network {rep.stats}")
        if rep.violations:
            failed += 1
            print(f"seed {seed}: FAILED\n  " + "\n  ".join(rep.violations)
                  + f"\n  replay: {rep.command}")
    cpu = time.process_time() - cpu
    print(f"{len(seeds)} seed(s), {failed} failed; {ops} client operations in {cpu:.2f} CPU s "
          f"({ops / cpu:,.0f} ops per CPU second, background work included)")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
