"""Network namespaces as separate "machines" for fault tests and benchmarks (root only).

A `Lab` makes one namespace per host, each with its own 10.x address on an `eth0` veth whose
other end sits on a bridge in a namespace of its own; `cut(host)` takes the host's bridge port
down (its link drops: packets in flight are lost, both directions, nothing is refused) and
`heal(host)` brings it back. Nothing is added to the namespace this process runs in, and every
packet stays inside the namespaces the lab made; `close()` deletes them all.

`enter(name)` moves the calling process into a lab namespace (setns(2)); call it first thing in
a fresh process (before any ZeroMQ context exists: libzmq's I/O threads inherit the namespace
of the thread that starts them), as the benchmark's partition run does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

CLONE_NEWNET = 0x40000000


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`, or the kernel refused)."""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why a Lab cannot be made on this machine, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip tool (iproute2) is not installed"
    return None


class Lab:
    """Namespaces `{tag}{name}` for each of `hosts` (name -> IPv4 address, one /24), joined
    by the bridge `br0` in namespace `{tag}br`."""

    def __init__(self, hosts: dict[str, str], tag: str | None = None, prefix_len: int = 24):
        self.tag = tag or f"zkv{os.getpid() % 100000}"
        self.hosts = dict(hosts)
        self.prefix_len = prefix_len
        self.bridge = f"{self.tag}br"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}{host}"

    def port(self, host: str) -> str:
        return f"v{host}"[:15]  # the bridge-side end of the host's veth (IFNAMSIZ 16)

    def exec_prefix(self, host: str) -> list[str]:
        """Prefix of a command that runs inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> Lab:
        why = unavailable()
        if why:
            raise NetnsUnavailable(why)
        try:
            for ns in (self.bridge, *(self.ns(h) for h in self.hosts)):
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.bridge, "link", "add", "name", "br0", "type", "bridge")
            sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
            for host, addr in self.hosts.items():
                ns, port = self.ns(host), self.port(host)
                sh("ip", "-n", ns, "link", "add", "name", "eth0", "type", "veth", "peer", "name",
                   port, "netns", self.bridge)
                sh("ip", "-n", self.bridge, "link", "set", port, "master", "br0")
                sh("ip", "-n", self.bridge, "link", "set", port, "up")
                sh("ip", "-n", ns, "addr", "add", f"{addr}/{self.prefix_len}", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
        except (subprocess.CalledProcessError, OSError) as exc:
            err = getattr(exc, "stderr", "") or exc
            self.close()
            raise NetnsUnavailable(f"cannot make network namespaces here: "
                                   f"{str(err).strip()}") from None
        return self

    def cut(self, host: str) -> None:
        """`host`'s machine drops off the network (its link goes down at the bridge)."""
        sh("ip", "-n", self.bridge, "link", "set", self.port(host), "down")

    def heal(self, host: str) -> None:
        sh("ip", "-n", self.bridge, "link", "set", self.port(host), "up")

    def close(self) -> None:
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made.clear()

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.close()


def enter(ns: str) -> None:
    """Move this process (its calling thread, and every thread it starts later) into the
    named network namespace."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_child(target, *args, join_timeout: float = 30.0):
    """Run `target(conn, *args)` in a spawned process (so it can `enter` a namespace without
    moving the caller) and return what it sends: `target` sends ("ok", payload) or ("error",
    text); an error, or a child that dies first, raises RuntimeError with the text."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(child, *args))
    p.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        p.join(join_timeout)
        status, payload = "error", f"exited with code {p.exitcode}"
    p.join(join_timeout)
    if status != "ok":
        raise RuntimeError(payload)
    return payload
