"""Connections on the node's ROUTER socket: a cap, per-identity state freed on close, a byte cap
on replies queued for an identity that does not read, memory handed back after a flood.

Part of the transport (transport.py owns the sockets; this module only watches the ROUTER's
connections, so the loop file stays short). Issue 13's identity / connection flood: 19,800
connections with distinct identities whose replies were never read took a node to 19,829
fds and 48 -> 606 MB of RSS, still held after they closed. Here:

- a socket monitor reports each connection accepted (ACCEPTED, with its fd) and closed
  (DISCONNECTED / CLOSED). Past `cap` open connections one is shut down at once: one that
  stopped reading (a tracked reply unread for STALL seconds) if there is one; else the
  oldest connection that has sent fewer than PROVEN frames, the newcomer aside; else the one
  that sent nothing for the longest (a new connection counts as active when accepted). So a
  flood of idle connections cannot lock out clients that keep working, and a flood of
  connections that each send a request or none does not shut out an established client
  that paused for a second (it was the idlest: its request in flight was lost with the
  connection, and the client waited out its timeout; tests/test_security_flood.py failed so
  about once in 10 runs on a loaded machine). shutdown(2) only: libzmq sees end-of-stream
  and closes its own fd, so no fd number is ever closed under it. They are counted.
- every received frame names the fd it came on (ZMQ_SRCFD); identity <-> fd is kept from that
  (a reused fd, or ROUTER_HANDOVER moving an identity, updates it; a frame read after its
  connection was reported closed, queued before, does not). When an fd closes, the
  core forgets its identity (`NodeCore.forget_identity`) and this module its reply queue.
- replies over TRACK_MIN bytes are sent with a tracker (sockcalls.send_tracked: one copy into a
  buffer libzmq frees when it is done, its tracker then says so); the bytes still queued in
  libzmq per identity (and in total) are capped, and a reply past the cap is dropped (the
  client times out and retries, as when ZMQ_SNDHWM drops frames). With ZMQ_ROUTER_MANDATORY
  (set by the transport) a reply to a vanished identity fails at once instead of queueing.
- after many connections closed, `malloc_trim(0)` (glibc only) returns freed heap to the OS;
  without it RSS stays at the flood's peak although the memory is free.

ZMQ_ROUTER_NOTIFY would report disconnects per identity, but the libzmq bundled with pyzmq
rejects it (a draft option), hence the monitor + SRCFD pairing.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import itertools
import logging
import os
import platform
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("zkv.node")

EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
# a handshake that failed (its connection's DISCONNECTED follows): counted by reason, so a
# plain-text client knocking at a keyed node leaves a trace (the ZAP handler logs refused keys)
HANDSHAKE_FAILED: dict[int, str] = {int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "auth",
                                     int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "protocol",
                                     int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "other"}
for _event in HANDSHAKE_FAILED:
    EVENTS |= _event
EVENT_DRAIN = 5000  # monitor events taken per call (each one is two small frames)
FD_RESERVE = 256  # fds kept free for data files, peer links, the metrics port
MIN_CAP = 16
MIN_FDS = 64  # open files a node needs at the least (zkv-node refuses to start with fewer)
# replies at least this big are tracked until libzmq releases them (zsock.send_tracked: 2-5 us
# per frame, pyzmq's zero-copy tracked send 12-14). Smaller ones are bounded by the ROUTER's
# SNDHWM only (64 frames per connection, so at most 256 KiB each)
TRACK_MIN = 4 * 1024
STALL = 2.0  # seconds a tracked reply may sit unread before its connection is "not reading"
EVICT_LOOK = 16  # stalled candidates examined per connection past the cap
PROVEN = 2  # frames a connection has sent before the cap spares it over quieter newer ones
TRIM_AFTER = 64  # closed connections (or dropped big replies) before a malloc_trim
TRIM_EVERY = 1.0  # seconds between malloc_trim calls at most


def raise_fd_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one, as servers do at start (Redis, nginx's
    worker_rlimit_nofile): each data segment holds two descriptors, and a shell's default of
    1024 ran out with the node's data, refusing its writes (an outside run). Returns the soft
    limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), hard))
        except (ValueError, OSError):  # (above the kernel's nr_open: keep what was given)
            pass
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def fd_limit_problem() -> str | None:
    """Why this process cannot run a node with its open-file limit (raised first), or None.
    Under MIN_FDS a node started, took every descriptor with its own sockets, answered no
    handshake, flapped between taking writes and not ten times a second, and hung /readyz,
    while its peers showed it up (an outside run at ulimit -n 40)."""
    soft = raise_fd_limit()
    if soft == resource.RLIM_INFINITY or soft >= MIN_FDS:
        return None
    return (f"the open-file limit (ulimit -n) is {soft}; a node needs at least {MIN_FDS} (its "
            "sockets, data segments, connections): raise it (ulimit -n 65536, or LimitNOFILE= "
            "in its systemd unit)")


def effective_cap(wanted: int) -> int:
    """`wanted` connections, lowered to what RLIMIT_NOFILE (`raise_fd_limit`) leaves after
    FD_RESERVE (logged)."""
    soft = raise_fd_limit()
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= wanted:
        return wanted
    cap = max(MIN_CAP, soft - FD_RESERVE)
    log.warning("max_connections %d lowered to %d: the fd limit (ulimit -n) is %d", wanted,
                cap, soft)
    return cap


def _libc_function(name: str) -> Any:
    """`name` from the C library, a ctypes function (None where it cannot be loaded or lacks
    it)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    fn = _libc_function("malloc_trim")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def seed_routing_ids() -> bool:
    """Seed libc's rand() from os.urandom; call it before creating the ROUTER. libzmq names a
    connection that sends no routing id b"\\x00" + a 32-bit counter starting at rand()'s
    next values, and aborts the process (socket_base.cpp: zmq_assert) when a connection that
    chose that name itself holds it already. Unseeded, the start was the same in every
    process, so a client that squatted the next few hundred names crashed any node (an
    outside security review); seeded, a squatter must guess among 2^32 (README, "Known
    limits"). False where libc cannot be loaded (nothing seeded)."""
    srand = _libc_function("srand")
    if srand is None:
        return False
    srand.argtypes = [ctypes.c_uint]
    srand(int.from_bytes(os.urandom(4), "little"))
    return True


class HeldBytes:
    """The frames sent tracked that libzmq still holds, per key (a client connection's
    identity, a peer's node id) and in all: what the byte caps on queued frames count."""

    def __init__(self) -> None:
        self.frames: dict = {}  # key -> deque of (tracker, size), oldest first
        self.bytes: dict = {}  # key -> the sizes in `frames`, summed
        self.total = 0

    def held(self, key) -> int:
        """Forget the frames to `key` libzmq has released; the bytes it still holds."""
        q = self.frames.get(key)
        if q is None:
            return 0
        n = self.bytes[key]
        while q and q[0][0].done:
            size = q.popleft()[1]
            n -= size
            self.total -= size
        if q:
            self.bytes[key] = n
            return n
        del self.frames[key], self.bytes[key]
        return 0

    def add(self, key, tracker, size: int) -> None:
        q = self.frames.get(key)
        if q is None:
            q = self.frames[key] = collections.deque()
        q.append((tracker, size))
        self.bytes[key] = self.bytes.get(key, 0) + size
        self.total += size

    def forget(self, key) -> None:
        """`key`'s connection closed: libzmq frees what it held."""
        if self.frames.pop(key, None) is not None:
            self.total -= self.bytes.pop(key)


class Connections:
    """Watches `router` (bound on TCP port `port`); calls `forget(identity)` when one closes."""

    def __init__(self, router: zmq.Socket, port: int, cap: int, reply_cap: int,
                 forget: Callable[[bytes], None]) -> None:
        self.router = router
        self.port = port
        self.cap = cap
        self.reply_cap = reply_cap  # bytes of tracked replies queued for one identity
        self.total_cap = 4 * reply_cap  # ... and for all of them together
        self.forget = forget
        # the monitor's PAIR gets no HWM (set before it connects): at a full pipe libzmq's I/O
        # thread would block on the next event, stalling every connection until we drained
        addr = f"inproc://zkv-conns-{id(self):x}"
        router.monitor(addr, EVENTS)
        self.monitor = router.context.socket(zmq.PAIR)
        self.monitor.setsockopt(zmq.RCVHWM, 0)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.monitor.connect(addr)
        self.open: dict[int, None] = {}  # accepted fds still open, least recently active first
        self.closing: set[int] = set()  # fds shut down past the cap, not yet reported closed
        # open fds that have sent fewer than PROVEN frames -> how many, oldest accepted first
        self.unproven: dict[int, int] = {}
        self.fd_ident: dict[int, bytes] = {}
        self.ident_fd: dict[bytes, int] = {}
        self.queued = HeldBytes()  # tracked replies libzmq still holds, per identity
        self.stuck: dict[bytes, float] = {}  # ident -> since when it has tracked bytes queued
        self.refused = 0  # connections shut down past the cap (since the last report)
        self.refused_total = 0
        self.dropped = 0  # replies dropped past the byte caps (since the last report)
        self.failed: dict[str, int] = {}  # handshakes failed by reason (since the last report)
        self.failed_total = 0
        self.warned = 0  # failed for a reason worth a warning (auth, protocol): logged
        self.freed = 0  # closes since the last malloc_trim
        self.next_trim = 0.0
        self.trim = _malloc_trim()

    # ---- connections ----------------------------------------------------------------------
    def drain(self) -> None:
        """Take the monitor's events: count, cap and forget connections."""
        mon = self.monitor
        for _ in range(EVENT_DRAIN):
            try:
                ev = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            event, fd = int(ev["event"]), int(ev["value"])
            if event in HANDSHAKE_FAILED:  # (its value is an errno, not an fd)
                reason = HANDSHAKE_FAILED[event]
                self.failed[reason] = self.failed.get(reason, 0) + 1
                self.failed_total += 1
                if reason == "other":
                    # the connection closed or timed out before its handshake was done: a
                    # client that gave up on this node while it was paused (SIGSTOP; every
                    # `zkv status` that timed out left one, logged as a WARNING when the node
                    # resumed), a TCP connect-and-close probe. Nothing to act on: counted
                    log.debug("a connection closed before its handshake was done on port %d "
                              "(errno %d)", self.port, fd)
                    continue
                self.warned += 1  # (auth, protocol: a real refusal, worth a look)
                if self.warned == 1 or self.warned % 1000 == 0:
                    log.warning("%d connection handshake(s) failed on port %d, the last: %s "
                                "(a client that is not ZeroMQ; plain text to a keyed node; a "
                                "refused or wrong key)", self.warned, self.port, reason)
            elif event == zmq.EVENT_ACCEPTED:
                self.open[fd] = None
                self.unproven.pop(fd, None)
                self.unproven[fd] = 0
                if len(self.open) > self.cap:
                    self._evict(fd)
            elif fd in self.open or fd in self.closing or fd in self.fd_ident:  # closed
                self.open.pop(fd, None)
                self.unproven.pop(fd, None)
                self.closing.discard(fd)
                self._closed(fd)

    def _evict(self, newcomer: int = -1) -> None:
        """Make room for one: shut down a connection that stopped reading, else the oldest
        one that has hardly sent anything (not `newcomer`, the one just accepted), else the
        idlest."""
        victim = self._stalled() or self._unproven(newcomer) or next(iter(self.open))
        del self.open[victim]  # not counted (nor picked) again while it closes
        self.unproven.pop(victim, None)
        self.closing.add(victim)
        self._refuse(victim)

    def settings_changed(self, cfg) -> None:
        """A runtime change of max_connections (`zkv config --set`): a lower cap than the
        open connections sheds the excess at once (set_cap)."""
        shed = self.set_cap(effective_cap(cfg.max_connections))
        if shed:
            log.info("max_connections lowered to %d: shut %d connection(s) down", self.cap, shed)

    def set_cap(self, cap: int) -> int:
        """A new cap (`zkv config --set max_connections`, SIGHUP): a lower one than the open
        connections is reached at once, each one past it shut down as one accepted past the
        cap shuts another down. Returns how many were."""
        self.cap = cap
        shed = max(0, len(self.open) - cap)
        for _ in range(shed):
            self._evict()
        return shed

    def _unproven(self, newcomer: int) -> int | None:
        """The oldest connection that has sent fewer than PROVEN frames, if it is not the one
        just accepted (a newcomer still gets in by evicting the idlest, as before)."""
        for fd in self.unproven:
            return fd if fd != newcomer else None
        return None

    def _stalled(self) -> int | None:
        """The fd of a connection whose oldest tracked reply went unread for STALL seconds."""
        horizon = time.monotonic() - STALL
        for ident in list(itertools.islice(self.stuck, EVICT_LOOK)):
            since = self.stuck[ident]
            if since > horizon:
                return None  # oldest first: none older
            if self._prune(ident):
                fd = self.ident_fd.get(ident)
                if fd is not None and fd in self.open:
                    del self.stuck[ident]  # once: its close will forget the rest
                    return fd
                self.stuck.pop(ident, None)
        return None

    def _refuse(self, fd: int) -> None:
        """Shut the connection on `fd` down if it is still one of ours (our port)."""
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            return  # already closed by libzmq
        try:
            if s.getsockname()[1] == self.port:
                s.shutdown(socket.SHUT_RDWR)
                self.refused += 1
                n = self.refused_total + self.refused
                if n == 1 or n % 1000 == 0:
                    log.warning("connection cap of %d reached: refused %d connection(s) so far",
                                self.cap, n)
        except (OSError, IndexError, TypeError):
            pass
        finally:
            s.detach()  # never close: the fd is libzmq's

    def _closed(self, fd: int) -> None:
        ident = self.fd_ident.pop(fd, None)
        self.freed += 1
        if ident is not None and self.ident_fd.get(ident) == fd:
            del self.ident_fd[ident]
            self._forget(ident)

    def _forget(self, ident: bytes) -> None:
        self.stuck.pop(ident, None)
        self.queued.forget(ident)
        self.forget(ident)

    def seen(self, ident: bytes, fd: int) -> None:
        """A frame from `ident` arrived on `fd` (ZMQ_SRCFD)."""
        if self.ident_fd.get(ident) != fd:
            # a new identity, or one on another connection: the monitor's pending events
            # first, so that a close reported late cannot forget the identity now on the
            # fd, and the cap counts the new connection
            self.drain()
            if fd not in self.open and fd not in self.closing:
                # its connection is closed: a frame it had queued, read late (a peer's, from
                # before it reconnected; sockcalls.py). Paired with that closed fd, its
                # identity would be forgotten when a new connection reuses the fd.
                return
            self._pair(ident, fd)
        open_ = self.open
        if fd in open_:  # most recently active last: the cap evicts from the front
            del open_[fd]
            open_[fd] = None
        n = self.unproven.get(fd)
        if n is not None:
            if n + 1 >= PROVEN:
                del self.unproven[fd]
            else:
                self.unproven[fd] = n + 1

    def _pair(self, ident: bytes, fd: int) -> None:
        prev = self.fd_ident.get(fd)
        if prev is not None and prev != ident and self.ident_fd.get(prev) == fd:
            del self.ident_fd[prev]  # the fd was reused: prev's connection is gone
            self._forget(prev)
        old = self.ident_fd.get(ident)
        if old is not None and self.fd_ident.get(old) == ident:
            del self.fd_ident[old]  # ROUTER_HANDOVER: the identity moved to a new connection
        self.fd_ident[fd] = ident
        self.ident_fd[ident] = fd

    # ---- replies --------------------------------------------------------------------------
    def may_send(self, ident: bytes, size: int) -> bool:
        """May a reply of `size` bytes (>= TRACK_MIN) be queued for `ident` now?"""
        held = self._prune(ident)
        if held and held + size > self.reply_cap:
            self.dropped += 1
            return False
        queued = self.queued
        if queued.total and queued.total + size > self.total_cap:
            for other in list(queued.frames):  # release what libzmq has sent, then look again
                self._prune(other)
            if queued.total and queued.total + size > self.total_cap:
                self.dropped += 1
                return False
        return True

    def _prune(self, ident: bytes) -> int:
        """Forget the replies to `ident` libzmq has released; the bytes still queued."""
        held = self.queued.held(ident)
        if not held:
            self.stuck.pop(ident, None)
        return held

    def sent(self, ident: bytes, tracker, size: int) -> None:
        if ident not in self.queued.frames:
            self.stuck[ident] = time.monotonic()
        self.queued.add(ident, tracker, size)

    # ---- memory ---------------------------------------------------------------------------
    def report(self, metrics) -> None:
        """Export the counts to NodeMetrics (connections, refused, dropped)."""
        metrics.connections.set(len(self.open))
        if self.refused:
            metrics.connections_refused.inc(self.refused)
            self.refused_total += self.refused
            self.refused = 0
        if self.dropped:
            metrics.replies_dropped.inc(self.dropped)
            self.dropped = 0
        if self.failed:
            for reason, n in self.failed.items():
                metrics.handshakes_failed.labels(reason).inc(n)
            self.failed.clear()

    def tick(self, now: float) -> None:
        """After many closes: give freed heap back to the OS (at most once per TRIM_EVERY)."""
        if self.freed >= TRIM_AFTER and now >= self.next_trim:
            self.freed = 0
            self.next_trim = now + TRIM_EVERY
            if self.trim is not None:
                self.trim(0)

    def close(self) -> None:
        try:
            self.router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
