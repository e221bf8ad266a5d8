"""AsyncClient driver cost, before vs now: client CPU per operation (and ops/s), alternating.

    python benchmarks/compare_async_driver.py [--rev ae1f717] [--seconds 4] [--rounds 3]

One local 3-node cluster (sync=none); 50/50 get/put of 1 KiB values, each put carrying the
context of the last get, with 16 and 64 operations in flight on one AsyncClient. "before" is
zkv/client/aio.py as of --rev (read with `git show`; the default, ae1f717, is the zmq.asyncio
driver), "now" the installed one; both drive the same client core. CPU is
time.process_time() of this process (the client's event loop and libzmq's I/O thread)
divided by operations completed.
"""
import argparse
import asyncio
import importlib.util
import os
import subprocess
import tempfile
import time

import zkv
from zkv.local import LocalCluster

ap = argparse.ArgumentParser()
ap.add_argument("--rev", default="ae1f717")
ap.add_argument("--seconds", type=float, default=4.0)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()
src = subprocess.run(["git", "show", f"{args.rev}:zkv/client/aio.py"], check=True,
                     capture_output=True, text=True).stdout
tmp = tempfile.mkdtemp()
with open(os.path.join(tmp, "aio_before.py"), "w") as fh:
    fh.write(src)
spec = importlib.util.spec_from_file_location("aio_before", os.path.join(tmp, "aio_before.py"))
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

async def main(cls, eps, inflight, seconds):
    c = cls(eps, timeout=2.0)
    await c.put(b"warm", b"x")
    done = 0
    stop = time.monotonic() + seconds
    async def worker(i):
        nonlocal done
        ctx = None
        k = 0
        while time.monotonic() < stop:
            key = b"k%d-%d" % (i, k % 100)
            k += 1
            if k % 2:
                ctx = (await c.get(key)).context
            else:
                await c.put(key, b"v" * 1024, ctx)
            done += 1
    t0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(inflight)))
    cpu = time.process_time() - t0
    await c.close()
    return done, cpu

root = tempfile.mkdtemp()
cl = LocalCluster(3, root, base_port=None, sync="none")
cl.start(60)
try:
    for inflight in (16, 64):
        for rnd in range(args.rounds):
            for name, cls in (((f"before ({args.rev})", old.AsyncClient), ("now", zkv.AsyncClient))[::(1 if rnd % 2 else -1)]):
                done, cpu = asyncio.run(main(cls, cl.endpoints, inflight, args.seconds))
                print(f"in flight {inflight:2d}  {name:22s} {done/args.seconds:6.0f} ops/s  client CPU {cpu/done*1e6:4.0f} us/op", flush=True)
finally:
    cl.stop()
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
