"""Run the deterministic cluster simulation (tests/sim) from the command line.

    python tools/simulate.py --seed 11 --loss 0.02 --partitions 2   # replay one run
    python tools/simulate.py --seeds 10000 --loss 0.02 --crashes 1   # many seeds, long
    python tools/simulate.py --seeds 10000 --first 50000 --jobs 8 --loss 0.02  # other seeds,
                                                        # spread over 8 processes
    python tools/simulate.py --scenario membership --spaces pairs:2,single:1 --seeds 40 \
        --loss 0.02 --dup 0.01 --partitions 1 --pauses 1 --crashes 1 --start 1 --end 8
                                       # 3 -> 5 -> 4 nodes under faults (or replace, remove)
    python tools/simulate.py --scenario strict --seeds 100 --loss 0.02 --dup 0.01 \
        --partitions 3 --pauses 2 --crashes 1      # pr=pw=2 reads miss no write (sloppy: do)
    python tools/simulate.py --scenario drops --seeds 200 --loss 0.02 --dup 0.01 \
        --partitions 2 --pauses 1 --crashes 1      # truncates and drops purge everywhere
                                       # (--change leave: while n2 leaves; join, replace, remove)
    python tools/simulate.py --load                                  # the harness's speed
    python tools/simulate.py --scale 10,25,50,100 --out scale.png    # gossip + ring at scale

A run prints its fault log and any broken promise; the exit code is the number of failing
seeds (capped at 100). Every failure prints the command that replays it exactly.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from functools import partial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from sim.harness import Faults  # noqa: E402
from sim.scenario import (  # noqa: E402
    CHANGES,
    MEMBERSHIP_START,
    drops,
    gossip_rounds,
    load,
    membership,
    ring_stats,
    run,
    strict_reads,
)

# Run from the command line, the collector's young generation is collected every 20,000
# net container allocations instead of 700. At the default it took ~10% of the harness's
# time (gc.callbacks over one --load --client many: 290 young, 26 middle and 2 full
# collections, 0.24 of 2.4 s: each walks objects a simulated operation has long left);
# best of 4 alternating runs of that load: 14,643 ops per CPU second at the default,
# 16,690 with these thresholds, 16,524 with the collector off. Full collections still run.
GC_THRESHOLDS = (20_000, 20, 10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="run this one seed, verbosely")
    ap.add_argument("--seeds", type=int, default=None, help="run N seeds, from --first on "
                    "(default 100)")
    ap.add_argument("--first", type=int, default=0, help="the first seed of --seeds (to split "
                    "a long sweep across processes, or to try seeds CI never runs)")
    ap.add_argument("--jobs", type=int, default=1, help="run the seeds of a sweep in this many "
                    "processes (output in seed order; the CPU figure sums theirs)")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--ops", type=int, default=40, help="operations per client")
    ap.add_argument("--scale", help="comma-separated cluster sizes: gossip rounds until a join "
                    "is known everywhere (vs log2 N), ring balance, rack spread, movement")
    ap.add_argument("--ring-only", default="", help="more sizes for the ring figures only "
                    "(cheap; gossip at these sizes is too slow to simulate, see RESULTS.md)")
    ap.add_argument("--out", help="with --scale: write a plot (PNG) here")
    ap.add_argument("--load", action="store_true", help="measure client operations per CPU "
                    "second at --nodes nodes, 8 clients with no think time")
    ap.add_argument("--client", choices=["sim", "core", "many"], default="sim", help="sim: the "
                    "simulator's own client (random node, fail over on silence); core: "
                    "zkv.client's ClientCore (ring routing, hedged tries), driven on the "
                    "virtual clock; many: 4 workloads per client through the ClientCore's "
                    "batch calls (get_many/put_many: a round's requests side by side)")
    ap.add_argument("--sealed", action="store_true", help="run: the nodes seal the contexts "
                    "they give clients, as with --keys (zkv/node/seal.py)")
    ap.add_argument("--scenario", choices=["run", "membership", "replace", "remove",
                                           "replace-dead", "membership-rejoin",
                                           "remove-rejoin", "strict", "sloppy", "drops"],
                    default="run",
                    help="run: carts, blind writes, deletes and re-adds on --nodes nodes; "
                    "membership: 3 -> 5 -> 4 nodes with writers and readers all along; "
                    "replace: the same with n2 replaced by a new node; remove: n2 dies for "
                    "good and is force-removed; replace-dead: n2 dies for good and is "
                    "replaced; membership-rejoin: membership, then n2 is started again "
                    "on an empty data dir and joins again; remove-rejoin: remove, then "
                    "the dead n2 is rebuilt (an empty data dir, its old id) and joins again; "
                    "strict: writers at w=2 pw=2 and readers at r=2 pr=2 on --nodes nodes, "
                    "every read that succeeds must see the writes acknowledged before it; "
                    "sloppy: the same at r=2 w=2 without pr/pw (stale reads expected under "
                    "partitions: what pr/pw prevent); drops: writers in a siblings and an lww "
                    "namespace while an admin truncates them, or drops and creates them "
                    "again: every node purges the ended generations, nothing of one comes back")
    ap.add_argument("--change", choices=CHANGES, default=None, help="drops: an ownership "
                    "change through the drops (n6 joins, n2 leaves, n2 is replaced by n6, or "
                    "n2 dies for good and is force-removed)")
    ap.add_argument("--manual", action="store_true", help="drops --change: auto-commit off; "
                    "the operator stages the change and commits it, reading the plan after "
                    "each step")
    ap.add_argument("--spaces", default="", help="membership/replace: namespaces created "
                    "first, NAME:N,... (e.g. pairs:2,single:1)")
    for name, value in vars(Faults()).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args(argv)
    if args.sealed and args.scenario != "run":
        ap.error("--sealed applies to --scenario run only")
    if args.scenario in ("strict", "sloppy", "drops") and args.client == "many":
        ap.error(f"--scenario {args.scenario} runs --client sim or core")
    if args.scenario in ("strict", "sloppy", "drops") and (args.power_losses or args.wipes):
        ap.error(f"--scenario {args.scenario} keeps the disks: a power loss or a wipe loses "
                 "acknowledged writes at any quorum")
    if args.change and args.scenario != "drops":
        ap.error("--change applies to --scenario drops")
    if args.manual and not args.change:
        ap.error("--manual applies to --scenario drops --change")
    if args.seed is not None and args.seeds is not None:
        ap.error("--seed runs one seed, --seeds a sweep: not both")
    if args.seeds is None:
        args.seeds = 100
    if args.seeds < 1:
        ap.error(f"--seeds {args.seeds}: at least 1")
    if args.nodes < 3:
        ap.error(f"--nodes {args.nodes}: at least 3 (the simulated cluster's N is 3)")
    for name in ("loss", "dup", "lost_extras"):
        if not 0 <= getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: a probability in "
                     "[0, 1)")
    for name in vars(Faults()):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: not negative")
    if args.scale is not None or args.ring_only:
        try:
            sizes = [int(x) for x in (args.scale or "").split(",") if x.strip()]
            ring_sizes = [int(x) for x in args.ring_only.split(",") if x.strip()]
        except ValueError:
            ap.error("--scale and --ring-only take comma-separated cluster sizes (e.g. 10,25,50)")
        if not sizes or min(sizes + ring_sizes) < 2:
            ap.error("--scale takes cluster sizes of at least 2 (e.g. 10,25,50)")
        if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            ap.error(f"--out {args.out}: no such directory")
    if args.scale is not None or args.ring_only:
        return scale(sizes, ring_sizes, args.out)
    if args.load:
        logging.disable(logging.WARNING)
        cpu = time.process_time()
        ops = load(nodes=args.nodes, client=args.client)
        cpu = time.process_time() - cpu
        print(f"load ({args.client} client): {ops} client operations at {args.nodes} nodes in "
              f"{cpu:.2f} CPU s = "
              f"{ops / cpu:,.0f} ops per CPU second")
        return 0
    faults = Faults(**{k: getattr(args, k) for k in vars(Faults())})
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    spaces = _spaces(ap, args)
    job = partial(_seed, faults=faults, scenario=args.scenario, nodes=args.nodes,
                  ops=args.ops, client=args.client, sealed=args.sealed, spaces=spaces or None,
                  change=args.change, manual=args.manual,
                  quiet=args.scenario != "run" or args.seed is None,
                  verbose=args.seed is not None)
    failed = ops = ok = 0
    cpu, wall = 0.0, time.monotonic()
    jobs = max(1, min(args.jobs, len(seeds))) if args.seed is None else 1
    if jobs > 1:  # each seed in a worker process; results in seed order all the same
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ctx.Pool(jobs) as pool:
            results = pool.imap(job, seeds)
            for res in results:
                failed += _tally(res, verbose=False)
                ops, ok, cpu = ops + res.ops, ok + res.ok_ops, cpu + res.cpu
    else:
        for seed in seeds:
            res = job(seed)
            failed += _tally(res, verbose=args.seed is not None)
            ops, ok, cpu = ops + res.ops, ok + res.ok_ops, cpu + res.cpu
    wall = time.monotonic() - wall
    print(f"{len(seeds)} seed(s), {failed} failed; {ops} client operations ({ok} succeeded) in "
          f"{cpu:.2f} CPU s ({ops / cpu:,.0f} ops per CPU second, background work included)"
          + (f"; {wall:.1f} s wall over {jobs} processes" if jobs > 1 else ""))
    return min(failed, 100)


@dataclass
class SeedResult:
    """What a sweep keeps of one seed's Report (a worker process sends it back)."""

    seed: int
    ops: int
    ok_ops: int
    violations: list[str]
    command: str
    cpu: float  # the seed's CPU seconds, in the process that ran it
    detail: list[str]  # with --seed: the fault log and the network's figures


def _spaces(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, int]:
    """--spaces as {name: N}; a bad one stops the command with the reason (argparse's way)."""
    spaces: dict[str, int] = {}
    for item in filter(None, args.spaces.split(",")):
        name, _, n = item.partition(":")
        if not name or not n.isdigit() or not 1 <= int(n) <= MEMBERSHIP_START:
            ap.error(f"--spaces {item!r}: NAME:N with N from 1 to {MEMBERSHIP_START} (the "
                     "nodes the membership scenarios start with)")
        spaces[name] = int(n)
    if spaces and args.scenario == "run":
        ap.error("--spaces applies to the membership scenarios, not --scenario run")
    return spaces


def _seed(seed: int, *, faults: Faults, scenario: str, nodes: int, ops: int, client: str,
          spaces: dict[str, int] | None, quiet: bool, verbose: bool = False,
          sealed: bool = False, change: str | None = None, manual: bool = False) -> SeedResult:
    if quiet:  # a membership run logs every transfer step, a sweep every unclean restart
        logging.disable(logging.WARNING)
    cpu = time.process_time()
    if scenario == "run":
        rep = run(seed, faults, nodes=nodes, ops_per_client=ops, client=client, sealed=sealed)
    elif scenario in ("strict", "sloppy"):
        rep = strict_reads(seed, faults, strict=scenario == "strict", client=client,
                           nodes=nodes)
    elif scenario == "drops":
        rep = drops(seed, faults, client=client, nodes=nodes, change=change, manual=manual)
    else:
        rep = membership(seed, faults, spaces=spaces, client=client,
                         replace=scenario in ("replace", "replace-dead"),
                         remove=scenario in ("remove", "replace-dead", "remove-rejoin"),
                         rejoin=scenario.endswith("-rejoin"))
    detail = rep.log + [f"ops {rep.ops} ({rep.ok_ops} ok), settled after {rep.settle_time}s, "
                        f"network {rep.stats}"] if verbose else []  # (not sent back by sweeps)
    return SeedResult(seed, rep.ops, rep.ok_ops, rep.violations, rep.command,
                      time.process_time() - cpu, detail)


def default_sweep(first: int, n: int) -> int:
    """Seeds `first`..`first + n - 1` of a sweep with every default of this command (the "run"
    scenario, no faults, 5 nodes, 40 operations per client, the simulator's client), run here
    quietly; returns their client operations (benchmarks/sim_bytecodes.py --sweep counts them)."""
    return sum(_seed(s, faults=Faults(), scenario="run", nodes=5, ops=40, client="sim",
                     spaces=None, quiet=True).ops for s in range(first, first + n))


def _tally(res: SeedResult, verbose: bool) -> int:
    """Print what a seed found (with `verbose`, its whole log); 1 if it failed."""
    if verbose:
        print("\n".join(res.detail))
    if not res.violations:
        return 0
    print(f"seed {res.seed}: FAILED\n  " + "\n  ".join(res.violations)
          + f"\n  replay: {res.command}", flush=True)
    return 1


def scale(sizes: list[int], ring_only: list[int], out: str | None) -> int:
    logging.disable(logging.WARNING)
    print(f"{'nodes':>6} {'rounds':>7} {'log2 N':>7} {'CPU s':>7} {'owned min-max':>14} "
          f"{'rack viol':>9} {'moved join (min)':>17} {'moved leave (min)':>18}")
    rows = []
    for n in sorted(set(sizes) | set(ring_only)):
        cpu = time.process_time()
        rounds = gossip_rounds(n) if n in sizes else None
        cpu = time.process_time() - cpu
        r = ring_stats(n)
        rows.append((n, rounds, r))
        print(f"{n:>6} {rounds if rounds is not None else '-':>7} {math.log2(n):>7.1f} "
              f"{cpu if n in sizes else 0:>7.1f} {r['owned_min']:>6}-{r['owned_max']:<7} "
              f"{r['rack_violations']:>9} {r['moved_join']:>8} ({r['min_join']}) "
              f"{r['moved_leave']:>9} ({r['min_leave']})")
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [n for n, rd, _ in rows if rd is not None]
        a.plot(xs, [rd for _, rd, _ in rows if rd is not None], "o-", label="gossip rounds")
        a.plot(xs, [math.log2(n) for n in xs], "--", label="log2 N")
        a.set_xlabel("nodes")
        a.set_title("rounds until a join is known everywhere")
        a.legend()
        ns = [n for n, _, _ in rows]
        b.plot(ns, [r["moved_join"] for _, _, r in rows], "o-", label="moved on join")
        b.plot(ns, [r["min_join"] for _, _, r in rows], "--", label="minimum 1/(N+1)")
        b.plot(ns, [r["moved_leave"] for _, _, r in rows], "s-", label="moved on leave")
        b.set_xlabel("nodes")
        b.set_title("fraction of partitions changing primary (Q=1024)")
        b.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    gc.set_threshold(*GC_THRESHOLDS)
    sys.exit(main())
