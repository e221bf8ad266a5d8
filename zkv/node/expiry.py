"""Expiry: which stored versions of a namespace with a `ttl` have expired, and the sweep that
drops them from a replica's store. No I/O of its own (the store and the clocks are passed in).

Rules (namespaces with a ttl are lww: each value begins with its write's HLC stamp,
`zkv.hlc`; namespaces.py refuses a ttl on a siblings namespace):

- A version has expired when it holds at least one value and its newest value was written
  `ttl` or more ago: `(stamp >> 16) + ttl_ms <= now_ms`, the node's wall clock in ms. A
  version holding only a tombstone never expires (the reaper drops it, antientropy.py).
  Every copy of a write carries the same stamp, so every replica reaches the same verdict
  at the same wall time, give or take the clocks' skew.
- An expired version is never served: `Replica.read` answers as if it held nothing (a get
  finds nothing; its context covers nothing, and the next write's newer stamp wins anyway)
  and drops it then (as Redis expires a key on access; an exchange that would push it reads
  it so, which is how two replicas' trees agree again at once), and listings leave it out.
- An expired copy is never stored: `Replica.merge` takes it as a no-op (a write fan-out,
  read repair, hint, transfer or exchange bringing it from a replica whose sweep has not
  dropped it yet). Because every older write of an lww key expires before a newer one does,
  dropping the newest copy can never bring an older value back.
- `Sweep` walks the store in hash windows, a share of the hash space per background round,
  and drops the expired versions (`Replica.drop_expired`: the engine record deleted, the
  Merkle trees told), so a namespace of sessions does not grow without bound. A full pass
  takes `period(min ttl)` seconds: between MIN_PERIOD and MAX_PERIOD, and at most the shortest ttl,
  so an expired value stays on disk at most about one more ttl; but a round takes a window
  of about ROUND_KEYS keys at most (a pass of a larger store takes longer: 10M keys, ~500
  rounds). A pass judged ~620k keys/s, half of them namespaced (benchmarks/expiry_sweep.py,
  RESULTS.md), so a round costs a node ~30 ms at most.
- The same sweep purges the keys of dropped or truncated namespaces (`dead`,
  Registry.is_dead): for two passes at the fastest pace after a node learns of a drop (or
  starts with one in its registry), then it stops looking for them. A dead key that
  arrives later is never stored (the `expired` hook says it is, Replica.merge).

A write's own ttl (`put(..., ttl=)`, a write_ttl namespace: namespaces.py, "Stored values")
ends when the value is served, not when it is stored: `served` drops such a value from what
a read answers, after the replies are merged (an expired write is the newest version of its
key, and so still retires an older value a lagging replica sends). Every rule above applies
to its copies as to any other: the namespace's ttl drops them, at least as late as the
write's own (namespaces.py refuses a longer one), by which time every older write of the key
has expired too.

Expiry is judged by each node's clock: a node whose clock runs behind serves a value until
its own clock says it expired (bounded by the skew `hlc` allows). A replica that dropped a
key and a peer that has not yet differ until the peer's sweep or an exchange between them:
an exchange (pushed or pulled) and a partition transfer read what they would send through
`Replica.read`, which drops an expired version instead of sending it, so the trees agree
after that exchange and a gained partition's verification does not wait for a sweep."""

from __future__ import annotations

from collections.abc import Callable

from zkv._core import dvv
from zkv.node.namespaces import STAMP_BYTES, TTL_BYTES

SPACE = 1 << 64  # the hash space (zkv_hash64) the store's windows are cut from
ROUND_SHARE = 64  # a background round (1 s) scans at least 1/ROUND_SHARE of it
MIN_PERIOD = 4.0  # seconds: a full pass never runs faster (1/4 of the keys per round)
MAX_PERIOD = 64.0  # seconds: ... nor slower
ROUND_KEYS = 20_000  # a round's window holds about this many keys at most (of any namespace)


def stamp_ms(value: bytes) -> int:
    """The wall time (ms) of an lww value's write: its HLC stamp's physical part."""
    return int.from_bytes(value[:8], "big") >> 16


def expired(encoded: bytes, ttl_ms: int, now_ms: int, before_ms: int = 0) -> bool:
    """Has this encoded version (a DVV set of an lww key) expired at `now_ms`, under a ttl of
    `ttl_ms` (0: none), or because its newest value was written at or before `before_ms`
    (an alter that raised or removed the ttl: namespaces.py)?"""
    if not encoded or (ttl_ms <= 0 and before_ms <= 0):
        return False
    newest = -1
    for value in dvv.DVVSet.decode(encoded).values():
        if value is not None and len(value) >= 8:
            t = stamp_ms(value)
            if t > newest:
                newest = t
    return newest >= 0 and ((ttl_ms > 0 and newest + ttl_ms <= now_ms)
                            or newest <= before_ms)


def own_ttl_over(value: bytes, now_ms: int) -> bool:
    """Has this stored value of a write_ttl namespace outlived its write's own ttl?"""
    ttl = int.from_bytes(value[STAMP_BYTES:STAMP_BYTES + TTL_BYTES], "big")
    return ttl > 0 and stamp_ms(value) + ttl * 1000 <= now_ms


def served(values: list[bytes], head: int, now_ms: int) -> list[bytes]:
    """The stored values of one key a read answers with, their heads (`head` bytes: stamp,
    own ttl) still on: without those whose own ttl is over (a write_ttl namespace)."""
    if head <= STAMP_BYTES or not values:
        return values
    return [v for v in values if not own_ttl_over(v, now_ms)]


def hidden(encoded: bytes, now_ms: int) -> bool:
    """Does this stored version of a write_ttl namespace's key read as absent (every value it
    holds outlived its own ttl)? A listing of keys leaves such a key out."""
    if not encoded:
        return False
    values = dvv.DVVSet.decode(encoded).live_values()
    return bool(values) and not served(values, STAMP_BYTES + TTL_BYTES, now_ms)


def expires_at(value: bytes, head: int, ttl_ms: int) -> int:
    """The wall time (ms) at which this stored lww value stops being served: its namespace's
    ttl (`ttl_ms`, 0: none) or its write's own (`head` > STAMP_BYTES), whichever ends
    first; 0: never (`zkv dump` keeps it, so that `zkv load` does not serve it longer)."""
    t = stamp_ms(value)
    end = t + ttl_ms if ttl_ms else 0
    if head > STAMP_BYTES:
        own = int.from_bytes(value[STAMP_BYTES:STAMP_BYTES + TTL_BYTES], "big")
        if own and (not end or t + own * 1000 < end):
            end = t + own * 1000
    return end


def period(ttl_ms: int) -> float:
    """Seconds a full sweep takes when the shortest ttl is `ttl_ms`."""
    return min(MAX_PERIOD, max(MIN_PERIOD, ttl_ms / 1000.0))


class Sweep:
    """The cursor of the sweep over one store: `step` scans the next windows of a round."""

    def __init__(self) -> None:
        self.cursor = 0  # the first hash of the next window
        self.passes = 0  # full passes completed (status, tests)

    def step(self, store, expiry_of: Callable[[bytes], tuple[int, int] | None], now_ms: int,
             drop: Callable[[bytes], object], round_s: float, shortest_ms: int,
             dead: Callable[[bytes], bool] | None = None) -> int:
        """One background round (`round_s` seconds apart): scan the share of the hash space
        that makes a full pass take `period(shortest_ms)`, drop what has expired; returns
        how many versions were dropped. `expiry_of(key)`: (ttl ms, expired_before ms) of
        the key's namespace, None if its values never expire (Registry.expiry_of).
        `dead(key)`: is the key of a dropped namespace or an ended generation (its version
        is dropped whatever it holds; Registry.is_dead), while such keys are purged."""
        per_pass_ms = int(period(shortest_ms) * 1000)
        share = max(SPACE // ROUND_SHARE, -(-SPACE * int(round_s * 1000) // per_pass_ms))
        held = len(store)
        if held > ROUND_KEYS:  # (keys spread evenly over the hash space)
            share = min(share, max(1, SPACE * ROUND_KEYS // held))
        lo = self.cursor
        hi = min(SPACE - 1, lo + share - 1)
        gone = 0
        for key, _h in store.key_hashes(lo, hi):
            if key[:1] != b"\x00":
                continue  # the default namespace (no ttl): most keys, one compare each
            rule = expiry_of(key)
            if (rule is not None and expired(store.get(key) or b"", rule[0], now_ms, rule[1])) \
                    or (dead is not None and dead(key)):
                drop(key)
                gone += 1
        if hi >= SPACE - 1:
            self.cursor = 0
            self.passes += 1
        else:
            self.cursor = hi + 1
        return gone
