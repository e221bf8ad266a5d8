"""Where the simulator's interpreted work goes: bytecodes executed per module and function.

`sim_instructions.py` says how much a simulated operation or seed costs; this says where, in
Python's terms: every bytecode executed is counted (sys.settrace with opcode events) and
charged to the function whose frame ran it. Deterministic like the instruction counts (the
simulation is), but blind to work done in C (msgspec, the _core extensions, dict lookups):
a function that calls into C costs more than its share here suggests.

    python benchmarks/sim_bytecodes.py --sweep [--seeds 10] [--top 30]
    python benchmarks/sim_bytecodes.py --load many|core|sim [--ops 2400] [--top 30]

--sweep: the first seeds of a sweep's default scenario (`tools/simulate.py --seeds N --first
40000`, most of it the nodes' background); --load: the simulator's load (`--load --client C`,
`--ops` operations per client). Slow: tracing runs the interpreter ~30x slower.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count(run: Callable[[], int]) -> tuple[collections.Counter, int]:
    """(bytecodes per (file, first line, function), what `run` returned)."""
    counts: collections.Counter = collections.Counter()
    mon = getattr(sys, "monitoring", None)
    if mon is not None:
        # Python 3.12+: sys.settrace's "opcode" events no longer fire when f_trace_opcodes is
        # set from the trace function's "call" event (3.12.1, 3.13.0: no event at all), so
        # count with PEP 669's INSTRUCTION events instead.
        tool = mon.PROFILER_ID
        mon.use_tool_id(tool, "sim_bytecodes")
        keys: dict = {}

        def on_instruction(code, offset):
            key = keys.get(code)
            if key is None:
                key = keys[code] = (_short(code.co_filename), code.co_firstlineno, code.co_name)
            counts[key] += 1

        mon.register_callback(tool, mon.events.INSTRUCTION, on_instruction)
        mon.set_events(tool, mon.events.INSTRUCTION)
        try:
            result = run()
        finally:
            mon.set_events(tool, 0)
            mon.register_callback(tool, mon.events.INSTRUCTION, None)
            mon.free_tool_id(tool)
        return counts, result

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        key = (_short(code.co_filename), code.co_firstlineno, code.co_name)

        def local(frame, event, arg):
            if event == "opcode":
                counts[key] += 1
            return local
        return local

    sys.settrace(trace)
    try:
        result = run()
    finally:
        sys.settrace(None)
    return counts, result


def _short(path: str) -> str:
    path = os.path.normpath(path)
    for marker in (ROOT + os.sep, "site-packages" + os.sep):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--sweep", action="store_true", help="a sweep's first seeds")
    what.add_argument("--load", choices=["sim", "core", "many"], help="the load, this client")
    ap.add_argument("--seeds", type=int, default=10, help="with --sweep: seeds counted")
    ap.add_argument("--ops", type=int, default=2400, help="with --load: operations per client")
    ap.add_argument("--top", type=int, default=30, help="functions listed")
    args = ap.parse_args(argv)
    # (the simulator's modules first on sys.path, its warnings off: both as they were after,
    # for a caller in the same process, a test, whose later log captures must see warnings)
    saved_path, saved_disable = sys.path[:], logging.root.manager.disable
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tools")]
    logging.disable(logging.WARNING)
    try:
        from sim.scenario import load
        from simulate import default_sweep

        if args.sweep:  # one seed first, untraced: imports and first-call work stay out
            default_sweep(39000, 1)
            counts, ops = count(lambda: default_sweep(40000, args.seeds))
            unit, n = "seed", args.seeds
        else:
            load(client=args.load, ops_per_client=min(400, args.ops))
            counts, ops = count(lambda: load(client=args.load, ops_per_client=args.ops))
            unit, n = "client operation", ops
    finally:
        sys.path[:] = saved_path
        logging.disable(saved_disable)
    total = sum(counts.values())
    print(f"{total / n:,.0f} bytecodes per {unit} ({ops} client operations)")
    by_file: collections.Counter = collections.Counter()
    for (path, _, _), c in counts.items():
        by_file[path] += c
    for path, c in by_file.most_common(12):
        print(f"{100 * c / total:5.1f}%  {path}")
    print()
    for (path, line, name), c in counts.most_common(args.top):
        print(f"{100 * c / total:5.1f}%  {path}:{line} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
