"""Client and AsyncClient: the application's way in (DESIGN.md §2.1), token-aware with failover.

Both learn the ring from any node (RingInfo), compute each key's preference list locally
with the same Cython ring the nodes use, and send the request straight to an owner, so no
forwarding hop is paid. If that node does not answer within the per-try budget (half the
call's timeout, at most 1.5 s) the request moves on to the next owner, then to any other
member: a dead or paused node costs a retry, not an error. Replies are matched to requests
by id, so a late answer from an abandoned try is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio

from zkv import wire
from zkv._core.ring import Ring
from zkv.errors import InvalidRequest, QuorumError, RequestTimeout, Unavailable, ZkvError
from zkv.wire import Delete, Error, Get, GetOk, Put, PutOk, RingInfo, RingOk, Status

RING_REFRESH = 5.0  # seconds between ring refreshes while things go well
SUSPECT_FOR = 3.0  # seconds a node that missed a try is tried last
CONNECT_WAIT = 0.25  # seconds to wait for a TCP connection to a node before moving on


class GetResult:
    """What a get saw: every live sibling and the causal context covering them."""

    __slots__ = ("values", "context")

    def __init__(self, values: list[bytes], context: bytes) -> None:
        self.values = values
        self.context = context

    @property
    def found(self) -> bool:
        return bool(self.values)

    def __repr__(self) -> str:
        return f"GetResult(values={self.values!r}, context=<{len(self.context)} bytes>)"


def _error(msg: Error) -> ZkvError:
    if msg.code == wire.E_INVALID:
        return InvalidRequest(msg.message)
    if msg.code == wire.E_QUORUM:
        return QuorumError(msg.message, msg.required, msg.acked)
    if msg.code == wire.E_UNAVAILABLE:
        return Unavailable(msg.message)
    if msg.code == wire.E_TIMEOUT:
        return RequestTimeout(msg.message)
    return ZkvError(msg.message)


def _check_endpoints(nodes) -> list[str]:
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(nodes)
    if not nodes:
        raise InvalidRequest("at least one node endpoint is needed")
    for ep in nodes:
        if not isinstance(ep, str) or not ep.startswith("tcp://"):
            raise InvalidRequest(f"node endpoint must look like tcp://HOST:PORT, got {ep!r}")
    return nodes


class _Base:
    """Routing state shared by both clients: seeds, ring, suspicion, request building."""

    def __init__(self, nodes, timeout: float, max_value_size: int, routing: str = "token") -> None:
        self.seeds = _check_endpoints(nodes)
        if routing not in ("token", "any"):
            raise InvalidRequest(f"routing must be 'token' or 'any', got {routing!r}")
        # token: send each key to its owners first (no forwarding hop; R=1 reads land on the
        # node that coordinated the key's writes). any: spread requests over every member, as
        # a client behind a load balancer would (what PBS staleness measurements want).
        self.routing = routing
        self._spread = itertools.count()
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.max_value_size = max_value_size
        self.rids = itertools.count(1)
        self.ring: Ring | None = None
        self.n: int | None = None
        self.endpoints: dict[str, str] = {}  # node id -> listen endpoint
        self.down: set[str] = set()
        self.ring_at = -1e9
        self.suspect_until: dict[str, float] = {}
        self.unconnectable: set[str] = set()  # endpoints whose TCP connection is not up
        self._base_order: list[str] | None = None
        self._n_up = 0  # members in _base_order that looked up (they come first)

    @property
    def per_try(self) -> float:
        return max(0.05, min(self.timeout / 2, 1.5))

    def _set_ring(self, msg: RingOk) -> None:
        self.ring = Ring([(m.id, m.rack) for m in msg.members if not m.leaving], q=msg.q, n=msg.n)
        self.n = msg.n
        self.endpoints = {m.id: m.listen for m in msg.members}
        self.down = set(msg.down)
        self._base_order = None
        self.ring_at = time.monotonic()

    def _candidates(self, key: bytes | None) -> list[str]:
        """Endpoints to try, best first: the key's owners that look up, others, suspects last."""
        base = self._base_order
        if base is None:  # every member up first, then down ones, then seeds; once per ring
            base = []
            if self.ring is not None:
                ids = sorted(self.endpoints)
                base += [self.endpoints[x] for x in ids if x not in self.down]
                base += [self.endpoints[x] for x in ids if x in self.down]
            self._n_up = len(base) - len(self.down & set(self.endpoints))
            base += self.seeds
            self._base_order = base = list(dict.fromkeys(base))
        head = []
        if self.routing == "any" and key is not None:
            up = self._n_up if self.ring is not None else len(base)
            if up:  # round robin over the members that look up, the rest after them
                r = next(self._spread) % up
                base = base[r:up] + base[:r] + base[up:]
        elif key is not None and self.ring is not None:
            eps, down = self.endpoints, self.down
            head = [eps[x] for x in self.ring.preflist_for_key(key) if x in eps and x not in down]
        order = head + [ep for ep in base if ep not in head] if head else list(base)
        if self.suspect_until:
            now = time.monotonic()
            for ep, until in list(self.suspect_until.items()):
                if until <= now:
                    del self.suspect_until[ep]
            if self.suspect_until:
                order = ([ep for ep in order if ep not in self.suspect_until]
                         + [ep for ep in order if ep in self.suspect_until])
        return order

    def _get_msg(self, key, r) -> Get:
        wire.check_key(key)
        wire.check_quorum("r", r, self.n)
        return Get(0, key, r or 0)

    def _put_msg(self, key, value, context, w) -> Put:
        wire.check_key(key)
        wire.check_value(value, self.max_value_size)
        wire.check_context(context)
        wire.check_quorum("w", w, self.n)
        return Put(0, key, value, context or b"", w or 0)

    def _delete_msg(self, key, context, w) -> Delete:
        wire.check_key(key)
        wire.check_context(context)
        wire.check_quorum("w", w, self.n)
        return Delete(0, key, context or b"", w or 0)

    def _raise_failure(self, candidates: list[str], tried: int):
        if candidates and all(ep in self.unconnectable for ep in candidates[:max(tried, 1)]):
            raise Unavailable(f"no node reachable: tried {', '.join(candidates[:max(tried, 1)])}")
        raise RequestTimeout(f"no answer within {self.timeout}s (tried {tried} node(s))")

    @staticmethod
    def _result(msg):
        if isinstance(msg, Error):
            raise _error(msg)
        if isinstance(msg, GetOk):
            return GetResult(msg.values, msg.context)
        if isinstance(msg, PutOk):
            return msg.context
        return msg


class Client(_Base):
    """Blocking client. Not thread-safe: use one per thread (or AsyncClient)."""

    def __init__(self, nodes: Sequence[str] | str = ("tcp://127.0.0.1:7001",), timeout: float = 2.0,
                 *, max_value_size: int = wire.DEFAULT_MAX_VALUE, routing: str = "token") -> None:
        super().__init__(nodes, timeout, max_value_size, routing)
        self._zctx = zmq.Context()
        self._socks: dict[str, zmq.Socket] = {}

    # ---- public API -------------------------------------------------------------------------
    def get(self, key: bytes, r: int | None = None) -> GetResult:
        msg = self._get_msg(key, r)
        return self._result(self._call(msg, key))

    def put(self, key: bytes, value: bytes, context: bytes | None = None, w: int | None = None
            ) -> bytes:
        msg = self._put_msg(key, value, context, w)
        return self._result(self._call(msg, key))

    def delete(self, key: bytes, context: bytes | None = None, w: int | None = None) -> bytes:
        msg = self._delete_msg(key, context, w)
        return self._result(self._call(msg, key))

    def update(self, key: bytes, fn: Callable[[list[bytes]], bytes], r: int | None = None,
               w: int | None = None, retries: int = 3) -> bytes:
        """Read, let fn merge the siblings into one value, write it back with the context.

        Retries (re-reading first) when the read or write misses its quorum or times out.
        Returns the new context.
        """
        last: Exception | None = None
        for _ in range(retries + 1):
            try:
                cur = self.get(key, r=r)
                return self.put(key, fn(list(cur.values)), context=cur.context, w=w)
            except (QuorumError, RequestTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def status(self, node: str | None = None) -> dict:
        """The status document of one node (default: the first that answers)."""
        return self._result(self._call(Status(0), None, only=node)).info

    def ring_info(self) -> RingOk:
        self._refresh_ring(time.monotonic() + self.timeout, force=True)
        return self._ring_msg

    def close(self) -> None:
        for s in self._socks.values():
            s.close(0)
        self._socks.clear()
        self._zctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- transport --------------------------------------------------------------------------
    def _sock(self, ep: str) -> zmq.Socket:
        s = self._socks.get(ep)
        if s is None:
            s = self._zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a node we are not connected to
            s.connect(ep)
            self._socks[ep] = s
        return s

    def _try(self, ep: str, msg, until: float):
        rid = next(self.rids)
        msg.rid = rid
        s = self._sock(ep)
        payload = wire.encode_one(msg)
        try:
            s.send(payload, zmq.NOBLOCK)  # the common case: connected, goes out at once
        except zmq.Again:
            # writable only once connected (IMMEDIATE): wait briefly for the TCP connection; a
            # dead node (refused/reset) fails over without waiting for an answer
            wait = min(until - time.monotonic(), CONNECT_WAIT)
            if not s.poll(max(1, int(wait * 1000)), zmq.POLLOUT):
                self.unconnectable.add(ep)
                return None
            try:
                s.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                return None
        self.unconnectable.discard(ep)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            # a blocking recv with a timeout: no Poller built per call
            s.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
            try:
                data = s.recv()
            except zmq.Again:
                return None
            try:
                for reply in wire.decode(data, 1 << 31):
                    if reply.rid == rid:
                        return reply
            except wire.WireError:
                continue

    def _refresh_ring(self, deadline: float, force: bool = False) -> None:
        if not force and time.monotonic() - self.ring_at < RING_REFRESH:
            return
        for ep in self._candidates(None):
            until = min(deadline, time.monotonic() + self.per_try)
            reply = self._try(ep, RingInfo(0), until)
            if isinstance(reply, RingOk):
                self._ring_msg = reply
                self._set_ring(reply)
                return
            if time.monotonic() >= deadline:
                return

    def _call(self, msg, key: bytes | None, only: str | None = None):
        deadline = time.monotonic() + self.timeout
        if only is None:
            self._refresh_ring(deadline)
        tried = 0
        candidates = [only] if only else self._candidates(key)
        for ep in candidates:
            now = time.monotonic()
            if now >= deadline:
                break
            tried += 1
            reply = self._try(ep, msg, min(deadline, now + self.per_try))
            if reply is not None:
                return reply
            self.suspect_until[ep] = time.monotonic() + SUSPECT_FOR
            self.ring_at = -1e9  # learn who is down on the next call
        self._raise_failure(candidates, tried)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)  # no answer within this try's budget


def _consume(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed send shows up as that request's timeout


class AsyncClient(_Base):
    """asyncio client: the same methods as coroutines, many requests in flight on one socket
    per node (replies are matched by request id)."""

    def __init__(self, nodes: Sequence[str] | str = ("tcp://127.0.0.1:7001",), timeout: float = 2.0,
                 *, max_value_size: int = wire.DEFAULT_MAX_VALUE, routing: str = "token") -> None:
        super().__init__(nodes, timeout, max_value_size, routing)
        self._zctx = zmq.asyncio.Context()
        self._socks: dict[str, zmq.asyncio.Socket] = {}
        self._readers: dict[str, asyncio.Task] = {}
        self._waiting: dict[int, asyncio.Future] = {}
        self._ring_lock: asyncio.Lock | None = None
        self._outbox: dict[str, list] = {}
        self._flush_scheduled = False
        self._connected: set[str] = set()

    async def get(self, key: bytes, r: int | None = None) -> GetResult:
        msg = self._get_msg(key, r)
        return self._result(await self._call(msg, key))

    async def put(self, key: bytes, value: bytes, context: bytes | None = None,
                  w: int | None = None) -> bytes:
        msg = self._put_msg(key, value, context, w)
        return self._result(await self._call(msg, key))

    async def delete(self, key: bytes, context: bytes | None = None, w: int | None = None
                     ) -> bytes:
        msg = self._delete_msg(key, context, w)
        return self._result(await self._call(msg, key))

    async def update(self, key: bytes, fn: Callable[[list[bytes]], bytes], r: int | None = None,
                     w: int | None = None, retries: int = 3) -> bytes:
        last: Exception | None = None
        for _ in range(retries + 1):
            try:
                cur = await self.get(key, r=r)
                return await self.put(key, fn(list(cur.values)), context=cur.context, w=w)
            except (QuorumError, RequestTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def status(self, node: str | None = None) -> dict:
        return self._result(await self._call(Status(0), None, only=node)).info

    async def close(self) -> None:
        for t in self._readers.values():
            t.cancel()
        for t in self._readers.values():
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for s in self._socks.values():
            s.close(0)
        self._socks.clear()
        self._zctx.term()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _sock(self, ep: str):
        s = self._socks.get(ep)
        if s is None:
            s = self._zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IMMEDIATE, 1)
            s.connect(ep)
            self._socks[ep] = s
            self._readers[ep] = asyncio.get_running_loop().create_task(self._read(s))
        return s

    async def _read(self, s) -> None:
        while True:
            payload = await s.recv()
            try:
                msgs = wire.decode(payload, 1 << 31)
            except wire.WireError:
                continue
            for reply in msgs:
                fut = self._waiting.pop(reply.rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)

    async def _try(self, ep: str, msg, until: float):
        rid = next(self.rids)
        msg.rid = rid
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiting[rid] = fut
        timer = None
        try:
            s = self._sock(ep)
            if ep not in self._connected:
                wait = min(until - time.monotonic(), CONNECT_WAIT)
                if not await s.poll(max(1, int(wait * 1000)), zmq.POLLOUT):
                    self.unconnectable.add(ep)
                    return None
                self.unconnectable.discard(ep)
                self._connected.add(ep)
            self._enqueue(ep, msg)
            timer = loop.call_later(max(0.001, until - time.monotonic()), _expire, fut)
            reply = await fut
            if reply is None:
                self._connected.discard(ep)  # re-check the connection before the next try
            return reply
        finally:
            self._waiting.pop(rid, None)
            if timer is not None:
                timer.cancel()

    def _enqueue(self, ep: str, msg) -> None:
        """Coalesce: everything asked of one node in one event-loop iteration goes out as one
        frame (the node answers a frame's requests in one frame too)."""
        box = self._outbox.get(ep)
        if box is None:
            box = self._outbox[ep] = []
        box.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._outbox = self._outbox, {}
        for ep, msgs in out.items():
            s = self._sock(ep)
            for i in range(0, len(msgs), wire.MAX_BATCH):
                s.send(wire.encode(msgs[i:i + wire.MAX_BATCH])).add_done_callback(_consume)

    async def _refresh_ring(self, deadline: float) -> None:
        if time.monotonic() - self.ring_at < RING_REFRESH:
            return
        if self._ring_lock is None:
            self._ring_lock = asyncio.Lock()
        async with self._ring_lock:
            if time.monotonic() - self.ring_at < RING_REFRESH:
                return
            for ep in self._candidates(None):
                until = min(deadline, time.monotonic() + self.per_try)
                reply = await self._try(ep, RingInfo(0), until)
                if isinstance(reply, RingOk):
                    self._set_ring(reply)
                    return
                if time.monotonic() >= deadline:
                    return

    async def _call(self, msg, key: bytes | None, only: str | None = None):
        deadline = time.monotonic() + self.timeout
        if only is None:
            await self._refresh_ring(deadline)
        tried = 0
        candidates = [only] if only else self._candidates(key)
        for ep in candidates:
            now = time.monotonic()
            if now >= deadline:
                break
            tried += 1
            reply = await self._try(ep, msg, min(deadline, now + self.per_try))
            if reply is not None:
                return reply
            self.suspect_until[ep] = time.monotonic() + SUSPECT_FOR
            self.ring_at = -1e9
        self._raise_failure(candidates, tried)
