"""The contract between the node core and every operation it drives (client requests and
background work alike): the `Op` base class and the `Context` an op talks to.

An op never touches sockets or clocks. The core calls:
- `start()` once, right after registering the op (its `deadline` is armed);
- `on_reply(node, msg)` for each answer to a message the op sent with `ctx.ask(node, msg, op)`;
- `on_timer()` when a wake-up the op asked for with `ctx.wake(op, at)` comes due before the
  deadline (per-replica timeouts, retries);
- `on_timeout()` when `deadline` passes;
and after the op called `ctx.done(op)`, the completion hook `on_done()` (which also runs any
`on_finish` callback its starter set: background schedulers count their running ops there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zkv.node.replica import Replica
    from zkv.node.seal import Sealer


class Context(Protocol):
    me: str
    replica: Replica
    seal: Sealer  # seals the contexts answers give clients

    def ask(self, node_id: str, msg, op: Op | None) -> None: ...  # send; route replies to op
    def respond(self, origin, msg) -> None: ...  # reply to the client (origin) that asked
    def release(self, op: Op) -> None: ...  # op's client has its answer: free its slot
    def charge(self, op: Op, size: int) -> None: ...  # op sent copies of `size` bytes
    def done(self, op: Op) -> None: ...  # op finished: forget its timers and rids
    def observe(self, op: Op, ok: bool) -> None: ...  # metrics
    def suspect(self, node_id: str, reason: str) -> None: ...
    def stood_still_since(self, t: float) -> bool: ...  # this node stood still after t
    def is_up(self, node_id: str) -> bool: ...  # not down by gossip (suspect counts as up)
    def now(self) -> float: ...
    def wall_ms(self) -> int: ...  # the wall clock (ms): a write's own ttl (expiry.served)
    def wake(self, op: Op, at: float) -> None: ...  # call op.on_timer() at `at` (or later)
    def repaired(self) -> None: ...  # a read repair was sent (metrics)
    def coordinate_here(self, origin, inner, stamp: int = 0,
                        gen: int = -1) -> None: ...  # no owner answered
    def replica_timeout(self, node_id: str, remaining: float) -> float: ...  # per-replica budget
    def standins(self, key: bytes, exclude: set[str]) -> list[str]: ...  # next reachable nodes
    def spend_io(self, nbytes: int) -> None: ...  # bulk bytes moved: charge the I/O budget
    def refilling(self, key: bytes) -> bool: ...  # a local read of key may lack a lost write
    def storage_refused(self, exc: Exception) -> None: ...  # an engine refused a write


class Op:
    """One operation in flight. Subclasses implement start/on_reply and usually on_timeout."""

    kind = "op"  # metric label
    replied = False
    required = 0  # R or W (0: not a quorum op)
    started = 0.0
    serial = 0  # set by the core when the op starts (its key in live_ops and timers)
    holds_slot = False  # counted in its client connection's in-flight ops (until answered)
    size = 0  # request bytes it holds (a write's value and context), counted with its slot
    copies = 0  # bytes of the copies it sent replicas, counted with them until it is done
    on_finish: Callable[[Op], None] | None = None  # set by the starter, if it wants to know

    def __init__(self, ctx: Context, origin, key: bytes, deadline: float) -> None:
        self.ctx = ctx
        self.origin = origin  # (client identity, client rid) or None
        self.key = key
        self.deadline = deadline
        self.pending: set[str] = set()
        self.rids: list[int] = []  # the rids of the messages it sent with ctx.ask (open)

    def start(self) -> None:  # pragma: no cover - every op overrides it
        raise NotImplementedError

    def on_reply(self, node_id: str, msg) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_timer(self) -> None:
        """A wake-up asked for with ctx.wake() is due (default: nothing to do)."""

    def on_timeout(self) -> None:
        for node_id in sorted(self.pending):  # (a set: in an order no hash picks)
            self.ctx.suspect(node_id, f"{self.kind} timed out")
        self.finish()

    def on_done(self) -> None:
        """Completion hook, called once by the core after `finish()`."""
        if self.on_finish is not None:
            self.on_finish(self)

    def reply(self, msg, ok: bool = True) -> None:
        if not self.replied:
            self.replied = True
            ctx = self.ctx
            ctx.respond(self.origin, msg)
            ctx.release(self)
            ctx.observe(self, ok)

    def finish(self) -> None:
        self.ctx.done(self)
