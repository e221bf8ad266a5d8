"""Helpers of the operations tests (issue 14): CLI runs, raw node processes, HTTP, status."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from zkv import wire
from zkv.errors import ZkvError
from zkv.local import free_ports, port_free, port_span


def sigint_default() -> None:
    """preexec_fn of a process a test stops with SIGINT, as Ctrl-C would: a shell that runs
    the suite in the background starts it with SIGINT ignored, its children inherit that, and
    Python then installs no KeyboardInterrupt handler (the process would not stop)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

BIN = os.path.dirname(sys.executable)
ZKV = os.path.join(BIN, "zkv")


def zkv(*args, timeout=60, **kw) -> subprocess.CompletedProcess:
    """Run the installed `zkv` console script as a person would."""
    return subprocess.run([ZKV, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """Assert the run failed with exactly one line on stderr and no traceback; return it."""
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    return lines[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host`, outside the ephemeral range (zkv.local.free_ports says why)."""
    return free_ports(1, host)[0]


def free_base_port(nodes: int = 3) -> int:
    """A `--base-port` for `zkv local up`: its client, gossip (+1000) and metrics (+2100)
    ports free for `nodes` nodes and two added later, taken from this process's share of the
    port range (`zkv.local.port_span`: a parallel worker's own), never a fixed number."""
    first, end = port_span()
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(first, end - 2100 - nodes - 2)
        if all(port_free("127.0.0.1", base + off + i)
               for off in (0, 1000, 2100) for i in range(nodes + 2)):
            return base
    raise AssertionError(f"no free block of ports for {nodes} nodes in {first}-{end}")


def http(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(fn, timeout: float = 30.0, what: str = "condition", step: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError, KeyError, zmq.ZMQError, ZkvError) as exc:
            last = exc  # (a node still starting: Unavailable until it listens)
        time.sleep(step)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def raw_status(endpoint: str, timeout: float = 2.0) -> dict:
    """A node's status document over a plain DEALER (IPv6 enabled, unlike the client)."""
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IPV6, 1)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send(wire.encode_one(wire.Status(1)))
        if not s.poll(int(timeout * 1000)):
            raise TimeoutError(endpoint)
        (reply,) = wire.decode(s.recv(), 1 << 30)
        return reply.info
    finally:
        ctx.destroy(0)


class Nodes:
    """zkv-node processes started by hand (any flags), each stopped and reaped at the end."""

    def __init__(self, tmp_path, prefix: list[str] | None = None) -> None:
        self.tmp = tmp_path
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NS]
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, prefix: list[str] | None = None, env: dict | None = None
              ) -> subprocess.Popen:
        log = open(self.tmp / f"node{len(self.procs)}.log", "ab")
        cmd = [*(self.prefix if prefix is None else prefix), sys.executable, "-P", "-m",
               "zkv.node", "--gossip-interval", "0.1", "--down-after", "1.0", *args]
        e = dict(os.environ, ZKV_EXIT_WITH_PARENT=str(os.getpid()), **(env or {}))
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=e, start_new_session=True)
        log.close()
        p.log_path = log.name
        self.procs.append(p)
        return p

    def log(self, p) -> str:
        with open(p.log_path, errors="replace") as fh:
            return fh.read()

    def stop(self, p, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if p.poll() is None:
            p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(5)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def metrics_text(port: int, host: str = "127.0.0.1") -> str:
    code, body = http(f"http://{host}:{port}/metrics")
    assert code == 200
    return body


def ready(port: int, host: str = "127.0.0.1") -> tuple[int, dict]:
    code, body = http(f"http://{host}:{port}/readyz")
    return code, json.loads(body)


@contextmanager
def small_tmpfs(size: str) -> Iterator[str]:
    """A tmpfs of `size` (e.g. "3m") mounted on a new temp dir, unmounted and removed after:
    a disk that really fills (ENOSPC). Mounting needs root, as CI runs the suite."""
    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("mounting a small tmpfs needs root (CI runs the suite as root)")
    where = tempfile.mkdtemp(prefix="zkv-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)
        os.rmdir(where)
