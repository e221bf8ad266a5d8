"""Coordinator: the get / put / delete state machines (fan-out, quorum, read repair, forwarding).

Each operation is an object driven by the server's reactor: `start()` sends to the replicas,
`on_reply()` receives each answer, `on_timeout()` fires at the deadline. The reply to the
client goes out as soon as R (get) or W (put/delete) replicas answered; answers arriving
later still count: a get's late answers feed read repair, which runs once every replica
answered or the deadline passed, after the client already has its reply (never delaying it).

The operations talk to the node only through the small `Context` protocol below, so they can
be driven by a fake in tests; they never touch sockets or clocks themselves.
"""

from __future__ import annotations

from typing import Protocol

from zkv._core import dvv
from zkv.node.replica import Replica
from zkv.wire import (
    E_INVALID,
    E_QUORUM,
    Error,
    Forward,
    GetOk,
    PutOk,
    RGet,
    RGetOk,
    RPut,
    RPutOk,
)


class Context(Protocol):
    me: str
    replica: Replica

    def ask(self, node_id: str, msg, op: Op) -> None: ...  # send a peer request, route replies to op
    def respond(self, origin, msg) -> None: ...  # reply to the client (origin) that asked
    def done(self, op: Op) -> None: ...  # op finished: forget its timers and peer rids
    def observe(self, op: Op, ok: bool) -> None: ...  # metrics
    def suspect(self, node_id: str, reason: str) -> None: ...
    def now(self) -> float: ...
    def reschedule(self, op: Op) -> None: ...  # op.deadline moved
    def repaired(self) -> None: ...  # a read repair was sent (metrics)
    def coordinate_here(self, origin, inner) -> None: ...  # no owner answered: sloppy fallback


class Op:
    kind = "op"
    replied = False
    required = 0

    def __init__(self, ctx: Context, origin, key: bytes, deadline: float) -> None:
        self.ctx = ctx
        self.origin = origin  # (client identity, client rid) or None
        self.key = key
        self.deadline = deadline
        self.pending: set[str] = set()

    def reply(self, msg, ok: bool = True) -> None:
        if not self.replied:
            self.replied = True
            self.ctx.respond(self.origin, msg)
            self.ctx.observe(self, ok)

    def on_reply(self, node_id: str, msg) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_timeout(self) -> None:
        for node_id in self.pending:
            self.ctx.suspect(node_id, f"{self.kind} timed out")
        self.finish()

    def finish(self) -> None:
        self.ctx.done(self)


class GetOp(Op):
    kind = "get"

    def __init__(self, ctx, origin, key, deadline, targets: list[tuple[str, str | None]],
                 r: int) -> None:
        super().__init__(ctx, origin, key, deadline)
        self.targets = targets  # (node, owner it stands in for, or None)
        self.hints = dict(targets)
        self.required = r
        self.results: dict[str, bytes] = {}
        self.merged: bytes | None = None  # sync of every answer so far (encoded)

    def start(self) -> None:
        for node_id, hint in self.targets:
            if node_id == self.ctx.me:
                held = self.results[node_id] = self.ctx.replica.read(self.key, hint)
                if held:
                    self.merged = held
            else:
                self.pending.add(node_id)
                self.ctx.ask(node_id, RGet(0, self.key, hint or ""), self)
        self._check()

    def on_reply(self, node_id: str, msg) -> None:
        if node_id not in self.pending:
            return
        self.pending.discard(node_id)
        if isinstance(msg, RGetOk):
            if msg.dvv:
                try:  # validates the answer too: a bad version counts as no answer
                    self.merged = dvv.sync_encoded(self.merged, msg.dvv)
                except ValueError:
                    self._check()
                    return
            self.results[node_id] = msg.dvv
        self._check()

    def _check(self) -> None:
        if not self.replied and len(self.results) >= self.required:
            merged = dvv.DVVSet.decode(self.merged) if self.merged else dvv.EMPTY
            self.reply(GetOk(0, merged.live_values(), merged.context(), len(self.results)))
            if merged.size() > 1:
                self.ctx.replica.note_siblings(self.key, merged.size())
        if not self.pending:
            self._fail()  # everyone answered and still short: say so now, not at the deadline
            self.finish()

    def _fail(self) -> None:
        if not self.replied:
            self.reply(
                Error(
                    0,
                    E_QUORUM,
                    f"get: {len(self.results)} of the required {self.required} replicas answered",
                    self.required,
                    len(self.results),
                ),
                ok=False,
            )

    def on_timeout(self) -> None:
        self._fail()
        super().on_timeout()

    def finish(self) -> None:
        # read repair: every replica that answered with less than the merged version gets it
        enc = self.merged
        if enc:
            for node_id, held in self.results.items():
                if held == enc:
                    continue
                hint = self.hints.get(node_id)
                if node_id == self.ctx.me:
                    self.ctx.replica.merge(self.key, enc, hint)
                else:
                    self.ctx.ask(node_id, RPut(0, self.key, enc, hint or ""), None)
                self.ctx.repaired()
        super().finish()


class WriteOp(Op):
    """put (value is bytes) or delete (value is None): coordinate locally, fan the result out."""

    def __init__(self, ctx, origin, key, deadline, targets, w, context, value) -> None:
        super().__init__(ctx, origin, key, deadline)
        self.kind = "put" if value is not None else "delete"
        self.targets = targets
        self.required = w
        self.context = context
        self.value = value
        self.acked = 0
        self.version: bytes = b""

    def start(self) -> None:
        hints = dict(self.targets)
        try:
            self.version = self.ctx.replica.coordinate(self.key, self.context, self.value,
                                                       hints.get(self.ctx.me))
        except ValueError as exc:
            self.reply(Error(0, E_INVALID, f"bad context: {exc}"), ok=False)
            self.finish()
            return
        self.acked = 1
        for node_id, hint in self.targets:
            if node_id != self.ctx.me:
                self.pending.add(node_id)
                self.ctx.ask(node_id, RPut(0, self.key, self.version, hint or ""), self)
        self._check()

    def on_reply(self, node_id: str, msg) -> None:
        if node_id not in self.pending:
            return
        self.pending.discard(node_id)
        if isinstance(msg, RPutOk) and msg.ok:
            self.acked += 1
        self._check()

    def _check(self) -> None:
        if not self.replied and self.acked >= self.required:
            s = dvv.DVVSet.decode(self.version)
            self.reply(PutOk(0, s.context(), self.acked))
            if s.size() > 1:
                self.ctx.replica.note_siblings(self.key, s.size(), write=True)
        if not self.pending:
            self._fail()
            self.finish()

    def on_timeout(self) -> None:
        self._fail()
        super().on_timeout()

    def _fail(self) -> None:
        if not self.replied:
            self.reply(
                Error(
                    0,
                    E_QUORUM,
                    f"{self.kind}: {self.acked} of the required {self.required} replicas acknowledged"
                    " (the write may still have been stored)",
                    self.required,
                    self.acked,
                ),
                ok=False,
            )


class ForwardOp(Op):
    """Hand a client request to a preference-list node (one hop) and relay its answer.

    If the chosen node does not answer within `per_try` seconds the next candidate gets it.
    """

    kind = "forward"

    def __init__(self, ctx, origin, key, deadline, inner, candidates: list[str],
                 per_try: float) -> None:
        super().__init__(ctx, origin, key, deadline)
        self.inner = inner
        self.candidates = list(candidates)
        self.per_try = per_try
        self.current: str | None = None

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        if not self.candidates:
            # no owner answered: coordinate here, standing in for them (sloppy quorum)
            self.finish()
            self.ctx.coordinate_here(self.origin, self.inner)
            return
        self.current = self.candidates.pop(0)
        self.pending = {self.current}
        self.deadline = self.ctx.now() + self.per_try
        self.ctx.reschedule(self)
        self.ctx.ask(self.current, Forward(0, self.inner), self)

    def on_reply(self, node_id: str, msg) -> None:
        if node_id != self.current:
            return
        self.pending.clear()
        self.reply(msg, ok=not isinstance(msg, Error))
        self.finish()

    def on_timeout(self) -> None:
        if self.current is not None:
            self.ctx.suspect(self.current, "forward timed out")
        self._next()
