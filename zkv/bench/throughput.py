"""`zkv bench --throughput`: the peak-throughput matrix of issue 12 and its same-run baselines.

What runs: 3 local nodes (N3 R2 W2), ``records`` keys loaded with ``value_size``-byte values;
then a matrix of cells, each ``clients`` client processes x ``inflight`` operations in flight
per process (the sync ``zkv.Client`` for 1, one ``AsyncClient`` with that many coroutines
otherwise) running a 50/50 get/put mix over uniformly drawn keys for ``duration`` seconds
from a common instant, once the nodes are back near their idle CPU after the previous cell
(an overloaded cell leaves queued work behind). Every put carries the last context that
client saw for its key (from a get or a put). Per cell: operations/s, p50/p99 of all operations and of gets and puts alone,
node CPU per operation (utime + stime of the node processes from /proc/<pid>/stat, summed over
the nodes, before/after the cell, divided by operations completed), client CPU per operation
(each client process's own CPU over its run) and the batching the clients' frames had
(messages and bytes per frame sent to a node, counted by wrapping zkv.wire's encoders inside
the client processes only).

Same-run baselines: the unbatched raw pyzmq echo (sequential round trips: the p50 every
latency goal divides by); per cell a batched raw pyzmq echo with the same client processes,
messages in flight, messages per frame and bytes per frame as that cell's clients sent (no
logic: messages/s and CPU per message of server and clients); redis-benchmark GET/SET at
each distinct total concurrency (clients x in flight) of the matrix.

Batched cells (``batches``, after the matrix, 1 and 4 client processes): the sync Client's
get_many of that many distinct keys, then put_many of them with the contexts it read, each
operation's latency its call's; beside redis-benchmark unpipelined and pipelined (-P) the
same. Reported, not goal lines: the goals are per operation sent alone.

After the matrix, with token routing, the 1 x 1 cell once more with every get through a
coordinator (`owner_reads=False`): what client-coordinated reads change, in the same run
(reported beside the sequential get goal line, not a goal itself). Then sequential gets and
raw echo round trips in alternating blocks from one process (`_interleaved_task`): the
sequential get goal's measure, both sampled at the same moments.

Then one more cell at half of the peak throughput (the peak cell's shape, each operation
started on a fixed schedule; latency counted from the scheduled start, so a client falling
behind shows), and the goal lines of issue 12: peak / redis peak, p99 at half peak / echo p50,
sequential get p50 / echo p50 (interleaved; without it the 1 x 1 cell's over the run's echo),
node and client CPU per operation at peak.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import tempfile
import time
from array import array
from collections import Counter

from zkv.bench import baselines, cpu, stats
from zkv.bench.children import quiet_interrupt
from zkv.bench.runner import WorkerPool
from zkv.client.core import MANY_WINDOW

N, R, W = 3, 2, 2
MATRIX_CLIENTS = (1, 4, 16)
MATRIX_INFLIGHT = (1, 4, 16, 64)
MATRIX_BATCH = (64,)  # batched cells: keys per get_many / put_many call (1 and 4 clients)
INTERLEAVED_BLOCKS, INTERLEAVED_PER_BLOCK = 10, 200  # the sequential get goal's samples
QUICK_CLIENTS = (1, 4)
QUICK_INFLIGHT = (1, 16)

# issue 12's goals
GOALS = {
    "throughput_vs_redis": (">=", 0.4),
    "node_cpu_us_per_op": ("<=", 40.0),
    "client_cpu_us_per_op": ("<=", 15.0),
    "p99_half_peak_vs_echo_p50": ("<=", 10.0),
    "p99_nearest_half_vs_echo_p50": ("<=", 10.0),  # the same goal, another way to load half
    "seq_get_p50_vs_echo_p50": ("<=", 2.5),
}


def key_name(i: int) -> bytes:
    return b"tput%012d" % i


# ---- client processes ------------------------------------------------------------------------
class _FrameCounter:
    """Wraps zkv.wire.encode / encode_one in a client process: frames, messages and bytes the
    client sent (counted from `reset`)."""

    def __init__(self) -> None:
        from zkv import wire

        self.frames = self.messages = self.bytes = 0
        self._encode, self._encode_one = wire.encode, wire.encode_one

        def encode(msgs: list) -> bytes:
            out = self._encode(msgs)
            self.frames += 1
            self.messages += len(msgs)
            self.bytes += len(out)
            return out

        def encode_one(msg) -> bytes:
            out = self._encode_one(msg)
            self.frames += 1
            self.messages += 1
            self.bytes += len(out)
            return out

        wire.encode, wire.encode_one = encode, encode_one  # type: ignore[assignment]

    def reset(self) -> None:
        self.frames = self.messages = self.bytes = 0

    def figures(self) -> dict:
        return {"frames": self.frames, "messages": self.messages, "bytes": self.bytes}


def _zkv_task(task: dict, counter: _FrameCounter) -> dict:
    """One client process's part of a cell (see the module docstring)."""
    from zkv.errors import ZkvError

    rng = random.Random(f"{task['seed']}/{task['cell']}/{task['client']}")
    records, inflight = task["records"], task["inflight"]
    value = rng.randbytes(task["value_size"])
    start_at, end_at = task["start_at"], task["end_at"]
    rate = task.get("rate") or 0.0  # operations/s of this process (0: as fast as it can)
    contexts: dict[int, bytes] = {}
    lat_get, lat_put = array("d"), array("d")
    service = array("d")  # paced: latency from the actual send, without the client's lag
    errors: Counter[str] = Counter()  # failed operations by exception class
    now = time.monotonic
    schedule = [start_at]  # the next operation's start time when paced

    def slot() -> float:
        t = schedule[0]
        schedule[0] = t + 1.0 / rate
        return t

    if task.get("batch"):
        t_start, t_end, cpu0, cpu1 = _batched_run(task, counter, rng, value, lat_get, lat_put,
                                                  errors)
    elif inflight == 1:
        from zkv.client import Client

        c = Client(task["endpoints"], timeout=task["timeout"], routing=task["routing"],
                   owner_reads=task.get("owner_reads", True))
        try:
            _warm_sync(c, ZkvError)
            while now() < start_at:
                time.sleep(min(0.01, max(0.0, start_at - now())))
            counter.reset()
            cpu0, t_start = cpu.self_seconds(), now()
            while True:
                if rate:
                    t0 = slot()
                    if t0 >= end_at:
                        break
                    wait = t0 - now()
                    if wait > 0:
                        time.sleep(wait)
                else:
                    t0 = now()
                    if t0 >= end_at:
                        break
                idx = rng.randrange(records)
                key = key_name(idx)
                t_send = now()
                try:
                    if rng.random() < 0.5:
                        res = c.get(key, r=R)
                        contexts[idx] = res.context
                        lat_get.append(now() - t0)
                    else:
                        contexts[idx] = c.put(key, value, context=contexts.get(idx), w=W)
                        lat_put.append(now() - t0)
                    if rate:
                        service.append(now() - t_send)
                except ZkvError as exc:
                    errors[type(exc).__name__] += 1
            t_end, cpu1 = now(), cpu.self_seconds()
        finally:
            c.close()
    else:
        t_start, t_end, cpu0, cpu1 = asyncio.run(_async_run(
            task, counter, rng, value, contexts, lat_get, lat_put, service,
            slot if rate else None, errors))
    return {"client": task["client"], "started": t_start, "finished": t_end,
            "cpu_seconds": cpu1 - cpu0, "failed": sum(errors.values()),
            "errors": dict(errors), "lat_get": lat_get,
            "lat_put": lat_put, "service": service, **counter.figures()}


def _batched_run(task, counter, rng, value, lat_get, lat_put, errors):
    """A batched cell's client: the sync Client's get_many of `batch` distinct keys, then
    put_many of the same keys with the contexts just read (50/50 get/put, every put with
    the last context seen); each operation's latency is its call's."""
    from zkv.client import Client
    from zkv.errors import ZkvError

    now, batch, records = time.monotonic, task["batch"], task["records"]
    c = Client(task["endpoints"], timeout=task["timeout"], routing=task["routing"])
    try:
        _warm_sync(c, ZkvError)
        while now() < task["start_at"]:
            time.sleep(min(0.01, max(0.0, task["start_at"] - now())))
        counter.reset()
        cpu0, t_start = cpu.self_seconds(), now()
        while now() < task["end_at"]:
            keys = [key_name(i) for i in rng.sample(range(records), min(batch, records))]
            t0 = now()
            got = c.get_many(keys, r=R, return_exceptions=True)
            t1 = now()
            items = []
            for key, g in zip(keys, got, strict=True):
                if isinstance(g, ZkvError):
                    errors[type(g).__name__] += 1
                else:
                    lat_get.append(t1 - t0)
                    items.append((key, value, g.context))
            done = c.put_many(items, w=W, return_exceptions=True)
            t2 = now()
            for d in done:
                if isinstance(d, ZkvError):
                    errors[type(d).__name__] += 1
                else:
                    lat_put.append(t2 - t1)
        t_end, cpu1 = now(), cpu.self_seconds()
    finally:
        c.close()
    return t_start, t_end, cpu0, cpu1


def _interleaved_task(task: dict) -> dict:
    """Sequential gets (the sync Client, R=2) and raw pyzmq echo round trips in alternating
    blocks of `per_block`, from one process: both latencies sampled at the same moments of a
    shared machine, so their ratio is the code's and not the host's drift (the run's echo is
    measured at its start and end, minutes from the 1 x 1 cell: the same code's ratio
    moved between 1.07x and 5.78x across runs that way)."""
    import os

    import zmq

    from zkv.client import Client
    from zkv.errors import ZkvError

    rng = random.Random(f"{task['seed']}/interleaved")
    payload = os.urandom(task["payload"])
    per_block, records = task["per_block"], task["records"]
    echo, gets = array("d"), array("d")
    now = time.perf_counter
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(task["echo"])
    c = Client(task["endpoints"], timeout=task["timeout"], routing=task["routing"])
    try:
        _warm_sync(c, ZkvError)
        for _ in range(per_block):  # both paths warm before the first sample
            s.send(payload)
            s.recv()
            c.get(key_name(rng.randrange(records)), r=R)
        for _ in range(task["blocks"]):
            for _ in range(per_block):
                t0 = now()
                s.send(payload)
                s.recv()
                echo.append(now() - t0)
            for _ in range(per_block):
                key = key_name(rng.randrange(records))
                t0 = now()
                c.get(key, r=R)
                gets.append(now() - t0)
    finally:
        c.close()
        s.close(0)
        ctx.term()
    return {"blocks": task["blocks"], "per_block": per_block, "payload_bytes": task["payload"],
            "echo_latency_ms": stats.summarize(echo), "get_latency_ms": stats.summarize(gets)}


def _warm_sync(c, ZkvError) -> None:
    for _ in range(50):  # learn the ring and open the sockets before the clock starts
        try:
            c.get(key_name(0), r=R)
            return
        except ZkvError:
            time.sleep(0.1)


async def _async_run(task, counter, rng, value, contexts, lat_get, lat_put, service, slot,
                     errors):
    from zkv.client import AsyncClient
    from zkv.errors import ZkvError

    now = time.monotonic
    start_at, end_at, records = task["start_at"], task["end_at"], task["records"]
    c = AsyncClient(task["endpoints"], timeout=task["timeout"], routing=task["routing"])

    async def loop() -> None:
        while True:
            if slot is not None:
                t0 = slot()
                if t0 >= end_at:
                    return
                wait = t0 - now()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                t0 = now()
                if t0 >= end_at:
                    return
            idx = rng.randrange(records)
            key = key_name(idx)
            t_send = now()
            try:
                if rng.random() < 0.5:
                    res = await c.get(key, r=R)
                    contexts[idx] = res.context
                    lat_get.append(now() - t0)
                else:
                    contexts[idx] = await c.put(key, value, context=contexts.get(idx), w=W)
                    lat_put.append(now() - t0)
                if slot is not None:
                    service.append(now() - t_send)
            except ZkvError as exc:
                errors[type(exc).__name__] += 1

    try:
        for _ in range(50):
            try:  # every node's socket open before the clock starts
                await asyncio.gather(*(c.get(key_name(i), r=R) for i in range(16)))
                break
            except ZkvError:
                await asyncio.sleep(0.1)
        delay = start_at - now()
        if delay > 0:
            await asyncio.sleep(delay)
        counter.reset()
        cpu0, t_start = cpu.self_seconds(), now()
        await asyncio.gather(*(loop() for _ in range(task["inflight"])))
        t_end, cpu1 = now(), cpu.self_seconds()
    finally:
        await c.close()
    return t_start, t_end, cpu0, cpu1


def _worker_main(conn) -> None:
    import zkv.client  # noqa: F401  (imported once, before any cell's clock starts)

    quiet_interrupt()

    counter = _FrameCounter()
    while True:
        task = conn.recv()
        if task is None:
            break
        try:
            if task["kind"] == "echo":
                out = baselines.batched_echo_client(
                    task["endpoint"], task["frame_bytes"], task["batch"], task["inflight"],
                    task["start_at"], task["end_at"])
            elif task["kind"] == "interleaved":
                out = _interleaved_task(task)
            else:
                out = _zkv_task(task, counter)
            conn.send(("ok", out))
        except Exception as exc:  # report to the parent instead of dying silently
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()


class Pool(WorkerPool):
    """Spawned client processes, reused by every cell (a cell of k clients uses the first k)."""

    def __init__(self, count: int) -> None:
        super().__init__(count, _worker_main)

    def run(self, tasks: list[dict], at: float, pids: list[int],  # type: ignore[override]
            threads: bool = True) -> tuple[list, float | None, dict[str, float] | None]:
        """Send the tasks to the first len(tasks) processes; CPU seconds of `pids` from `at`
        (sampled then) to when every result is in, in all and (`threads`) by kind of
        thread (None without)."""
        for conn, task in zip(self.conns, tasks, strict=False):
            conn.send(task)
        while time.monotonic() < at:
            time.sleep(min(0.005, max(0.0, at - time.monotonic())))
        cpu0 = cpu.total_seconds(pids)
        threads0 = cpu.thread_seconds(pids) if threads else None
        out: list[dict] = []
        failures: list[str] = []
        for conn in self.conns[:len(tasks)]:
            status, payload = conn.recv()
            (out if status == "ok" else failures).append(payload)
        cpu1 = cpu.total_seconds(pids)
        threads1 = cpu.thread_seconds(pids) if threads else None
        if failures:
            raise RuntimeError(f"benchmark client failed: {failures[0]}")
        used = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        split = None if threads0 is None or threads1 is None else {
            k: max(0.0, threads1[k] - threads0[k]) for k in threads1}
        return out, used, split


# ---- one cell ----------------------------------------------------------------------------------
def _lead(clients: int) -> float:
    """Seconds from handing out a cell to its start: every process connected and warm."""
    return 1.0 + 0.1 * clients


def _summarize_cell(parts: list[dict], node_cpu: float | None, clients: int,
                    inflight: int, batch: int = 0,
                    node_threads: dict[str, float] | None = None) -> dict:
    start = min(p["started"] for p in parts)
    end = max(p["finished"] for p in parts)
    elapsed = max(end - start, 1e-9)
    lat_get = [x for p in parts for x in p["lat_get"]]
    lat_put = [x for p in parts for x in p["lat_put"]]
    ops = len(lat_get) + len(lat_put)
    frames = sum(p["frames"] for p in parts)
    messages = sum(p["messages"] for p in parts)
    nbytes = sum(p["bytes"] for p in parts)
    client_cpu = sum(p["cpu_seconds"] for p in parts)
    service = [x for p in parts for x in p["service"]]
    return {
        "clients": clients, "inflight": inflight, "batch": batch,
        "driver": ("Client.get_many/put_many" if batch else "Client" if inflight == 1
                   else "AsyncClient"), "seconds": elapsed, "ops": ops,
        "failed": sum(p["failed"] for p in parts),
        "errors": dict(sum((Counter(p.get("errors") or {}) for p in parts), Counter())),
        "throughput": ops / elapsed,
        "latency_ms": stats.summarize(lat_get + lat_put),
        "get_latency_ms": stats.summarize(lat_get), "put_latency_ms": stats.summarize(lat_put),
        # paced cells only: from the actual send (latency_ms counts from the scheduled start)
        "service_latency_ms": stats.summarize(service) if service else None,
        "node_cpu_seconds": node_cpu, "node_cpu_us_per_op": cpu.per_op_us(node_cpu, ops),
        # the same by kind of thread: the nodes' loops, libzmq's I/O threads, the rest
        "node_cpu_us_per_op_by_thread": {k: cpu.per_op_us(v, ops) for k, v in
                                         node_threads.items()} if node_threads else None,
        "client_cpu_seconds": client_cpu, "client_cpu_us_per_op": cpu.per_op_us(client_cpu, ops),
        # client -> node frames (their replies come back batched the same way)
        "frames": frames, "messages_per_frame": messages / frames if frames else None,
        "bytes_per_frame": nbytes / frames if frames else None,
    }


class Run:
    """One `zkv bench --throughput` run; `run()` returns the results dict."""

    def __init__(self, *, records: int = 10_000, duration: float = 5.0, value_size: int = 1024,
                 clients=MATRIX_CLIENTS, inflight=MATRIX_INFLIGHT, batches=MATRIX_BATCH,
                 echo_duration: float = 2.0,
                 echo_round_trips: int = 5000, redis_requests: int = 50_000,
                 timeout: float = 5.0, seed: int = 42, sync: str = "interval",
                 routing: str = "token", log=print) -> None:
        self.records, self.duration, self.value_size = records, duration, value_size
        self.clients, self.inflight = tuple(clients), tuple(inflight)
        self.batches = tuple(batches)
        self.echo_duration, self.echo_round_trips = echo_duration, echo_round_trips
        self.redis_requests = redis_requests
        self.timeout, self.seed, self.sync, self.routing = timeout, seed, sync, routing
        self.log = log
        self.cell_no = 0

    def settings(self) -> dict:
        return {"n": N, "r": R, "w": W, "nodes": 3, "records": self.records,
                "duration": self.duration, "value_size": self.value_size,
                "clients": list(self.clients), "inflight": list(self.inflight),
                "batches": list(self.batches), "mix": "50% get (R=2) / 50% put (W=2, last context seen)",
                "keys": "uniform", "echo_duration": self.echo_duration,
                "redis_requests": self.redis_requests, "timeout": self.timeout,
                "seed": self.seed, "sync": self.sync, "routing": self.routing}

    def _settle(self, pids: list[int], idle: float | None, limit: float = 15.0) -> float:
        """Wait until the nodes are back near their idle CPU (an overloaded cell leaves work
        queued that would be billed to the next one); returns the seconds waited."""
        t0 = time.monotonic()
        floor = (idle or 0.0) * 1.5 + 0.05
        while time.monotonic() - t0 < limit:
            a, ta = cpu.total_seconds(pids), time.monotonic()
            time.sleep(0.25)
            b = cpu.total_seconds(pids)
            if a is None or b is None or (b - a) / (time.monotonic() - ta) <= floor:
                break
        return time.monotonic() - t0

    def _cell(self, pool: Pool, endpoints: list[str], pids: list[int], clients: int,
              inflight: int, rate: float = 0.0, idle: float | None = None,
              batch: int = 0, owner_reads: bool = True) -> dict:
        settled = self._settle(pids, idle)
        self.cell_no += 1
        start_at = time.monotonic() + _lead(clients)
        tasks = [{"kind": "zkv", "endpoints": endpoints, "records": self.records,
                  "value_size": self.value_size, "inflight": inflight, "timeout": self.timeout,
                  "routing": self.routing, "seed": self.seed, "cell": self.cell_no,
                  "client": i, "start_at": start_at, "end_at": start_at + self.duration,
                  "rate": rate / clients, "batch": batch, "owner_reads": owner_reads}
                 for i in range(clients)]
        parts, node_cpu, node_threads = pool.run(tasks, at=start_at, pids=pids)
        return {**_summarize_cell(parts, node_cpu, clients, inflight, batch, node_threads),
                "settle_seconds": settled}

    def _interleaved(self, pool: Pool, endpoints: list[str], pids: list[int],
                     idle: float | None) -> dict:
        """The sequential get goal's measure: `_interleaved_task` in one client process."""
        self._settle(pids, idle)
        with baselines.EchoServer() as srv:
            task = {"kind": "interleaved", "endpoints": endpoints, "echo": srv.endpoint,
                    "records": self.records, "payload": self.value_size + 64,
                    "blocks": INTERLEAVED_BLOCKS, "per_block": INTERLEAVED_PER_BLOCK,
                    "timeout": self.timeout, "routing": self.routing, "seed": self.seed}
            (out,), _, _ = pool.run([task], at=time.monotonic(), pids=[], threads=False)
        return out

    def _batched_echo(self, pool: Pool, srv, cell: dict) -> dict:
        clients, inflight = cell["clients"], cell["inflight"]
        batch = max(1, round(cell["messages_per_frame"] or 1))
        batch = min(batch, inflight)
        frame_bytes = max(1, round(cell["bytes_per_frame"] or self.value_size))
        start_at = time.monotonic() + _lead(clients)
        tasks = [{"kind": "echo", "endpoint": srv.endpoint, "frame_bytes": frame_bytes,
                  "batch": batch, "inflight": inflight, "start_at": start_at,
                  "end_at": start_at + self.echo_duration} for _ in range(clients)]
        parts, server_cpu, _ = pool.run(tasks, at=start_at, pids=[srv.pid],
                                          threads=False)
        msgs = sum(p["messages"] for p in parts)
        elapsed = max(max(p["finished"] for p in parts) - min(p["started"] for p in parts),
                      1e-9)
        client_cpu = sum(p["cpu_seconds"] for p in parts)
        return {"clients": clients, "inflight": inflight, "batch": batch,
                "frame_bytes": frame_bytes, "messages": msgs, "seconds": elapsed,
                "messages_per_second": msgs / elapsed,
                "frame_rtt_ms": stats.summarize(x for p in parts for x in p["rtt"]),
                "server_cpu_us_per_message": cpu.per_op_us(server_cpu, msgs),
                "client_cpu_us_per_message": cpu.per_op_us(client_cpu, msgs)}

    def _idle(self, pids: list[int]) -> float | None:
        """CPU-seconds per second the idle nodes use (gossip, timers): the floor under every
        cell's node CPU, which is not subtracted from it."""
        time.sleep(0.5)
        a, t0 = cpu.total_seconds(pids), time.monotonic()
        time.sleep(min(2.0, self.duration))
        b = cpu.total_seconds(pids)
        return None if a is None or b is None else (b - a) / (time.monotonic() - t0)

    def _load(self, endpoints: list[str]) -> float:
        from zkv.client import AsyncClient

        value = random.Random(self.seed).randbytes(self.value_size)

        async def go() -> None:
            async with AsyncClient(endpoints, timeout=max(5.0, self.timeout)) as c:
                nxt = iter(range(self.records))

                async def filler() -> None:
                    for i in nxt:
                        for attempt in range(5):
                            try:
                                await c.put(key_name(i), value, w=W)
                                break
                            except Exception:
                                if attempt == 4:
                                    raise
                                await asyncio.sleep(0.2)

                await asyncio.gather(*(filler() for _ in range(64)))

        t0 = time.monotonic()
        asyncio.run(go())
        return self.records / (time.monotonic() - t0)

    def run(self) -> dict:
        from zkv.bench.runner import machine_info
        from zkv.local import LocalCluster, port_span

        lo, hi = port_span()  # (a bad $ZKV_LOCAL_PORTS said so only after the baselines had
        if hi - lo < 3 * 3:  # run, and left an empty temp dir)
            raise ValueError(f"the port range {lo}-{hi} holds fewer than the 9 ports of 3 nodes")
        t_begin = time.monotonic()
        res: dict = {"kind": "throughput", "settings": self.settings(),
                     "machine": machine_info(), "cells": [], "batched_cells": [],
                     "batched_echo": [],
                     "baselines": {}, "notes": []}
        self.log(f"throughput: N{N} R{R} W{W}, 3 local nodes, {self.value_size}-byte values, "
                 f"50/50 get/put, clients {list(self.clients)} x in flight "
                 f"{list(self.inflight)}, {self.duration:g}s per cell")
        payload = self.value_size + 64  # a put's frame, as the default suite's echo
        self.log(f"baseline: raw pyzmq echo (unbatched), {payload}-byte payload")
        res["baselines"]["zmq_echo"] = baselines.zmq_echo_baseline(
            payload, count=self.echo_round_trips, depth=1, duration=self.echo_duration)
        root = tempfile.mkdtemp(prefix="zkv-bench-throughput-")
        pool = Pool(max(self.clients))
        try:
            cluster = LocalCluster(3, root, base_port=None, sync=self.sync, n=N)
        except BaseException:
            pool.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            cluster.start()
            endpoints = cluster.endpoints
            pids = [n.pid for n in cluster.nodes if n.pid is not None]
            rate = self._load(endpoints)
            self.log(f"loaded {self.records} records ({rate:.0f} puts/s)")
            # steady state: the partitions each node gained as the cluster formed count for
            # the client's own reads once settled and verified (a few seconds)
            cluster.wait_verified(120)
            res["node_idle_cpu"] = idle = self._idle(pids)
            self.log(f"nodes idle: {_f2(idle)} CPU-seconds per second, summed over the nodes")
            for c in self.clients:
                for f in self.inflight:
                    cell = self._cell(pool, endpoints, pids, c, f, idle=idle)
                    res["cells"].append(cell)
                    self.log(_cell_line(cell))
            if 1 in self.clients and 1 in self.inflight and self.routing == "token":
                # the 1 x 1 cell again with every get through a coordinator: what owner reads
                # (zkv.client.core, "Client-coordinated reads") change, in the same run
                cell = self._cell(pool, endpoints, pids, 1, 1, idle=idle, owner_reads=False)
                cell["driver"] = "Client(owner_reads=False)"
                res["coordinated_gets"] = cell
                self.log(_cell_line(cell) + "  (gets through a coordinator: owner_reads=False)")
                res["seq_get_interleaved"] = it = self._interleaved(pool, endpoints, pids, idle)
                self.log(f"sequential gets and raw echo round trips interleaved ({it['blocks']} "
                         f"x {it['per_block']} each): get p50 "
                         f"{it['get_latency_ms']['p50']:.3f} ms, echo p50 "
                         f"{it['echo_latency_ms']['p50']:.3f} ms")
            peak = max(res["cells"], key=lambda x: x["throughput"])
            half = peak["throughput"] / 2
            cell = self._cell(pool, endpoints, pids, peak["clients"], peak["inflight"], half,
                              idle=idle)
            cell["target_rate"] = half
            res["half_peak"] = cell
            self.log(_cell_line(cell) + f"  (paced at {half:.0f} ops/s: half of the peak)")
            for c in self.clients[:2]:
                for b in self.batches:
                    cell = self._cell(pool, endpoints, pids, c, min(b, MANY_WINDOW), idle=idle,
                                      batch=b)
                    res["batched_cells"].append(cell)
                    self.log(_cell_line(cell) + f"  (get_many, then put_many, of {b} keys)")
            cluster.stop()
            self.log("baseline: batched raw pyzmq echo, each cell's batching")
            with baselines.EchoServer() as srv:
                for cell in res["cells"]:
                    try:
                        e = self._batched_echo(pool, srv, cell)
                    except Exception as exc:  # a baseline that fails is reported, not fatal
                        res["notes"].append(f"batched echo {cell['clients']}x"
                                            f"{cell['inflight']}: {exc}")
                        continue
                    e["zkv_vs_echo"] = vs_echo(cell, e)
                    res["batched_echo"].append(e)
                    v = e["zkv_vs_echo"]
                    self.log(f"  echo {e['clients']:>2} x {e['inflight']:>2}  batch "
                             f"{e['batch']:>3}  {e['frame_bytes']:>6} B/frame  "
                             f"{e['messages_per_second']:9.0f} msg/s  server "
                             f"{_us(e['server_cpu_us_per_message'])}  clients "
                             f"{_us(e['client_cpu_us_per_message'])} CPU/msg  |  zkv/echo: "
                             f"rate {fmt_ratio(v['throughput'])}, node CPU "
                             f"{fmt_ratio(v['node_cpu'])}, client CPU "
                             f"{fmt_ratio(v['client_cpu'])}")
        finally:
            cluster.stop()
            pool.close()
            shutil.rmtree(root, ignore_errors=True)
        red: dict = {}
        for conns in sorted({c * f for c in self.clients for f in self.inflight}):
            self.log(f"baseline: redis-benchmark GET/SET, {self.value_size}-byte values, "
                     f"{conns} connections")
            r = baselines.redis_baseline(self.value_size, conns, requests=self.redis_requests,
                                         keyspace=self.records)
            if r.get("available"):
                t = r["tests"]
                r["mix_rps"] = baselines.mixed_rps(t["GET"]["rps"], t["SET"]["rps"], 0.5)
            red[str(conns)] = r
            if not r.get("available"):
                self.log(f"  redis baseline missing: {r['reason']}")
                break
        res["baselines"]["redis"] = red
        pipelined: dict = {}
        for b in self.batches if red and all(r.get("available") for r in red.values()) else ():
            conns = max(self.clients[:2])
            self.log(f"baseline: redis-benchmark GET/SET pipelined -P {b}, {conns} "
                     "connections (for the batched cells)")
            r = baselines.redis_baseline(self.value_size, conns, requests=self.redis_requests,
                                         keyspace=self.records, pipeline=b)
            if r.get("available"):
                t = r["tests"]
                r["mix_rps"] = baselines.mixed_rps(t["GET"]["rps"], t["SET"]["rps"], 0.5)
            pipelined[str(b)] = r
        res["baselines"]["redis_pipelined"] = pipelined
        res["batched"] = batched_figures(res)
        self.log("baseline: raw pyzmq echo (unbatched) again, at the end of the run")
        res["baselines"]["zmq_echo_end"] = baselines.zmq_echo_baseline(
            payload, count=self.echo_round_trips, depth=1, duration=self.echo_duration)
        res["goal"] = goals(res)
        res["elapsed_seconds"] = time.monotonic() - t_begin
        return res


def vs_echo(cell: dict, echo: dict) -> dict:
    """A cell against the batched echo of its batching: zkv ops/s / echo messages/s, node CPU
    per op / echo server CPU per message, client CPU per op / echo client CPU per message."""
    def ratio(a, b):
        return a / b if a is not None and b else None

    return {"throughput": ratio(cell["throughput"], echo["messages_per_second"]),
            "node_cpu": ratio(cell["node_cpu_us_per_op"], echo["server_cpu_us_per_message"]),
            "client_cpu": ratio(cell["client_cpu_us_per_op"],
                                echo["client_cpu_us_per_message"])}


def echo_floor(base: dict) -> float | None:
    """The raw echo's p50 (ms) every latency goal divides by: the mean of the p50s measured at
    the start and at the end of the run (a shared machine's load drifts in between)."""
    p50s = [e["latency_ms"]["p50"] for e in (base.get("zmq_echo"), base.get("zmq_echo_end"))
            if e and e.get("available") and e["latency_ms"].get("p50")]
    return sum(p50s) / len(p50s) if p50s else None


def goals(res: dict) -> dict:
    """Issue 12's measures from one run's results: {name: {value, goal, op, met, how}}."""
    out: dict = {}
    cells = res.get("cells", [])
    echo_p50 = echo_floor(res.get("baselines", {}))
    red = [r for r in res.get("baselines", {}).get("redis", {}).values() if r.get("available")]
    peak = max(cells, key=lambda x: x["throughput"]) if cells else None

    def put(name: str, value, how: str) -> None:
        op, target = GOALS[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "goal": f"{op} {target:g}", "met": met, "how": how}

    red_peak = max(red, key=lambda r: r["mix_rps"]) if red else None
    put("throughput_vs_redis",
        peak["throughput"] / red_peak["mix_rps"] if peak and red_peak else None,
        (f"peak {peak['throughput']:.0f} ops/s ({peak['clients']} x {peak['inflight']}) / "
         f"redis-benchmark 50/50 peak {red_peak['mix_rps']:.0f} ops/s "
         f"(-c {red_peak['connections']})") if peak and red_peak else "missing")
    put("node_cpu_us_per_op", peak["node_cpu_us_per_op"] if peak else None,
        "sum over the 3 node processes, at the peak cell")
    put("client_cpu_us_per_op", peak["client_cpu_us_per_op"] if peak else None,
        "the client processes' own CPU, at the peak cell")
    half: dict = res.get("half_peak") or {}
    p99 = half["latency_ms"]["p99"] if half else None
    sp99 = (half.get("service_latency_ms") or {}).get("p99") if half else None
    put("p99_half_peak_vs_echo_p50", p99 / echo_p50 if p99 and echo_p50 else None,
        (f"p99 {p99:.3f} ms from the scheduled start at {half['throughput']:.0f} ops/s (paced "
         f"at half the peak; from the actual send: {_f2(sp99)} ms) / echo p50 "
         f"{echo_p50:.3f} ms") if p99 and echo_p50 else "missing")
    if half and half.get("target_rate") and half["throughput"] < 0.9 * half["target_rate"]:
        out["p99_half_peak_vs_echo_p50"]["how"] += (
            f"; NOTE: reached only {half['throughput']:.0f} of the {half['target_rate']:.0f} "
            "ops/s asked (the clients or nodes could not keep up at that pacing)")
    # the same measure from the unpaced cell whose throughput is nearest half of the peak
    near = min(cells, key=lambda c: abs(c["throughput"] - peak["throughput"] / 2)) \
        if peak else None
    np99 = near["latency_ms"]["p99"] if near else None
    put("p99_nearest_half_vs_echo_p50", np99 / echo_p50 if np99 and echo_p50 else None,
        (f"p99 {np99:.3f} ms of the {near['clients']} x {near['inflight']} cell "
         f"({near['throughput']:.0f} ops/s, unpaced: the cell nearest half the peak) / "
         f"echo p50 {echo_p50:.3f} ms") if near and np99 and echo_p50 else "missing")
    seq = next((c for c in cells if c["clients"] == 1 and c["inflight"] == 1), None)
    g50 = seq["get_latency_ms"]["p50"] if seq else None
    it = res.get("seq_get_interleaved") or {}
    i50 = it["get_latency_ms"]["p50"] if it else None
    e50 = it["echo_latency_ms"]["p50"] if it else None
    if i50 and e50:  # sampled side by side: the measure (see _interleaved_task)
        how = (f"get p50 {i50:.3f} ms / echo p50 {e50:.3f} ms, interleaved ({it['blocks']} "
               f"blocks of {it['per_block']} each, sync Client, R=2)")
        if g50 and echo_p50:
            how += (f"; the 1 x 1 cell's get p50 {g50:.3f} ms / the run's echo p50 "
                    f"{echo_p50:.3f} ms (sampled minutes apart): {g50 / echo_p50:.2f}x")
        put("seq_get_p50_vs_echo_p50", i50 / e50, how)
    else:
        put("seq_get_p50_vs_echo_p50", g50 / echo_p50 if g50 and echo_p50 else None,
            (f"get p50 {g50:.3f} ms (1 x 1, sync Client) / echo p50 {echo_p50:.3f} ms")
            if g50 and echo_p50 else "missing (needs the 1 x 1 cell)")
    coord = res.get("coordinated_gets")
    c50 = coord["get_latency_ms"]["p50"] if coord else None
    if c50 and echo_p50 and g50:
        out["seq_get_p50_vs_echo_p50"]["how"] += (
            f"; through a coordinator (owner_reads=False, same run): get p50 {c50:.3f} ms, "
            f"{c50 / echo_p50:.2f}x the run's echo")
    return out


def batched_figures(res: dict) -> dict:
    """The batched cells' peak against the same run's redis-benchmark, unpipelined (the
    goal's baseline) and pipelined like them; not goal lines: the goals are per operation
    sent alone."""
    cells = res.get("batched_cells") or []
    if not cells:
        return {}
    peak = max(cells, key=lambda x: x["throughput"])
    base = res.get("baselines", {})
    red = [r for r in base.get("redis", {}).values() if r.get("available")]
    pip = (base.get("redis_pipelined") or {}).get(str(peak["batch"])) or {}
    red_peak = max((r["mix_rps"] for r in red), default=None)
    return {"peak": {k: peak[k] for k in ("clients", "batch", "throughput",
                                          "node_cpu_us_per_op", "client_cpu_us_per_op")},
            "vs_redis": peak["throughput"] / red_peak if red_peak else None,
            "vs_redis_pipelined": (peak["throughput"] / pip["mix_rps"]
                                   if pip.get("available") else None),
            "redis_pipelined_command": pip.get("command")}


def _f2(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _us(x) -> str:
    return "n/a" if x is None else f"{x:.1f} us"


def _cell_line(c: dict) -> str:
    lat = c["latency_ms"]
    mpf = c["messages_per_frame"]
    by = c.get("node_cpu_us_per_op_by_thread")
    split = (f" (loop {_us(by['main'])}, libzmq I/O {_us(by['zmq'])})"
             if by and by.get("main") is not None else "")
    return (f"  {c['clients']:>2} x {c['inflight']:>2}  {c['throughput']:8.0f} ops/s  "
            f"p50 {_ms(lat['p50'])}  p99 {_ms(lat['p99'])}  node CPU {_us(c['node_cpu_us_per_op'])}"
            f"/op{split}  client CPU {_us(c['client_cpu_us_per_op'])}/op  "
            f"{'n/a' if mpf is None else f'{mpf:.1f}'} msg/frame  failed {c['failed']}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(c["errors"].items())) + ")"
               if c.get("errors") else ""))


def _ms(x) -> str:
    return "n/a" if x is None else f"{x:.2f} ms"


def fmt_ratio(x) -> str:
    return "n/a" if x is None else (f"{x:.2f}x" if not math.isinf(x) else "inf")
