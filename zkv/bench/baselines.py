"""Same-run baselines: a raw pyzmq ROUTER/DEALER echo and, when installed, redis-benchmark.

The echo runs in its own process (as a zkv node does) on a free loopback port and sends every
message straight back: it is the floor for one zkv round trip, with the same payload size.
Two figures: the sequential round-trip latency (p50, p99) and pipelined round trips per second
(``depth`` messages kept in flight on one DEALER). redis-benchmark, when ``redis-server`` and
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

from zkv.bench.stats import summarize


def free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _echo_server(endpoint: str, ready) -> None:
    import zmq

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
        ctx.term()


class EchoServer:
    """The echo ROUTER in a separate (spawned) process on a free loopback port."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        mpc = mp.get_context("spawn")
        self._ready = mpc.Event()
        self._proc = mpc.Process(target=_echo_server, args=(self.endpoint, self._ready),
                                 daemon=True)

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
                   keyspace: int = 1000, timeout: float = 120.0) -> dict:
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
               "-n", str(requests), "-c", str(connections), "-r", str(keyspace), "-P", "1",
               "--csv"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            return {"available": False, "reason": f"redis-benchmark failed: {res.stderr[-300:]}"}
        tests = parse_redis_csv(res.stdout)
        if "GET" not in tests or "SET" not in tests:
            return {"available": False, "reason": f"unparsed output: {res.stdout[-300:]}"}
        version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        return {"available": True, "value_bytes": value_size, "connections": connections,
                "requests": requests, "keyspace": keyspace, "tests": tests,
                "version": version.strip(), "command": " ".join(cmd[1:])}
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
