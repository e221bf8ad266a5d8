"""Run the expiry (ttl) and lww simulation tests over many seeds, with extra faults.

    python tools/sweep_ttl.py 1000 1150                          # seeds 1000..1149
    python tools/sweep_ttl.py 2000 2150 partitions=2 pauses=2    # Faults fields added
    python tools/sweep_ttl.py 1000 1100 --lww                    # lww convergence instead

Each seed runs tests/sim/test_sim_ttl.py's four fault tests (values expiring everywhere; no
copy left through joins and a leave; an alter of the ttl reaching every node and bringing no
expired value back; writes past their own ttl letting no older value back), with the given
Faults fields set on top of the tests' own; `--lww` runs tests/sim/test_sim_ns.py's lww
convergence test instead. Prints how many
failed and, for each, the test, the seed and the assertion. Exit status: the failures (capped
at 100).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "sim"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=int)
    ap.add_argument("last", type=int, help="one past the last seed")
    ap.add_argument("faults", nargs="*", help="FIELD=N: a Faults field (loss=0.05, crashes=2)")
    ap.add_argument("--lww", action="store_true", help="the lww convergence test instead")
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    import test_sim_ns
    import test_sim_ttl
    from sim.harness import Faults

    extra = {}
    for item in args.faults:
        name, _, value = item.partition("=")
        if name not in vars(Faults()):
            ap.error(f"{name!r} is no Faults field ({', '.join(vars(Faults()))})")
        extra[name] = type(getattr(Faults(), name))(value)
    test_sim_ttl.Faults = lambda **kw: Faults(**{**kw, **extra})  # type: ignore[assignment]
    tests = ([test_sim_ns.test_namespaces_place_n_replicas_and_lww_converges] if args.lww else
             [test_sim_ttl.test_expired_values_leave_no_copy_through_joins_a_leave_and_faults,
              test_sim_ttl.test_values_expire_everywhere_and_stay_gone,
              test_sim_ttl.test_an_alter_reaches_every_node_and_never_brings_an_expired_value_back,
              test_sim_ttl.test_writes_past_their_own_ttl_never_let_an_older_value_back_under_faults])
    failed = []
    for seed in range(args.first, args.last):
        for test in tests:
            try:
                test(seed)
            except Exception as exc:  # (a failed assertion or a crash: both are reported)
                failed.append((test.__name__, seed, repr(exc)[:300]))
    what = extra or "the tests' own faults"
    print(f"{what}: {args.last - args.first} seeds x {len(tests)} test(s): {len(failed)} failed")
    for name, seed, why in failed:
        print(f"  {name} seed {seed}: {why}")
    return min(len(failed), 100)


if __name__ == "__main__":
    raise SystemExit(main())
