"""`zkv bench --conflict-modes`: how many acknowledged writes each conflict mode loses under
the same concurrent-writer load (issue 15).

The workload is Jepsen's set test as Kingsbury ran it against Riak ("Call me maybe: Riak",
2013): writers add unique elements to a few shared sets with read-modify-write, each add is
*acknowledged* when its write returned, and at the end every set is read once; an
acknowledged element that is missing was lost. The same load (writers, keys, duration) runs
once per namespace:

- ``lww``: the namespace keeps one version per key, so of two concurrent read-modify-writes
  only the later-stamped one survives: the other's element is lost although it was acked.
  Loss is expected, by design.
- ``siblings`` + merge: concurrent writes are kept as siblings and the next update merges
  them (``zkv.crdt.GSet``), so nothing acknowledged is lost. Expected loss: zero.

Both modes use the same value codec (a GSet), so only the conflict mode differs. Before the
final read the suite waits until the cluster has settled (`settle` seconds, and R = N).
"""

from __future__ import annotations

import asyncio
import random
import time

from zkv.crdt import GSet
from zkv.errors import ZkvError

MODES = ("lww", "siblings")


async def _writer(endpoints: list[str], namespace: str, keys: list[bytes], me: int,
                  end_at: float, timeout: float, seed: int, acked: dict[bytes, set[str]],
                  stats: dict[str, int]) -> None:
    from zkv.client import AsyncClient

    rng = random.Random(f"{seed}/{me}")
    seq = 0
    async with AsyncClient(endpoints, timeout=timeout) as c:
        while time.monotonic() < end_at:
            key = keys[rng.randrange(len(keys))]
            elem = f"w{me}-{seq}"
            seq += 1

            try:
                await c.update(key, GSet.updater([elem]), namespace=namespace, retries=0)
            except ZkvError:
                stats["failed"] += 1
                continue
            acked[key].add(elem)
            stats["acked"] += 1


async def _run_mode(endpoints: list[str], namespace: str, writers: int, keys: int,
                    duration: float, timeout: float, seed: int, n: int, settle: float) -> dict:
    from zkv.client import AsyncClient

    names = [b"set-%d" % i for i in range(keys)]
    acked: dict[bytes, set[str]] = {k: set() for k in names}
    stats = {"acked": 0, "failed": 0}
    t0 = time.monotonic()
    end_at = t0 + duration
    await asyncio.gather(*(_writer(endpoints, namespace, names, i, end_at, timeout, seed,
                                   acked, stats) for i in range(writers)))
    elapsed = time.monotonic() - t0
    await asyncio.sleep(settle)  # hints and read repair: measure what the cluster kept
    lost = 0
    async with AsyncClient(endpoints, timeout=max(timeout, 5.0)) as c:
        for k in names:
            got = await c.get(k, r=n, namespace=namespace)
            present = GSet.from_siblings(got.values).elements if got.values else frozenset()
            lost += len(acked[k] - present)
    return {"namespace": namespace, "acked": stats["acked"], "failed": stats["failed"],
            "lost": lost, "lost_fraction": lost / stats["acked"] if stats["acked"] else None,
            "writes_per_second": stats["acked"] / elapsed if elapsed else None}


def run(endpoints: list[str], *, writers: int, keys: int, duration: float, timeout: float,
        seed: int, n: int, settle: float = 1.0, log=print) -> dict:
    """Create one namespace per mode (N=n, majority R/W) and run the same load on each."""
    from zkv.client import Client

    tag = f"{random.Random(f'{seed}/{time.time()}').getrandbits(24):06x}"
    results = []
    with Client(endpoints, timeout=max(timeout, 5.0)) as c:
        spaces = {mode: c.namespace_create(f"bench-{mode}-{tag}", n=n, conflicts=mode)["name"]
                  for mode in MODES}
    for mode in MODES:
        res = asyncio.run(_run_mode(endpoints, spaces[mode], writers, keys, duration, timeout,
                                    seed, n, settle))
        res["mode"] = mode if mode == "lww" else "siblings+merge"
        results.append(res)
        log(format_row(res))
    return {"writers": writers, "keys": keys, "duration": duration, "n": n, "runs": results}


def format_row(r: dict) -> str:
    frac = r["lost_fraction"]
    return (f"  {r['mode']:<15} acked {r['acked']:>6}  lost {r['lost']:>6} "
            f"({'-' if frac is None else f'{100 * frac:.1f}%'})  failed {r['failed']:>4}  "
            f"{r['writes_per_second'] or 0:8.0f} acked writes/s")
