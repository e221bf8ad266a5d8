"""AsyncClient: the asyncio driver of the client core's plans, many requests in flight.

One DEALER per node, read by a callback on the event loop (`loop.add_reader` on the
socket's ZMQ_FD) that resolves the future waiting on each reply's rid (a late reply to an
abandoned try finds no future and is dropped; a hedged try's future waits on the rids of the
earlier tries it lists in `Send.also` too). Plain sockets with non-blocking sends, not
zmq.asyncio: its per-send futures and event bookkeeping cost more client CPU per operation
than the rest of the driver (issue 12; see benchmarks/RESULTS.md). ZMQ_FD is edge-triggered,
so the reader drains until nothing is queued, and runs again after every send
(a send can consume the edge of a reply that arrived meanwhile). Everything asked of one
node in one event-loop iteration goes out as one frame. All decisions live in zkv.client.core.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import random
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
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

# One loop timer for every try's deadline, firing at most every TIMER_GRAIN seconds: a try
# that is not answered by its deadline hears so at most that late. A loop timer per try
# (call_later + cancel) cost ~30% of the client's CPU at 64 requests in flight: asyncio's
# timer heap compares TimerHandles in Python. Deadlines are >= 50 ms (the per-try budget).
# Most tries' deadlines come in the order they are set (the same budget from a later start):
# those go to a FIFO, O(1) each way; only one earlier than the FIFO's last goes to a heap
# (every try's entry is popped once due, answered or not: the heap alone, ~1.5 s of tries
# deep, cost 5% of the client's CPU at 64 in flight).
TIMER_GRAIN = 0.005


class _Batch:
    """The answers of one Batch step, and the future resolved once each has one."""

    __slots__ = ("results", "left", "fut", "arrived", "clock")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int,
                 step: Batch | None = None, clock: Callable[[], float] | None = None) -> None:
        self.results: list = [_PENDING] * n
        self.left = n
        self.fut = loop.create_future()
        # when each answer came (the core's clock), told to the plan in `step.arrived`
        self.arrived: list[float] | None = None
        self.clock = clock
        if step is not None and clock is not None:
            self.arrived = step.arrived = [0.0] * n


class _Slot:
    """One try of a Batch, standing where _try puts a future (the reply reader, the refusal
    path and the deadline heap call done() and set_result() on either)."""

    __slots__ = ("batch", "i")

    def __init__(self, batch: _Batch, i: int) -> None:
        self.batch = batch
        self.i = i

    def done(self) -> bool:
        return self.batch.results[self.i] is not _PENDING

    def set_result(self, result) -> None:
        batch = self.batch
        if batch.results[self.i] is _PENDING:
            batch.results[self.i] = result
            if batch.arrived is not None:
                batch.arrived[self.i] = batch.clock()  # type: ignore[misc]
            batch.left -= 1
            if not batch.left and not batch.fut.done():
                batch.fut.set_result(None)


_PENDING = object()


def _settle(fut: asyncio.Future | _Slot, result) -> None:
    """Resolve `fut` (a future, or a Batch's slot) with `result` unless it is done. One of an
    event loop since closed is dropped: nobody can wait for it any more, and its set_result
    raised "Event loop is closed" in the deadline timer or the reply reader, which left the
    deadlines after it unarmed: a call on the next loop hung for good (an outside run)."""
    if fut.done():
        return
    try:
        fut.set_result(result)
    except RuntimeError:
        loop = fut.batch.fut.get_loop() if isinstance(fut, _Slot) else fut.get_loop()
        if not loop.is_closed():
            raise
# requests one connection carries at once: a node refuses a connection's 257th request in
# flight as "busy, retry" (node.core.MAX_INFLIGHT), which failed 2,018 of 3,000 puts gathered
# at once on one AsyncClient; past it a try waits for a slot (within its own time budget),
# below it so that a try given up here while the node still works on it leaves room
CONN_WINDOW = 224


class _Window:
    """The tries in flight on one connection, and the ones waiting for a slot (a slot freed
    goes to the first waiter still waiting)."""

    __slots__ = ("n", "waiters")

    def __init__(self) -> None:
        self.n = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if not w.done() and not w.get_loop().is_closed():
                w.set_result(True)  # (the slot passes to it: n stays)
                return
        self.n -= 1


def _expire_weakly(ref: weakref.ref, loop: asyncio.AbstractEventLoop) -> None:
    """The deadline timer's callback: the loop (and a timer left pending on a loop closed
    since) holds the client only weakly, so no cycle client -> timer -> client leaves its
    context and sockets to the cycle collector, whose order of finalizers can run the
    context's __del__ (term(), waiting for sockets whose weak references it already
    cleared) first: a gc.collect() that never returns."""
    client = ref()
    if client is not None:
        client._expire_due(loop)


def _drain_weakly(ref: weakref.ref, s: zmq.Socket) -> None:
    """A socket's reader callback: the loop holds the client only weakly, so one an
    application drops without close() is collected (AsyncClient.__del__), not kept alive by
    its readers with its sockets and threads for the loop's life."""
    client = ref()
    if client is not None:
        client._drain(s)


class AsyncClient(Facade):
    """asyncio client: the same methods as Client, as coroutines; many requests in flight on
    one socket per node (replies are matched by request id)."""

    def __init__(self, nodes: Sequence[str] | str = ("tcp://127.0.0.1:7001",), timeout: float = 2.0,
                 *, max_value_size: int = wire.DEFAULT_MAX_VALUE, routing: str = "token",
                 rng: random.Random | None = None, keys=None, owner_reads: bool = True) -> None:
        super().__init__(nodes, timeout, max_value_size, routing, rng, keys, owner_reads)
        self._zctx = zmq.Context()
        self._zctx.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:7001 as well as IPv4
        self._socks: dict[str, zmq.Socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the readers are on
        self._waiting: dict[int, asyncio.Future] = {}
        self._sent_to: dict[int, str] = {}  # rid -> endpoint, while its try waits
        self._outbox: dict[str, list] = {}
        self._flush_scheduled = False
        self._connected: set[str] = set()
        self._windows: dict[str, _Window] = {}  # endpoint -> its tries in flight (CONN_WINDOW)
        # (when, seq, future, what it gets then: None = no answer in time, SLOW = hedge now)
        self._deadlines: list[tuple[float, int, asyncio.Future, object]] = []
        self._in_order: collections.deque[tuple[float, int, asyncio.Future, object]] = (
            collections.deque())  # deadlines set in order (when never decreasing)
        self._deadline_seq = itertools.count()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_at = math.inf  # when the timer fires
        self._deadline_loop: asyncio.AbstractEventLoop | None = None
        self._ref = weakref.ref(self)  # (what its readers hold: _drain_weakly)

    def __del__(self) -> None:
        """Dropped without close(): say so (as aiohttp's unclosed session) and free its
        sockets, readers and ZeroMQ threads."""
        zctx = getattr(self, "_zctx", None)
        if zctx is None or zctx.closed or self._forked:
            return
        loop = self._loop
        try:  # (at interpreter exit the warnings machinery itself may be gone)
            warnings.warn(f"unclosed {self!r}: close it (await client.close(), or async with)",
                          ResourceWarning, source=self, stacklevel=1)
            if loop is not None and not loop.is_closed():
                for s in self._socks.values():
                    loop.remove_reader(s.fileno())
            self._close_watches()
            for s in self._socks.values():
                s.close(0)
            zctx.destroy(0)
        except Exception:  # (at interpreter exit, or a loop gone: nothing more to free)
            pass

    # ---- public API (DESIGN.md §2.1) -------------------------------------------------------
    async def get(self, key: bytes, r: int | str | None = None, *, namespace: str = "default",
                  pr: int | str | None = None) -> GetResult:
        """`pr`: as Client.get's."""
        return await self._run(self.core.get(key, r, namespace=namespace, pr=pr))

    async def put(self, key: bytes, value: bytes, context: bytes | None = None,
                  w: int | str | None = None, *, namespace: str = "default",
                  ttl: int | None = None, pw: int | str | None = None,
                  write_id: bytes | None = None) -> bytes:
        """`ttl`: seconds the value is served; `pw`, `write_id`: as Client.put's."""
        return await self._run(self.core.put(key, value, context, w, namespace=namespace,
                                             ttl=ttl, pw=pw, wid=public_wid(write_id)))

    async def delete(self, key: bytes, context: bytes | None = None, w: int | str | None = None, *,
                     namespace: str = "default", pw: int | str | None = None,
                     write_id: bytes | None = None) -> bytes:
        """As Client.delete: None reads the current context first; b"" is a blind delete."""
        return await self._run(self.core.delete(key, context, w, namespace=namespace, pw=pw,
                                                wid=public_wid(write_id)))

    @overload
    async def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *,
                       namespace: str = ...,
                       return_exceptions: Literal[False] = ...,
                       pr: int | str | None = ...,
                       ) -> list[GetResult]: ...

    @overload
    async def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *,
                       namespace: str = ...,
                       return_exceptions: bool = ...,
                       pr: int | str | None = ...,
                       ) -> list[GetResult | ZkvError]: ...

    async def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *,
                       namespace: str = "default", return_exceptions: bool = False,
                       pr: int | str | None = None) -> list[Any]:
        """get() of every key, pipelined: up to MANY_WINDOW in flight, the requests to one
        node in one frame, without a task or future per key. Results in order; the first
        failure (in order) is raised once every get has finished, or left in its place with
        `return_exceptions`."""
        return await self._run(self.core.get_many(keys, r, namespace=namespace,
                                                  return_exceptions=return_exceptions, pr=pr))

    @overload
    async def put_many(self, items: Sequence[tuple], w: int | str | None = None, *,
                       namespace: str = ...,
                       return_exceptions: Literal[False] = ...,
                       ttl: int | Sequence[int | None] | None = ...,
                       pw: int | str | None = ...,
                       write_ids: Sequence[bytes] | None = ...,
                       ) -> list[bytes]: ...

    @overload
    async def put_many(self, items: Sequence[tuple], w: int | str | None = None, *,
                       namespace: str = ...,
                       return_exceptions: bool = ...,
                       ttl: int | Sequence[int | None] | None = ...,
                       pw: int | str | None = ...,
                       write_ids: Sequence[bytes] | None = ...,
                       ) -> list[bytes | ZkvError]: ...

    async def put_many(self, items: Sequence[tuple], w: int | str | None = None, *,
                       namespace: str = "default", return_exceptions: bool = False,
                       ttl: int | Sequence[int | None] | None = None,
                       pw: int | str | None = None,
                       write_ids: Sequence[bytes] | None = None) -> list[Any]:
        """put() of every (key, value) or (key, value, context) item, pipelined as get_many
        (each with `ttl` if given: one for all, or one per item; `write_ids`: one per item,
        as put's `write_id`); returns the new contexts in order. Every item is checked
        before a byte is sent."""
        return await self._run(self.core.put_many(items, w, namespace=namespace,
                                                  return_exceptions=return_exceptions,
                                                  ttl=ttl, pw=pw, write_ids=write_ids))

    @overload
    async def delete_many(self, items: Sequence, w: int | str | None = None, *,
                          namespace: str = ...,
                          return_exceptions: Literal[False] = ...,
                          pw: int | str | None = ...,
                          ) -> list[bytes]: ...

    @overload
    async def delete_many(self, items: Sequence, w: int | str | None = None, *,
                          namespace: str = ...,
                          return_exceptions: bool = ...,
                          pw: int | str | None = ...,
                          ) -> list[bytes | ZkvError]: ...

    async def delete_many(self, items: Sequence, w: int | str | None = None, *,
                          namespace: str = "default", return_exceptions: bool = False,
                          pw: int | str | None = None) -> list[Any]:
        """delete() of every key or (key, context) item, pipelined as get_many."""
        return await self._run(self.core.delete_many(items, w, namespace=namespace,
                                                     return_exceptions=return_exceptions,
                                                     pw=pw))

    async def update(self, key: bytes, fn: Callable[[list[bytes]], bytes],
                     r: int | str | None = None,
                     w: int | str | None = None, retries: int = 3, *,
                     namespace: str = "default", ttl: int | None = None,
                     pr: int | str | None = None, pw: int | str | None = None) -> bytes:
        """Read, let fn merge the siblings into one value, write it back with the context
        (and `ttl`, as put's; `pr`/`pw`, as get's and put's); retried (re-reading) on a
        missed quorum or a timeout. Returns the new context."""
        return await self._run(self.core.update(key, fn, r, w, retries, namespace=namespace,
                                                ttl=ttl, pr=pr, pw=pw))

    async def namespace_create(self, name: str, n: int | None = None, r: int | str | None = None,
                               w: int | str | None = None, conflicts: str = "siblings",
                               ttl: int = 0, pr: int | str = 0, pw: int | str = 0) -> dict:
        """Create a namespace (needs an admin key when the cluster has keys); returns its
        settings. Same name and settings again: the existing one; other settings: refused.
        `ttl`: seconds each value lives after its write (lww namespaces only; 0: for ever);
        `pr`/`pw`: its default primary quorums (0: none; README, "Strict quorums")."""
        return await self._run(self.core.namespace_create(name, n, r, w, conflicts, ttl, pr,
                                                          pw))

    async def namespace_alter(self, name: str, r: int | str | None = None,
                              w: int | str | None = None, ttl: int | None = None,
                              pr: int | str | None = None,
                              pw: int | str | None = None) -> dict:
        """Change a namespace's default r, w, pr, pw and ttl (None: as it is) on every node
        (admin); returns its new settings (ClientCore.namespace_alter)."""
        return await self._run(self.core.namespace_alter(name, r, w, ttl, pr, pw))

    async def namespace_drop(self, name: str) -> dict:
        """Drop a namespace and every key of it on every node (admin); the name may be
        created again, empty (ClientCore.namespace_drop)."""
        return await self._run(self.core.namespace_drop(name))

    async def namespace_truncate(self, name: str) -> dict:
        """Empty a namespace on every node, keeping its settings (admin); returns them
        (ClientCore.namespace_drop)."""
        return await self._run(self.core.namespace_drop(name, truncate=True))

    async def keys(self, namespace: str = "default", prefix: bytes = b"",
                   page: int = 1000, r: int | str = 1) -> AsyncIterator[bytes]:
        """The live keys of `namespace` beginning with `prefix` (`async for`), in no useful
        order, fetched `page` at a time from `r` owners of each ring partition
        (ClientCore.list_keys). Unavailable if no owner of some partition can list it,
        QuorumError if fewer than r."""
        listing = self.core.list_keys(namespace, prefix, page, r)
        while (plan := listing.next_page()) is not None:
            for key in await self._run(plan):
                yield key

    async def items(self, namespace: str = "default", prefix: bytes = b"", page: int = 1000,
                    r: int | str | None = None, expiry: bool = False) -> AsyncIterator[tuple]:
        """(key, live values) of every live key of `namespace` beginning with `prefix`
        (`async for`), in no useful order: each partition's copies on `r` of its owners
        (None: the namespace's R) merged as a get at R merges them (ClientCore.list_items;
        `expiry`: as Client.items). Unavailable if no owner of some partition can list it,
        QuorumError if fewer than r."""
        listing = self.core.list_items(namespace, prefix, page, r, expiry)
        while (plan := listing.next_page()) is not None:
            for item in await self._run(plan):
                yield item

    async def namespaces(self) -> list[dict]:
        """Every namespace: [{"name", "n", "r", "w", "conflicts", "created", "creator"}]."""
        return await self._run(self.core.namespaces_plan())

    async def status(self, node: str | None = None) -> dict:
        """The status document of `node` (endpoint or member id; default: first to answer)."""
        return await self._run(self.core.status(node))

    async def ring_info(self, node: str | None = None) -> RingOk:
        """The ring (members, Q, N, R, W, down) as `node` (default: any member) sees it now."""
        return await self._run(self.core.ring_info(node))

    async def cluster(self, action: str, node_id: str = "", other: str = "",
                      node: str | None = None) -> dict:
        """A membership change or query (leave, replace, force-remove, commit, plan,
        auto_commit); returns the plan after it. See ClientCore.cluster."""
        return await self._run(self.core.cluster(action, node_id, other, node))

    async def snapshot(self, name: str = "", node: str | None = None,
                       action: wire.SnapshotAction = "take") -> dict:
        """`node`'s snapshots: "take" hard-links its stores as they are now under
        DATA_DIR/snapshots/`name` on its machine and returns the manifest; "list", "remove"
        (ClientCore.snapshot)."""
        return await self._run(self.core.snapshot(name, node, action))

    async def config(self, changes: dict[str, object] | None = None,
                     node: str | None = None, save: bool = False) -> dict:
        """`node`'s settings, after changing the runtime ones `changes` names while it runs
        (`save`: and written into its --config file; ClientCore.config): {"settings",
        "runtime", "changed"[, "saved"]}."""
        return await self._run(self.core.config(changes, node, save))

    async def repair(self, partition: int = -1, node: str | None = None) -> dict:
        """Run anti-entropy now on `node` for `partition` (-1: all it replicates): roots
        compared, what differs exchanged; returns what it started (ClientCore.repair)."""
        return await self._run(self.core.repair(partition, node))

    async def close(self) -> None:
        """Close the connections. Calls still waiting (other tasks') fail at once: with
        InvalidRequest if nothing of theirs was sent, as later calls do, else with
        RequestTimeout (a write sent may have been stored; so does a call that was waiting
        for a connection, part of which may have gone out)."""
        if self._forked:  # (the sockets are the parent's: closing them here is not ours)
            self._socks.clear()
            return
        self._fail_waiting()
        if self._loop is not None and not self._loop.is_closed():
            for s in self._socks.values():
                self._loop.remove_reader(s.fileno())
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer, self._deadline_at = None, math.inf
        self._deadlines.clear()
        self._in_order.clear()
        self._windows.clear()
        self._close_watches()
        for s in self._socks.values():
            s.close(0)
        self._socks.clear()
        self._zctx.destroy(0)  # (as the sync client's)

    def _fail_waiting(self) -> None:
        """Every try still waiting fails: close() is about to drop what would have resolved
        it. One waiting for its answer (or its deadline) raises RequestTimeout, as a try that
        got no answer does: it was sent, and a write may have been stored (an outside user's
        500 puts cut off by close() all were, and had raised InvalidRequest, which says
        nothing was sent); one still waiting for a connection slot, never sent, raises
        InvalidRequest."""
        sent: list = list(self._waiting.values())
        sent += [entry[2] for entry in self._deadlines]
        sent += [entry[2] for entry in self._in_order]
        unsent = [fut for window in self._windows.values() for fut in window.waiters]
        for futs, exc in ((unsent, InvalidRequest), (sent, RequestTimeout)):
            for fut in futs:
                if type(fut) is _Slot:
                    fut = fut.batch.fut
                if not fut.done() and not fut.get_loop().is_closed():
                    fut.set_exception(exc(
                        "this AsyncClient was closed while the call waited for "
                        + ("a connection slot (nothing was sent)" if exc is InvalidRequest
                           else "an answer (a write may still have been stored)")))
                    fut.exception()  # (retrieved: a try waiting for a slot never awaits its
                    # answer's future, and asyncio logged "Future exception was never
                    # retrieved" for each: 2,328 traces at one close)
        self._waiting.clear()
        self._sent_to.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- driver -----------------------------------------------------------------------------
    async def _run(self, plan: Plan[T]) -> T:
        try:
            if self._forked:
                raise self._forked_error()
            if self._zctx.closed:
                raise InvalidRequest("this AsyncClient is closed")
            send = next(plan)
            while True:
                send = plan.send(await (self._try(send) if type(send) is Send
                                        else self._try_many(send.sends, send)))
        except StopIteration as done:
            return done.value
        except (zmq.ZMQError, KeyError):
            # (closed by another task while this one was at a socket, or waiting for a
            # connection: close() had emptied the socket table, KeyError: an outside run.
            # Part of the call may have been sent: a timeout, as _fail_waiting says it, so
            # update() counts a write of it as maybe stored)
            if self._zctx.closed:
                raise RequestTimeout("this AsyncClient was closed during the call (a write "
                                     "it had sent may have been stored)") from None
            raise
        finally:
            plan.close()

    def _sock(self, ep: str, loop: asyncio.AbstractEventLoop | None = None) -> zmq.Socket:
        """The DEALER to `ep`, its replies read on `loop` (the running one; the tries pass
        it: asyncio.get_running_loop() makes a getpid(2) system call per call, and every
        socket lookup and enqueue of a request asked it)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or used from another loop since: move readers
            if self._loop is not None and not self._loop.is_closed() and self._loop.is_running():
                raise InvalidRequest("this AsyncClient is in use on another event loop, running "
                                     "in another thread: it serves one loop at a time (make "
                                     "one AsyncClient per loop)")
            for other in self._socks.values():
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.remove_reader(other.fileno())
                loop.add_reader(other.fileno(), _drain_weakly, self._ref, other)
            self._loop = loop
        s = self._socks.get(ep)
        if s is None:
            s = self._zctx.socket(zmq.DEALER)
            try:
                self._prepare(s, ep)
                s.connect(ep)
            except zmq.ZMQError as exc:  # (as the sync client's)
                s.close(0)
                raise InvalidRequest(f"cannot connect to {ep!r}: {exc}") from None
            self._socks[ep] = s
            loop.add_reader(s.fileno(), _drain_weakly, self._ref, s)
        return s

    def _drain(self, s: zmq.Socket) -> None:
        """Every reply waiting on s, each to the future of its rid."""
        waiting = self._waiting
        while True:  # until nothing is queued (which also leaves the fd's edge re-armed)
            got = sockcalls.recv(s)
            if got is None:
                return
            try:
                msgs = wire.decode(got[0][0], 1 << 31)
            except wire.WireError:
                continue
            for reply in msgs:
                if refused(reply):
                    self._refused(s, reply)
                    continue
                fut = waiting.pop(reply.rid, None)
                if fut is not None:
                    _settle(fut, reply)

    def _refused(self, s: zmq.Socket, reply) -> None:
        """The node could not decode a frame of this connection (wire version, size): the
        requests waiting on it get the node's reason (its rids are unreadable, and frames of
        one loop iteration are coalesced, so every request in flight to it fails alike)."""
        ep = next((e for e, x in self._socks.items() if x is s), None)
        for rid, where in list(self._sent_to.items()):
            fut = self._waiting.get(rid) if where == ep else None
            if fut is not None:
                _settle(fut, reply)

    async def _connected_within(self, s: zmq.Socket, wait: float) -> bool:
        """Whether s can send (IMMEDIATE: its TCP connection is up) within `wait` s."""
        end = self.core.clock() + wait
        while True:
            # reading ZMQ_EVENTS resets the socket's edge-triggered fd: answers that arrived
            # meanwhile would wait unread, the reader never called again (gathered puts stood
            # still for 20 s until their deadlines, with their answers in the socket)
            events = sockcalls.events(s)
            if events & zmq.POLLIN:
                self._drain(s)
            if events & zmq.POLLOUT:
                return True
            if self.core.clock() >= end:
                return False
            await asyncio.sleep(0.002)

    async def _try(self, send: Send):
        ep, clock = send.endpoint, self.core.clock
        rid = send.msg.rid if send.msg is not None else None  # None: only listen to `also`
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if rid is not None:
            self._waiting[rid] = fut
            self._sent_to[rid] = ep
        for _, earlier in send.also:  # hedged: an earlier try's answer is as good
            self._waiting[earlier] = fut
        win = None
        reply = None
        waited_from: float | None = None
        try:
            s = self._sock(ep, loop)
            if rid is not None and ep not in self._connected:  # wait briefly for the TCP connection (IMMEDIATE)
                wait = min(send.until - clock(), CONNECT_WAIT)
                if not await self._connected_within(s, wait):
                    self._check_refused(ep)
                    if fut.done():  # an earlier (hedged) try answered meanwhile
                        return fut.result()
                    return UNREACHABLE
                self._connected.add(ep)
            if rid is not None:
                win = self._windows.get(ep)
                if win is None:
                    win = self._windows[ep] = _Window()
                if win.n < CONN_WINDOW:
                    win.n += 1
                else:  # wait for a slot, no longer than this try may take
                    waited_from = clock()
                    slot = loop.create_future()
                    win.waiters.append(slot)
                    self._at(loop, send.until, slot, None)
                    try:
                        got = await slot
                    except asyncio.CancelledError:  # (a slot handed over meanwhile is freed)
                        if not (slot.done() and not slot.cancelled() and slot.result()):
                            win = None
                        raise
                    if not got:
                        win = None  # (no slot taken)
                        return None  # no answer within this try's budget: as a silence
                self._enqueue(ep, send.msg, loop)
            soft = send.soft
            if soft is not None and waited_from is not None:
                # the hedge delay counts from when the request went out, not from when it
                # began to wait for a slot: else every try that queued past it was hedged
                # the moment it was sent, holding slots on two or three nodes at once
                soft += clock() - waited_from
            if soft is not None and soft < send.until:
                self._at(loop, soft, fut, SLOW)  # then the plan asks another node too
            else:
                self._at(loop, send.until, fut, None)  # no answer within this try's budget
            reply = await fut
            if reply is None:
                if rid is not None:  # (not after a pause, which listens to nothing)
                    self._connected.discard(ep)  # re-check the connection before the next try
            return reply
        finally:
            if win is not None:
                if reply is SLOW:  # still in flight at the node (the plan hedges): its slot
                    # is held until this try's end, or the node sees more than its cap from
                    # this connection and answers "busy" (CI, under load: 89 of 3,000 puts)
                    loop.call_later(max(0.0, send.until - clock()), win.release)
                else:
                    win.release()
            if rid is not None:
                self._waiting.pop(rid, None)
                self._sent_to.pop(rid, None)
            for _, earlier in send.also:
                if self._waiting.get(earlier) is fut:
                    del self._waiting[earlier]

    async def _try_many(self, sends: list[Send], step: Batch | None = None) -> list:
        """A Batch: every message through the outbox (one frame per node), each answer to
        its slot; one future for the whole step, resolved once every slot has its answer.
        Every rid is listened for before any wait, so an answer to an earlier (hedged) try
        that arrives during a connection wait is not lost."""
        clock = self.core.clock
        loop = asyncio.get_running_loop()
        if loop is self._loop:  # the common shape (an owner read, a get_many step): every
            connected = self._connected  # node connected, no hedge, no earlier try heard
            for send in sends:
                if send.msg is None or send.also or send.soft is not None \
                        or send.endpoint not in connected:
                    break
            else:
                return await self._fanout(sends, loop, step)
        batch = _Batch(loop, len(sends), step, clock)
        waiting, sent_to = self._waiting, self._sent_to
        rids: list[int] = []
        slots = [_Slot(batch, i) for i in range(len(sends))]
        try:
            for slot, send in zip(slots, sends, strict=True):
                for _, earlier in send.also:
                    waiting[earlier] = slot  # type: ignore[assignment]
                    rids.append(earlier)
                if send.msg is not None:
                    waiting[send.msg.rid] = slot  # type: ignore[assignment]
                    sent_to[send.msg.rid] = send.endpoint
                    rids.append(send.msg.rid)
            # the nodes whose TCP connection (IMMEDIATE) is not known to be up are waited for
            # together and briefly, as in _try; everything else goes out first, so its answers
            # come back during that wait (which can last up to the tries' deadline: sent
            # after it, they would be called missed). Each node's messages are enqueued in
            # one go: a wait between two enqueues would split its frame in two.
            fresh = {send.endpoint: send.until for send in reversed(sends)
                     if send.msg is not None and send.endpoint not in self._connected}
            later = [send.msg is not None and send.endpoint in fresh for send in sends]
            for slot, send, wait in zip(slots, sends, later, strict=True):
                if not wait:
                    self._start(loop, send, slot)
            for ep in fresh:
                self._sock(ep, loop)
            end = min(min(fresh.values(), default=0.0), clock() + CONNECT_WAIT)
            while fresh:
                for ep in [e for e in fresh if sockcalls.events(self._socks[e]) & zmq.POLLOUT]:
                    del fresh[ep]
                    self._connected.add(ep)
                if not fresh or clock() >= end:
                    break
                await asyncio.sleep(0.002)
            for ep in fresh:
                self._check_refused(ep)
            for slot, send, wait in zip(slots, sends, later, strict=True):
                if not wait:
                    continue
                if send.endpoint in fresh:
                    slot.set_result(UNREACHABLE)  # (unless an earlier try answered meanwhile)
                else:
                    self._start(loop, send, slot)
            if batch.left:
                await batch.fut
            return self._heard(sends, batch.results)
        finally:
            for rid in rids:
                waiting.pop(rid, None)
                sent_to.pop(rid, None)

    def _heard(self, sends: list[Send], results: list) -> list:
        """A Batch's answers, once all are in; a node silent to its try is re-checked for its
        connection before the next try to it."""
        for i, send in enumerate(sends):
            if results[i] is None:
                self._connected.discard(send.endpoint)
        return results

    def _start(self, loop: asyncio.AbstractEventLoop, send: Send, slot: _Slot) -> None:
        """One try of a Batch under way: its message out (if any) and its deadline set."""
        self._sock(send.endpoint, loop)
        if send.msg is not None:
            self._enqueue(send.endpoint, send.msg, loop)
        if send.soft is not None and send.soft < send.until:
            self._at(loop, send.soft, slot, SLOW)  # type: ignore[arg-type]
        else:
            self._at(loop, send.until, slot, None)  # type: ignore[arg-type]

    async def _fanout(self, sends: list[Send], loop: asyncio.AbstractEventLoop,
                      step: Batch | None = None) -> list:
        """_try_many for a Batch whose nodes are all connected (their sockets read on `loop`),
        with no hedge and no earlier try listened to: no connection wait, so none of its
        bookkeeping (_try_many was ~18% of the client's time under cProfile at 64 in flight,
        mostly that)."""
        batch = _Batch(loop, len(sends), step, self.core.clock)
        waiting, sent_to, enqueue, at = self._waiting, self._sent_to, self._enqueue, self._at
        try:
            for i, send in enumerate(sends):
                slot = _Slot(batch, i)
                rid, ep = send.msg.rid, send.endpoint
                waiting[rid] = slot  # type: ignore[assignment]
                sent_to[rid] = ep
                enqueue(ep, send.msg, loop)
                at(loop, send.until, slot, None)  # type: ignore[arg-type]
            if batch.left:
                await batch.fut
            return self._heard(sends, batch.results)
        finally:
            for send in sends:
                rid = send.msg.rid
                waiting.pop(rid, None)
                sent_to.pop(rid, None)

    def _at(self, loop: asyncio.AbstractEventLoop, when: float, fut: asyncio.Future,
            result) -> None:
        """Resolve `fut` with `result` at `when` (core clock) unless it is done by then."""
        fifo = self._in_order
        if not fifo or when >= fifo[-1][0]:
            fifo.append((when, 0, fut, result))
        else:
            heapq.heappush(self._deadlines, (when, next(self._deadline_seq), fut, result))
        if when < self._deadline_at - TIMER_GRAIN or loop is not self._deadline_loop:
            self._arm(loop, when)  # (the timer of another loop, since closed, never fires)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_at, self._deadline_loop = when, loop
        self._deadline_timer = loop.call_later(max(0.0, when - self.core.clock()),
                                               _expire_weakly, self._ref, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._deadline_timer, self._deadline_at = None, math.inf
        now, heap, fifo = self.core.clock(), self._deadlines, self._in_order
        while fifo and fifo[0][0] <= now:
            _, _, fut, result = fifo.popleft()  # done ones (answered) are just dropped
            _settle(fut, result)
        while heap and heap[0][0] <= now:
            _, _, fut, result = heapq.heappop(heap)
            _settle(fut, result)
        nxt = min(heap[0][0] if heap else math.inf, fifo[0][0] if fifo else math.inf)
        if nxt < math.inf:
            self._arm(loop, max(nxt, now + TIMER_GRAIN))

    def _enqueue(self, ep: str, msg, loop: asyncio.AbstractEventLoop) -> None:
        """Coalesce: everything asked of one node in one event-loop iteration goes out as one
        frame (the node answers a frame's requests in one frame too)."""
        box = self._outbox.get(ep)
        if box is None:
            box = self._outbox[ep] = []
        box.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._outbox = self._outbox, {}
        for ep, msgs in out.items():
            s = self._socks.get(ep)  # (made by the try that queued them; gone: closed since)
            if s is None:
                continue
            for frame in wire.frames(msgs, wire.CLIENT_FRAME):
                # a full queue or a connection gone: those requests time out
                sockcalls.send(s, frame)
            self._drain(s)  # the send may have taken the edge of a reply already there
