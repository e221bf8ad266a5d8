"""`zkv bench --security`: the cost of security (issue 13), workload A with CurveZMQ on every
socket (`--keys`) against the same cluster shape in plain text, in one run.

Two local clusters of ``nodes`` nodes are started side by side: one plain, one keyed (a fresh
`zkv keygen` directory; the client uses its admin key). Each is loaded with the same
``records``; then YCSB workload A (50% read at R, 50% update at W, zipfian keys) runs against
each for ``duration`` seconds, ``rounds`` times, alternating plain and keyed so that drift
of a shared machine hits both alike. The client is one process with ``inflight`` requests in
flight on one AsyncClient per node set, so its own CurveZMQ work is part of what is measured,
as it is for any application. Reported per mode: operations/s, p50/p99 latency; and the
ratios keyed/plain (issue 13's goal: throughput >= 0.7x). Results go to security.json.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time

from zkv.bench import stats, workloads

MODES = ("plain", "curvezmq")
GOAL = 0.7  # throughput with CurveZMQ / plain, workload A


async def _load(endpoints: list[str], keys: str | None, records: int, value: bytes,
                inflight: int, timeout: float) -> None:
    from zkv.client import AsyncClient

    async with AsyncClient(endpoints, timeout=timeout, keys=keys) as c:
        sem = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with sem:
                await c.put(workloads.key_name(i), value, w=2)

        await asyncio.gather(*(one(i) for i in range(records)))


async def _workload_a(endpoints: list[str], keys: str | None, records: int, value: bytes,
                      inflight: int, duration: float, timeout: float, seed: int) -> dict:
    from zkv.client import AsyncClient
    from zkv.errors import ZkvError

    lat: list[float] = []
    failed = 0
    # each update carries the last context seen for its key (a read's or a put's), as the
    # other workloads' do: blind updates of zipfian keys piled up siblings on the hot keys
    # until --max-siblings refused them (a fifth of the operations failed)
    contexts: dict[bytes, bytes] = {}
    async with AsyncClient(endpoints, timeout=timeout, keys=keys) as c:
        await c.get(workloads.key_name(0), r=2)  # connected before the clock starts
        t0 = time.perf_counter()
        end = t0 + duration

        async def worker(w: int) -> None:
            nonlocal failed
            ops = workloads.OpStream(workloads.WORKLOADS["A"], records,
                                     random.Random(f"{seed}/{w}"))
            while time.perf_counter() < end:
                op, idx = ops.next()
                key = workloads.key_name(idx)
                s = time.perf_counter()
                try:
                    if op == workloads.READ:
                        contexts[key] = (await c.get(key, r=2)).context
                    else:
                        contexts[key] = await c.put(key, value, contexts.get(key), w=2)
                except ZkvError:
                    failed += 1
                    continue
                lat.append(time.perf_counter() - s)

        await asyncio.gather(*(worker(w) for w in range(inflight)))
        elapsed = time.perf_counter() - t0
    return {"ops": len(lat), "failed": failed, "elapsed": elapsed, "latencies": lat}


def run(*, nodes: int = 3, records: int = 1000, duration: float = 10.0, inflight: int = 16,
        value_size: int = 1024, rounds: int = 2, timeout: float = 5.0, seed: int = 42,
        sync: str = "interval", log=print) -> dict:
    """Start both clusters, run the rounds, stop them; the summary (see module doc)."""
    from zkv.local import LocalCluster
    from zkv.security import keygen

    root = tempfile.mkdtemp(prefix="zkv-bench-security-")
    value = random.Random(seed).randbytes(value_size)
    keys = f"{root}/keys"
    keygen(keys)
    clusters = {"plain": LocalCluster(nodes, f"{root}/plain", base_port=None, sync=sync),
                "curvezmq": LocalCluster(nodes, f"{root}/keyed", base_port=None, sync=sync,
                                         keys=keys)}
    parts: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        for c in clusters.values():
            c.start()
        for c in clusters.values():
            asyncio.run(_load(c.endpoints, c.client_keys, records, value, inflight, timeout))
        for r in range(rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                c = clusters[mode]
                res = asyncio.run(_workload_a(c.endpoints, c.client_keys, records, value,
                                              inflight, duration, timeout, seed + r))
                parts[mode].append(res)
                log(f"  round {r + 1} {mode:<9} {res['ops'] / res['elapsed']:9.0f} ops/s  "
                    f"p99 {1000 * _p(res['latencies'], 99):7.2f} ms  failed {res['failed']}")
    finally:
        for c in clusters.values():
            c.stop()
        shutil.rmtree(root, ignore_errors=True)
    out: dict = {"nodes": nodes, "records": records, "duration": duration, "rounds": rounds,
                 "inflight": inflight, "value_size": value_size, "workload": "A",
                 "modes": {}}
    for mode, runs in parts.items():
        lat = sorted(x for res in runs for x in res["latencies"])
        elapsed = sum(res["elapsed"] for res in runs)
        out["modes"][mode] = {
            "ops": len(lat), "failed": sum(res["failed"] for res in runs),
            "ops_per_second": len(lat) / elapsed if elapsed else 0.0,
            "p50_ms": 1000 * _p(lat, 50), "p99_ms": 1000 * _p(lat, 99)}
    plain, keyed = out["modes"]["plain"], out["modes"]["curvezmq"]
    out["throughput_ratio"] = (keyed["ops_per_second"] / plain["ops_per_second"]
                               if plain["ops_per_second"] else None)
    out["p99_ratio"] = keyed["p99_ms"] / plain["p99_ms"] if plain["p99_ms"] else None
    out["goal_throughput_ratio"] = GOAL
    return out


def _p(sorted_or_not: list[float], p: float) -> float:
    xs = sorted(sorted_or_not)
    return stats.percentile(xs, p) if xs else 0.0


def format_summary(res: dict) -> list[str]:
    lines = []
    for mode in MODES:
        m = res["modes"][mode]
        lines.append(f"  {mode:<9} {m['ops_per_second']:9.0f} ops/s  p50 {m['p50_ms']:7.2f} ms"
                     f"  p99 {m['p99_ms']:7.2f} ms  ops {m['ops']}  failed {m['failed']}")
    t, p = res["throughput_ratio"], res["p99_ratio"]
    met = "MET" if t is not None and t >= GOAL else "NOT MET"
    lines.append(f"  curvezmq / plain: throughput {_x(t)} (goal >= {GOAL}x: {met}), "
                 f"p99 {_x(p)}")
    return lines


def _x(v) -> str:
    return "missing" if v is None else f"{v:.2f}x"
