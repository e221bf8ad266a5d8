# cython: language_level=3
"""The consistent-hash ring: key -> partition -> preference list of N distinct, rack-spread nodes.

Design (Dynamo's partitioning strategy 3, "Q/S tokens per node, equal-sized partitions" --
DeCandia et al., "Dynamo: Amazon's Highly Available Key-value Store", SOSP 2007, section 6.2;
the same shape as riak_core's chash ring). The 64-bit murmur3 hash space is cut into
Q = 2**q_bits equal partitions; a key's partition is ``hash64(key) >> (64 - q_bits)``, so lookup is
one hash and one shift, and its preference list is a row of a precomputed C array.

Claim (which node is primary for each partition) is a pure function of (members, Q): every
node computes the same ring from the same membership, in any order. It is rendezvous hashing
(Thaler & Ravishankar, "Using name-based mappings to increase hit rates", 1998) with capacity
caps: every (partition, node) pair gets a weight w = murmur3(node_hash, p); pairs are taken in
descending weight order, and a pair is accepted when its partition is still free and its node
still has room, where room is floor(Q/M) for every node plus one extra partition for the first
Q mod M nodes to reach floor(Q/M). This is the unique stable matching between partitions and
capped nodes when both sides rank by w; it always completes, and owned counts differ by at most
one. Without caps, HRW moves exactly the minimum when a node joins or leaves; the caps add a
rebalancing cascade of order sqrt(Q/M^2) per node. Measured (tests/test_ring.py): the
fraction of primaries that change on one join/leave stays within 1.5x the minimum 1/M while
Q/M >= ~20 (Q=256 up to ~12 nodes, Q=1024 up to ~20); with fewer partitions per node it grows
toward ~2x. Pick Q >= 20 * (expected max nodes).
The greedy runs in weight bands (highest first), rescanning only free partitions x nodes with
room, so memory stays O(Q * 4) pairs instead of O(Q * M).

Preference list of p: the primary, then the other members in p's HRW order (descending w),
rack-aware: each next node is the first one in that order whose rack is among the least used
so far (among racks with nodes left). So the first min(N, racks) nodes lie in distinct racks
whenever there are that many racks, for every partition; ``rack_violations`` re-checks this
independently and is expected to be empty. Continuing the same rule over all members gives
the fixed per-partition walk that sloppy quorum uses beyond the preference list. Secondary
replicas are HRW-random, so replica load per node is balanced only statistically, and racks
with few nodes carry more replicas (the price of rack spread, as in Cassandra's
NetworkTopologyStrategy).
"""

cimport cython
from cpython.array cimport array, clone
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

from zkv._core.murmur3 cimport zkv_hash64

import array as _array_mod
import hashlib
import struct

cdef extern from "Python.h":
    bint _PyBytes_Check "PyBytes_Check"(PyObject* o) nogil
    char* _PyBytes_AS_STRING "PyBytes_AS_STRING"(PyObject* o) nogil
    Py_ssize_t _PyBytes_GET_SIZE "PyBytes_GET_SIZE"(PyObject* o) nogil
    PyObject** _PySequence_Fast_ITEMS "PySequence_Fast_ITEMS"(object o)

cdef array _UINT_TEMPLATE = array("I")
cdef array _ULL_TEMPLATE = array("Q")
assert _UINT_TEMPLATE.itemsize == 4 and _ULL_TEMPLATE.itemsize == 8

_FP_MAGIC = b"zkvring\x00"


# --------------------------------------------------------------------------- hashing helpers

cdef inline uint64_t _weight(uint64_t node_hash, uint32_t p) noexcept nogil:
    """HRW weight of (p, node): zkv_hash64(le64(node_hash) ++ le32(p))."""
    cdef uint8_t buf[12]
    cdef int i
    for i in range(8):
        buf[i] = <uint8_t>(node_hash >> (8 * i))
    for i in range(4):
        buf[8 + i] = <uint8_t>(p >> (8 * i))
    return zkv_hash64(buf, 12)


cdef inline uint64_t _key_hash(object key) except? 0:
    if not _PyBytes_Check(<PyObject*>key):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    return zkv_hash64(_PyBytes_AS_STRING(<PyObject*>key),
                      <size_t>_PyBytes_GET_SIZE(<PyObject*>key))


def hash64(key):
    """zkv's key hash: murmur3 x64_128, seed 0, first 64-bit word, unsigned."""
    return _key_hash(key)


def partition_of(key, int q_bits):
    """Partition of key in a ring of 2**q_bits partitions: hash64(key) >> (64 - q_bits)."""
    if not _PyBytes_Check(<PyObject*>key):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if q_bits < 1 or q_bits > RING_MAX_Q_BITS:
        raise ValueError(f"q_bits must be in 1..{RING_MAX_Q_BITS}, got {q_bits}")
    return <long>(zkv_hash64(_PyBytes_AS_STRING(<PyObject*>key),
                             <size_t>_PyBytes_GET_SIZE(<PyObject*>key)) >> (64 - q_bits))


# --------------------------------------------------------------------------- claim

cdef struct _Pair:
    uint64_t w      # HRW weight
    uint32_t p      # partition
    uint32_t node   # node number


cdef int _cmp_pair_desc(const void* a, const void* b) noexcept nogil:
    # descending weight; ties by (partition, node) ascending -- deterministic everywhere
    cdef const _Pair* x = <const _Pair*>a
    cdef const _Pair* y = <const _Pair*>b
    if x.w != y.w:
        return -1 if x.w > y.w else 1
    if x.p != y.p:
        return -1 if x.p < y.p else 1
    if x.node != y.node:
        return -1 if x.node < y.node else 1
    return 0


cdef inline bint _has_room(uint32_t cnt, uint32_t lo, uint32_t extra) noexcept nogil:
    return cnt < lo or (cnt == lo and extra > 0)


cdef int _claim(const uint64_t* node_hash, uint32_t m, uint32_t q, uint16_t* owner) noexcept nogil:
    """Capacity-capped HRW claim (see module docstring). owner: q entries. 0 ok, -1 no memory."""
    cdef uint32_t lo = q // m
    cdef uint32_t extra = q % m          # nodes that may still take lo + 1
    cdef uint32_t left = q               # partitions not yet owned
    cdef uint32_t nbands = m // 4 if m >= 8 else 1
    cdef uint32_t band, p, node, i, k
    cdef uint64_t w
    cdef size_t cap = <size_t>q * m // nbands + 16, count
    cdef _Pair* pairs
    cdef uint32_t* cnt = <uint32_t*>malloc(m * sizeof(uint32_t))
    cdef uint8_t* taken = <uint8_t*>malloc(q)
    if cnt == NULL or taken == NULL:
        free(cnt); free(taken)
        return -1
    pairs = <_Pair*>malloc(cap * sizeof(_Pair))
    if pairs == NULL:
        free(cnt); free(taken)
        return -1
    for i in range(m):
        cnt[i] = 0
    for p in range(q):
        taken[p] = 0
    band = 0
    while left > 0 and band < nbands:
        count = 0
        for p in range(q):
            if taken[p]:
                continue
            for node in range(m):
                if not _has_room(cnt[node], lo, extra):
                    continue
                w = _weight(node_hash[node], p)
                # band 0 holds the highest weights
                if <uint32_t>((((~w) >> 32) * nbands) >> 32) != band:
                    continue
                if count == cap:
                    cap *= 2
                    pairs2 = <_Pair*>malloc(cap * sizeof(_Pair))
                    if pairs2 == NULL:
                        free(pairs); free(cnt); free(taken)
                        return -1
                    memcpy(pairs2, pairs, count * sizeof(_Pair))
                    free(pairs)
                    pairs = pairs2
                pairs[count].w = w
                pairs[count].p = p
                pairs[count].node = node
                count += 1
        qsort(pairs, count, sizeof(_Pair), _cmp_pair_desc)
        for k in range(count):
            p = pairs[k].p
            node = pairs[k].node
            if taken[p] or not _has_room(cnt[node], lo, extra):
                continue
            if cnt[node] == lo:
                extra -= 1
            cnt[node] += 1
            taken[p] = 1
            owner[p] = <uint16_t>node
            left -= 1
            if left == 0:
                break
        band += 1
    free(pairs); free(cnt); free(taken)
    return 0 if left == 0 else -2


# --------------------------------------------------------------------------- walk order

cdef enum:
    _TAKEN = 0x10000     # > any node number: marks a candidate already placed


cdef struct _Cand:
    uint64_t w
    uint32_t node


cdef int _cmp_cand_desc(const void* a, const void* b) noexcept nogil:
    cdef const _Cand* x = <const _Cand*>a
    cdef const _Cand* y = <const _Cand*>b
    if x.w != y.w:
        return -1 if x.w > y.w else 1
    if x.node != y.node:
        return -1 if x.node < y.node else 1
    return 0


cdef uint32_t _walk(const uint64_t* node_hash, const uint16_t* rack_of, uint32_t m,
                    uint32_t nracks, uint32_t p, uint16_t primary,
                    uint16_t* out, uint32_t count, _Cand* cand, uint32_t* used,
                    uint32_t* rleft) noexcept nogil:
    """Fill out[0:count] with p's walk: primary, then rack-round-robin over p's HRW order.

    cand (m), used (nracks), rleft (nracks) are scratch space.
    """
    cdef uint32_t i, k, r, minu, nc = 0
    for r in range(nracks):
        used[r] = 0
        rleft[r] = 0
    for i in range(m):
        rleft[rack_of[i]] += 1
        if i != primary:
            cand[nc].w = _weight(node_hash[i], p)
            cand[nc].node = i
            nc += 1
    qsort(cand, nc, sizeof(_Cand), _cmp_cand_desc)
    out[0] = primary
    used[rack_of[primary]] += 1
    rleft[rack_of[primary]] -= 1
    for k in range(1, count):
        minu = 0x7FFFFFFF
        for r in range(nracks):
            if rleft[r] > 0 and used[r] < minu:
                minu = used[r]
        for i in range(nc):
            if cand[i].node == _TAKEN:
                continue
            r = rack_of[cand[i].node]
            if used[r] == minu:
                out[k] = <uint16_t>cand[i].node
                cand[i].node = _TAKEN
                used[r] += 1
                rleft[r] -= 1
                break
    return count


# --------------------------------------------------------------------------- the ring

def _rack_violations(preflists, racks, n):
    """Partitions whose preference list spans fewer than min(n, distinct racks) racks.

    preflists: sequence (indexed by partition) of sequences of node ids; racks: id -> rack.
    """
    want = min(n, len(set(racks.values())))
    return tuple(p for p, pl in enumerate(preflists)
                 if len({racks[x] for x in pl}) < want)


cdef int _build(Ring self) except -1:
    """Claim primaries, then fill every partition's preference list."""
    cdef uint16_t* owner = <uint16_t*>malloc(self.q * sizeof(uint16_t))
    cdef _Cand* cand = <_Cand*>malloc(self.m * sizeof(_Cand))
    cdef uint32_t* used = <uint32_t*>malloc(self.nracks * sizeof(uint32_t))
    cdef uint32_t* rleft = <uint32_t*>malloc(self.nracks * sizeof(uint32_t))
    cdef uint32_t p
    cdef int rc = -1
    try:
        if owner == NULL or cand == NULL or used == NULL or rleft == NULL:
            raise MemoryError()
        with nogil:
            rc = _claim(self.node_hash, self.m, self.q, owner)
            if rc == 0:
                for p in range(self.q):
                    _walk(self.node_hash, self.rack_of, self.m, self.nracks, p, owner[p],
                          self.pref + <size_t>p * self.plen, self.plen, cand, used, rleft)
        if rc == -1:
            raise MemoryError()
        if rc != 0:
            raise AssertionError("ring claim did not complete")  # cannot happen
    finally:
        free(owner); free(cand); free(used); free(rleft)
    return 0


cdef uint32_t _check_p(object p, uint32_t q) except? 0x7FFFFFFF:
    if isinstance(p, bool) or not isinstance(p, int):
        raise TypeError(f"partition must be an int, not {type(p).__name__}")
    if p < 0 or p >= q:
        raise IndexError(f"partition {p} out of range 0..{q - 1}")
    return <uint32_t>p


@cython.final
cdef class Ring:
    """Fixed-partition consistent-hash ring; see ring.pyi for the contract."""

    def __cinit__(self):
        self.pref = NULL
        self.rack_of = NULL
        self.node_hash = NULL

    def __dealloc__(self):
        free(self.pref)
        free(self.rack_of)
        free(self.node_hash)

    def __init__(self, members, q=256, n=3, tokens=None):
        if self.pref != NULL:
            raise RuntimeError("Ring is immutable; __init__ may run only once")
        if isinstance(q, bool) or not isinstance(q, int):
            raise TypeError("q must be an int")
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("n must be an int")
        if q < 2 or q > (1 << RING_MAX_Q_BITS) or (q & (q - 1)) != 0:
            raise ValueError(f"q must be a power of two in 2..{1 << RING_MAX_Q_BITS}, got {q}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n > RING_MAX_MEMBERS:
            raise ValueError(f"n must be <= {RING_MAX_MEMBERS}, got {n}")
        racks = {}
        for item in members:
            if isinstance(item, (str, bytes)):  # ("ab" unpacked as node "a", rack "b")
                raise TypeError(f"members must be (node_id, rack) pairs, got {item!r}")
            try:
                node_id, rack = item
            except (TypeError, ValueError):
                raise TypeError(f"members must be (node_id, rack) pairs, got {item!r}") from None
            if not isinstance(node_id, str) or not isinstance(rack, str):
                raise TypeError(f"node id and rack must be str, got {item!r}")
            if not node_id:
                raise ValueError("a node id must not be empty")
            if node_id in racks:
                raise ValueError(f"duplicate node id {node_id!r}")
            racks[node_id] = rack
        if not racks:
            raise ValueError("a ring needs at least one member")
        placed = {}  # node id -> placement token, for members placed by something else
        if tokens:
            for node_id, token in dict(tokens).items():
                if node_id not in racks:
                    continue  # a token of a node not in this ring
                if not isinstance(token, str) or not token:
                    raise TypeError(f"token of {node_id!r} must be a non-empty str")
                if token != node_id:
                    placed[node_id] = token
        seeds = {x: placed.get(x, x) for x in racks}
        if len(set(seeds.values())) != len(seeds):
            raise ValueError("two members have the same placement token")
        if len(racks) > RING_MAX_MEMBERS:
            raise ValueError(f"at most {RING_MAX_MEMBERS} members")

        ids = tuple(sorted(racks))
        rack_names = tuple(sorted(set(racks.values())))
        rack_num = {r: i for i, r in enumerate(rack_names)}
        self.q = q
        self.q_bits = q.bit_length() - 1
        self.shift = 64 - self.q_bits
        self.n = n
        self.members = ids
        self.m = len(ids)
        self.plen = min(self.n, self.m)
        self.nracks = len(rack_names)
        self.rack_names = rack_names
        self.rack_by_id = {x: racks[x] for x in ids}
        self.index = {x: i for i, x in enumerate(ids)}
        self.token_by_id = {x: placed[x] for x in ids if x in placed}

        self.node_hash = <uint64_t*>malloc(self.m * sizeof(uint64_t))
        self.rack_of = <uint16_t*>malloc(self.m * sizeof(uint16_t))
        self.pref = <uint16_t*>malloc(<size_t>self.q * self.plen * sizeof(uint16_t))
        if self.node_hash == NULL or self.rack_of == NULL or self.pref == NULL:
            raise MemoryError()
        cdef uint32_t i
        cdef bytes raw
        for i in range(self.m):
            raw = seeds[ids[i]].encode("utf-8")
            self.node_hash[i] = zkv_hash64(<const char*>raw, len(raw))
            self.rack_of[i] = rack_num[racks[ids[i]]]
        _build(self)
        self.rack_violations = _rack_violations(
            [self.preflist(p) for p in range(self.q)], self.rack_by_id, self.n)

    # ---- C API (see ring.pxd)

    cdef uint32_t c_partition(self, const char* key, size_t length) noexcept nogil:
        return <uint32_t>(zkv_hash64(key, length) >> self.shift)

    cdef const uint16_t* c_preflist(self, uint32_t p) noexcept nogil:
        return self.pref + <size_t>p * self.plen

    cdef uint32_t c_walk(self, uint32_t p, uint16_t* out, uint32_t count) noexcept nogil:
        if count > self.m:
            count = self.m
        if count == 0:
            return 0
        cdef _Cand* cand = <_Cand*>malloc(self.m * sizeof(_Cand))
        cdef uint32_t* used = <uint32_t*>malloc(2 * self.nracks * sizeof(uint32_t))
        if cand == NULL or used == NULL:
            free(cand); free(used)
            return 0
        _walk(self.node_hash, self.rack_of, self.m, self.nracks, p, self.pref[<size_t>p * self.plen],
              out, count, cand, used, used + self.nracks)
        free(cand); free(used)
        return count

    # ---- Python API

    @property
    def racks(self):
        return dict(self.rack_by_id)

    @property
    def tokens(self):
        return dict(self.token_by_id)

    def partition(self, key):
        if not _PyBytes_Check(<PyObject*>key):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        return <long>(zkv_hash64(_PyBytes_AS_STRING(<PyObject*>key),
                                 <size_t>_PyBytes_GET_SIZE(<PyObject*>key)) >> self.shift)

    def partitions(self, keys):
        if type(keys) is not list and type(keys) is not tuple:
            keys = list(keys)
        cdef Py_ssize_t i, count = len(keys)
        cdef array out = clone(_UINT_TEMPLATE, count, False)
        cdef unsigned int* dst = out.data.as_uints
        cdef PyObject** items = _PySequence_Fast_ITEMS(keys)
        cdef PyObject* k
        cdef uint32_t shift = self.shift
        for i in range(count):
            k = items[i]
            if not _PyBytes_Check(k):
                raise TypeError(f"keys[{i}] must be bytes, not {type(<object>k).__name__}")
            dst[i] = <unsigned int>(zkv_hash64(_PyBytes_AS_STRING(k),
                                               <size_t>_PyBytes_GET_SIZE(k)) >> shift)
        return out

    def hashes(self, keys):
        if type(keys) is not list and type(keys) is not tuple:
            keys = list(keys)
        cdef Py_ssize_t i, count = len(keys)
        cdef array out = clone(_ULL_TEMPLATE, count, False)
        cdef unsigned long long* dst = out.data.as_ulonglongs
        cdef PyObject** items = _PySequence_Fast_ITEMS(keys)
        cdef PyObject* k
        for i in range(count):
            k = items[i]
            if not _PyBytes_Check(k):
                raise TypeError(f"keys[{i}] must be bytes, not {type(<object>k).__name__}")
            dst[i] = zkv_hash64(_PyBytes_AS_STRING(k), <size_t>_PyBytes_GET_SIZE(k))
        return out

    def preflist(self, p):
        cdef uint32_t pp = _check_p(p, self.q)
        cdef const uint16_t* row = self.pref + <size_t>pp * self.plen
        ids = self.members
        return tuple([ids[row[i]] for i in range(self.plen)])

    def preflist_for_key(self, key):
        return self.preflist(self.partition(key))

    def sloppy_preflist(self, p, down):
        cdef uint32_t pp = _check_p(p, self.q)
        if isinstance(down, (str, bytes)):
            raise TypeError("down must be a collection of node ids, not a single string")
        down = frozenset(down)
        ids = self.members
        cdef const uint16_t* row = self.pref + <size_t>pp * self.plen
        owners = [ids[row[i]] for i in range(self.plen)]
        missing = [x for x in owners if x in down]       # owners that need a stand-in, in order
        result = [(x, None) for x in owners if x not in down]
        if not missing:
            return result
        cdef uint16_t* walk = <uint16_t*>malloc(self.m * sizeof(uint16_t))
        if walk == NULL:
            raise MemoryError()
        cdef uint32_t i, got
        try:
            got = self.c_walk(pp, walk, self.m)
            if got == 0:
                raise MemoryError()
            j = 0
            for i in range(self.plen, got):
                if j == len(missing):
                    break
                x = ids[walk[i]]
                if x not in down:
                    result.append((x, missing[j]))
                    j += 1
        finally:
            free(walk)
        return result

    def walk(self, p):
        """Every member in p's walk order: the preference list, then the fallback order."""
        cdef uint32_t pp = _check_p(p, self.q)
        cdef uint16_t* w = <uint16_t*>malloc(self.m * sizeof(uint16_t))
        if w == NULL:
            raise MemoryError()
        try:
            if self.c_walk(pp, w, self.m) == 0:
                raise MemoryError()
            ids = self.members
            return tuple([ids[w[i]] for i in range(self.m)])
        finally:
            free(w)

    def owner(self, p):
        cdef uint32_t pp = _check_p(p, self.q)
        return self.members[self.pref[<size_t>pp * self.plen]]

    def owned(self, node_id):
        idx = self.index.get(node_id)
        if idx is None:
            return []
        cdef uint16_t want = idx
        cdef uint32_t p
        return [p for p in range(self.q) if self.pref[<size_t>p * self.plen] == want]

    def replicas_of(self, node_id):
        idx = self.index.get(node_id)
        if idx is None:
            return []
        cdef uint16_t want = idx
        cdef uint32_t p, i
        out = []
        for p in range(self.q):
            for i in range(self.plen):
                if self.pref[<size_t>p * self.plen + i] == want:
                    out.append(p)
                    break
        return out

    def partition_range(self, p):
        cdef uint32_t pp = _check_p(p, self.q)
        cdef uint64_t lo = (<uint64_t>pp) << self.shift
        cdef uint64_t hi = lo | ((<uint64_t>1 << self.shift) - 1)
        return (lo, hi)

    def moved(self, Ring other not None):
        if other.q != self.q:
            raise ValueError(f"rings have different q ({self.q} vs {other.q})")
        cdef uint32_t p, diff = 0
        a, b = self.members, other.members
        for p in range(self.q):
            if a[self.pref[<size_t>p * self.plen]] != b[other.pref[<size_t>p * other.plen]]:
                diff += 1
        return <double>diff / <double>self.q

    def fingerprint(self):
        parts = [_FP_MAGIC, struct.pack("<BIII", RING_ALGO_VERSION, self.q, self.n, self.m)]
        for x in self.members:
            bid = x.encode("utf-8")
            brk = self.rack_by_id[x].encode("utf-8")
            parts.append(struct.pack("<H", len(bid)) + bid + struct.pack("<H", len(brk)) + brk)
        if self.token_by_id:  # (absent when every member is placed by its id: fingerprints of
            parts.append(b"tokens")  # rings without tokens are unchanged)
            for x in self.members:
                tok = self.token_by_id.get(x)
                if tok is not None:
                    bid = x.encode("utf-8")
                    btk = tok.encode("utf-8")
                    parts.append(struct.pack("<H", len(bid)) + bid
                                 + struct.pack("<H", len(btk)) + btk)
        return hashlib.blake2b(b"".join(parts), digest_size=16).digest()

    def describe(self):
        return [{"partition": p, "preflist": list(self.preflist(p))} for p in range(self.q)]

    def __reduce__(self):
        return (Ring, (tuple((x, self.rack_by_id[x]) for x in self.members), self.q, self.n,
                       dict(self.token_by_id)))

    def __eq__(self, other):
        if not isinstance(other, Ring):
            return NotImplemented
        o = <Ring>other
        return (self.q == o.q and self.n == o.n and self.members == o.members
                and self.rack_by_id == o.rack_by_id and self.token_by_id == o.token_by_id)

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        return (f"Ring(q={self.q}, n={self.n}, members={len(self.members)}, "
                f"racks={self.nracks})")
