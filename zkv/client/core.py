"""The client's whole logic without a socket: routing, ring refresh, suspicion, failover plans,
request building and validation, result and error mapping, update() (DESIGN.md §2.1).

Every operation is a *plan*: an I/O-free generator, in the style of psycopg's
``generators.py``. A plan yields a `Send` (which endpoint, which message, and by when, on the
core's clock, the answer must be back) and is resumed with what came of it:

- the reply message (the driver matched it to ``send.msg.rid``; late answers to earlier tries
  carry another rid and never reach the plan),
- ``None``: connected and sent, but no answer by ``send.until``,
- `UNREACHABLE`: no connection to the endpoint within CONNECT_WAIT (nothing was sent).

The plan's return value is the call's result; its exceptions are the call's errors. The sync
`Client` and the `AsyncClient` are drivers of a few lines that run plans over ZeroMQ;
tests run them over a fake network and a fake clock.

Routing: the client learns the ring from any node (RingInfo), computes each key's preference
list locally with the same Cython ring the nodes use, and sends the request straight to an
owner, so no forwarding hop is paid ('token'; 'any' spreads requests over every member as a
load balancer would). A try that is not answered within the per-try budget (half the call's
timeout, at most 1.5 s) moves on to the next owner, then to any other member (the last
candidate's try waits for the rest of the timeout); the node that missed is tried last for
SUSPECT_FOR seconds and the ring is refreshed on the next call. A
dead or paused node costs a retry, not an error; so does a node that answers "not now"
(E_UNAVAILABLE: busy, still joining, shutting down -- it did not take the request). When
every try failed the call raises `Unavailable` if no tried node could even be connected to
or the last answer was such a refusal, else `RequestTimeout`.

Hedged tries (issue 10): a get, put or delete whose coordinator has not answered within the
*hedge delay* (HEDGE_FACTOR x the 95th percentile of this client's recent round trips, at
least HEDGE_FLOOR, below the per-try budget) is also sent to the next candidate while the
first try stays open: the driver answers `SLOW` at `Send.soft`, and later Sends list the
earlier tries still listened to in `Send.also`, so whichever answers first wins. A frozen
coordinator then costs the hedge delay instead of the whole per-try budget. Safe because
writes carry their write id (a replica collapses the two tries into one sibling) and reads
change nothing; the frozen node's copy of the request finds an answered client when it
wakes up. Status, ring and admin calls are never hedged.

Slow owners (a "dynamic snitch", as Cassandra's): each endpoint's data round trips feed an
EWMA (`latency`, a few attribute updates per reply); with the hedge delay, every
HEDGE_SAMPLES // 4 round trips, `_judge` calls slow those over SLOW_FACTOR x the lower median
and over SLOW_FLOOR, and the cached per-partition orders put them after the key's other
owners (a put's coordinator, a get's R owners) until their estimate decays back
(SLOW_HALF_LIFE) and their next answers tell. A healthy cluster is routed as without it.

Namespaces (issue 15): every data call takes `namespace=` ("default" unless given). The
request carries the name; routing needs the namespace's N and mode (they are part of the
stored key the node routes by, zkv.node.namespaces), so the first call in a namespace the
client has not seen asks a node for the registry (NsList) and caches it: namespaces never
change once created. If that fails the call goes to any member, which forwards it.

Many keys in one call (get_many / put_many / delete_many): `many()` runs each key's own plan
side by side, MANY_WINDOW at a time, and yields a `Batch` of their tries per step; a driver
sends a step's tries to each node as one frame and resumes it with every answer at once. A
key's routing, failover, hedging and write id are exactly those of its single call.

Client-coordinated reads (the seed's "any node can coordinate", moved one step further, as
Dynamo's own client-driven coordination and Voldemort's client-side routing do): a get asks R
of the key's owners that look up for their own copies at once (`Read`, one Batch step) and
answers from them when each says it is an owner whose copy counts (not refilling after a lost
disk) and all R are byte-identical. That answer is exactly the one a coordinator would build
from those R answers, and there is nothing to repair among them; it costs one round trip
instead of two and no coordinator state on a node. Anything else sends the get to a
coordinator as before (which merges and read-repairs): copies that differ, a node that is
not an owner in its ring (another ring view, a transfer), a refusal, an implausible copy,
fewer than R owners that look up, or silence past the hedge delay (the node is then tried
last for SUSPECT_FOR). A node whose copies do not count yet (refilling after a lost disk, or
a partition gained at a join not verified yet) says so and is left out of owner reads for
REFILL_SKIP (a round trip to it per get would be wasted; one a second is not); a node that
is not an owner in its own ring means the client's ring is stale, so it is learnt again. The
whole call keeps its timeout. Only members whose gossiped record says they serve Read
(`Member.features`) are asked, so an older node never gets one during a rolling upgrade;
`owner_reads=False` (and routing "any") turns it off.

Writes are idempotent (issue 10): each put/delete call carries a write id (`WID_BYTES` random
bytes) that stays the same across that call's retries and failovers, so a replica that stored
a try whose answer was lost recognises the retry as the same write.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import msgspec

from zkv import hlc, wire
from zkv._core import dvv
from zkv._core.ring import Ring
from zkv.config import endpoint_problem
from zkv.errors import (
    AuthenticationError,
    InvalidRequest,
    QuorumError,
    RequestTimeout,
    TooManySiblings,
    Unavailable,
    ZkvError,
)
from zkv.node import namespaces as nss
from zkv.node import seal
from zkv.node.expiry import expires_at
from zkv.node.namespaces import Namespace, Registry
from zkv.node.quorum import identical_answers, read_answer
from zkv.node.seal import PREFIX, SEALED
from zkv.wire import (
    Cluster,
    ClusterOk,
    Delete,
    Error,
    Get,
    GetOk,
    Keys,
    KeysOk,
    NsCreate,
    NsList,
    NsOk,
    Put,
    PutOk,
    Read,
    ReadOk,
    Repair,
    RepairOk,
    RingInfo,
    RingOk,
    Snapshot,
    SnapshotOk,
    Status,
    StatusOk,
)

log = logging.getLogger("zkv.client")
RING_REFRESH = 5.0  # seconds between ring refreshes while things go well
_NS_CHANGED: list = []  # (Client._keys_page: an owner holds another version of the namespace)
SUSPECT_FOR = 3.0  # seconds a node that missed a try is tried last
# seconds a node whose copies do not count yet (refilling after a lost disk: minutes; a
# partition gained at a join not verified yet: seconds after the change settled) is left out
# of owner reads after saying so: one wasted round trip per node per second at most while it
# lasts, and owner reads back within a second of it ending (10 s kept a new cluster's gets on
# the coordinator path, twice the latency, for up to 10 s after its joiners were verified)
REFILL_SKIP = 1.0
BUSY_PAUSE = 0.01  # s: the first pause before asking busy nodes again (doubling, jittered)
BUSY_PAUSE_MAX = 0.25
CONNECT_WAIT = 0.25  # seconds a driver waits for a TCP connection to a node before moving on
WID_BYTES = wire.WID_SIZE  # a write id: 16 random bytes per put/delete call
WID_POOL = 256  # write ids drawn from os.urandom at once
_WIDS: list[bytes] = []  # the process's unused ones; a forked child must not reuse the
os.register_at_fork(after_in_child=_WIDS.clear)  # parent's (two writes, one id)
HEDGE_FLOOR = 0.2  # s: never hedge sooner (a coordinator's own stand-in wait is ~0.1 s)
HEDGE_FACTOR = 3.0  # x the p95 of recent round trips
HEDGE_SAMPLES = 64  # round trips remembered for it
HEDGED = (Get, Put, Delete)  # idempotent data requests only
_HEDGE_EVERY = HEDGE_SAMPLES // 4  # new round trips before the hedge delay is recomputed
# A slow-but-alive node (README, "Slow nodes"): each endpoint's answers to data requests feed
# an EWMA of its round trips (from 0, so a first slow answer, a connection being made, does
# not count much); one over SLOW_FACTOR x the median estimate and over SLOW_FLOOR is asked
# after the key's other owners (puts' coordinator, owner reads), judged with the hedge delay
LAT_ALPHA = 0.1  # weight of a new round trip in its endpoint's estimate
SLOW_FACTOR = 3.0  # x the (lower) median of the endpoints' estimates
SLOW_FLOOR = 0.008  # s: never slow below this (noise among healthy nodes reorders nothing)
SLOW_HALF_LIFE = 1.0  # s: a slow endpoint's excess over the median halves (few answers
# come from it any more: its estimate drifts back until it is asked again and measured)
_DEFAULT = nss.DEFAULT
_UNKNOWN_NS = "unknown namespace"  # (the start of a node's answer for a name it lacks)
_MAX_KEY = wire.DEFAULT_MAX_KEY

T = TypeVar("T")


class _Unreachable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNREACHABLE"


UNREACHABLE: Any = _Unreachable()  # what a driver answers when it could not connect in time


class _Slow:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SLOW"


SLOW: Any = _Slow()  # what a driver answers at `Send.soft` when no listened try has answered


class Send(msgspec.Struct, eq=False):
    """One try: send `msg` (its rid already set) to `endpoint`; the answer is due by `until`.

    `soft` (optional): if no answer by then, the driver answers SLOW instead of waiting on
    (the plan hedges to another node). `also`: (endpoint, rid) of earlier tries of the same
    call whose answers are still welcome; the driver returns whichever answer comes first.
    `msg` None: send nothing, only wait for the tries in `also` (the plan ran out of nodes).
    (A msgspec Struct, compared by identity: built in C, where a Python __init__ per try
    cost more than the rest of building it.)
    """

    endpoint: str
    msg: Any
    until: float
    soft: float | None = None
    also: tuple[tuple[str, int], ...] = ()

    def __repr__(self) -> str:
        what = "listen" if self.msg is None else f"{type(self.msg).__name__}(rid={self.msg.rid})"
        return f"Send({self.endpoint!r}, {what}, {self.until}, soft={self.soft}, also={self.also})"


class Batch(msgspec.Struct, eq=False):
    """Many tries at once (the step of `ClientCore.many`): the driver sends every Send's
    message (those to one endpoint in one frame) and resumes the plan with a list, in the
    same order, of what came of each one, as for a single Send (reply, SLOW at its `soft`,
    None at its `until`, UNREACHABLE), once every one of them has its answer. (A msgspec
    Struct, as Send.)"""

    sends: list[Send]
    # set by a driver that can tell: when (core clock) each answer came, in the same order
    # (an owner read's answers come back in one step; each owner's own round trip feeds its
    # latency estimate). None: not told (a reply's estimate is then not updated)
    arrived: list[float] | None = None

    def __repr__(self) -> str:
        return f"Batch({len(self.sends)} sends)"


# A plan yields Sends (or a Batch), is resumed with the reply / None / UNREACHABLE (a list of
# them), and returns a result.
Plan = Generator[Any, Any, T]

LIST_RETRIES = 2  # more rounds a listing page asks owners that did not answer it
MANY_WINDOW = 128  # plans of one get_many/put_many/delete_many in flight at once (a node
# refuses a connection's 257th request in flight as busy: core.MAX_INFLIGHT)


class GetResult:
    """What a get saw: every live sibling and the causal context covering them; `expires_at`:
    when the value stops being served, wall ms since the Unix epoch (its namespace's ttl or
    its write's own, as Redis' PTTL tells; 0: never, or a node too old to say)."""

    __slots__ = ("values", "context", "expires_at")

    def __init__(self, values: list[bytes], context: bytes, expires_at: int = 0) -> None:
        self.values = values
        self.context = context
        self.expires_at = expires_at

    @property
    def found(self) -> bool:
        return bool(self.values)

    def __repr__(self) -> str:
        ttl = f", expires_at={self.expires_at}" if self.expires_at else ""
        return f"GetResult(values={self.values!r}, context=<{len(self.context)} bytes>{ttl})"


def error_for(msg: Error) -> ZkvError:
    """The exception a node's Error reply stands for."""
    if msg.code == wire.E_INVALID:
        if msg.required:  # a sibling refusal (the node's limit, the siblings it would make)
            return TooManySiblings(msg.message, msg.required, msg.acked)
        return InvalidRequest(msg.message)
    if msg.code == wire.E_QUORUM:
        return QuorumError(msg.message, msg.required, msg.acked)
    if msg.code == wire.E_UNAVAILABLE:
        return Unavailable(msg.message)
    if msg.code == wire.E_TIMEOUT:
        return RequestTimeout(msg.message)
    return ZkvError(msg.message)


def _refused_unwritten(reply: Error) -> bool:
    """A node's error that says it stored and sent nothing of the request: invalid (checked
    before anything is stored), or a refusal of wire.refused_unwritten's."""
    return reply.code == wire.E_INVALID or (reply.code == wire.E_UNAVAILABLE
                                            and wire.refused_unwritten(reply.message))


def refused(reply) -> bool:
    """The node's answer to a frame it could not decode: an Error of rid 0 (no request has
    rid 0). It answers whatever the connection last sent; the drivers take it as such."""
    return not reply.rid and type(reply) is Error


def _expect(reply, kind: type[T]) -> T:
    if isinstance(reply, kind):
        return reply
    if isinstance(reply, Error):
        raise error_for(reply)
    raise ZkvError(f"unexpected reply {type(reply).__name__} (wanted {kind.__name__})")


def public_wid(write_id) -> bytes | None:
    """A caller's write id (Client.put/delete's `write_id`): None (the call draws a fresh one)
    or 1..MAX_WID bytes. b"" is refused: it would be a write without an id, which a retry
    repeats as a second value."""
    if write_id is None:
        return None
    if type(write_id) is not bytes:
        raise InvalidRequest(f"write_id must be bytes, not {type(write_id).__name__}")
    if not 0 < len(write_id) <= wire.MAX_WID:
        raise InvalidRequest(f"write_id must be 1..{wire.MAX_WID} bytes, not {len(write_id)} "
                             "(os.urandom(16) makes a good one)")
    return write_id


def check_namespace(namespace) -> str:
    """A namespace name as the wire carries it ("" for "default"); InvalidRequest if bad."""
    if namespace is None or namespace == nss.DEFAULT:
        return ""
    if not isinstance(namespace, str) or not nss.valid_name(namespace):
        raise InvalidRequest(f"namespace {namespace!r}: 1 to 64 characters of A-Z a-z 0-9 _ . - "
                             "(not . or ..)")
    return namespace


def check_ttl(ttl, ns: str) -> None:
    """A write's own ttl as far as the client can judge it (`ns` as check_namespace returns
    it); the node checks it against the namespace (Namespace.check_write_ttl)."""
    nss.check_ttl_seconds(ttl)
    if not ns:
        raise InvalidRequest(f"ttl={ttl}: the default namespace's values have no room for a "
                             f"ttl; a write's ttl needs an lww namespace with a ttl (zkv "
                             f"namespace create NAME --conflicts lww --ttl D)")


def check_namespace_settings(name, n, r, w, conflicts, ttl=0, pr=0, pw=0,
                             default_n: int | None = None) -> None:
    """What `namespace_create` can check without the cluster (the node checks the rest:
    n against the member count, r/w/pr/pw against the default n, `default_n` if known)."""
    n = n if n is not None else default_n
    found = nss.problems(name, nss.MAX_N if n is None else n, 1 if r is None else r,
                         1 if w is None else w, conflicts, ttl=ttl, pr=pr, pw=pw)
    if found:
        raise InvalidRequest(f"cannot create namespace {name!r}: " + "; ".join(found))


LEVELS = ("one", "quorum", "all")  # r, w, pr and pw by name (Cassandra's consistency levels)


def level(name: str, value, n: int):
    """A quorum given by name as a number of replicas of an N of `n` ("one": 1, "quorum": a
    majority, "all": N); anything else as it is (checked later as a number)."""
    if type(value) is not str:
        return value
    v = value.lower()
    if v not in LEVELS:
        raise InvalidRequest(f"{name}={value!r}: an int from 1 to N or one of "
                             f"{', '.join(LEVELS)}")
    return 1 if v == "one" else n if v == "all" else n // 2 + 1


def _items(items, what: str) -> list:
    if isinstance(items, (bytes, str, dict)) or not isinstance(items, Iterable):
        raise InvalidRequest(f"{what} must be a list (or another iterable), not "
                             f"{type(items).__name__}")
    return list(items)


def _per_item(given, items: list, what: str) -> list:
    """A many-operation's per-item argument: one per item, in order."""
    got = _items(given, what)
    if len(got) != len(items):
        raise InvalidRequest(f"{what}: {len(got)} given for {len(items)} item(s)")
    return got


def _check_many_key(key, ns: str) -> None:
    """A many-operation's key: as any key, and in the default namespace not beginning with
    byte 0x00 (the node refused it after the keys before it were sent: an outside run)."""
    wire.check_key(key)
    if not ns and key[:1] == b"\x00":
        raise InvalidRequest("keys of the default namespace may not begin with byte 0x00 "
                             "(reserved for namespaced keys)")


def _check_context_format(context) -> None:
    """A context's type, size and format (sealed or bare), as the node checks it where the
    write enters: a many-operation's bad context was refused by its node after the items
    before it had been written (README: "every item is checked before a byte is sent")."""
    wire.check_context(context)
    if not context:
        return
    if context[0] == SEALED and len(context) <= PREFIX:  # (node/seal.py: a tag, the context)
        raise InvalidRequest("context: a sealed context too short to hold one")
    try:
        dvv.validate_context(seal.bare(context))
    except ValueError as exc:
        raise InvalidRequest(str(exc) if str(exc).startswith("context") else
                             f"context: {exc}") from None


def _check_item(i: int, check: Callable, *args) -> None:
    """A per-item check of a many-operation, its error naming the item."""
    try:
        check(*args)
    except InvalidRequest as exc:
        raise InvalidRequest(f"item {i}: {exc}") from None


def _expire(until: dict[str, float], now: float) -> None:
    """Drop the entries of a node -> deadline table whose deadline has passed."""
    for k, t in list(until.items()):
        if t <= now:
            del until[k]


def _sender(also: tuple[tuple[str, int], ...], rid: int, default: str) -> str:
    """The endpoint of the earlier (hedged) try with `rid` (`default` if none is)."""
    for ep, r in also:
        if r == rid:
            return ep
    return default


def check_endpoints(nodes) -> list[str]:
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(nodes)
    if not nodes:
        raise InvalidRequest("at least one node endpoint is needed")
    for ep in nodes:
        if not isinstance(ep, str) or not ep.startswith("tcp://"):
            raise InvalidRequest(f"node endpoint must look like tcp://HOST:PORT, got {ep!r}")
        why = endpoint_problem(ep)
        if why is not None:
            raise InvalidRequest(f"node endpoint {why}")
    return nodes


class KeyListing:
    """Where one listing of a namespace's keys is (ClientCore.list_keys): the partition and the
    cursor in it. `next_page()` is the plan of the next page (its keys, or its (key, values)
    items, maybe none), None once every partition was listed. A driver runs the plans one
    after the other."""

    def __init__(self, core: ClientCore, namespace: str, prefix: bytes, page: int,
                 r: int | str | None = 1, values: bool = False, expiry: bool = False) -> None:
        self.core = core
        self.ns = namespace  # ("" for the default namespace)
        self.prefix = prefix
        self.page = page
        self.r = r  # owners of each partition listing it (None: the namespace's R)
        self.values = values  # pages of (key, live values) instead of keys
        self.expiry = expiry  # ... of (key, live values, expires_at ms) (0: never, or unknown)
        self.partition = 0
        self.cursor = 0
        self.q: int | None = None  # the ring's partitions, once known
        self.failed: set[str] = set()  # owners that did not answer: asked last from then on

    def next_page(self) -> Plan[list] | None:
        if self.q is not None and self.partition >= self.q:
            return None
        return self.core.keys_page(self)


def _union_page(listing: KeyListing, ring: Ring, ns_prefix: bytes, lww: int,
                pages: list[KeysOk], merge: bool, now_ms: int, ttl_ms: int = 0) -> list:
    """The keys (`merge`: the (key, live values) items) of the pages owners answered from
    the listing's cursor, advancing it. Each owner's page holds every key it has
    from the cursor up to its own next cursor (whole groups of equal hashes): the union is
    complete up to the smallest of those, so the keys at or past it are left to the next
    page (each page makes progress: an owner's next cursor is past the cursor whenever its
    page is not the partition's last). Items merge the owners' copies of each key as a
    coordinator merges replies (a delete one owner missed still deletes; lww: the head's
    length, one value; `now_ms`: the wall clock a write's own ttl is judged by; with
    `listing.expiry`, each item also says when its value stops being served, by the
    namespace's ttl `ttl_ms` or its write's own: expiry.expires_at)."""
    cuts = [ok.cursor for ok in pages if not ok.done]
    cut = min(cuts) if cuts else None
    if cut is None:
        listing.partition, listing.cursor = listing.partition + 1, 0
    else:
        listing.cursor = cut
    if merge:
        merged: dict[bytes, bytes | None] = {}
        for ok in pages:
            for k, copy in zip(ok.keys, ok.copies, strict=True):
                had = merged.get(k)  # (owners in sync hold byte-identical copies: no merge)
                if had is None or had == copy:
                    merged[k] = copy
                else:  # (lww: collapsed as a get's merge is, or both writes came back, and
                    # an expired newest one then let the older one be served)
                    merged[k] = (dvv.lww_sync_encoded if lww else dvv.sync_encoded)(had, copy)
        keys = list(merged)
    elif len(pages) == 1:
        return pages[0].keys
    else:
        keys = list(dict.fromkeys(k for ok in pages for k in ok.keys))
    if cut is not None and len(pages) > 1 and keys:
        hashes = ring.hashes([ns_prefix + k for k in keys])
        keys = [k for k, h in zip(keys, hashes, strict=True) if h < cut]
    if not merge:
        return keys
    items: list = []
    for k in keys:
        values = read_answer(merged[k], lww, 0, now_ms)[0].values
        if not values:  # (deleted: left out)
            continue
        if not listing.expiry:
            items.append((k, values))
            continue
        ends = 0
        if lww:  # (collapsed above: its one value, head and all)
            stored = dvv.DVVSet.decode(merged[k]).live_values()  # type: ignore[arg-type]
            ends = expires_at(stored[0], lww, ttl_ms) if stored else 0
        items.append((k, values, ends))
    return items


def _check_copies(ok: KeysOk) -> str | None:
    """Why a page of copies (Keys.values) cannot be merged, or None."""
    if len(ok.copies) != len(ok.keys):
        return f"{len(ok.copies)} copies for {len(ok.keys)} keys"
    try:
        for copy in ok.copies:
            dvv.check_plausible(dvv.DVVSet.decode(copy), base=None)
    except ValueError as exc:
        return f"a copy that is not a valid version ({exc})"
    return None


def _check_listing_r(r: int | str | None) -> None:
    if type(r) is str:
        level("r", r, 1)  # (a name: its number once the namespace's N is known)
    elif r is not None and (type(r) is not int or not 1 <= r <= nss.MAX_N):
        raise InvalidRequest(f"r must be 1 to {nss.MAX_N} owners (or one of "
                             f"{', '.join(LEVELS)}), got {r!r}")


class ClientCore:
    """Routing state (seeds, ring, suspicion) and the plans of every client operation.

    `clock` is the monotonic clock deadlines are measured on (drivers use the same one);
    `wall_ms` the wall clock (ms) a write's own ttl is judged by when the client merges
    owners' copies itself; `rng` (a random.Random) makes write ids reproducible, os.urandom
    otherwise.
    """

    def __init__(self, nodes: Sequence[str] | str, timeout: float = 2.0, *,
                 max_value_size: int = wire.DEFAULT_MAX_VALUE, routing: str = "token",
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, owner_reads: bool = True,
                 wall_ms: Callable[[], int] = hlc.wall_ms) -> None:
        self.seeds = check_endpoints(nodes)
        if routing not in ("token", "any"):
            raise InvalidRequest(f"routing must be 'token' or 'any', got {routing!r}")
        # token: send each key to its owners first (no forwarding hop; R=1 reads land on the
        # node that coordinated the key's writes). any: spread requests over every member, as
        # a client behind a load balancer would (what PBS staleness measurements want).
        self.routing = routing
        self._spread = itertools.count()
        if not (isinstance(timeout, int | float) and not isinstance(timeout, bool)
                and 0 < timeout < math.inf):
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not (type(max_value_size) is int and max_value_size > 0):
            raise InvalidRequest(f"max_value_size must be a positive number of bytes (as the "
                                 f"nodes' --max-value-size), got {max_value_size!r}")
        self.timeout = float(timeout)
        # each try's budget: half the call's timeout (at least 50 ms, at most 1.5 s)
        self.per_try = max(0.05, min(self.timeout / 2, 1.5))
        self.max_value_size = max_value_size
        self.clock = clock
        self.wall_ms = wall_ms
        self._rng = rng
        self.rids = itertools.count(1)
        self.ring: Ring | None = None
        self.ring_msg: RingOk | None = None  # the last RingOk learned
        self.n: int | None = None
        self.endpoints: dict[str, str] = {}  # node id -> listen endpoint
        self.readers: set[str] = set()  # members that answer Read (client-coordinated reads)
        self._primary_ok: RingOk | None = None  # the ring whose members all take pr/pw
        self.refilling_until: dict[str, float] = {}  # node -> when to ask it for copies again
        # False: every get goes to a coordinator (owner_reads=False, or routing="any")
        self.owner_reads = owner_reads and routing == "token"
        self.down: set[str] = set()
        self.ring_at = -1e9
        self._refreshing = False  # a plan is fetching the ring: others go on with the old one
        self.suspect_until: dict[str, float] = {}
        self.unconnectable: set[str] = set()  # endpoints whose TCP connection is not up
        # tries that may have been carried out: unanswered within their time, or answered
        # with an error a node may give after sending copies (shutting down, stood still, a
        # missed quorum); update() tells a write surely refused from one maybe stored by it
        self.uncertain_tries = 0
        self.unreachable_why: dict[str, str] = {}  # endpoint -> why, as its driver last saw
        # ... of those, worth waiting for (a handshake under way, a connect not yet answered,
        # or a connection up whose queue is full: the driver's _check_refused)
        self.handshaking: set[str] = set()
        self._base_order: list[str] | None = None
        self._n_up = 0  # members in _base_order that looked up (they come first)
        self._behind: frozenset[str] | None = None  # the rest of _base_order (see candidates)
        self._orders: dict[tuple[int | None, int], list[str]] = {}  # (N, partition) -> order
        # (N, partition) -> its owners an owner read may ask as far as the ring tells (members
        # that serve Read, not down, with an endpoint), in preference order, as (id, endpoint)
        self._readers_of: dict[tuple[int | None, int], list[tuple[str, str]]] = {}
        self.rings: dict[int, Ring] = {}  # N -> ring (namespaces with another N than the cluster's)
        # namespaces seen (their N and conflicts never change; r, w and ttl may: an alter
        # changes the registry's digest in the ring, `set_ring`, which empties the cache)
        self.ns_cache: dict[str, Namespace] = {}
        self.ns_last: Registry | None = None  # the last registry a node sent (NsOk)
        self._ns_tags: dict[str, tuple[Namespace, int]] = {}  # name -> (version, its tag)
        self.ns_digest = 0
        # lww namespaces: the highest HLC stamp any reply carried; every put sends it, so the
        # coordinator orders this client's next write after everything it has seen
        self.stamp_floor = 0
        self.rtts: deque[float] = deque(maxlen=HEDGE_SAMPLES)  # recent round trips, s
        self._hedge = HEDGE_FLOOR  # the hedge delay, recomputed every HEDGE_SAMPLES // 4 rtts
        self._rtts_new = 0
        # endpoint -> EWMA of its data requests' round trips (s); the endpoints judged slow
        # from them (with the hedge delay: `_judge`), asked after the other owners
        self.latency: dict[str, float] = {}
        self.slow: frozenset[str] = frozenset()
        self._judged_at = clock()
        self._came: float | None = None  # many(): when the answer being handed to a plan came

    def _sample(self, t: float, by: str | None) -> None:
        """Remember a round trip of `t` s (the hedge delay's samples) and, for a data
        request's (`by`: the endpoint that answered), that endpoint's estimate. (Inline where
        every answer passes: `call`'s first answer, `_owner_read`.)"""
        self.rtts.append(t)
        self._rtts_new += 1
        if by is not None:
            est = self.latency.get(by, 0.0)
            self.latency[by] = est + LAT_ALPHA * (t - est)

    def hedge_delay(self) -> float:
        """How long a data request waits for its coordinator before it is also sent to the
        next candidate: HEDGE_FACTOR x p95 of recent round trips, at least HEDGE_FLOOR."""
        if self._rtts_new >= HEDGE_SAMPLES // 4:
            self._rtts_new = 0
            ordered = sorted(self.rtts)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            self._hedge = max(HEDGE_FLOOR, HEDGE_FACTOR * p95)
            self._judge()
        return self._hedge

    def _judge(self) -> None:
        """Which endpoints are slow (their estimate over SLOW_FACTOR x the lower median of
        all estimates and over SLOW_FLOOR): run with the hedge delay's recomputation, every
        HEDGE_SAMPLES // 4 round trips. A slow endpoint's excess over the median first decays
        by the time since the last judgement (SLOW_HALF_LIFE): routed around, it answers few
        requests, so it is asked again within seconds and its next answers tell. A change
        empties the cached orders (rebuilt per partition, with the slow owners last)."""
        lat = self.latency
        now = self.clock()
        dt, self._judged_at = now - self._judged_at, now
        slow: frozenset[str] = frozenset()
        if len(lat) >= 2:
            ordered = sorted(lat.values())
            med = ordered[(len(ordered) - 1) // 2]
            if self.slow and dt > 0:
                keep = 0.5 ** (dt / SLOW_HALF_LIFE)
                for ep in self.slow:
                    est = lat.get(ep)
                    if est is not None and est > med:
                        lat[ep] = med + (est - med) * keep
            bar = max(SLOW_FACTOR * med, SLOW_FLOOR)
            if ordered[-1] > bar:
                slow = frozenset(ep for ep, est in lat.items() if est > bar)
        if slow != self.slow:
            log.debug("slow nodes (asked after the other owners): %s",
                      ", ".join(f"{ep} ({lat[ep] * 1000:.1f} ms)" for ep in sorted(slow))
                      or "none")
            self.slow = slow
            self._orders = {}
            self._readers_of = {}

    # ---- routing state ------------------------------------------------------------------------
    @property
    def members(self) -> list[wire.Member]:
        return list(self.ring_msg.members) if self.ring_msg is not None else []

    def _ring_members(self, msg: RingOk) -> list[tuple[str, str]]:
        """(id, rack) of the members the node's current ring is made of."""
        owners = set(msg.owners)
        return [(m.id, m.rack) for m in msg.members
                if (m.id in owners if owners else not m.leaving)]

    def set_ring(self, msg: RingOk) -> None:
        self.ring = Ring(self._ring_members(msg), q=msg.q, n=msg.n, tokens=msg.tokens)
        self.ring_msg = msg
        self.rings = {msg.n: self.ring}
        self.n = msg.n
        # (a member announcing an address this client cannot connect to, which an older node
        # let through, is left out: every call routed there failed "cannot connect" at once,
        # 29 of 30 in an outside run; the others serve its keys)
        self.endpoints = {m.id: m.listen for m in msg.members
                          if endpoint_problem(m.listen) is None}
        self.readers = {m.id for m in msg.members if m.features & wire.FEATURE_READ}
        if msg.ns_digest != self.ns_digest:  # created or altered since: reload when used
            if self.ns_digest:
                self.ns_cache.clear()
            self.ns_digest = msg.ns_digest
        self.down = set(msg.down)
        if self.latency:  # (estimates of endpoints no longer members go)
            known = set(self.endpoints.values())
            self.latency = {ep: est for ep, est in self.latency.items() if ep in known}
            self.slow = self.slow & known
        self._base_order = None
        self._orders = {}
        self._readers_of = {}
        self.ring_at = self.clock()

    def ring_for(self, n: int | None) -> Ring | None:
        """The ring with N = n (None: the cluster's), built from the last ring learned."""
        if self.ring is None or n is None or n == self.ring.n:
            return self.ring
        ring = self.rings.get(n)
        if ring is None:
            assert self.ring_msg is not None
            ring = self.rings[n] = Ring(self._ring_members(self.ring_msg), q=self.ring.q, n=n,
                                        tokens=self.ring_msg.tokens)
        return ring

    def _owner_not_asked(self, key: bytes | None, n: int | None, asked: list[str]
                         ) -> str | None:
        """The first owner of stored key `key` (its preflist, whatever the ring learned says
        is down) not asked yet, not known unconnectable and not suspect by this client's own
        tries; None if none or no ring."""
        ring = self.ring if n is None else self.ring_for(n)
        if key is None or ring is None:
            return None
        for x in ring.preflist(ring.partition(key)):
            ep = self.endpoints.get(x)
            if ep is not None and ep not in asked and ep not in self.unconnectable \
                    and ep not in self.suspect_until:
                return ep
        return None

    def candidates(self, key: bytes | None, n: int | None = None) -> list[str]:
        """Endpoints to try, best first: the key's owners that look up, others, suspects last.
        `key` is the stored key (namespace prefix included), `n` its namespace's N. The list
        may be shared: callers do not change it."""
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
            # the endpoints after the members that look up: members the ring says are down,
            # and seeds that are no member (None: no ring yet, every one may be a member)
            self._behind = None if self.ring is None else frozenset(base[self._n_up:])
        if self.routing == "any" and key is not None:
            up = self._n_up if self.ring is not None else len(base)
            if up:  # round robin over the members that look up, the rest after them
                r = next(self._spread) % up
                base = base[r:up] + base[:r] + base[up:]
            order = list(base)
        elif key is not None and self.ring is not None:
            ring = self.ring if n is None else self.ring_for(n)
            assert ring is not None
            p = ring.partition(key)
            known = self._orders.get((n, p))  # (the partition's order, once per ring learned)
            if known is None:
                eps, down, slow = self.endpoints, self.down, self.slow
                head = [eps[x] for x in ring.preflist(p) if x in eps and x not in down]
                if slow:  # slow owners after the others (coordinators of its writes)
                    head = ([ep for ep in head if ep not in slow]
                            + [ep for ep in head if ep in slow])
                known = self._orders[(n, p)] = head + [ep for ep in base if ep not in head]
            order = known
        else:
            order = list(base)
        if self.suspect_until:
            _expire(self.suspect_until, self.clock())
            suspect = self.suspect_until
            if suspect:  # tried last for a while; but a member that looks up, suspect or not,
                # before any endpoint behind them (a seed that is no member, a member down):
                # clients whose live nodes were all silent once around a ring change tried
                # five dead seed addresses first, at CONNECT_WAIT each, and failed "no node
                # reachable" with three nodes up (an outside membership run)
                behind = self._behind or ()
                order = ([ep for ep in order if ep not in suspect and ep not in behind]
                         + [ep for ep in order if ep in suspect and ep not in behind]
                         + [ep for ep in order if ep not in suspect and ep in behind]
                         + [ep for ep in order if ep in suspect and ep in behind])
        return order

    def new_wid(self) -> bytes:
        """A fresh write id (os.urandom drawn WID_POOL ids at a time: a syscall per put was
        2% of a put_many's client CPU)."""
        if self._rng is not None:
            return self._rng.randbytes(WID_BYTES)
        try:
            return _WIDS.pop()  # (atomic: Clients in other threads share the pool)
        except IndexError:
            pool = os.urandom(WID_BYTES * WID_POOL)
            _WIDS.extend(pool[i:i + WID_BYTES] for i in range(WID_BYTES, len(pool), WID_BYTES))
            return pool[:WID_BYTES]

    # ---- request building (validates before a byte is sent) --------------------------------
    def _n_of(self, ns: str) -> int | None:
        """The N quorums are checked against: the namespace's if known, else the cluster's
        for "default" and None (the node checks) for others."""
        if not ns:
            return self.n
        known = self.ns_cache.get(ns)
        return known.n if known is not None else None

    def delete_msg(self, key, context, w, wid: bytes, ns: str = "", pw: int | None = None
                   ) -> Delete:
        wire.check_key(key)
        wire.check_context(context)
        wire.check_quorum("w", w, self._n_of(ns))
        wire.check_quorum("pw", pw, self._n_of(ns))
        wire.check_wid(wid)
        return Delete(0, key, context or b"", w or 0, wid, ns, pw or 0)

    def _levels(self, ns: str, deadline: float | None = None, **quorums) -> Plan[list]:
        """`quorums` (r, w, pr, pw) with any given by name (`level`) as numbers of the
        namespace's N, learnt first if it is not known yet (by `deadline`: the calling
        operation's); in the order given."""
        n = self._n_of(ns)
        if n is None and any(type(v) is str for v in quorums.values()):
            unreached: ZkvError | None = None
            try:
                if ns:
                    yield from self.namespaces_plan(deadline)
                else:
                    yield from self.fetch_ring(
                        self.clock() + self.timeout if deadline is None else deadline)
            except (Unavailable, RequestTimeout) as exc:
                unreached = exc  # (no node answered: that is the error, not the level's name)
            except ZkvError:
                pass
            n = self._n_of(ns)
            if n is None:
                if unreached is not None:
                    raise unreached
                named = next(k for k, v in quorums.items() if type(v) is str)
                raise InvalidRequest(f"{named}={quorums[named]!r}: the N of namespace "
                                     f"{ns or nss.DEFAULT!r} is not known (give a number)")
        return [level(k, v, n) if n is not None else v for k, v in quorums.items()]

    def _need_primary(self, deadline: float | None = None) -> Plan[None]:
        """Refuse pr/pw if a member would ignore them (a sloppy answer where a strict one was
        asked for): any member may coordinate the request. (Checked once per ring learnt.)"""
        if self.ring_msg is None or self.ring_msg is not self._primary_ok:
            yield from self._need_feature(wire.FEATURE_PRIMARY, "pr/pw",
                                          "without primary quorums", deadline=deadline)
            self._primary_ok = self.ring_msg

    def _route(self, key: bytes, ns: str, deadline: float | None = None
               ) -> Plan[tuple[bytes | None, int | None]]:
        """(stored key to route by, its N); (None, None) when the namespace is not known
        here and the registry could not tell (any member takes it and forwards)."""
        if not ns:
            return key, None
        known = self.ns_cache.get(ns)
        if known is None and self.routing == "token":
            try:
                yield from self.namespaces_plan(deadline)
            except ZkvError:
                pass
            known = self.ns_cache.get(ns)
        if known is None:
            return None, None
        return nss.storage_key(known, key), known.n

    # ---- plans ------------------------------------------------------------------------------
    def _failure(self, candidates: list[str], tried: int, started: float) -> ZkvError:
        seen = candidates[:max(tried, 1)]
        if seen and all(ep in self.unconnectable for ep in seen):
            why = self.unreachable_why
            return Unavailable("no node reachable: tried " + ", ".join(
                f"{ep} ({why[ep]})" if ep in why else ep for ep in seen))
        if not tried:
            # (the call's own time went on learning the ring or the namespace first: "had
            # passed before a node could be asked" read as if an earlier call's had, an
            # outside run)
            return RequestTimeout(f"no answer: the {round(self.timeout, 3):g}s timeout ran out "
                                  "before the request was sent (learning the ring or the "
                                  "namespace from the nodes took it: none answered in time)")
        # (the time it waited: every node tried can be silent before the timeout is up; the
        # tries and the nodes counted apart: "21 node(s) tried" on a one-node cluster read
        # as nonsense, a review)
        nodes = len(dict.fromkeys(seen))
        return RequestTimeout(f"no answer from the {nodes} node(s) tried ({tried} "
                              f"tr{'y' if tried == 1 else 'ies'}, the last ending "
                              f"{self.clock() - started:.2f}s into the request; timeout "
                              f"{round(self.timeout, 3):g}s)")  # (a shared Client's: what
        # was left of it after other threads' calls, 1.4567891s unrounded: an outside run)

    def _handshaking(self, candidates: list[str], deadline: float) -> bool:
        """Every node tried was unreachable, and one of them has a handshake under way (a
        TCP connect not yet answered nor refused, or a TCP connection whose ZeroMQ handshake
        is not done) or a connection up whose queue is full (`handshaking`, as the driver's
        `_check_refused` found it), with time left: the call waits on for it rather than give
        up after CONNECT_WAIT a try (a client of one node across a 200 ms link, or whose SYN
        was lost, failed every call after 0.76 s whatever its timeout: outside runs). Its
        socket goes on meanwhile. A node that refuses connections fails the call at once."""
        return self.clock() + CONNECT_WAIT < deadline and any(
            ep in self.handshaking for ep in candidates if ep in self.unconnectable)

    def _note(self, ep: str, reply) -> None:
        if reply is UNREACHABLE:
            self.unconnectable.add(ep)
        else:
            self.unconnectable.discard(ep)

    def fetch_ring(self, deadline: float, wait: bool = True) -> Plan[RingOk]:
        """Ask the candidates in turn for the ring until one answers; raise if none does
        (`wait`: wait on, until `deadline`, for a node whose handshake is under way)."""
        clock = self.clock
        started = clock()
        candidates = self.candidates(None)
        tried = 0
        asked: list[str] = []  # every endpoint tried, in order (named if all fail)
        self._refreshing = True
        try:
            while True:
                for ep in candidates:
                    now = clock()
                    if now >= deadline:
                        break
                    tried += 1
                    if ep not in asked:
                        asked.append(ep)
                    reply = yield Send(ep, RingInfo(next(self.rids)),
                                       min(deadline, now + self.per_try))
                    self._note(ep, reply)
                    if isinstance(reply, RingOk):
                        self.set_ring(reply)
                        return reply
                    if reply is None:  # silent: asked last for a while, as a call's node (a
                        # paused first seed was asked first by every refresh, each call's)
                        self.suspect_until[ep] = clock() + SUSPECT_FOR
                if not wait or not self._handshaking(asked, deadline):
                    break
                yield Send(candidates[-1], None, clock() + CONNECT_WAIT)  # (a wait: sends nothing)
        finally:
            self._refreshing = False
        raise self._failure(asked or candidates, tried, started)

    def _stale(self, now: float) -> bool:
        """The ring should be learnt again (`_refresh`): asked before making its plan, which
        costs a generator per call."""
        return now - self.ring_at >= RING_REFRESH and not self._refreshing

    def _refresh(self, deadline: float) -> Plan[None]:
        """Learn the ring again if it is RING_REFRESH old (or a try failed since), unless
        another plan is at it; go on with what is known (seeds at least) if nobody answers
        within half of the call's time left: the refresh took all of it when the nodes it
        asked first were paused, and every call until one answered failed without sending
        its request (an outside run: every write of 4 s to three keys, a node paused)."""
        now = self.clock()
        if self._stale(now):
            try:  # (no wait on a handshake here: the call itself waits, with what it knows)
                yield from self.fetch_ring(now + (deadline - now) / 2, wait=False)
            except (Unavailable, RequestTimeout):
                pass

    def call(self, msg, key: bytes | None, only: str | None = None,
             n: int | None = None, deadline: float | None = None) -> Plan[Any]:
        """Send `msg` to the best candidate for stored key `key` of a namespace with N `n` (or
        only to endpoint `only`), failing over on silence; return the first reply (Error
        replies included). When every candidate answers "busy, retry", ask them again after
        a pause growing from BUSY_PAUSE, while the call has time (a loop: a recursion per
        round ended a long call in RecursionError)."""
        clock = self.clock
        now = started = clock()
        if deadline is None:
            deadline = now + self.timeout
        if only is None and now - self.ring_at >= RING_REFRESH and not self._refreshing:
            yield from self._refresh(deadline)  # (the test of _stale, inline: once per call)
            now = clock()
        hedged = only is None and type(msg) in HEDGED
        tried = busy = 0
        asked: list[str] = []  # every endpoint tried, in order (named if all fail)
        rids, per_try = self.rids, self.per_try
        while True:
            # (a copy: an ASKED_ALL answer moves an owner up, and the order is shared)
            candidates = [only] if only else list(self.candidates(key, n))
            also: tuple[tuple[str, int], ...] = ()  # earlier tries still listened to
            listen_until = 0.0
            sent_at: dict[int, float] = {}  # rid -> when each try still listened to was sent
            refused: Error | None = None  # the last "not now" (E_UNAVAILABLE) a node answered
            short: Error | None = None  # a coordinator's "too few replicas up" (ASKED_ALL)
            short_at = 0  # (the candidate that said so)
            short_more = 1  # coordinators asked after it (2: an owner first, then the next)
            last = len(candidates) - 1
            for i, ep in enumerate(candidates):
                if i:  # (the first try goes out in the same step as the clock read above)
                    now = clock()
                    if short is not None and i > short_at + short_more:
                        break  # (one more coordinator, or an owner and one more)
                if now >= deadline:
                    break
                tried += 1
                if ep not in asked:
                    asked.append(ep)
                rid = msg.rid = next(rids)  # the same message (and write id) on every try
                # the last candidate's try waits for the rest of the call's timeout: there is
                # nobody left to move on to (a one-node cluster under a connection flood took
                # more than the per-try budget once in 7 runs, and the call gave up with 3.5 s
                # left); not the one asked after a "too few replicas up": that answer stands
                until = now + per_try  # (min(deadline, ...), inline)
                if (i == last and short is None) or deadline < until:
                    until = deadline
                soft: float | None = None
                if hedged and i < last:  # (hedge_delay()'s common case inline)
                    soft = now + (self._hedge if self._rtts_new < _HEDGE_EVERY
                                  else self.hedge_delay())
                    if soft >= until:
                        soft = None
                reply = yield Send(ep, msg, until, soft, also)
                if reply is SLOW:  # keep listening to it, and ask the next candidate too
                    also += ((ep, rid),)
                    sent_at[rid] = now  # (when it was sent: its answer may still come)
                    listen_until = max(listen_until, until)
                elif reply is UNREACHABLE:
                    self.unconnectable.add(ep)
                else:
                    if self.unconnectable:
                        self.unconnectable.discard(ep)
                    if type(reply) is Error and not _refused_unwritten(reply):
                        self.uncertain_tries += 1  # (counted before an answer moves on)
                    if reply is not None:
                        # (_sample, inline: this try's answer, or a hedged one's)
                        sent = now if reply.rid == rid else sent_at.get(reply.rid)
                        if sent is not None:
                            # (a Batch step's answer: when it came, not the step's end)
                            t = (clock() if self._came is None else self._came) - sent
                            self.rtts.append(t)
                            self._rtts_new += 1
                            if hedged:  # (and its node's estimate: data requests only)
                                by = ep if reply.rid == rid else _sender(also, reply.rid, ep)
                                est = self.latency.get(by, 0.0)
                                self.latency[by] = est + LAT_ALPHA * (t - est)
                        if (type(reply) is Error and reply.code == wire.E_INVALID
                                and reply.message.startswith(_UNKNOWN_NS)):
                            reply = self._not_heard_yet(ep, msg, reply)
                        if type(reply) is Error and reply.code == wire.E_UNAVAILABLE:
                            if only is None and i < last:
                                refused = reply  # busy, still joining, stopping: not now,
                                continue  # ask another
                            if reply.message.startswith(wire.BUSY):
                                refused = reply  # (asked again below, after a pause)
                                break
                        elif (type(reply) is Error and reply.code == wire.E_QUORUM and hedged
                                and i < last and short is None
                                and wire.ASKED_ALL in reply.message):
                            # the coordinator saw too few replicas up to ask: it may be the
                            # one cut off (reachable by clients, not by its peers: an outside
                            # partition test, R=2 gets failing at once for 30 s). One other
                            # coordinator is asked, within the per-try budget (the write
                            # keeps its id), as Cassandra's drivers retry an
                            # UnavailableException on the next host once.
                            short, short_at = reply, i
                            # that one other is an owner of the key this client has not
                            # asked, even one the ring it learned calls down: that view came
                            # from a node, maybe the cut-off one (a 2|3 partition failed
                            # every w=3 put to keys whose owners the client could all reach,
                            # both coordinators on the small side: an outside netns run)
                            # (and then the next candidate as before: the owner may really be
                            # down, paused, which the review's model found 200 of 200 times)
                            alt = self._owner_not_asked(key, n, asked)
                            if alt is not None and alt != candidates[i + 1]:
                                candidates[i + 1:] = [alt] + [x for x in candidates[i + 1:]
                                                              if x != alt]
                                last, short_more = len(candidates) - 1, 2
                            continue
                        return reply
                if reply is not UNREACHABLE:
                    self.uncertain_tries += 1
                self.suspect_until[ep] = clock() + SUSPECT_FOR
                self.ring_at = -1e9  # learn who is down on the next call
            if also:  # out of candidates (the last unreachable): hedged tries may still answer
                end = min(deadline, listen_until)
                if clock() < end:
                    reply = yield Send(also[-1][0], None, end, None, also)
                    if reply is not None and reply is not UNREACHABLE and reply is not SLOW:
                        sent = sent_at.get(reply.rid)
                        if sent is not None:
                            self._sample(clock() - sent, _sender(also, reply.rid, also[-1][0])
                                         if hedged else None)
                        if type(reply) is Error and not _refused_unwritten(reply):
                            self.uncertain_tries += 1
                        if type(reply) is not Error or reply.code != wire.E_UNAVAILABLE:
                            return reply
                        # a late "not now" (busy: asked again after a pause, below), as any
                        # candidate's: returned as it was, a put failed "busy" 1.2 s into
                        # its 10 s timeout (a review)
                        refused = reply
            if short is not None:  # (the next coordinator was silent, unreachable or busy)
                return short
            if refused is None:
                if self._handshaking(asked, deadline):
                    yield Send(candidates[-1], None, clock() + CONNECT_WAIT)  # (a wait)
                    now = clock()
                    continue
                raise self._failure(asked or candidates, tried, started)
            if not refused.message.startswith(wire.BUSY):
                return refused
            # every candidate is busy: its own answer says retry, and the call may have time
            # left (thousands of requests gathered on one client outran the nodes' in-flight
            # caps: 649 of 10,000 failed "busy" with 25 s of 30 left)
            pause = min(BUSY_PAUSE_MAX, BUSY_PAUSE * 2 ** busy)
            pause *= 0.5 + (self._rng or random).random()
            if clock() + pause >= deadline:
                return refused
            yield Send(candidates[-1], None, clock() + pause)  # (a wait: sends nothing)
            busy += 1
            now = clock()

    def _not_heard_yet(self, ep: str, msg, reply: Error) -> Error:
        """A node's "unknown namespace" for a namespace this client learned from the cluster:
        the node has not heard of it yet (created moments ago, its gossip on the way; a
        node that stood still) and the request is retried as after "busy, retry". Else the
        answer as it was (a name no member knows: InvalidRequest at once). An outside soak's
        put_many right after namespace_create failed as an unknown namespace, for good."""
        ns = getattr(msg, "ns", "")
        if not ns or ns not in self.ns_cache:
            return reply
        return Error(reply.rid, wire.E_UNAVAILABLE,
                     f"{wire.BUSY}: {ep} has not heard of namespace {ns!r} yet")

    def get(self, key: bytes, r: int | str | None = None, *,
            namespace: str = nss.DEFAULT, pr: int | str | None = None,
            deadline: float | None = None) -> Plan[GetResult]:
        """`deadline`: when the call ends (default: the timeout from now), every lookup it
        makes first (a quorum's name, a namespace's settings) included."""
        ns = "" if namespace == _DEFAULT else check_namespace(namespace)
        clock = self.clock
        now = clock()
        if deadline is None:
            deadline = now + self.timeout
        if r.__class__ is str or pr.__class__ is str:  # "one", "quorum", "all"
            r, pr = yield from self._levels(ns, deadline, r=r, pr=pr)
            now = clock()
        # the request, built here (a call fewer per get): the checks' common case is inline,
        # and any doubt runs the wire checks in their order (the first problem is reported)
        if type(key) is not bytes or not 0 < len(key) <= _MAX_KEY:
            wire.check_key(key)
        if r is not None:
            qn = self._n_of(ns) if ns else self.n
            if type(r) is not int or not 0 < r <= (255 if qn is None else qn):
                wire.check_quorum("r", r, qn)
        msg = Get(0, key, cast(int, r or 0), ns)  # (a name resolved above, else refused)
        if pr is not None:  # a primary quorum (README, "Strict quorums")
            wire.check_quorum("pr", pr, self._n_of(ns))
            yield from self._need_primary(deadline)
            msg.pr = cast(int, pr)
            now = clock()
        route: bytes | None = key
        n = None
        if ns:
            route, n = yield from self._route(key, ns, deadline)
            now = clock()
        if self.owner_reads and route is not None:
            if now - self.ring_at >= RING_REFRESH and not self._refreshing:  # (_stale)
                yield from self._refresh(deadline)
                now = clock()
            got = yield from self._owner_read(msg, route, n, now)
            if got is not None:
                return got
        reply = yield from self.call(msg, route, n=n, deadline=deadline)
        if type(reply) is not GetOk:  # the common case costs one check
            reply = _expect(reply, GetOk)
        if reply.stamp > self.stamp_floor:
            self.stamp_floor = reply.stamp
        return GetResult(reply.values, reply.context, reply.expires)

    def _owner_read(self, msg: Get, skey: bytes, n: int | None, now: float
                    ) -> Plan[GetResult | None]:
        """A client-coordinated read: ask R of the key's owners for their copies at once (one
        round trip instead of a coordinator's two) and answer if every one of them says it is
        an owner whose copy counts and all R copies are byte-identical: then the answer is
        exactly the one a coordinator would build from those R answers, and there is nothing
        to repair among them. None (ask a coordinator, which merges and read-repairs) when
        the copies differ, one is not an owner's, or any try fails, is refused or is slower
        than the hedge delay. Only members whose record says they serve Read are asked.
        `now`: the clock's time (read by the caller in this step)."""
        ring = self.ring if n is None else self.ring_for(n)
        rm = self.ring_msg
        if ring is None or rm is None:
            return None
        if msg.ns:
            known = self.ns_cache.get(msg.ns)
            if known is None:
                return None
            r, lww, ttl_ms = msg.r or known.r, known.head, known.ttl * 1000
            pr, ver = msg.pr or known.pr, self._ns_tag(known)
        else:
            r, lww, ttl_ms, pr, ver = msg.r or rm.r, 0, 0, msg.pr, 0
        if pr > r:  # (every copy counted here is an owner's own: a primary's)
            r = pr
        p = ring.partition(skey)
        owners = self._readers_of.get((n, p))  # (what the ring tells, once per ring learned)
        if owners is None:
            eps, readers, down = self.endpoints, self.readers, self.down
            owners = self._readers_of[(n, p)] = [
                (node, eps[node]) for node in ring.preflist(p)
                if node in readers and node not in down and node in eps]
            if self.slow:  # slow owners last: the first R are read
                slow = self.slow
                owners[:] = ([x for x in owners if x[1] not in slow]
                             + [x for x in owners if x[1] in slow])
        # (expired here too: a client whose owner reads all succeed never calls candidates())
        suspect, skip = self.suspect_until, self.refilling_until
        if suspect:
            _expire(suspect, now)
        if skip:
            _expire(skip, now)
        unconnectable = self.unconnectable
        chosen: list[tuple[str, str]]
        if not (suspect or skip or unconnectable):  # nobody to leave out: the first R
            if not 0 < r <= len(owners):
                return None  # fewer than R owners to ask: a coordinator finds stand-ins
            chosen = owners if len(owners) == r else owners[:r]
        else:
            chosen = []
            for node, ep in owners:
                if ep not in suspect and ep not in unconnectable and node not in skip:
                    chosen.append((node, ep))
                    if len(chosen) == r:
                        break
            else:
                return None  # fewer than R owners to ask: a coordinator finds stand-ins
        hedge = self._hedge if self._rtts_new < _HEDGE_EVERY else self.hedge_delay()
        until = now + (self.per_try if self.per_try < hedge else hedge)  # (min(), inline)
        rids, key, ns = self.rids, msg.key, msg.ns
        sends = []
        for _, ep in chosen:
            sends.append(Send(ep, Read(next(rids), key, ns, ver), until))
        step = Batch(sends)
        replies = yield step
        arrived = step.arrived  # (when each answer came, if the driver says)
        latency = self.latency
        first: bytes | None = None
        seal = b""
        counted = 0
        rtt: float | None = None  # (the answers came back together: one round trip)
        # (zip(chosen, replies, strict=True), its check up front: the keyword's slower path
        # cost more than indexing)
        if len(replies) != len(chosen):
            raise ValueError(f"{len(replies)} answers to {len(chosen)} tries")
        for i, reply in enumerate(replies):
            node, ep = chosen[i]
            if type(reply) is ReadOk:
                if unconnectable:
                    unconnectable.discard(ep)
                if arrived is not None:  # this owner's own round trip: its estimate, and
                    # the hedge delay's sample (the step's end counted a frozen owner's wait
                    # as every other owner's round trip: the hedge delay tripled per freeze)
                    t = arrived[i] - now
                    est = latency.get(ep, 0.0)
                    latency[ep] = est + LAT_ALPHA * (t - est)
                else:
                    if rtt is None:
                        rtt = self.clock() - now
                    t = rtt
                self.rtts.append(t)  # (_sample, inline)
                self._rtts_new += 1
                if first is None:
                    first = reply.dvv
                if reply.owner and reply.dvv == first:
                    counted += 1
                    if reply.seal:  # (with keys: every counted copy's is the same)
                        seal = reply.seal
                elif reply.refilling:
                    self.refilling_until[node] = now + REFILL_SKIP
                elif reply.ns_changed:  # it holds another version of the namespace
                    first = None
                    yield from self._relearn()
                    break
                elif not reply.owner:  # not an owner in its ring: ours is stale
                    self.ring_at = -1e9  # (learnt again by the next call)
            elif reply is UNREACHABLE:
                self.unconnectable.add(ep)
                self.suspect_until[ep] = self.clock() + SUSPECT_FOR
            elif reply is None:  # silent past the hedge delay: tried last for a while
                self.suspect_until[ep] = self.clock() + SUSPECT_FOR
        if counted < r or first is None:
            return None
        try:  # every counted copy is `first`, byte for byte: the answer is that copy's
            ok, _ = identical_answers(first, lww, counted,
                                      self.wall_ms() if lww > nss.STAMP_BYTES else 0, ttl_ms)
        except ValueError:  # not a valid version: as if none had answered
            return None
        if ok.stamp > self.stamp_floor:
            self.stamp_floor = ok.stamp
        if seal and len(seal) == PREFIX:  # sealed as a coordinator's answer is (node/seal.py)
            return GetResult(ok.values, seal + ok.context, ok.expires)
        return GetResult(ok.values, ok.context, ok.expires)

    def put(self, key: bytes, value: bytes, context: bytes | None = None,
            w: int | str | None = None,
            *, wid: bytes | None = None, namespace: str = nss.DEFAULT, ttl: int | None = None,
            pw: int | str | None = None) -> Plan[bytes]:
        ns = "" if namespace == _DEFAULT else check_namespace(namespace)
        if ttl is not None:
            check_ttl(ttl, ns)
        deadline = self.clock() + self.timeout  # (the timeout bounds the whole call)
        if w.__class__ is str or pw.__class__ is str:  # "one", "quorum", "all"
            w, pw = yield from self._levels(ns, deadline, w=w, pw=pw)
        if wid is None:
            wid = self.new_wid()
        # the request, built here as get's is
        if (type(key) is not bytes or not 0 < len(key) <= _MAX_KEY
                or type(value) is not bytes or len(value) > self.max_value_size
                or (context is not None
                    and (type(context) is not bytes or len(context) > wire.MAX_CONTEXT))
                or type(wid) is not bytes or len(wid) > wire.MAX_WID):
            wire.check_key(key)
            wire.check_value(value, self.max_value_size)
            wire.check_context(context)
            wire.check_quorum("w", w, self._n_of(ns))
            wire.check_wid(wid)
        elif w is not None:
            qn = self._n_of(ns) if ns else self.n
            if type(w) is not int or not 0 < w <= (255 if qn is None else qn):
                wire.check_quorum("w", w, qn)
        msg = Put(0, key, value, context or b"", cast(int, w or 0), wid, ns)
        msg.floor = self.stamp_floor
        if pw is not None:  # a primary quorum (README, "Strict quorums")
            wire.check_quorum("pw", pw, self._n_of(ns))
            yield from self._need_primary(deadline)
            msg.pw = cast(int, pw)
        route, n = (yield from self._route(key, ns, deadline)) if ns else (key, None)
        if ttl:
            yield from self._check_write_ttl(ns, ttl, deadline)
            msg.ttl = ttl
        reply = yield from self.call(msg, route, n=n, deadline=deadline)
        if type(reply) is not PutOk:  # the common case costs one check
            reply = _expect(reply, PutOk)
        if reply.stamp > self.stamp_floor:
            self.stamp_floor = reply.stamp
        return reply.context

    def _check_write_ttl(self, ns: str, ttl: int, deadline: float | None = None
                         ) -> Plan[None]:
        """Refuse a write's ttl here if the namespace's values have no room for one: a node of
        a version without per-write ttls would take the write and ignore it (one with them
        refuses it; the ttl's bound, which an alter may move, is left to the node)."""
        known = yield from self._namespace_of(ns, deadline=deadline)
        if known is not None and not known.write_ttl:
            known.check_write_ttl(ttl)  # (InvalidRequest: says why)

    def _namespace_of(self, ns: str, fresh: bool = False, deadline: float | None = None
                      ) -> Plan[Any]:
        """Namespace `ns`'s settings as last learned (`fresh`: asked again), read from the
        nodes if unknown; None for the default namespace or when no node can say (the node
        taking the write then checks)."""
        known = self.ns_cache.get(ns) if ns and not fresh else None
        if ns and known is None:
            try:
                yield from self.namespaces_plan(deadline)
            except ZkvError:
                return None
            known = self.ns_cache.get(ns)
        return known

    def _check_ns_items(self, ns: str, keys: Sequence[bytes],
                        ttls: Sequence[int | None] = ()) -> Plan[None]:
        """A many-operation's items against namespace `ns` (its keys' room, each ttl of a
        write's own), before any is sent: the nodes refused them one by one, after the items
        before had been written (an outside run: put_many raised for item 1 and item 0 was
        stored). The settings as cached, asked again before refusing (an alter may have
        moved the ttl's bound since)."""
        if not ns:
            return

        def check(known) -> None:
            for i, key in enumerate(keys):
                room = _MAX_KEY - len(nss.storage_key(known, key)) + len(key)
                if len(key) > room:
                    raise InvalidRequest(f"item {i}: key of {len(key)} bytes is too long for "
                                         f"namespace {known.name!r} (at most {room})")
            for i, t in enumerate(ttls):
                if t is not None:
                    _check_item(i, known.check_write_ttl, t)

        known = yield from self._namespace_of(ns)
        if known is None:
            return
        try:
            check(known)
        except InvalidRequest:
            known = yield from self._namespace_of(ns, fresh=True)
            if known is not None:
                check(known)

    def delete(self, key: bytes, context: bytes | None = None, w: int | str | None = None,
               *, wid: bytes | None = None, namespace: str = nss.DEFAULT,
               pw: int | str | None = None) -> Plan[bytes]:
        """Write a tombstone covering `context` (None: the key's current context, read first
        at the namespace's R; b"": nothing, a blind delete: a sibling of every value it did
        not see, as a blind put). Returns the tombstone's context."""
        ns = "" if namespace == _DEFAULT else check_namespace(namespace)
        deadline = self.clock() + self.timeout  # (the timeout bounds the whole call)
        if w.__class__ is str or pw.__class__ is str:  # "one", "quorum", "all"
            w, pw = yield from self._levels(ns, deadline, w=w, pw=pw)
        msg = self.delete_msg(key, context, w, self.new_wid() if wid is None else wid, ns,
                              cast(int | None, pw))
        if pw is not None:
            yield from self._need_primary(deadline)
        if context is None:  # read first, as `zkv delete` and Riak's delete do: without a
            # context the tombstone covered nothing, a sibling of every value, and the key
            # stayed readable (b"" still writes that blind tombstone): within this call's
            # timeout
            msg.context = (yield from self.get(key, namespace=namespace,
                                               deadline=deadline)).context
        route, n = (yield from self._route(key, ns, deadline)) if ns else (key, None)
        return _expect((yield from self.call(msg, route, n=n, deadline=deadline)),
                       PutOk).context

    # ---- many operations in one call ------------------------------------------------------------
    def many(self, plans: Iterable[Plan[T]], return_exceptions: bool = False
             ) -> Plan[list[T | ZkvError]]:
        """Run `plans` (get/put/delete plans, taken from the iterable as they are needed)
        side by side, MANY_WINDOW at a time, one Batch per step: each keeps its own routing,
        failover, hedging and write id, and the tries of a step go to each node as one
        frame. Returns their results in order; a plan that raised a ZkvError leaves the
        exception in its place with `return_exceptions`, else the first one (in order) is
        raised once every plan has finished (so every write of the batch was tried, whatever
        happened to the others). The client's timeout bounds each plan from its start (a
        plan past the first window starts when an earlier one ends), not the whole call."""
        results: list[Any] = []
        failed: list[int] = []
        # the plans in flight, in the order they were started: (index, plan, how many answers
        # it waits for: -1 for a Send, else its Batch's length (a get asking owners itself),
        # that Batch or None)
        active: list[tuple[int, Plan, int, Batch | None]] = []
        stepped: list[tuple[int, Plan, int, Batch | None]] = []  # this step's, resumed so far
        todo: Iterator[tuple[int, Plan]] | None = enumerate(plans)  # None: all started
        got: list = []
        arrived: list[float] | None = None  # when each of the step's answers came, if told
        try:
            while True:
                # resume each plan with its share of the answers, then start new plans while
                # the window has room (a generator resumed with send(None) the first time
                # starts as next() would), collecting the next step's tries as they come
                stepped = []
                sends: list[Send] = []
                at, n_active = 0, len(active)
                j = 0
                while True:
                    self._came = None  # (set below for a Send-plan's answer of this step)
                    if j < n_active:
                        i, plan, k, sub = active[j]
                        j += 1
                        if k < 0:
                            answer = got[at]
                            self._came = arrived[at] if arrived is not None else None
                            at += 1
                        else:
                            answer = got[at:at + k]
                            if arrived is not None and sub is not None:
                                sub.arrived = arrived[at:at + k]
                            at += k
                    elif todo is not None and len(stepped) < MANY_WINDOW:
                        nxt = next(todo, None)
                        if nxt is None:
                            todo = None
                            break
                        i, plan = nxt
                        results.append(None)
                        answer = None
                    else:
                        break
                    try:
                        x = plan.send(answer)
                    except StopIteration as done:
                        results[i] = done.value
                    except ZkvError as exc:
                        results[i] = exc
                        failed.append(i)
                    else:
                        if type(x) is Send:  # (else a Batch)
                            sends.append(x)
                            stepped.append((i, plan, -1, None))
                        else:
                            sends += x.sends
                            stepped.append((i, plan, len(x.sends), x))
                self._came = None
                active = stepped
                if not active:
                    break
                step = Batch(sends)
                got = yield step
                arrived = step.arrived
        finally:
            # (an error or an interrupt: the rest stop; a plan already finished ignores it)
            for _, plan, _, _ in active:
                plan.close()
            for _, plan, _, _ in stepped:
                plan.close()
        if failed and not return_exceptions:
            raise results[min(failed)]
        return results

    def get_many(self, keys: Sequence[bytes], r: int | str | None = None, *,
                 namespace: str = nss.DEFAULT, return_exceptions: bool = False,
                 pr: int | str | None = None) -> Plan[list[GetResult | ZkvError]]:
        """get() of every key (see many()); every key is checked before anything is sent."""
        keys = _items(keys, "keys")
        ns = check_namespace(namespace)
        r, pr = yield from self._levels(ns, r=r, pr=pr)  # (by name: resolved once per call)
        wire.check_quorum("r", r, self._n_of(ns))
        wire.check_quorum("pr", pr, self._n_of(ns))
        for i, key in enumerate(keys):
            _check_item(i, _check_many_key, key, ns)
        yield from self._check_ns_items(ns, keys)
        if pr is not None:  # (refused before any key is sent)
            yield from self._need_primary()
        return (yield from self.many((self.get(k, r, namespace=namespace, pr=pr) for k in keys),
                                     return_exceptions))

    def put_many(self, items: Sequence[tuple], w: int | str | None = None, *,
                 namespace: str = nss.DEFAULT, return_exceptions: bool = False,
                 ttl: int | Sequence[int | None] | None = None, pw: int | str | None = None,
                 write_ids: Sequence[bytes] | None = None) -> Plan[list[bytes | ZkvError]]:
        """put() of every (key, value) or (key, value, context) item, each with its own write
        id (see many(); `write_ids`: the caller's, one per item, as put's `write_id`), and
        `ttl` if given (one for all, or one per item, None for none); returns the new
        contexts in order. Every item is checked before anything is sent. Two items with the
        same key are two concurrent writes (siblings, unless a context covers the other)."""
        items = _items(items, "items")
        ns = check_namespace(namespace)
        ttls: Sequence[int | None]
        if not isinstance(ttl, (list, tuple)):  # one for all (check_ttl names a bad one)
            if ttl is not None:
                check_ttl(ttl, ns)
            ttls = [cast(int | None, ttl)] * len(items)
        else:
            ttls = _per_item(ttl, items, "ttl")
            for i, t in enumerate(ttls):
                if t is not None:
                    _check_item(i, check_ttl, t, ns)
        wids: Sequence[bytes | None] = [None] * len(items)
        if write_ids is not None:
            wids = _per_item(write_ids, items, "write_ids")
            for i, x in enumerate(wids):
                _check_item(i, public_wid, x)
        w, pw = yield from self._levels(ns, w=w, pw=pw)
        wire.check_quorum("w", w, self._n_of(ns))
        wire.check_quorum("pw", pw, self._n_of(ns))
        checked = []
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                what = (f"a tuple of {len(item)}" if isinstance(item, tuple)
                        else type(item).__name__)
                raise InvalidRequest(f"item {i}: a (key, value) or (key, value, context) tuple, "
                                     f"not {what}")
            key, value, context = item if len(item) == 3 else (*item, None)
            _check_item(i, _check_many_key, key, ns)
            _check_item(i, wire.check_value, value, self.max_value_size)
            _check_item(i, _check_context_format, context)
            checked.append((key, value, context))
        yield from self._check_ns_items(ns, [k for k, _, _ in checked], ttls)
        if pw is not None:  # (refused before any key is sent)
            yield from self._need_primary()
        plans = (self.put(k, v, c, w, wid=wid, namespace=namespace, ttl=t, pw=pw)
                 for (k, v, c), wid, t in zip(checked, wids, ttls, strict=True))
        return (yield from self.many(plans, return_exceptions))

    def delete_many(self, items: Sequence, w: int | str | None = None, *,
                    namespace: str = nss.DEFAULT, return_exceptions: bool = False,
                    pw: int | str | None = None) -> Plan[list[bytes | ZkvError]]:
        """delete() of every key or (key, context) item (see many()); returns the tombstones'
        contexts in order. Every item is checked before anything is sent."""
        items = _items(items, "items")
        ns = check_namespace(namespace)
        w, pw = yield from self._levels(ns, w=w, pw=pw)
        wire.check_quorum("w", w, self._n_of(ns))
        wire.check_quorum("pw", pw, self._n_of(ns))
        checked = []
        for i, item in enumerate(items):
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise InvalidRequest(f"item {i}: a key or a (key, context) tuple, not a "
                                         f"tuple of {len(item)}")
                key, context = item
            else:
                key, context = item, None
            _check_item(i, _check_many_key, key, ns)
            _check_item(i, _check_context_format, context)
            checked.append((key, context))
        yield from self._check_ns_items(ns, [k for k, _ in checked])
        if pw is not None:  # (refused before any key is sent)
            yield from self._need_primary()
        return (yield from self.many((self.delete(k, c, w, namespace=namespace, pw=pw)
                                      for k, c in checked), return_exceptions))

    # ---- namespaces (issue 15) -----------------------------------------------------------------
    def _learn(self, reply: NsOk) -> Registry:
        try:
            reg = Registry.decode(reply.registry)
        except ValueError as exc:
            raise ZkvError(f"a node sent a bad namespace registry: {exc}") from None
        self.ns_last = reg
        for ns in reg.versions():
            cur = self.ns_cache.get(ns.name)
            if ns.dropped:  # (forgotten: a request in it is refused by the node, saying so)
                if cur is not None and ns.rank() < cur.rank():
                    del self.ns_cache[ns.name]
            elif cur is None or ns.rank() < cur.rank():  # (a later alter of it ranks lower)
                self.ns_cache[ns.name] = ns
        return reg

    def _ns_tag(self, ns: Namespace) -> int:
        """namespaces.version_tag of a cached namespace (once per version cached)."""
        got = self._ns_tags.get(ns.name)
        if got is None or got[0] is not ns:
            got = self._ns_tags[ns.name] = (ns, nss.version_tag(ns))
        return got[1]

    def _relearn(self) -> Plan[None]:
        """A node holds another version of a namespace cached here (Read.ns_ver): learn the
        registry again (a later version replaces the cached one; the request in hand goes
        on without the answers it read nothing for). A failure leaves the cache as it is."""
        try:
            yield from self.namespaces_plan()
        except ZkvError:
            pass

    def namespaces_plan(self, deadline: float | None = None) -> Plan[list[dict]]:
        """Every namespace the cluster knows: [{"name", "n", "r", "w", "conflicts", ...}]
        (not the dropped ones); `deadline`: the calling operation's (its timeout bounds it)."""
        reg = self._learn(_expect((yield from self.call(NsList(0), None, deadline=deadline)),
                                  NsOk))
        return msgspec.to_builtins(list(reg))

    def namespace_create(self, name: str, n: int | None = None, r: int | str | None = None,
                         w: int | str | None = None, conflicts: str = "siblings", ttl: int = 0,
                         pr: int | str = 0, pw: int | str = 0) -> Plan[dict]:
        """Create a namespace (admin); returns its settings. Creating it again with the same
        settings returns the existing one; other settings raise InvalidRequest. `ttl`: seconds
        each value lives after its write (lww namespaces only; 0: for ever); `pr`/`pw`: the
        primary quorums its gets and writes ask for unless they give their own (0: none)."""
        if n is None and self.ring_msg is None:  # (the N a default n means, for the checks)
            try:
                yield from self.fetch_ring(self.clock() + self.timeout)
            except ZkvError:
                pass  # (the node checks)
        n_of = n if n is not None else self.n
        if any(type(v) is str for v in (r, w, pr, pw)):  # "one", "quorum", "all"
            if n_of is None:
                raise InvalidRequest(f"cannot create namespace {name!r}: the cluster's N is "
                                     "not known (give --n, or numbers)")
            r, w, pr, pw = (level(k, v, n_of) for k, v in (("r", r), ("w", w), ("pr", pr),
                                                          ("pw", pw)))
        check_namespace_settings(name, n, r, w, conflicts, ttl, pr, pw, n_of)
        if ttl:  # a node of an older version would drop the field and never expire anything
            yield from self._need_feature(wire.FEATURE_TTL, f"cannot create namespace {name!r} "
                                          f"with a ttl", "without expiry", fresh=True)
        if pr or pw:  # ... or answer from stand-ins
            yield from self._need_feature(wire.FEATURE_PRIMARY, f"cannot create namespace "
                                          f"{name!r} with pr/pw", "without primary quorums",
                                          fresh=True)
        reply = yield from self._ns_call(NsCreate(0, name, n or 0, cast(int, r or 0),
                                                  cast(int, w or 0), conflicts, ttl,
                                                  cast(int, pr), cast(int, pw)))  # (numbers)
        reg = self._learn(_expect(reply, NsOk))
        self.ns_cache[name] = reg.get(name)  # the cluster's version, if a race had one
        return msgspec.to_builtins(reg.get(name))

    def update(self, key: bytes, fn: Callable[[list[bytes]], bytes], r: int | str | None = None,
               w: int | str | None = None, retries: int = 3, *,
               namespace: str = nss.DEFAULT, ttl: int | None = None, pr: int | str | None = None,
               pw: int | str | None = None) -> Plan[bytes]:
        """Read, let fn merge the siblings into one value, write it back with the context
        (and `ttl`, the write's own, if given; `pr`/`pw`: the read's and the write's primary
        quorums).

        Retries (re-reading first) when the read or write misses its quorum or times out; a
        retry that writes the same value as the attempt before reuses its write id (that write
        may have been stored). No retry starts once the client's timeout has passed since the
        call began (each read and write has the timeout: the call takes at most about twice
        it). Returns the new context.
        """
        if not callable(fn):
            raise InvalidRequest(f"fn must be callable, got {type(fn).__name__}")
        if type(retries) is not int or retries < 0:
            raise InvalidRequest(f"retries must be an int >= 0, got {retries!r}")
        wire.check_key(key)
        ns = check_namespace(namespace)
        bound = getattr(fn, "__zkv_key__", None)  # a zkv.crdt updater: made for one key
        if bound is not None and tuple(bound) != (namespace, key):
            # (its per-process memory is keyed by it: another key's counter took that key's
            # totals, one +1 reading 6 where 5 had been counted on the other key)
            raise InvalidRequest(
                f"fn is an updater made for key {bound[1]!r} in namespace {bound[0]!r}, not "
                f"{key!r} in {namespace!r}: make it with the key (and namespace=) it updates")
        r, w, pr, pw = yield from self._levels(ns, r=r, w=w, pr=pr, pw=pw)
        wire.check_quorum("r", r, self._n_of(ns))
        wire.check_quorum("w", w, self._n_of(ns))
        wire.check_quorum("pr", pr, self._n_of(ns))
        wire.check_quorum("pw", pw, self._n_of(ns))
        if ttl is not None:
            check_ttl(ttl, ns)
        if pr is not None or pw is not None:  # (refused before the read, not after it)
            yield from self._need_primary()
        last: ZkvError | None = None
        wid: bytes | None = None
        # what became of the write, for fn's `__zkv_settled__(stored)` if it has one (a
        # counter's updater, crdt.py): True stored, None maybe (a put that timed out or
        # missed its quorum, or was cut short), False surely not
        stored: bool | None = False
        writing = False
        written = b""  # the context the write returned
        read_hook = getattr(fn, "__zkv_read__", None)  # (a counter's updater: the read's
        # context, to tell a read that saw its last write -- or a delete after it -- from one
        # that missed it)
        # each read and write has the client's timeout; no retry starts once it has passed
        # since the call began (under loss a 2 s update took 8.8 s: an outside run)
        end = self.clock() + self.timeout
        try:
            for attempt in range(retries + 1):
                if attempt and self.clock() >= end:  # (a try failed: `last` is set)
                    break
                try:
                    cur = yield from self.get(key, r, namespace=namespace, pr=pr)
                    if read_hook is not None:
                        read_hook(cur.context)
                    value = fn(list(cur.values))
                    if type(value) is not bytes and inspect.isawaitable(value):
                        if inspect.iscoroutine(value):
                            value.close()  # (never awaited: no "was never awaited" warning)
                        raise InvalidRequest("fn returned an awaitable: update() calls fn "
                                             "between its read and its write, and fn returns "
                                             "the bytes to write (for async work: get(), then "
                                             "put() with its context)")
                    # a new write id for every attempt: two writers whose first tries missed
                    # their quorum re-read, wrote the same bytes under their first ids, and
                    # each new write listed the other's id as retired: rule R retired both,
                    # and two acknowledged updates erased each other (the review's model;
                    # a CRDT updater reapplies its own changes once, whatever the id)
                    wid = self.new_wid()
                    writing = True
                    uncertain = self.uncertain_tries
                    ctx = yield from self.put(key, value, cur.context, w, wid=wid,
                                              namespace=namespace, ttl=ttl, pw=pw)
                    writing, stored, written = False, True, ctx
                    return ctx
                except (QuorumError, RequestTimeout, TooManySiblings) as exc:
                    # (TooManySiblings: other writers added siblings since the read; read
                    # again and fn merges them too. Refused before storing, unless a try
                    # before the refusing one may have been carried out)
                    if writing and (type(exc) is not TooManySiblings
                                    or self.uncertain_tries != uncertain):
                        stored = None
                    writing = False
                    last = exc
                except (Unavailable, InvalidRequest, AuthenticationError):
                    # refused by this client (a bad value, no node reachable, a refused key)
                    # or by a node before it stored anything (pw it cannot meet, its disk,
                    # busy), and no try of the write may have been carried out (call()
                    # counts every unanswered try and every refusal that may come after
                    # copies went out, a node shutting down or one that stood still, in
                    # uncertain_tries): surely not stored, whatever an earlier attempt
                    # stored (`stored` as it was). A counter's updater then frees its lane
                    # at the totals it had: a pw-refused +1 was counted by the next one (an
                    # outside run: 20 of 20 keys)
                    if writing and self.uncertain_tries == uncertain:
                        writing = False
                    raise
            assert last is not None
            raise last
        finally:
            settled = getattr(fn, "__zkv_settled__", None)
            if callable(settled):
                try:
                    if stored:
                        settled(True, written)
                    else:
                        settled(None if writing else stored)
                except Exception:  # (the outcome, or the error raised, stays the call's)
                    log.exception("the __zkv_settled__ hook of an update() fn raised")

    def namespace_alter(self, name: str, r: int | str | None = None,
                        w: int | str | None = None, ttl: int | None = None,
                        pr: int | str | None = None, pw: int | str | None = None
                        ) -> Plan[dict]:
        """Change a namespace's default r, w, pr and pw and its ttl (None: as it is; ttl 0: no
        expiry; pr/pw 0: none) on every node (admin); returns its new settings. N and
        conflicts are fixed.
        A lowered ttl applies to every value at once; a raised or removed one never brings
        back a value that had expired. InvalidRequest for "default", an unknown name, bad
        settings, or a member whose version cannot alter (upgrade every node first)."""
        if not nss.valid_name(name):
            raise InvalidRequest(f"cannot alter namespace {name!r}: name {name!r}: 1 to 64 "
                                 "characters of A-Z a-z 0-9 _ . -")
        if any(type(v) is str for v in (r, w, pr, pw)):  # "one", "quorum", "all" of its N
            for k, v in (("r", r), ("w", w), ("pr", pr), ("pw", pw)):
                level(k, v, 1)  # (a bad name refused before the registry is read)
            r, w, pr, pw = yield from self._levels(name, r=r, w=w, pr=pr, pw=pw)
        bad = [f"{k}={v!r}: must be an int" for k, v in (("r", r), ("w", w), ("ttl", ttl),
                                                         ("pr", pr), ("pw", pw))
               if v is not None and (not isinstance(v, int) or isinstance(v, bool))]
        # (the node checks r/w/pr/pw against the namespace's n; a negative value was taken as
        # "as it is" (-1, the wire's) or refused as an undecodable frame)
        bad += [f"{k}={v!r}: must be between {low} and n" for k, v, low in
                (("r", r, 1), ("w", w, 1), ("pr", pr, 0), ("pw", pw, 0))
                if type(v) is int and not low <= v <= nss.MAX_N]
        if type(ttl) is int and not 0 <= ttl <= nss.MAX_TTL:
            bad.append(f"ttl={ttl!r}: must be between 0 (no expiry) and {nss.MAX_TTL} seconds")
        if bad:
            raise InvalidRequest(f"cannot alter namespace {name!r}: " + "; ".join(bad))
        yield from self._need_feature(wire.FEATURE_NS_ALTER, f"cannot alter namespace "
                                      f"{name!r}", "without namespace alter", fresh=True)
        if pr or pw:
            yield from self._need_feature(wire.FEATURE_PRIMARY, f"cannot alter namespace "
                                          f"{name!r} to pr/pw", "without primary quorums")
        r, w, pr, pw = (-1 if v is None else cast(int, v) for v in (r, w, pr, pw))
        msg = wire.NsAlter(0, name, r, w, -1 if ttl is None else ttl, pr, pw)
        reg = self._learn(_expect((yield from self._ns_call(msg)), NsOk))
        self.ns_cache[name] = reg.get(name)
        return msgspec.to_builtins(reg.get(name))

    def _ns_call(self, msg) -> Plan[Any]:
        """A namespace change sent to a node, which answers once every member it sees up has
        it: a timeout (a member paused, not yet seen down) may come after the change took
        effect, and says so (it read as if nothing had happened: an outside run, the alter
        in effect 3 of 3 times)."""
        try:
            return (yield from self.call(msg, None))
        except RequestTimeout as exc:
            raise RequestTimeout(f"{exc}; the namespace change may have been applied (a node "
                                 "took it and waits for every member it sees up to have it): "
                                 "`zkv namespace list` shows whether it was") from None

    def namespace_drop(self, name: str, truncate: bool = False) -> Plan[dict]:
        """Drop a namespace (admin): every key of it is gone at once for every read, listing
        and write, and purged from every node's stores in the background; the name may be
        created again (empty). With `truncate`, empty it and keep it with its settings (as
        Cassandra's TRUNCATE). Returns the namespace's last settings (drop) or its new ones
        (truncate). InvalidRequest for "default", an unknown name, or a member whose version
        cannot drop (upgrade every node first). A write that races the drop on a node that
        has not heard of it yet may be acknowledged and purged."""
        what = "truncate" if truncate else "drop"
        if not isinstance(truncate, bool):
            raise InvalidRequest(f"truncate must be True or False, got {truncate!r}")
        if not nss.valid_name(name):
            raise InvalidRequest(f"cannot {what} namespace {name!r}: a name is 1 to 64 "
                                 f"characters of A-Z a-z 0-9 _ . -")
        if name == nss.DEFAULT:
            raise InvalidRequest(f"namespace {nss.DEFAULT!r} holds the keys written without "
                                 f"one; it cannot be {what}{'d' if truncate else 'ped'}")
        yield from self._need_feature(wire.FEATURE_DROP, f"cannot {what} namespace {name!r}",
                                      "without namespace drop", fresh=True)
        # the generation to end, so that a retry (the answer lost) ends nothing more
        now = self._learn(_expect((yield from self.call(NsList(0), None)), NsOk))
        current = now.version_of(name)
        gen = current.gen if current is not None else -1
        reg = self._learn(_expect((yield from self._ns_call(wire.NsDrop(0, name, truncate,
                                                                         gen))), NsOk))
        if truncate:
            self.ns_cache[name] = reg.get(name)
            return msgspec.to_builtins(reg.get(name))
        self.ns_cache.pop(name, None)
        gone = reg.version_of(name)
        return msgspec.to_builtins(gone) if gone is not None else {"name": name}

    def _need_feature(self, bit: int, what: str, lacking: str, only: str | None = None,
                      fresh: bool = False, deadline: float | None = None) -> Plan[None]:
        """InvalidRequest "`what`: <ids> run(s) a zkv version `lacking` (upgrade it)" if the
        member at endpoint `only` (None: any member, as any may be the one that answers)
        runs a version whose record lacks FEATURE `bit` (an older node would drop the message
        as malformed, the call timing out, or ignore the new field). `fresh`: the member
        table asked again first (else only when none is known yet); `deadline`: the calling
        operation's."""
        if fresh or not self.members:
            yield from self.fetch_ring(self.clock() + self.timeout if deadline is None
                                       else deadline)
        old = sorted(m.id for m in self.members
                     if (only is None or m.listen == only) and not m.features & bit)
        if old:
            raise InvalidRequest(f"{what}: {', '.join(old[:8])} run(s) a zkv version {lacking} "
                                 f"(upgrade {'it' if len(old) == 1 else 'every node'} first)")

    def _node(self, node: str | None) -> Plan[str | None]:
        """An endpoint for `node` (an endpoint, or a member id looked up in the ring)."""
        if node is None or (isinstance(node, str) and node.startswith("tcp://")):
            return node
        if not isinstance(node, str):
            raise InvalidRequest(f"node must be an endpoint or a member id, got {node!r}")
        if node not in self.endpoints:
            yield from self.fetch_ring(self.clock() + self.timeout)
        if node not in self.endpoints:
            raise InvalidRequest(f"no member {node!r} in the ring (members: "
                                 f"{', '.join(sorted(self.endpoints))})")
        return self.endpoints[node]

    def status(self, node: str | None = None) -> Plan[dict]:
        """The status document of `node` (default: the first member that answers)."""
        only = yield from self._node(node)
        return _expect((yield from self.call(Status(0), None, only=only)), StatusOk).info

    def ring_info(self, node: str | None = None) -> Plan[RingOk]:
        """The ring as `node` (default: the first member that answers) sees it now (always
        asked, never the cached copy)."""
        if node is None:
            return (yield from self.fetch_ring(self.clock() + self.timeout))
        only = yield from self._node(node)
        return _expect((yield from self.call(RingInfo(0), None, only=only)), RingOk)

    def cluster(self, action: str, node_id: str = "", other: str = "",
                node: str | None = None) -> Plan[dict]:
        """A membership change or query (DESIGN.md 2.4), answered by the claimant: `action` is
        leave, replace, force-remove (node_id[, other]), commit, plan, or auto_commit with
        node_id "true"/"false". Returns the plan after it (staged changes, transfers,
        ownership). Needs an admin key on a keyed cluster; a refused change raises
        InvalidRequest with the reason."""
        if action not in ("leave", "replace", "force-remove", "commit", "plan", "auto_commit"):
            raise InvalidRequest(f"unknown cluster action {action!r}")
        only = yield from self._node(node)
        return _expect((yield from self.call(Cluster(0, action, node_id, other), None,
                                             only=only)), ClusterOk).info

    def list_keys(self, namespace: str = nss.DEFAULT, prefix: bytes = b"",
                  page: int = 1000, r: int | str = 1) -> KeyListing:
        """A listing of the live keys of `namespace` (those beginning with `prefix`), in no
        useful order: each ring partition is listed, `page` keys at a time, by `r` of its
        owners that vouch for their copies, and a key any of them holds live is listed (r=1,
        as Riak's list-keys: a key written or deleted a moment ago may be missed or still
        listed; r=2 of N=3 finds every key acknowledged at W=2, as a Cassandra range read at
        QUORUM does). A partition no owner can list raises Unavailable naming it and why; one
        fewer than `r` can, QuorumError. Costs a read of every key of the namespace on each
        of the r owners."""
        _check_listing_r(r)
        if not isinstance(prefix, bytes):
            raise InvalidRequest(f"prefix must be bytes, not {type(prefix).__name__}")
        if len(prefix) > _MAX_KEY:
            raise InvalidRequest(f"prefix of {len(prefix)} bytes is longer than a key may be")
        if type(page) is not int or not 1 <= page <= wire.MAX_KEYS_PAGE:
            raise InvalidRequest(f"page must be 1 to {wire.MAX_KEYS_PAGE} keys, got {page!r}")
        return KeyListing(self, check_namespace(namespace), prefix, page, r)

    def list_items(self, namespace: str = nss.DEFAULT, prefix: bytes = b"", page: int = 1000,
                   r: int | str | None = None, expiry: bool = False) -> KeyListing:
        """`list_keys` with each key's live values: every partition listed by `r` (None: the
        namespace's R) of its owners that vouch, their copies of each key merged as a
        coordinator merges the replies of a get at R (a delete one of them missed still
        deletes; siblings stay siblings; lww: one value). Pages of (key, values); with
        `expiry`, of (key, values, expires_at): the wall time in ms at which the value stops
        being served (the namespace's ttl or the write's own; 0: never, or not known: a
        partition read key by key, below R owners that vouch). No read repair (anti-entropy
        mends what the copies disagree on)."""
        _check_listing_r(r)
        listing = self.list_keys(namespace, prefix, page)
        listing.r, listing.values, listing.expiry = r, True, expiry
        return listing

    def keys_page(self, listing: KeyListing) -> Plan[list]:
        """The next page of `listing` (KeyListing.next_page): keys, or (key, values) items;
        its position advanced. Owners holding another version of the namespace than the one
        cached here (altered, truncated, or dropped and made again) list nothing: the
        namespaces are learnt again and the page asked again, once."""
        page = yield from self._keys_page(listing, False)
        if page is _NS_CHANGED:
            yield from self._relearn()
            page = yield from self._keys_page(listing, True)
        return page

    def _keys_page(self, listing: KeyListing, last: bool) -> Plan[list]:
        """keys_page's one try: _NS_CHANGED if fewer than r owners listed and some of them
        hold another version of the namespace (unless `last`: then as any refusal)."""
        deadline = self.clock() + self.timeout
        if self.ring is None:
            yield from self.fetch_ring(deadline)
        else:  # (who is down, as a get learns it: a client that only listed never did, and
            # every listing waited out its timeout on a frozen owner, 29 s after the cluster
            # called it down: an outside run)
            yield from self._refresh(deadline)
        n, ns_prefix, lww, default_r = None, b"", 0, self.ring_msg.r if self.ring_msg else 1
        ttl_ms = ver = 0
        if listing.ns:
            known = self.ns_cache.get(listing.ns)
            if known is None:
                yield from self.namespaces_plan()
                known = self.ns_cache.get(listing.ns)
                if known is None:
                    if self.ns_last is not None:  # (says why: unknown, or dropped)
                        self.ns_last.get(listing.ns)
                    raise InvalidRequest(f"unknown namespace {listing.ns!r}")
            n, ns_prefix, lww, default_r = known.n, nss.prefix(known), known.head, known.r
            ttl_ms, ver = known.ttl * 1000, self._ns_tag(known)
        ring = self.ring_for(n)
        assert ring is not None
        listing.q = ring.q
        p = listing.partition
        owners = ring.preflist(p)
        # ("one", "quorum", "all": of the namespace's N)
        r: int = level("r", listing.r, len(owners)) if listing.r else default_r
        if r > len(owners):
            raise InvalidRequest(f"r={r} is more than N={len(owners)}, the owners of each "
                                 f"partition of namespace {listing.ns or nss.DEFAULT!r}")
        by_id = {m.id: m for m in self.members}
        why = []
        pages: list[KeysOk] = []
        # owners that look up first (the preference list's order among them); one that did
        # not answer a page of this listing only after the others (each try of a dead one
        # costs the timeout: once per listing, not once per partition)
        failed = listing.failed
        feature = wire.FEATURE_ITEMS if listing.values else wire.FEATURE_KEYS
        asked: list[tuple[str, str]] = []  # (id, endpoint) of the owners that can be asked
        for node_id in sorted(owners, key=lambda x: (x in failed, x in self.down)):
            member = by_id.get(node_id)
            ep = self.endpoints.get(node_id)
            if member is None or ep is None:
                continue
            if not member.features & feature:
                why.append(f"{node_id} runs a version without key listing"
                           + (" with values" if listing.values else ""))
                continue
            asked.append((node_id, ep))
        # r of them at once (one round trip, each page's tries in one step), then as many
        # more as answered no usable page, until r pages or no owner is left; then those
        # that did not answer (a reply lost to a reconnect, a pause) again, up to
        # LIST_RETRIES more rounds, unless they had already failed this listing (a dead
        # owner costs a timeout a page, not several)
        known_failed, rounds, changed = set(failed), 0, False
        again: list[tuple[str, str]] = []
        while len(pages) < r and (asked or (again and rounds < LIST_RETRIES)):
            if not asked:
                asked, again, rounds = again, [], rounds + 1
            group, asked = asked[:r - len(pages)], asked[r - len(pages):]
            tries = (self._keys_try(Keys(0, p, listing.ns, listing.cursor, listing.prefix,
                                         listing.page, listing.values, ver), ep)
                     for _, ep in group)
            got = yield from self.many(tries, return_exceptions=True)
            for (node_id, ep), ok in zip(group, got, strict=True):
                if isinstance(ok, Unavailable | RequestTimeout):
                    failed.add(node_id)
                    self.ring_at = -1e9  # learn who is down on the next call (as call() does)
                    why.append(f"{node_id}: {ok}")
                    if node_id not in known_failed:
                        again.append((node_id, ep))
                    continue
                if isinstance(ok, ZkvError):  # (an invalid request: a bad namespace, ...)
                    raise ok
                failed.discard(node_id)
                if ok.ns_changed:
                    changed = True
                    why.append(f"{node_id} holds another version of namespace {listing.ns!r} "
                               f"than this client (altered, truncated, or dropped and made "
                               f"again a moment ago)")
                    continue
                if not ok.owner:
                    why.append(f"{node_id} is not sure of its copy yet (refilling, or it "
                               f"gained the partition a moment ago)")
                    continue
                bad = _check_copies(ok) if listing.values else None
                if bad is not None:
                    why.append(f"{node_id} answered {bad}")
                    continue
                pages.append(ok)
            if changed and not last and len(pages) < r:
                return _NS_CHANGED  # (the other owners too, most likely: learn it first)
        if len(pages) == r:
            return _union_page(listing, ring, ns_prefix, lww, pages, listing.values,
                               self.wall_ms(), ttl_ms)
        reason = "; ".join(dict.fromkeys(why)) or "no owner known"  # (each retry's once)
        if not pages:
            raise Unavailable(f"partition {p}: no owner could list its keys ({reason})")
        if not listing.values:
            raise QuorumError(f"partition {p}: {len(pages)} of its owners listed its keys, "
                              f"r={r} wanted ({reason})", r, len(pages))
        # items with fewer than r owners that vouch (one down, or a change not settled yet):
        # the page's keys as those list them, each read at R as a get reads it (through a
        # coordinator, which asks the previous owners too while a change settles). The
        # listing stays where it was until every read succeeded: a read that raised (fewer
        # than r counted, e.g. two owners refilling) left the listing past the page, and the
        # page asked again skipped its keys (all-faults seed 490320: a live key left out)
        at = listing.partition, listing.cursor
        keys = _union_page(listing, ring, ns_prefix, lww, pages, False, 0)
        try:
            read = yield from self.get_many(keys, r, namespace=listing.ns or nss.DEFAULT)
        except BaseException:
            listing.partition, listing.cursor = at
            raise
        return [((k, res.values, 0) if listing.expiry else (k, res.values))  # (not known)
                for k, res in zip(keys, read, strict=True)
                if isinstance(res, GetResult) and res.found]  # (no exceptions: they raise)

    def _keys_try(self, msg: Keys, ep: str) -> Plan[KeysOk]:
        return _expect((yield from self.call(msg, None, only=ep)), KeysOk)

    def snapshot(self, name: str = "", node: str | None = None,
                 action: wire.SnapshotAction = "take") -> Plan[dict]:
        """Ask `node` (default: the first member that answers) about its snapshots
        (zkv/node/snapshots.py). "take": hard-link its stores, as they are now, under
        DATA_DIR/snapshots/`name` on its machine (no data copied; later writes and
        compactions leave it as it was); returns its manifest ({"node", "name", "path",
        "created_ms", "stores", "bytes"}). "list": {"snapshots": [manifest + "held", the bytes
        only it links, ...]}. "remove": deletes `name`, {"removed", "freed"}. Needs an admin
        key on a keyed cluster; InvalidRequest for a bad, taken or unknown name, or a node
        whose version has no snapshots (upgrade it); Unavailable if it failed there."""
        if action not in ("take", "list", "remove"):
            raise InvalidRequest(f"snapshot action must be take, list or remove, not {action!r}")
        if not isinstance(name, str) or (not name and action != "list"):
            raise InvalidRequest(f"snapshot name must be a non-empty str, got {name!r}")
        only = yield from self._node(node)
        yield from self._need_feature(wire.FEATURE_SNAPSHOT, "snapshot", "without snapshots",
                                      only)
        return _expect((yield from self.call(Snapshot(0, name, action), None, only=only)),
                       SnapshotOk).info

    def config(self, changes: dict[str, object] | None = None, node: str | None = None,
               save: bool = False) -> Plan[dict]:
        """`node`'s settings (default: the first member that answers), after changing the
        runtime ones `changes` names (name -> value; zkv.config.RUNTIME: limits and
        throttles) while it runs: all of them or none. Returns {"settings", "runtime",
        "changed": {name: [old, new]}}. `save`: and write them, with every runtime setting
        changed before, into the node's --config file, so a restart keeps them (answer's
        "saved": {"path", "written": {name: value}, "flag_wins": [settings its command line
        sets, which still win at a restart: not written]}); if that fails nothing changes.
        Needs an admin key on a keyed cluster; InvalidRequest for an unknown setting, a bad
        value, one set at start only, a save to a node started without --config, or a node
        whose version changes none, or saves none (upgrade it)."""
        if changes is not None and not isinstance(changes, dict):
            raise InvalidRequest(f"changes must be a dict of setting -> value, not "
                                 f"{type(changes).__name__}")
        texts = {}
        for name, value in (changes or {}).items():
            if not isinstance(name, str) or isinstance(value, dict | list | tuple | bytes):
                raise InvalidRequest(f"setting {name!r}: a name and a str, int, float or bool")
            texts[name] = (("true" if value else "false") if isinstance(value, bool)
                           else str(value))
        only = yield from self._node(node)
        yield from self._need_feature(wire.FEATURE_CONFIG, "config", "without zkv config",
                                      only)
        if save:  # (an older node would ignore the field: changed, but not saved)
            yield from self._need_feature(wire.FEATURE_CONFIG_SAVE, "config --save",
                                          "without zkv config --save", only)
        return _expect((yield from self.call(wire.Config(0, texts, bool(save)), None,
                                             only=only)), wire.ConfigOk).info

    def repair(self, partition: int = -1, node: str | None = None) -> Plan[dict]:
        """Ask `node` (default: the first member that answers) to run anti-entropy now for
        `partition` (-1: every partition it replicates): each (partition, other owner that is
        up) is compared by Merkle root, those that differ are exchanged in full. Returns
        {"queued": those pairs, "partitions": how many partitions, "down": the owners skipped
        as down}; `status()["antientropy"]` has "checking", "queued" and "running" at 0 once
        it is done. InvalidRequest if `node` does not replicate `partition`."""
        if type(partition) is not int or partition < -1:
            raise InvalidRequest(f"partition must be an int >= -1, got {partition!r}")
        only = yield from self._node(node)
        return _expect((yield from self.call(Repair(0, partition), None, only=only)),
                       RepairOk).info

