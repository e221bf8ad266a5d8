"""Merge helpers for sibling values: state-based CRDTs with a compact, versioned codec.

This module's one job: give applications values whose siblings always merge without losing
an update, and plug that merge into `Client.update(key, fn)`:

    c.update(b"cart:42", ORSet.updater(b"cart:42", add=["book"], remove=["pen"]))
    c.update(b"likes:7", PNCounter.updater(b"likes:7", +1))
    cart = ORSet.from_siblings(c.get(b"cart:42").values).elements

`fn` receives the siblings (bytes), decodes and merges them, applies the mutation and returns
one encoded value; the store's context then retires exactly the siblings that were merged.

Design. These are convergent replicated data types (Shapiro, Preguica, Baquero, Zawirski
2011, "A comprehensive study of Convergent and Commutative Replicated Data Types", INRIA RR
7506): each state type is a join-semilattice and `merge` is its join, so merging is
commutative, associative and idempotent and siblings may be merged in any order, any number
of times. `GSet` is the grow-only set (union). `PNCounter` keeps, per actor, the total of its
increments and of its decrements (pointwise max; value = sum P - sum N). `ORSet` is the
add-wins observed-remove set without tombstones ("optimized OR-set": Bieniusa, Zawirski,
Preguica, Shapiro, Baquero, Balegas, Duarte 2012, "An optimized conflict-free replicated
set"; in the dot-store / causal-context form of Almeida, Shoker, Baquero 2018): every add
tags its element with a fresh dot (actor, counter); the causal context records every dot the
state has seen. A remove drops the element's observed dots but keeps them in the context,
so a merge knows "seen and removed" from "not yet seen": an element survives a merge iff one
of its dots is live on one side and unseen (or also live) on the other. A concurrent add
carries a dot the remover never saw, so re-adds win. The context is a version vector plus a
small "cloud" of dots above it; contiguous dots fold into the vector, so removed elements
leave no per-element trace and state is bounded by live elements plus actors.

Tags: (actor, counter), not random 16 bytes. Random tags would make the context a set of
every tag ever seen, which is a tombstone per add; (actor, counter) folds into a version
vector with one entry per actor. The price is that a dot must never be issued twice, so:
- the default actor is a random id per process (fresh again in a forked child); pass an
  explicit `actor=` only if no other process uses it;
- updaters take the key (and namespace) they update, and the process remembers, per
  (actor, namespace, key), the last dot / counter total it issued, so concurrent threads or
  coroutines of one process and stale reads (R + W <= N, sloppy quorum) never reuse a dot
  or re-count an increment;
- an updater allocates its dots once and reuses them when `Client.update` retries, so a
  retried write whose first attempt was stored anyway is applied once, not twice;
- a counter's concurrent updaters of one process each count on a lane of their own (lane k
  > 0 under the actor "<actor>#k", taken free and given back when `Client.update` settles
  the updater's outcome through its `__zkv_settled__`), so a refused write takes no other
  update's increment with it, nor they its. The price: one more counter entry per lane, as
  many as the process ever ran updaters of the key at once. A lane also keeps the context its
  last stored write returned, when it covers that write's own dot (`Client.update` hands an
  updater its read's context through `__zkv_read__` and the write's through
  `__zkv_settled__`): a read that has seen that write is the truth (a deleted counter starts
  again from 0), one that missed it (a stale replica) never counts below the lane's totals.
A gap left by a write that was never stored at all stays as one entry in the context cloud.

Value layout (one place; msgpack bodies encoded with msgspec, canonical: sorted, no
duplicates, so equal states encode to equal bytes):

    byte 0     FORMAT_VERSION (1)
    byte 1     kind: 1 GSet, 2 ORSet, 3 PNCounter
    bytes 2..  msgpack body:
      GSet       [element, ...]
      ORSet      [actors: [str, ...],                    # sorted, unique
                  vv: [uint, ...],                       # vv[i]: all dots (actors[i], 1..vv[i]) seen
                  cloud: [actor_index, counter, ...],    # seen dots above vv, flattened pairs
                  entries: [[element, [actor_index, counter, ...]], ...]]   # live dots
      PNCounter  [[actor, p_total, n_total], ...]        # sorted by actor

Elements are `str`, `bytes` or `int` (not bool), ordered by (type, value); actors are
non-empty strings of at most 255 UTF-8 bytes; counters are u64. Decoding checks the size
first (`max_bytes`, default 16 MiB, the store's value limit), then types, then the
invariants (sorted, unique, every live dot inside the context, no dot on two elements);
any bad input raises ValueError naming the problem, never anything else.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from zkv._core import dvv
from zkv.node.seal import bare

FORMAT_VERSION = 1
KIND_GSET = 1
KIND_ORSET = 2
KIND_PNCOUNTER = 3
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # the store's default value limit (wire.DEFAULT_MAX_VALUE)
MAX_ACTOR_BYTES = 255
MAX_U64 = (1 << 64) - 1
MEMORY_ENTRIES = 1 << 16  # (actor, namespace, key) entries remembered per process (LRU)

Element = str | bytes | int
Dot = tuple[str, int]
Updater = Callable[[list[bytes]], bytes]

_KIND_NAMES = {KIND_GSET: "GSet", KIND_ORSET: "ORSet", KIND_PNCOUNTER: "PNCounter"}
_GSET_BODY = msgspec.msgpack.Decoder(list[Any])
_ORSET_BODY = msgspec.msgpack.Decoder(
    tuple[list[str], list[int], list[int], list[tuple[Any, list[int]]]])
_PN_BODY = msgspec.msgpack.Decoder(list[tuple[str, int, int]])
_encode = msgspec.msgpack.Encoder().encode


# ---- actors and the per-process dot memory ------------------------------------------------
_actor_lock = threading.Lock()
_process_actor: str | None = None
_memory: OrderedDict[tuple, Any] = OrderedDict()


def default_actor() -> str:
    """This process's actor id: random, minted on first use, fresh again after fork()."""
    global _process_actor
    with _actor_lock:
        if _process_actor is None:
            _process_actor = "p-" + os.urandom(8).hex()
        return _process_actor


def _after_fork() -> None:
    global _process_actor, _actor_lock
    _actor_lock = threading.Lock()
    _process_actor = None
    _memory.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _remember(slot: tuple, fn: Callable[[Any], Any]) -> Any:
    """Atomically replace the remembered value of `slot` by fn(old or None); returns it."""
    with _actor_lock:
        new = fn(_memory.get(slot))
        _memory[slot] = new
        _memory.move_to_end(slot)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)
        return new


def _take_lane(slot: tuple) -> tuple[int, tuple[int, int], bytes]:
    """A counter updater's lane of `slot`: the first not in use by another updater of this
    process, marked in use, the totals last issued on it and the context their write
    returned (b"": not known to be stored). Lane k > 0 counts under an
    actor of its own (`_lane_actor`): concurrent updaters of one process never build on one
    another's totals, so one whose write is refused takes nothing with it (an outside run:
    200 concurrent +1s, 144 refused as TooManySiblings, and the counter read 200, as each
    total had counted the ones reserved before it)."""
    with _actor_lock:
        lanes = _memory.get(slot)
        if lanes is None:
            lanes = _memory[slot] = []
        _memory.move_to_end(slot)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)
        for k, (busy, last, ctx) in enumerate(lanes):
            if not busy:
                lanes[k] = (True, last, ctx)
                return k, last, ctx
        lanes.append((True, (0, 0), b""))
        return len(lanes) - 1, (0, 0), b""


def _free_lane(slot: tuple, lane: int, totals: tuple[int, int] | None,
               context: bytes = b"") -> None:
    """The updater on `lane` is done: its totals are the lane's from now on, with the
    context their write returned if it surely was stored (None: its write was not stored,
    the lane keeps what it had)."""
    with _actor_lock:
        lanes = _memory.get(slot)
        if lanes is not None and lane < len(lanes):
            lanes[lane] = (False, totals, context) if totals is not None else (
                False, lanes[lane][1], lanes[lane][2])


def _drop_lane(slot: tuple, held: dict) -> None:
    """An updater collected without its outcome: its lane is free, at its new totals."""
    if held.get("lane") is not None:
        _free_lane(slot, held.pop("lane"), held["totals"])


# what an updater whose write was stored says when run again (a counter's or a set's: reused,
# it did nothing, silently: an outside run)
_SPENT = ("this updater's update was stored already: an updater is one update (reused only "
          "to retry one that failed); make a new one for the next")


def _lane_actor(actor: str, lane: int) -> str:
    if not lane:
        return actor
    name = f"{actor}#{lane}"
    if len(name.encode("utf-8")) > MAX_ACTOR_BYTES:
        raise ValueError(f"actor {actor!r} is too long to run concurrent updaters of one key "
                         f"(at most {MAX_ACTOR_BYTES - 8} UTF-8 bytes)")
    return name


def _check_actor(actor: Any) -> str:
    if actor is None:
        return default_actor()
    if not isinstance(actor, str) or not actor or len(actor.encode("utf-8")) > MAX_ACTOR_BYTES:
        raise ValueError(f"actor must be a non-empty str of at most {MAX_ACTOR_BYTES} UTF-8 "
                         f"bytes, not {actor!r}")
    return actor


def _check_key(key: Any, namespace: Any) -> tuple[str, bytes]:
    if not isinstance(key, bytes) or not key:
        raise ValueError(f"key must be non-empty bytes (the key being updated), not {key!r}")
    if not isinstance(namespace, str):
        raise ValueError(f"namespace must be a str, not {namespace!r}")
    return namespace, key


# ---- elements ------------------------------------------------------------------------------
_RANK = {int: 0, str: 1, bytes: 2}


def _elem_key(e: Element) -> tuple[int, Any]:
    return _RANK[type(e)], e


def _is_element(e: Any) -> bool:
    return type(e) in _RANK and (type(e) is not int or -(1 << 63) <= e <= MAX_U64)


def _check_element(e: Any) -> Element:
    if not _is_element(e):
        raise TypeError(f"set elements are str, bytes or int (64-bit), not {e!r}")
    return e


# ---- codec helpers ---------------------------------------------------------------------------
def _header(kind: int) -> bytes:
    return bytes((FORMAT_VERSION, kind))


def _body(data: Any, kind: int, max_bytes: int, decoder: msgspec.msgpack.Decoder) -> Any:
    name = _KIND_NAMES[kind]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{name} value must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ValueError(f"{name} value is {len(data)} bytes, over the {max_bytes}-byte limit")
    if len(data) < 3:
        raise ValueError(f"{name} value too short ({len(data)} bytes): not a zkv.crdt value")
    if data[0] != FORMAT_VERSION:
        raise ValueError(f"{name} value has format version {data[0]} (this zkv reads version "
                         f"{FORMAT_VERSION}): not a zkv.crdt value, or one from a newer zkv")
    if data[1] != kind:
        other = _KIND_NAMES.get(data[1], f"unknown kind {data[1]}")
        raise ValueError(f"value is a {other}, not a {name}")
    try:
        return decoder.decode(data[2:])
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(f"corrupt {name} value: {exc}") from None


def _sorted_unique(items: list, key: Callable, what: str) -> None:
    for a, b in zip(items, items[1:], strict=False):
        if not key(a) < key(b):
            raise ValueError(f"corrupt value: {what} not sorted and unique")


def _check_u64(n: int, what: str) -> None:
    if not 0 <= n <= MAX_U64:
        raise ValueError(f"corrupt value: {what} {n} outside 0..2**64-1")


class _Crdt:
    KIND = 0

    def encode(self) -> bytes:
        raise NotImplementedError

    def _normalize(self) -> None:
        """What a merge does to a decoded state besides joining (ORSet: fold its cloud)."""

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES):
        raise NotImplementedError

    def merge(self, other):
        raise NotImplementedError

    @classmethod
    def from_siblings(cls, values: Iterable[bytes], max_bytes: int = DEFAULT_MAX_BYTES):
        """Decode every sibling and merge them (no siblings: the empty state)."""
        out = None
        for v in values:  # (the first as decoded, not merged with an empty state)
            got = cls.decode(v, max_bytes)
            out = got if out is None else out.merge(got)
        if out is None:
            return cls()
        out._normalize()  # (what a merge does: a lone sibling's result is a merge's too)
        return out

    @classmethod
    def merge_values(cls, values: Iterable[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """Siblings in, one encoded value out: the plain merge function for `Client.update`."""
        return cls.from_siblings(values, max_bytes).encode()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}.decode({self.encode()!r})"


# ---- GSet ------------------------------------------------------------------------------------
class GSet(_Crdt):
    """Grow-only set: add only; merge is union."""

    KIND = KIND_GSET

    def __init__(self, elements: Iterable[Element] = ()) -> None:
        self._items: set[Element] = {_check_element(e) for e in elements}

    @property
    def elements(self) -> frozenset[Element]:
        return frozenset(self._items)

    def __contains__(self, e: object) -> bool:
        return e in self._items if _is_element(e) else False

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Element]:
        return iter(sorted(self._items, key=_elem_key))

    def add(self, *elements: Element) -> GSet:
        self._items.update(_check_element(e) for e in elements)
        return self

    def merge(self, other: GSet) -> GSet:
        out = GSet()
        out._items = self._items | other._items
        return out

    def encode(self) -> bytes:
        return _header(KIND_GSET) + _encode(sorted(self._items, key=_elem_key))

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> GSet:
        items = _body(data, KIND_GSET, max_bytes, _GSET_BODY)
        for e in items:
            if not _is_element(e):
                raise ValueError(f"corrupt GSet value: element {e!r} is not str, bytes or int")
        _sorted_unique(items, _elem_key, "GSet elements")
        out = cls()
        out._items = set(items)
        return out

    @classmethod
    def updater(cls, add: Iterable[Element] = (), *,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Updater:
        """`Client.update` fn: merge the siblings and add `add`."""
        adds = [_check_element(e) for e in add]

        def fn(siblings: list[bytes]) -> bytes:
            return cls.from_siblings(siblings, max_bytes).add(*adds).encode()

        return fn


# ---- ORSet -----------------------------------------------------------------------------------
class ORSet(_Crdt):
    """Add-wins observed-remove set without tombstones (see the module docstring)."""

    KIND = KIND_ORSET

    def __init__(self) -> None:
        self._vv: dict[str, int] = {}  # actor -> every dot (actor, 1..n) seen
        self._cloud: set[Dot] = set()  # seen dots above vv (only where there is a gap)
        self._store: dict[Element, set[Dot]] = {}  # live element -> its dots (never empty)

    # -- reading
    @property
    def elements(self) -> frozenset[Element]:
        return frozenset(self._store)

    def __contains__(self, e: object) -> bool:
        return e in self._store if _is_element(e) else False

    def __len__(self) -> int:
        return len(self._store)

    def __iter__(self) -> Iterator[Element]:
        return iter(sorted(self._store, key=_elem_key))

    @property
    def context_size(self) -> int:
        """Entries the causal context holds (actors + cloud dots): what removes leave behind."""
        return len(self._vv) + len(self._cloud)

    def dots(self, element: Element) -> frozenset[Dot]:
        return frozenset(self._store.get(element, ()))

    # -- causal context
    def _covers(self, dot: Dot) -> bool:
        return dot[1] <= self._vv.get(dot[0], 0) or dot in self._cloud

    def _max_counter(self, actor: str) -> int:
        top = self._vv.get(actor, 0)
        for a, n in self._cloud:
            if a == actor and n > top:
                top = n
        return top

    def _normalize(self) -> None:
        self._compact()

    def _compact(self) -> None:
        """Fold cloud dots that extend the version vector contiguously into it."""
        if not self._cloud:
            return
        for a, n in sorted(self._cloud):
            if n <= self._vv.get(a, 0):
                self._cloud.discard((a, n))
            elif n == self._vv.get(a, 0) + 1:
                self._vv[a] = n
                self._cloud.discard((a, n))

    def _see(self, dot: Dot) -> None:
        a, n = dot
        if n == self._vv.get(a, 0) + 1:
            self._vv[a] = n
            self._compact()
        elif n > self._vv.get(a, 0):
            self._cloud.add(dot)

    def _add_dot(self, element: Element, dot: Dot) -> None:
        # optimized add: the new dot replaces every observed dot of the element
        self._store[element] = {dot}
        self._see(dot)

    # -- mutating
    def add(self, element: Element, actor: str | None = None) -> Dot:
        """Add `element` with a fresh dot of `actor` (default: this process); returns the dot.

        For direct use on a state you own; updaters allocate dots through the process memory
        (see the module docstring)."""
        _check_element(element)
        actor = _check_actor(actor)
        dot = (actor, self._max_counter(actor) + 1)
        _check_u64(dot[1], "dot counter")
        self._add_dot(element, dot)
        return dot

    def remove(self, element: Element) -> bool:
        """Remove `element` by retiring the dots this state observed; False if absent."""
        return self._store.pop(element, None) is not None if _is_element(element) else False

    def merge(self, other: ORSet) -> ORSet:
        out = ORSet()
        empty: set[Dot] = set()
        for e in self._store.keys() | other._store.keys():
            mine, theirs = self._store.get(e, empty), other._store.get(e, empty)
            if mine == theirs:  # (siblings mostly share their elements: the same dots; the
                out._store[e] = mine  # sets are never changed in place, so shared)
                continue
            keep = (mine & theirs) | {d for d in mine - theirs if not other._covers(d)} | {
                d for d in theirs - mine if not self._covers(d)}
            if keep:
                out._store[e] = keep
        out._vv = dict(self._vv)
        for a, n in other._vv.items():
            if n > out._vv.get(a, 0):
                out._vv[a] = n
        out._cloud = {d for d in self._cloud | other._cloud if d[1] > out._vv.get(d[0], 0)}
        out._compact()
        return out

    # -- codec
    def encode(self) -> bytes:
        actors = sorted(self._vv.keys() | {a for a, _ in self._cloud})
        index = {a: i for i, a in enumerate(actors)}
        vv = [self._vv.get(a, 0) for a in actors]
        cloud: list[int] = []
        for a, n in sorted(self._cloud):
            cloud += (index[a], n)
        entries = []
        for e in sorted(self._store, key=_elem_key):
            flat: list[int] = []
            for a, n in sorted(self._store[e]):
                flat += (index[a], n)
            entries.append((e, flat))
        return _header(KIND_ORSET) + _encode((actors, vv, cloud, entries))

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> ORSet:
        actors, vv, cloud, entries = _body(data, KIND_ORSET, max_bytes, _ORSET_BODY)
        for a in actors:
            if not a or len(a.encode("utf-8")) > MAX_ACTOR_BYTES:
                raise ValueError(f"corrupt ORSet value: bad actor {a!r}")
        _sorted_unique(actors, lambda a: a, "ORSet actors")
        if len(vv) != len(actors):
            raise ValueError("corrupt ORSet value: version vector and actor list differ in length")
        for n in vv:
            _check_u64(n, "version vector entry")

        def pairs(flat: list[int], what: str) -> list[Dot]:
            if len(flat) % 2:
                raise ValueError(f"corrupt ORSet value: odd-length {what} dot list")
            out = []
            for i in range(0, len(flat), 2):
                ai, n = flat[i], flat[i + 1]
                if not 0 <= ai < len(actors):
                    raise ValueError(f"corrupt ORSet value: {what} names actor #{ai} of "
                                     f"{len(actors)}")
                if not 1 <= n <= MAX_U64:
                    raise ValueError(f"corrupt ORSet value: {what} dot counter {n}")
                out.append((actors[ai], n))
            _sorted_unique(out, lambda d: d, f"{what} dots")
            return out

        s = cls()
        s._vv = {a: n for a, n in zip(actors, vv, strict=True) if n}
        s._cloud = set(pairs(cloud, "cloud"))
        if any(not n > s._vv.get(a, 0) for a, n in s._cloud):
            raise ValueError("corrupt ORSet value: cloud dot already inside the version vector")
        for e, _ in entries:
            if not _is_element(e):
                raise ValueError(f"corrupt ORSet value: element {e!r} is not str, bytes or int")
        _sorted_unique([e for e, _ in entries], _elem_key, "ORSet elements")
        owner: set[Dot] = set()
        vv_get, cloud, n_actors = s._vv.get, s._cloud, len(actors)
        for e, flat in entries:
            if len(flat) == 2:  # (one dot, the usual case: pairs() and its checks inline)
                ai, n = flat
                if 0 <= ai < n_actors and 1 <= n <= MAX_U64:
                    d = (actors[ai], n)
                    if not (n <= vv_get(d[0], 0) or d in cloud):
                        raise ValueError(f"corrupt ORSet value: dot {d} outside the causal "
                                         "context")
                    if d in owner:
                        raise ValueError(f"corrupt ORSet value: dot {d} tags two elements")
                    owner.add(d)
                    s._store[e] = {d}
                    continue
            dots = pairs(flat, "element")
            if not dots:
                raise ValueError(f"corrupt ORSet value: element {e!r} has no dots")
            for d in dots:
                if not s._covers(d):
                    raise ValueError(f"corrupt ORSet value: dot {d} outside the causal context")
                if d in owner:
                    raise ValueError(f"corrupt ORSet value: dot {d} tags two elements")
                owner.add(d)
            s._store[e] = set(dots)
        return s

    # -- Client.update helper
    @classmethod
    def updater(cls, key: bytes, add: Iterable[Element] = (), remove: Iterable[Element] = (),
                *, actor: str | None = None, namespace: str = "default",
                max_bytes: int = DEFAULT_MAX_BYTES) -> Updater:
        """`Client.update(key, fn)` fn: merge the siblings, remove `remove` (the dots this
        read observed), add `add` (fresh dots, allocated once and reused on retries).

        `key`/`namespace` name the value being updated (see the module docstring: they keep
        this process from issuing one dot twice). An element may not be in both lists.
        """
        slot_base = _check_key(key, namespace)
        actor = _check_actor(actor)
        adds = list(dict.fromkeys(_check_element(e) for e in add))
        removes = [_check_element(e) for e in remove]
        both = set(adds) & set(removes)
        if both:
            raise ValueError(f"elements both added and removed: {sorted(both, key=_elem_key)!r}")
        allocated: list[Dot] = []
        done: list[bool] = []  # [True] once the write is known stored: the updater is spent

        def fn(siblings: list[bytes]) -> bytes:
            if done:  # (its adds' dots, reused, would not add back an element removed since)
                raise ValueError(_SPENT)
            s = cls.from_siblings(siblings, max_bytes)
            for e in removes:
                s.remove(e)
            if adds and not allocated:
                seen = s._max_counter(actor)
                top = _remember((KIND_ORSET, actor) + slot_base,
                                lambda last: max(seen, last or 0) + len(adds))
                _check_u64(top, "dot counter")
                allocated.extend((actor, top - len(adds) + 1 + i) for i in range(len(adds)))
            for e, d in zip(adds, allocated, strict=True):
                if not s._covers(d):  # a retry whose first attempt was stored: already applied
                    s._add_dot(e, d)
            return s.encode()

        def settled(stored: bool | None, context: bytes = b"") -> None:
            if stored:
                done.append(True)

        fn.__zkv_settled__ = settled  # type: ignore[attr-defined]
        fn.__zkv_key__ = slot_base  # type: ignore[attr-defined]  # (update() checks it)
        return fn


# ---- PNCounter -------------------------------------------------------------------------------
class PNCounter(_Crdt):
    """Counter that can go down: per actor, total increments P and total decrements N."""

    KIND = KIND_PNCOUNTER

    def __init__(self) -> None:
        self._pn: dict[str, tuple[int, int]] = {}

    @property
    def value(self) -> int:
        return sum(p for p, _ in self._pn.values()) - sum(n for _, n in self._pn.values())

    def __int__(self) -> int:
        return self.value

    def totals(self, actor: str) -> tuple[int, int]:
        """(increments, decrements) recorded for `actor`."""
        return self._pn.get(actor, (0, 0))

    def _set(self, actor: str, p: int, n: int) -> None:
        _check_u64(p, "increment total")
        _check_u64(n, "decrement total")
        if p or n:
            self._pn[actor] = (p, n)

    def increment(self, delta: int = 1, actor: str | None = None) -> PNCounter:
        """Add `delta` (negative: subtract) as `actor` (default: this process)."""
        if not isinstance(delta, int) or isinstance(delta, bool):
            raise TypeError(f"delta must be an int, not {delta!r}")
        actor = _check_actor(actor)
        p, n = self.totals(actor)
        self._set(actor, p + max(delta, 0), n + max(-delta, 0))
        return self

    def decrement(self, delta: int = 1, actor: str | None = None) -> PNCounter:
        return self.increment(-delta, actor)

    def merge(self, other: PNCounter) -> PNCounter:
        out = PNCounter()
        out._pn = dict(self._pn)
        for a, (p, n) in other._pn.items():
            p0, n0 = out._pn.get(a, (0, 0))
            out._pn[a] = (max(p, p0), max(n, n0))
        return out

    def encode(self) -> bytes:
        return _header(KIND_PNCOUNTER) + _encode(
            [(a, p, n) for a, (p, n) in sorted(self._pn.items())])

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> PNCounter:
        rows = _body(data, KIND_PNCOUNTER, max_bytes, _PN_BODY)
        _sorted_unique(rows, lambda r: r[0], "PNCounter actors")
        out = cls()
        for a, p, n in rows:
            if not a or len(a.encode("utf-8")) > MAX_ACTOR_BYTES:
                raise ValueError(f"corrupt PNCounter value: bad actor {a!r}")
            _check_u64(p, "increment total")
            _check_u64(n, "decrement total")
            if not (p or n):
                raise ValueError(f"corrupt PNCounter value: empty entry for {a!r}")
            out._pn[a] = (p, n)
        return out

    @classmethod
    def updater(cls, key: bytes, delta: int = 1, *, actor: str | None = None,
                namespace: str = "default", max_bytes: int = DEFAULT_MAX_BYTES) -> Updater:
        """`Client.update(key, fn)` fn: merge the siblings and add `delta` (may be negative).

        The new totals of `actor` are fixed on the first call and reapplied (pointwise max)
        on retries, so a retried write counts once; the process memory keyed by
        (actor, namespace, key) keeps concurrent updaters of one process from counting the
        same base twice (see the module docstring).
        """
        if not isinstance(delta, int) or isinstance(delta, bool):
            raise TypeError(f"delta must be an int, not {delta!r}")
        slot = (KIND_PNCOUNTER, _check_actor(actor)) + _check_key(key, namespace)
        actor = slot[1]
        if "#" in actor:  # ("svc" counting on lane 1 is "svc#1": another process's "svc#1"
            # would share its totals, and increments were lost: an outside run)
            raise ValueError(f"actor {actor!r}: a counter updater's actor may not contain '#' "
                             f"(its concurrent updaters count as '<actor>#<lane>')")
        target: list[tuple[int, str, tuple[int, int]]] = []  # (lane, its actor, new totals)
        held: dict = {}  # "lane" (while this updater holds it) and "totals" (to free it at)
        read: list[bytes] = []  # the context of the read fn merges (Client.update's hook)
        done: list[bool] = []  # [True] once the write is known stored: the updater is spent
        maybe: list[bool] = []  # [True] once a write of it may have been stored (a call that
        # timed out or missed its quorum): from then on its totals are kept whatever a later
        # call of update() with it says, as that call's "not stored" speaks for its own
        # attempts only (a retry whose read failed said False, the totals were dropped, and
        # the next retry counted the +d again on top of the first call's stored write)

        def fn(siblings: list[bytes]) -> bytes:
            if done:
                raise ValueError(_SPENT)
            s = cls.from_siblings(siblings, max_bytes)
            if not target:
                lane, last, last_ctx = _take_lane(slot)
                try:
                    name = _lane_actor(actor, lane)
                except ValueError:
                    _free_lane(slot, lane, None)
                    raise
                seen = s.totals(name)
                if not (last_ctx and read
                        and dvv.context_descends(bare(read[-1]), bare(last_ctx))):
                    # (a stale read may miss the lane's last write: never count below it;
                    # a read that saw that write -- or a delete or reset after it -- is the
                    # truth, so a deleted counter starts again from 0, not from its old
                    # count: an outside run)
                    seen = max(seen[0], last[0]), max(seen[1], last[1])
                p, n = seen
                target.append((lane, name, (p + max(delta, 0), n + max(-delta, 0))))
                held.update(lane=lane, totals=target[0][2])
            _, name, (p, n) = target[0]
            seen = s.totals(name)
            s._set(name, max(p, seen[0]), max(n, seen[1]))
            return s.encode()

        def settled(stored: bool | None, context: bytes = b"") -> None:
            """Client.update's outcome: the write stored (True, with the context it
            returned), maybe (None: a timeout or a missed quorum, which may have stored it)
            or not (False: refused). The lane is free again, at the new totals unless the
            write was surely not stored."""
            if stored:
                done.append(True)
            elif stored is None:
                maybe.append(True)
            # the context is kept only if it covers the write's own dot: put_context's
            # other answer, the context given with the write id listed, is one a read that
            # missed the write descends too (an outside run lost 465 acknowledged +1s so,
            # every one under a context whose new entry was the blind "~")
            if not (stored and read
                    and dvv.context_has_new_dot(bare(context), bare(read[-1]))):
                context = b""
            lane = held.pop("lane", None)
            if lane is not None:
                _free_lane(slot, lane, None if stored is False else held["totals"], context)
            if stored is False and not maybe:  # (retried, it counts afresh: keeping its
                target.clear()  # totals, fixed before a refusal, it wrote over an
                # acknowledged +1 that another updater built on the lane meanwhile: the
                # review's model)

        # an updater dropped unsettled (called by hand, not by Client.update) frees its lane
        # as if its write may have been stored (fn must not refer to itself: a cycle would
        # keep it until a collection)
        weakref.finalize(fn, _drop_lane, slot, held)
        fn.__zkv_settled__ = settled  # type: ignore[attr-defined]
        fn.__zkv_read__ = read.append  # type: ignore[attr-defined]
        fn.__zkv_key__ = slot[2:]  # type: ignore[attr-defined]  # (update() checks it)
        return fn


def decode_any(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> GSet | ORSet | PNCounter:
    """Decode a value of any kind in this module (by its kind byte)."""
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) >= 2:
        kinds: dict[int, type[GSet] | type[ORSet] | type[PNCounter]] = {
            KIND_GSET: GSet, KIND_ORSET: ORSet, KIND_PNCOUNTER: PNCounter}
        cls = kinds.get(data[1])
        if cls is not None:
            return cls.decode(data, max_bytes)
    raise ValueError("not a zkv.crdt value (unknown or missing kind byte)")


__all__ = ["GSet", "ORSet", "PNCounter", "decode_any", "default_actor", "FORMAT_VERSION",
           "DEFAULT_MAX_BYTES"]
