"""Client: the blocking driver of the client core's plans over one ZeroMQ DEALER per node.

All decisions live in zkv.client.core; this module only sends a try's message and waits for
the reply with that try's rid, or one of the rids of earlier tries the plan still listens to
(`Send.also`, hedged tries), until `Send.soft` (then SLOW) or `Send.until` (then None); other
late replies are read and dropped. A Batch of the shape of an owner read (one message to each
of a few connected nodes) takes `_fanout`, a path without _try_many's per-call bookkeeping:
sequential gets spent 55-126 us over two bare Reads (benchmarks/get_floor.py), 10-20 of them
in that bookkeeping (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import os
import random
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, overload

import zmq

from zkv import sockcalls, wire
from zkv.client.base import Facade
from zkv.client.core import (
    CONNECT_WAIT,
    SLOW,
    UNREACHABLE,
    Batch,
    GetResult,
    Plan,
    Send,
    T,
    public_wid,
    refused,
)
from zkv.errors import InvalidRequest, RequestTimeout, ZkvError
from zkv.wire import RingOk

_PENDING = object()  # a Batch try with no answer yet
# seconds a call still gets when another thread's call took its whole timeout but the lock
# came free right at its end (its plan then times out at once, saying so)
MIN_LEFT = 0.001
MAX_POLLERS = 256  # Pollers kept per client, one per set of nodes a Batch waits on


def _free_dropped(zctx: zmq.Context, socks: dict, watches: dict, pid: int) -> None:
    """A Client collected unclosed (weakref.finalize): free its sockets and ZeroMQ threads
    (not in a forked child: they are the parent's)."""
    if zctx.closed or os.getpid() != pid:
        return
    warnings.warn("unclosed zkv.Client: close it (client.close(), or with)", ResourceWarning,
                  stacklevel=1)
    for w in watches.values():
        w.close()
    for s in socks.values():
        s.close(0)
    zctx.destroy(0)


class Client(Facade):
    """Blocking client. Thread-safe: threads sharing one take turns, a call at a time (one
    per thread, or an AsyncClient, keeps more in flight)."""

    def __init__(self, nodes: Sequence[str] | str = ("tcp://127.0.0.1:7001",), timeout: float = 2.0,
                 *, max_value_size: int = wire.DEFAULT_MAX_VALUE, routing: str = "token",
                 rng: random.Random | None = None, keys=None, owner_reads: bool = True) -> None:
        super().__init__(nodes, timeout, max_value_size, routing, rng, keys, owner_reads)
        self._zctx = zmq.Context()
        self._zctx.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:7001 as well as IPv4
        self._socks: dict[str, zmq.Socket] = {}
        self._pollers: dict[tuple[str, ...], zmq.Poller] = {}  # a Batch's sockets -> Poller
        # one call at a time: two threads' tries on one socket read each other's replies
        # (8 threads updating through one client: a third timed out, "tried 0 node(s)");
        # reentrant, as update()'s fn may call the client
        self._lock = threading.RLock()
        # dropped without close(): its sockets closed and its context ended when it is
        # collected. Not in __del__: a client in a reference cycle went with its context and
        # sockets, whose weak references the collector clears first, so the context's own
        # __del__ found no socket to close and waited for them for ever (an outside run: a
        # gc.collect() that never returned). The finalizer holds them, out of the cycle.
        self._dropped = weakref.finalize(self, _free_dropped, self._zctx, self._socks,
                                         self._watch, os.getpid())
        self._dropped.atexit = False

    # ---- public API (DESIGN.md §2.1) -------------------------------------------------------
    def get(self, key: bytes, r: int | str | None = None, *, namespace: str = "default",
            pr: int | str | None = None) -> GetResult:
        """`pr`: of the R answers, this many must be the key's owners' own (README, "Strict
        quorums"); with pr + pw > N a read meets every write acknowledged at pw."""
        return self._run(self.core.get(key, r, namespace=namespace, pr=pr))

    def put(self, key: bytes, value: bytes, context: bytes | None = None,
            w: int | str | None = None,
            *, namespace: str = "default", ttl: int | None = None, pw: int | str | None = None,
            write_id: bytes | None = None) -> bytes:
        """`ttl`: seconds the value is served (an lww namespace with a ttl at least as long;
        README, "Expiry"). `pw`: of the W acknowledgements, this many must be the key's
        owners' own (README, "Strict quorums"). `write_id` (1-32 bytes, e.g. os.urandom(16);
        None: a fresh one): give a retry of a put that raised the same one, and the same
        value and context, and it is the same write (README, "Retrying a write")."""
        return self._run(self.core.put(key, value, context, w, namespace=namespace, ttl=ttl,
                                       pw=pw, wid=public_wid(write_id)))

    def delete(self, key: bytes, context: bytes | None = None, w: int | str | None = None, *,
               namespace: str = "default", pw: int | str | None = None,
               write_id: bytes | None = None) -> bytes:
        """Write a tombstone over `context` (None: the key's current one, read first; b"": a
        blind delete, leaving every value as a sibling); returns its context. `write_id`: as
        put's."""
        return self._run(self.core.delete(key, context, w, namespace=namespace, pw=pw,
                                          wid=public_wid(write_id)))

    @overload
    def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: Literal[False] = ..., pr: int | str | None = ...
                 ) -> list[GetResult]: ...

    @overload
    def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: bool = ..., pr: int | str | None = ...
                 ) -> list[GetResult | ZkvError]: ...

    def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *,
                 namespace: str = "default", return_exceptions: bool = False,
                 pr: int | str | None = None) -> list[Any]:
        """get() of every key, pipelined: up to MANY_WINDOW in flight, the requests to one
        node in one frame. Results in order; the first failure (in order) is raised once
        every get has finished, or left in its place with `return_exceptions`."""
        return self._run(self.core.get_many(keys, r, namespace=namespace,
                                            return_exceptions=return_exceptions, pr=pr))

    @overload
    def put_many(self, items: Sequence[tuple], w: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: Literal[False] = ...,
                 ttl: int | Sequence[int | None] | None = ..., pw: int | str | None = ...,
                 write_ids: Sequence[bytes] | None = ...) -> list[bytes]: ...

    @overload
    def put_many(self, items: Sequence[tuple], w: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: bool = ...,
                 ttl: int | Sequence[int | None] | None = ..., pw: int | str | None = ...,
                 write_ids: Sequence[bytes] | None = ...) -> list[bytes | ZkvError]: ...

    def put_many(self, items: Sequence[tuple], w: int | str | None = None, *,
                 namespace: str = "default", return_exceptions: bool = False,
                 ttl: int | Sequence[int | None] | None = None, pw: int | str | None = None,
                 write_ids: Sequence[bytes] | None = None) -> list[Any]:
        """put() of every (key, value) or (key, value, context) item, pipelined as get_many
        (each with `ttl` if given: one for all, or one per item; `write_ids`: one per item,
        as put's `write_id`); returns the new contexts in order. Every item is checked
        before a byte is sent."""
        return self._run(self.core.put_many(items, w, namespace=namespace,
                                            return_exceptions=return_exceptions, ttl=ttl,
                                            pw=pw, write_ids=write_ids))

    @overload
    def delete_many(self, items: Sequence, w: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: Literal[False] = ..., pw: int | str | None = ...
                 ) -> list[bytes]: ...

    @overload
    def delete_many(self, items: Sequence, w: int | str | None = None, *, namespace: str = ...,
                 return_exceptions: bool = ..., pw: int | str | None = ...
                 ) -> list[bytes | ZkvError]: ...

    def delete_many(self, items: Sequence, w: int | str | None = None, *,
                    namespace: str = "default", return_exceptions: bool = False,
                    pw: int | str | None = None) -> list[Any]:
        """delete() of every key or (key, context) item, pipelined as get_many."""
        return self._run(self.core.delete_many(items, w, namespace=namespace,
                                               return_exceptions=return_exceptions, pw=pw))

    def update(self, key: bytes, fn: Callable[[list[bytes]], bytes], r: int | str | None = None,
               w: int | str | None = None, retries: int = 3, *, namespace: str = "default",
               ttl: int | None = None, pr: int | str | None = None, pw: int | str | None = None
               ) -> bytes:
        """Read, let fn merge the siblings into one value, write it back with the context
        (and `ttl`, as put's; `pr`/`pw`, as get's and put's); retried (re-reading) on a
        missed quorum or a timeout. Returns the new context."""
        return self._run(self.core.update(key, fn, r, w, retries, namespace=namespace,
                                          ttl=ttl, pr=pr, pw=pw))

    def namespace_create(self, name: str, n: int | None = None, r: int | str | None = None,
                         w: int | str | None = None, conflicts: str = "siblings",
                         ttl: int = 0, pr: int | str = 0, pw: int | str = 0) -> dict:
        """Create a namespace (needs an admin key when the cluster has keys); returns its
        settings. Same name and settings again: the existing one; other settings: refused.
        `ttl`: seconds each value lives after its write (lww namespaces only; 0: for ever);
        `pr`/`pw`: its default primary quorums (0: none; README, "Strict quorums")."""
        return self._run(self.core.namespace_create(name, n, r, w, conflicts, ttl, pr, pw))

    def namespace_alter(self, name: str, r: int | str | None = None,
                        w: int | str | None = None, ttl: int | None = None,
                        pr: int | str | None = None, pw: int | str | None = None) -> dict:
        """Change a namespace's default r, w, pr, pw and ttl (None: as it is) on every node
        (admin); returns its new settings (ClientCore.namespace_alter)."""
        return self._run(self.core.namespace_alter(name, r, w, ttl, pr, pw))

    def namespace_drop(self, name: str) -> dict:
        """Drop a namespace and every key of it on every node (admin); the name may be
        created again, empty (ClientCore.namespace_drop)."""
        return self._run(self.core.namespace_drop(name))

    def namespace_truncate(self, name: str) -> dict:
        """Empty a namespace on every node, keeping its settings (admin); returns them
        (ClientCore.namespace_drop)."""
        return self._run(self.core.namespace_drop(name, truncate=True))

    def keys(self, namespace: str = "default", prefix: bytes = b"",
             page: int = 1000, r: int | str = 1) -> Iterator[bytes]:
        """The live keys of `namespace` beginning with `prefix`, in no useful order, fetched
        `page` at a time from `r` owners of each ring partition (ClientCore.list_keys).
        Unavailable if no owner of some partition can list it, QuorumError if fewer than r."""
        listing = self.core.list_keys(namespace, prefix, page, r)
        while (plan := listing.next_page()) is not None:
            yield from self._run(plan)

    def items(self, namespace: str = "default", prefix: bytes = b"", page: int = 1000,
              r: int | str | None = None, expiry: bool = False) -> Iterator[tuple]:
        """(key, live values) of every live key of `namespace` beginning with `prefix`, in
        no useful order: each partition's copies on `r` of its owners (None: the namespace's
        R) merged as a get at R merges them (ClientCore.list_items; `expiry`: (key, values,
        the wall time in ms it stops being served, 0: never)). Unavailable if no owner
        of some partition can list it, QuorumError if fewer than r."""
        listing = self.core.list_items(namespace, prefix, page, r, expiry)
        while (plan := listing.next_page()) is not None:
            yield from self._run(plan)

    def namespaces(self) -> list[dict]:
        """Every namespace: [{"name", "n", "r", "w", "conflicts", "created", "creator"}]."""
        return self._run(self.core.namespaces_plan())

    def status(self, node: str | None = None) -> dict:
        """The status document of `node` (endpoint or member id; default: first to answer)."""
        return self._run(self.core.status(node))

    def ring_info(self, node: str | None = None) -> RingOk:
        """The ring (members, Q, N, R, W, down) as `node` (default: any member) sees it now."""
        return self._run(self.core.ring_info(node))

    def cluster(self, action: str, node_id: str = "", other: str = "",
                node: str | None = None) -> dict:
        """A membership change or query (leave, replace, force-remove, commit, plan,
        auto_commit); returns the plan after it. See ClientCore.cluster."""
        return self._run(self.core.cluster(action, node_id, other, node))

    def snapshot(self, name: str = "", node: str | None = None,
                 action: wire.SnapshotAction = "take") -> dict:
        """`node`'s snapshots: "take" hard-links its stores as they are now under
        DATA_DIR/snapshots/`name` on its machine and returns the manifest; "list", "remove"
        (ClientCore.snapshot)."""
        return self._run(self.core.snapshot(name, node, action))

    def config(self, changes: dict[str, object] | None = None, node: str | None = None,
               save: bool = False) -> dict:
        """`node`'s settings, after changing the runtime ones `changes` names while it runs
        (`save`: and written into its --config file; ClientCore.config): {"settings",
        "runtime", "changed"[, "saved"]}."""
        return self._run(self.core.config(changes, node, save))

    def repair(self, partition: int = -1, node: str | None = None) -> dict:
        """Run anti-entropy now on `node` for `partition` (-1: all it replicates): roots
        compared, what differs exchanged; returns what it started (ClientCore.repair)."""
        return self._run(self.core.repair(partition, node))

    def close(self) -> None:
        if self._forked:  # (the sockets are the parent's: closing them here is not ours)
            self._socks.clear()
            self._pollers.clear()
            return
        with self._lock:  # (not under a call another thread is making)
            self._close()

    def _close(self) -> None:
        self._dropped.detach()
        self._close_watches()
        for s in self._socks.values():
            s.close(0)
        self._socks.clear()
        self._pollers.clear()
        self._zctx.destroy(0)  # (every socket it still has, at once: term() waits for them)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- driver -----------------------------------------------------------------------------
    def _run(self, plan: Plan[T]) -> T:
        core = self.core
        if self._forked:
            plan.close()
            raise self._forked_error()
        timeout = self._timeout  # (not core.timeout: a waiting call's share of it, then; read
        # here it made the shortened value the next ones' and shrank to 1 ms: an outside run)
        if not self._lock.acquire(False):  # another thread's call: its turn first, within
            started = core.clock()          # this call's timeout, which bounds the whole call
            if not self._lock.acquire(timeout=timeout):
                plan.close()
                raise RequestTimeout(
                    f"no answer within {timeout}s: this Client's calls from other threads "
                    f"took all of it (a Client makes one call at a time: give each thread its "
                    f"own, or share an AsyncClient)")
            core.timeout = max(timeout - (core.clock() - started), MIN_LEFT)
        else:
            core.timeout = timeout
        try:
            if self._zctx.closed:
                raise InvalidRequest("this Client is closed")
            send = next(plan)
            while True:
                send = plan.send(self._try(send) if type(send) is Send else self._step(send))
        except StopIteration as done:
            return done.value
        finally:
            plan.close()
            core.timeout = timeout
            self._lock.release()

    def _sock(self, ep: str) -> zmq.Socket:
        s = self._zctx.socket(zmq.DEALER)
        try:
            self._prepare(s, ep)
            s.connect(ep)
        except zmq.ZMQError as exc:  # (an endpoint libzmq refuses: the socket is closed, or
            s.close(0)                # the context's term() at close() waited for it forever)
            raise InvalidRequest(f"cannot connect to {ep!r}: {exc}") from None
        self._socks[ep] = s
        return s

    def _try(self, send: Send):
        clock = self.core.clock
        s = self._socks.get(send.endpoint)
        if s is None:
            s = self._sock(send.endpoint)
        if send.msg is None:  # only listen to earlier (hedged) tries
            return self._wait_hedged(send, s)
        payload = wire.encode_one(send.msg)
        if sockcalls.send(s, payload):  # 0, the common case: connected, went out at once
            # writable only once connected (IMMEDIATE): wait briefly for the TCP connection; a
            # dead node (refused/reset) fails over without waiting for an answer
            wait = min(send.until - clock(), CONNECT_WAIT)
            if not s.poll(max(1, int(wait * 1000)), zmq.POLLOUT):
                self._check_refused(send.endpoint)
                return self._answered_meanwhile(send)
            if sockcalls.send(s, payload):
                return self._answered_meanwhile(send)
        rid = send.msg.rid
        if send.also:
            return self._wait_hedged(send, s)
        # the common case, one socket to wait on (until the hedge delay, if any): a receive
        # timeout, not a Poller built per call
        end = send.until if send.soft is None else min(send.soft, send.until)
        while True:
            left = end - clock()
            if left <= 0:
                return SLOW if end < send.until else None
            s.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
            try:
                data = s.recv()
            except zmq.Again:
                continue  # the deadline is checked at the top
            try:
                for reply in wire.decode(data, 1 << 31):
                    if reply.rid == rid or refused(reply):
                        return reply
            except wire.WireError:
                continue

    def _step(self, batch: Batch) -> list:
        """A Batch, with when each answer came told in `batch.arrived`."""
        arrived = batch.arrived = [0.0] * len(batch.sends)
        return (self._fanout(batch.sends, arrived)
                or self._try_many(batch.sends, arrived=arrived))

    def _fanout(self, sends: list[Send], arrived: list[float] | None = None) -> list | None:
        """The Batch of an owner read (one message to each of a few connected nodes, no hedge,
        no earlier try listened to) with less bookkeeping than _try_many's: one frame per
        socket, one answer awaited on each. None, having sent nothing, for any other shape;
        a node found not connected hands the rest to _try_many (what is sent stays sent)."""
        socks = self._socks
        held: list[zmq.Socket] = []
        for x in sends:
            s = socks.get(x.endpoint)
            if s is None or x.msg is None or x.also or x.soft is not None or s in held:
                return None
            held.append(s)
        for i, x in enumerate(sends):
            if sockcalls.send(held[i], wire.encode_one(x.msg)):  # not connected (IMMEDIATE)
                return None if i == 0 else self._try_many(sends, sent=i, arrived=arrived)
        clock = self.core.clock
        results: list = [_PENDING] * len(sends)
        left = len(sends)
        key = tuple(x.endpoint for x in sends)
        poller = self._pollers.get(key)
        if poller is None:
            if len(self._pollers) >= MAX_POLLERS:
                self._pollers.clear()
            poller = self._pollers[key] = zmq.Poller()
            for s in held:
                poller.register(s, zmq.POLLIN)
        end = min(x.until for x in sends)  # (an owner read's tries share one deadline)
        wait_ms = max(0, int((end - clock()) * 1000) + 1)
        while True:
            polled = poller.poll(wait_ms)
            now = clock()  # (when what this poll found came, near enough)
            for sock, _ in polled:
                i = held.index(sock)
                if results[i] is not _PENDING:  # answered: what follows is a late answer
                    while sockcalls.recv(sock) is not None:  # to an earlier call (dropped)
                        pass
                    continue
                rid = sends[i].msg.rid
                while (got := sockcalls.recv(sock)) is not None:  # up to this try's answer
                    try:
                        replies = wire.decode(got[0][0], 1 << 31)
                    except wire.WireError:
                        continue
                    for reply in replies:
                        if reply.rid == rid or refused(reply):
                            results[i] = reply
                            if arrived is not None:
                                arrived[i] = now
                            left -= 1
                            break
                    if results[i] is not _PENDING:
                        break
            if not left:
                return results
            now = clock()
            if now >= end:
                return [None if x is _PENDING else x for x in results]
            wait_ms = int((end - now) * 1000) + 1

    def _try_many(self, sends: list[Send], sent: int = 0,
                  arrived: list[float] | None = None) -> list:
        """A Batch: every message out (one frame per node; the first `sent` sends are out
        already), then every answer collected. What has arrived is always read before a
        deadline is called missed: a connection wait for one node can outlast another try's
        hedge delay while its answer sits in the socket."""
        clock = self.core.clock
        results: list = [_PENDING] * len(sends)
        left = len(sends)
        by_rid: dict[int, int] = {}  # rid (this try's or an earlier hedged one's) -> index
        socks: dict[str, zmq.Socket] = {}
        out: dict[str, list] = {}
        for i, send in enumerate(sends):
            ep = send.endpoint
            if ep not in socks:
                socks[ep] = self._socks.get(ep) or self._sock(ep)
            if send.msg is not None:
                by_rid[send.msg.rid] = i
                if i >= sent:
                    out.setdefault(ep, []).append(send.msg)
            for other, rid in send.also:
                by_rid[rid] = i
                if other not in socks and other in self._socks:
                    socks[other] = self._socks[other]
        ends = [x.until if x.soft is None else min(x.soft, x.until) for x in sends]
        unreachable: set[int] = set()  # not connected: UNREACHABLE, unless `also` answers
        unsent: list[tuple[str, list, list[bytes]]] = []
        for ep, msgs in out.items():  # every node connected goes first: their answers come
            frames = wire.frames(msgs, wire.CLIENT_FRAME)  # back during the waits below
            if sockcalls.send(socks[ep], frames[0]):  # not connected yet
                unsent.append((ep, msgs, frames))
                continue
            for frame in frames[1:]:
                sockcalls.send(socks[ep], frame)  # a full queue: those requests time out
        for ep, msgs, frames in unsent:  # wait briefly for each, as _try
            s = socks[ep]
            wait = min(min(x.until for x in sends if x.endpoint == ep) - clock(), CONNECT_WAIT)
            if not s.poll(max(1, int(wait * 1000)), zmq.POLLOUT) or sockcalls.send(s, frames[0]):
                self._check_refused(ep)
                for msg in msgs:
                    i = by_rid[msg.rid]
                    unreachable.add(i)
                    ends[i] = 0.0  # settled by the first read below
                continue
            for frame in frames[1:]:
                sockcalls.send(s, frame)
        # per socket, the tries whose answer may come on it: once none of them waits, the
        # socket is not read again (a last receive finding it empty costs two system calls
        # in libzmq; zmq_poll sees anything that arrives later)
        expect: dict[zmq.Socket, list[int]] = {s: [] for s in socks.values()}
        for i, send in enumerate(sends):
            expect[socks[send.endpoint]].append(i)
            for other, _ in send.also:
                if other in socks and socks[other] is not socks[send.endpoint]:
                    expect[socks[other]].append(i)
        key = tuple(socks)
        poller = self._pollers.get(key)
        if poller is None:
            if len(self._pollers) >= MAX_POLLERS:
                self._pollers.clear()
            poller = self._pollers[key] = zmq.Poller()
            for s in socks.values():
                poller.register(s, zmq.POLLIN)
        # the first poll waits for the nearest deadline (any answer ends it sooner); only what
        # has arrived when a try is already settled (not connected: its end is 0)
        wait_ms = 0 if unreachable else max(0, int((min(ends) - clock()) * 1000) + 1)
        while left:
            polled = poller.poll(wait_ms)
            came = clock()  # (when what this poll found came, near enough)
            for sock, _ in polled:
                while True:
                    got = sockcalls.recv(sock)  # None once drained (no exception per poll)
                    if got is None:
                        break
                    try:
                        replies = wire.decode(got[0][0], 1 << 31)
                    except wire.WireError:
                        continue
                    for reply in replies:
                        if refused(reply):  # every request in flight to that node
                            ep = next(e for e, x in socks.items() if x is sock)
                            hit = [i for i, x in enumerate(sends) if x.endpoint == ep]
                        else:
                            i = by_rid.get(reply.rid, -1)
                            hit = [i] if i >= 0 else []
                        for i in hit:
                            if results[i] is _PENDING:
                                results[i] = reply
                                if arrived is not None:
                                    arrived[i] = came
                                left -= 1
                    if all(results[i] is not _PENDING for i in expect[sock]):
                        break
            now = clock()
            nearest = math.inf
            for i, end in enumerate(ends):
                if results[i] is _PENDING:
                    if now >= end:
                        results[i] = (UNREACHABLE if i in unreachable else
                                      SLOW if end < sends[i].until else None)
                        left -= 1
                    elif end < nearest:
                        nearest = end
            if left:
                wait_ms = int((nearest - now) * 1000) + 1
        return results

    def _answered_meanwhile(self, send: Send):
        """After a failed connect wait: an answer an earlier (hedged) try got meanwhile, or
        UNREACHABLE."""
        if send.also:
            s = self._socks.get(send.also[-1][0])
            if s is not None:
                got = self._wait_hedged(Send(send.also[-1][0], None, self.core.clock(), None,
                                             send.also), s)
                if got is not None:
                    return got
        return UNREACHABLE

    def _wait_hedged(self, send: Send, s: zmq.Socket):
        """Wait on this try's socket and those of the earlier tries still listened to."""
        clock = self.core.clock
        rids = {rid for _, rid in send.also}
        if send.msg is not None:
            rids.add(send.msg.rid)
        poller = zmq.Poller()
        poller.register(s, zmq.POLLIN)
        for ep, _ in send.also:
            other = self._socks.get(ep)
            if other is not None and other is not s:
                poller.register(other, zmq.POLLIN)
        end = send.until if send.soft is None else min(send.soft, send.until)
        while True:  # polls at least once (a zero wait: only what has arrived)
            left = end - clock()
            for sock, _ in poller.poll(int(left * 1000) + 1 if left > 0 else 0):
                try:
                    data = sock.recv(zmq.NOBLOCK)
                    for reply in wire.decode(data, 1 << 31):
                        if reply.rid in rids or refused(reply):
                            return reply
                except (zmq.Again, wire.WireError):
                    continue
            if clock() >= end:
                return SLOW if end < send.until else None
