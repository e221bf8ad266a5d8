"""Same-run baselines: a raw pyzmq ROUTER/DEALER echo and, when installed, redis-benchmark.

The echo runs in its own process (as a zkv node does) on a free loopback port and sends every
message straight back: it is the floor for one zkv round trip, with the same payload size.
Two figures: the sequential round-trip latency (p50, p99) and pipelined round trips per second
(``depth`` messages kept in flight on one DEALER). The batched echo (`batched_echo_client`,
driven by `zkv bench --throughput` from its own client processes) sends frames of the batch
and byte sizes a zkv cell's clients sent, so the cost of ZeroMQ alone at that batching is
known; the server's CPU is read from /proc. redis-benchmark, when ``redis-server`` and
``redis-benchmark`` are on PATH, runs GET and SET with the same value size and concurrency
against a redis-server the suite starts on a free loopback port (no persistence) and stops.
A baseline that cannot run is returned as ``{"available": False, "reason": ...}``.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time

from zkv.bench.children import quiet_interrupt
from zkv.bench.stats import summarize


def free_port() -> int:
    from zkv.local import free_ports

    return free_ports(1)[0]


ECHO_TERM_WAIT = 2.0  # s the echo server waits for its context's term() (then exits without it)


def _echo_server(endpoint: str, ready) -> None:
    import zmq

    from zkv import sockcalls

    quiet_interrupt()

    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint)
    ready.set()
    try:
        while True:
            frames = s.recv_multipart(copy=False)
            if len(frames) == 2 and frames[1].bytes == b"__stop__":
                break
            s.send_multipart(frames, copy=False)
    finally:
        s.close(0)
        # bounded: a ROUTER closed right after echoing to a client that has just gone (one
        # interrupted with echoes in flight, then __stop__ at once) can leave term() blocked
        # for ever in libzmq 4.3.5 (sockcalls.term_within); the process then sat out
        # EchoServer's 5 s join and was killed, saying nothing
        sockcalls.term_within(ctx, ECHO_TERM_WAIT, "bench echo server", "zkv.bench")


class EchoServer:
    """The echo ROUTER in a separate (spawned) process on a free loopback port."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        mpc = mp.get_context("spawn")
        self._ready = mpc.Event()
        self._proc = mpc.Process(target=_echo_server, args=(self.endpoint, self._ready),
                                 daemon=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def __enter__(self) -> EchoServer:
        self._proc.start()
        if not self._ready.wait(20):
            self._proc.kill()
            raise RuntimeError("echo server did not start")
        return self

    def __exit__(self, *exc) -> None:
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 100)
        s.connect(self.endpoint)
        s.send(b"__stop__")
        s.close()
        ctx.term()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


def zmq_round_trips(endpoint: str, payload: bytes, count: int) -> list[float]:
    """Sequential round trips of ``payload`` through the echo; each latency in seconds."""
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        for _ in range(min(200, count)):  # warm up the connection
            s.send(payload)
            s.recv()
        out = []
        now = time.perf_counter
        for _ in range(count):
            t0 = now()
            s.send(payload)
            s.recv()
            out.append(now() - t0)
        return out
    finally:
        s.close(0)
        ctx.term()


def zmq_pipelined(endpoint: str, payload: bytes, depth: int, duration: float) -> float:
    """Round trips per second with ``depth`` messages kept in flight on one DEALER."""
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(payload)
        s.recv()
        for _ in range(depth):
            s.send(payload)
        done = 0
        t0 = time.perf_counter()
        end = t0 + duration
        while True:
            s.recv()
            done += 1
            if time.perf_counter() >= end:
                break
            s.send(payload)
        elapsed = time.perf_counter() - t0
        for _ in range(depth - 1):
            s.recv()
        return done / elapsed
    finally:
        s.close(0)
        ctx.term()


def zmq_echo_baseline(payload_size: int, count: int = 2000, depth: int = 64,
                      duration: float = 1.0) -> dict:
    """The raw pyzmq echo figures for a ``payload_size``-byte message."""
    payload = os.urandom(payload_size)
    try:
        with EchoServer() as srv:
            lat = zmq_round_trips(srv.endpoint, payload, count)
            rate = zmq_pipelined(srv.endpoint, payload, depth, duration)
    except Exception as exc:  # a baseline that fails is reported, not fatal
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"available": True, "payload_bytes": payload_size, "round_trips": count,
            "latency_ms": summarize(lat), "pipelined_depth": depth,
            "pipelined_rps": rate}


def batched_echo_client(endpoint: str, frame_bytes: int, batch: int, inflight: int,
                        start_at: float, end_at: float) -> dict:
    """One client process of the batched echo: ``inflight`` messages kept in flight as frames
    of ``batch`` messages (``frame_bytes`` bytes each; ceil(inflight / batch) frames in flight)
    from ``start_at`` to ``end_at`` (time.monotonic). No logic: the bytes are not decoded.
    Returns messages echoed, the seconds they took, this process's CPU seconds and the frame
    round-trip latencies (s)."""
    import zmq

    from zkv.bench.cpu import self_seconds

    batch = max(1, batch)
    frames_in_flight = max(1, -(-inflight // batch))
    payload = os.urandom(max(1, frame_bytes))
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    now = time.monotonic
    try:
        s.send(payload)  # connected and warm before the clock starts
        s.recv()
        while now() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - now())))
        cpu0, t0 = self_seconds(), now()
        sent_at = [t0] * frames_in_flight  # frames come back in order on one DEALER
        for _ in range(frames_in_flight):
            s.send(payload)
        rtts: list[float] = []
        done = 0
        head = 0
        outstanding = frames_in_flight
        while outstanding:
            s.recv()
            t = now()
            rtts.append(t - sent_at[head])
            done += batch
            outstanding -= 1
            if t < end_at:
                sent_at[head] = t
                s.send(payload)
                outstanding += 1
            head = (head + 1) % frames_in_flight
        t1 = now()
        return {"messages": done, "seconds": t1 - t0, "cpu_seconds": self_seconds() - cpu0,
                "started": t0, "finished": t1, "rtt": rtts}
    finally:
        s.close(0)
        ctx.term()


# ---- redis ------------------------------------------------------------------------------------
def parse_redis_csv(text: str) -> dict[str, dict[str, float]]:
    """redis-benchmark --csv output -> {"SET": {"rps": .., "p50_latency_ms": .., ...}, ...}."""
    rows = list(csv.reader(io.StringIO(text)))
    out: dict[str, dict[str, float]] = {}
    header = None
    for row in rows:
        if not row:
            continue
        if row[0] == "test":
            header = row
            continue
        name = row[0].split()[0].upper()
        if header is None:  # old format: "TEST","rps"
            out[name] = {"rps": float(row[1])}
            continue
        vals = {}
        for k, v in zip(header[1:], row[1:], strict=False):
            try:
                vals[k] = float(v)
            except ValueError:
                pass
        out[name] = vals
    return out


def mixed_rps(get_rps: float, set_rps: float, read_fraction: float) -> float:
    """Throughput of a read/write mix from the pure rates (time per op is additive)."""
    return 1.0 / (read_fraction / get_rps + (1 - read_fraction) / set_rps)


def redis_baseline(value_size: int, connections: int, requests: int = 20000,
                   keyspace: int = 1000, timeout: float = 120.0, pipeline: int = 1) -> dict:
    """GET and SET through redis-benchmark against a private redis-server on loopback."""
    server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if not server or not bench:
        missing = [n for n, p in (("redis-server", server), ("redis-benchmark", bench)) if not p]
        return {"available": False, "reason": f"not on PATH: {', '.join(missing)}"}
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="zkv-bench-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp, "--protected-mode", "yes", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return {"available": False, "reason": "redis-server did not start"}
                time.sleep(0.05)
        cmd = [bench, "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-d", str(value_size),
               "-n", str(requests), "-c", str(connections), "-r", str(keyspace), "-P", str(pipeline),
               "--csv"]
        from zkv.bench.cpu import children_seconds, process_seconds

        server0, bench0 = process_seconds(proc.pid), children_seconds()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        server1, bench1 = process_seconds(proc.pid), children_seconds()
        if res.returncode != 0:
            return {"available": False, "reason": f"redis-benchmark failed: {res.stderr[-300:]}"}
        tests = parse_redis_csv(res.stdout)
        if "GET" not in tests or "SET" not in tests:
            return {"available": False, "reason": f"unparsed output: {res.stdout[-300:]}"}
        version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        return {"available": True, "value_bytes": value_size, "connections": connections,
                "pipeline": pipeline,
                "requests": requests, "keyspace": keyspace, "tests": tests,
                "version": version.strip(), "command": " ".join(cmd[1:]),
                # CPU of the whole run (GET and SET: 2 x requests operations); the server's
                # from /proc, redis-benchmark's from getrusage of this process's children
                "server_cpu_us_per_op": (None if server0 is None or server1 is None else
                                         1e6 * (server1 - server0) / (2 * requests)),
                "client_cpu_us_per_op": 1e6 * (bench1 - bench0) / (2 * requests)}
    except (subprocess.TimeoutExpired, OSError) as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
