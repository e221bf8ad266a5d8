# cython: language_level=3
"""Dotted version vector sets: zkv's causality tracking and sibling store for one key.

One job: from the versions two replicas hold for a key, or from a client's write and
the causal context it read, compute the resulting set of concurrent versions
(siblings). Pure functions of bytes and ints; no I/O, no clocks.

Design. Almeida, Baquero, Gonçalves, Preguiça, Fonte, "Scalable and Accurate
Causality Tracking for Eventually Consistent Stores" (DAIS 2014), in the shape of
Riak's ``dvvset.erl``. A set is a list of entries ``(i, n, [s_1 .. s_S])`` sorted by
node id ``i``: the causal past holds the dots ``i:1..n`` and each listed sibling ``s``
carries a value (or a tombstone), an optional write id and its own dot ``(i, d)``,
``d`` strictly decreasing along the list. Because every value carries exactly one dot,
a write retires exactly the siblings its context covers, and two writes with the same
context through the same coordinator both survive (plain server-side version vectors
either lose one of them or grow false siblings). Entries exist per coordinating
replica, so a set has about N entries however many clients write.

State, in one sentence: a version vector ``vv`` plus the set of *live* dots (each with
its value and write id), every live dot inside ``vv``. A dot inside ``vv`` that is not
live is dead -- overwritten by a write whose context covered it, or *retired* by one
of the rules below; the two are the same state, so a retired sibling costs nothing
(no placeholder, no flag) and its dot stays in the causal past. In ``dvvset.erl`` the
live dots of an entry are always ``n, n-1, ...`` (consecutive), which is why the list
can be positional; retiring a middle sibling breaks that, so a sibling here records its
own dot (in memory) or its distance to the previous one (the "gap", in the byte format;
0 and left out in the usual case, so sets without write ids or gaps keep today's format
version 1, byte for byte).

- sync (``dvvset:sync``): per id the counter is ``max(n1, n2)``; a live dot survives iff
  both sides hold it live, or it is live on one side and beyond the other side's counter
  (unseen there). A dot dead on either side that the other has seen stays dead: that is
  what makes retirement sticky -- a replica still holding a retired sibling live can
  never bring it back. This is the join of a semilattice (per dot: unseen < live <
  dead), commutative, associative and idempotent (rule D below is applied after it).
- update (``dvvset:update``): sync the client's context (a vector without siblings) into
  the server's set, which kills the covered siblings, then add the new value with dot
  ``(node, counter + 1)``.

Write ids (idempotent writes, issue 10). A client write carries a write id (0..32
bytes, empty = none) kept across its retries; a retry through a different coordinator
gives the same write a second dot. Rule D (dedup): whenever two live siblings carry the
same non-empty write id, all but the greatest in the sibling order ``O`` below are
retired. Every constructor applies D (sync, update, lww, retain) and the decoder rejects
a set where D has not been applied, so every set in existence is D-normal. ``update``
with a write id that a live sibling already carries, with the same value, is a no-op
(the retry of a write this replica has: no new dot at all).

Order ``O`` on siblings (used by D and by LWW): tombstones below values; values by
their first 8 bytes (bytewise; a shorter prefix first), then by dot (node id bytewise,
then counter). Dots are unique, so ``O`` is total and every replica picks the same.

Convergence with D. Each replica's state only moves up in the semilattice: sync joins,
update adds a dot above everything, D kills live dots. Once replicas stop taking writes
and have exchanged their sets (directly or through others), each one's state is >= every
other's, so all are equal, byte for byte (canonical encoding); one replica gathering all
sets and then giving its result to all the others is enough. D never loses a write: it
only retires a copy that is O-below a live copy with the same write id, so the
O-greatest copy of a write is never retired by D, and the value stays live until a
context covers one of its copies (a client read it and wrote over it).

What delivery order can change (so sync is commutative and idempotent, but not
associative when D fires): a retried write has copies x (O-greater) and y. If a client
reads only y and overwrites it, x is never retired by D and survives next to the
overwrite, in every order (exactly as without write ids). If a client reads only x and
overwrites it: a replica that held x and y live together had retired y, and y's death
spreads with sync, so the write is gone everywhere (what the client asked for); but if
the overwrite reaches every replica before any of them holds x and y together, y stays
live next to the overwrite (again as without write ids). Both outcomes are converged
states, and in neither is a value lost that no client has overwritten.

Copies of one write are one write (aliases, rule R). A retried write has copies x
(O-greater, survives D) and y (retired by D). A client may hold the context of either
copy; a context covering y alone must still overwrite the write. Two mechanisms:

- Aliases. When D retires y in favour of x, x keeps y's dot (and y's aliases) as an
  *alias*. In ``update`` a sibling counts as covered by the context when its dot or any
  alias dot is, so a coordinator holding x retires it for a context that saw only y.
  ``sync`` joins the alias lists of a sibling live on both sides (union), and D adds the
  loser's dot and aliases to the winner's. A copy that dies in ``sync`` (live on one side,
  dead on the other, where D retired it) hands its aliases to the live copy that lists it:
  a replica holding y with aliases [w] that takes x with aliases [y] keeps w (x: [w, y]).
  Without that, w was forgotten where it was issued, and that node's ``put_context`` for
  an unrelated put covered w unnoticed: a write chained on it retired x, which its client
  never read (a random-schedule model on Replica, seed 103273 at 20% loss). A list is
  canonical: sorted by (node id
  bytewise, counter), never the sibling's own dot, the DVV_ALIAS_MAX (8) smallest kept --
  keeping the k smallest of a union is itself a join (cap(cap(A | B) | C) = cap(A|B|C)),
  so alias lists converge like everything else; past 8 copies of one write the extra dots
  are not aliases (more than 8 coordinators tried for one write: not expected).
  Aliases are *not* used to retire in ``sync``: a dot dead on the other side may be dead
  because D, ``lww`` or ``retain`` retired it (the state cannot tell), and killing x then
  can kill both copies of a live write (e.g. x vs a third copy z that replaced y there).
- Retired write ids, rule R. A write created by ``update`` records on its new sibling the
  write ids of the siblings its context retires (dot or alias covered), newest first:
  those retired directly (bytewise), then the lists those siblings carried, without
  repeats or its own write id, at most DVV_RETIRED_MAX (4). The list is fixed by the
  coordinator that makes the dot, like the value, so every replica has the same one (no
  merge needed). Rule R: a live sibling whose write id a live sibling lists is retired
  (all lists read before any retirement). So a copy that reaches a replica only after the
  overwrite of its twin -- by sync, in any order -- is retired on arrival, and ``update``
  with a write id some live sibling lists is a no-op (a late retry of a dead write makes no
  dot). Every constructor applies R before D; the decoder rejects a set where R is due.

Convergence with aliases and R. The per-dot state is unseen < live(aliases) < dead, where
live states of one dot are ordered by their alias lists under the capped-union join (a
live dot taking the aliases of a copy it lists only grows its list); R, like D, only moves
a live dot to dead. So every replica's state still only moves up, and
the argument above applies unchanged: once replicas have exchanged (one gathers, then gives
back), each holds the same vector, live dots, alias lists and (dot-fixed) retired lists,
and the same bytes. Safety: R retires only copies of a write some client overwrote (its id
is listed only by a write whose context covered one of its copies, or, in lww, that its
coordinator's collapse kept over one: see below); D and aliases never
retire the O-greatest copy of a live write; aliases retire only in ``update``, where
everything the context covers is in the new write's causal past -- including every copy of
a write one of whose copies it covers.

What is not covered (bounded memory has limits). The retired list is made from what the
coordinator holds: a coordinator that holds no copy of the covered write (its context came
from other replicas and nothing reached this one yet) cannot know the write id, and a late
copy arriving after the overwrite reached everyone survives next to it, as without write
ids. The same when more than 4 ids compete for a list, when the overwriting sibling is
itself retired by ``sync`` (not ``update``), ``lww`` or ``retain`` before the late copy
arrives, and once a tombstone is reaped (the node keeps a reaped tombstone's retired ids for
its echo window, see zkv/node/replica.py). The first gap is closed by the context itself:
``context()`` of a set with write ids carries the retired list a write covering the whole
set would get (context format version 2, see dvv.pxd), and ``update`` joins the list it
derives from the server's set to it, the context's first (so the one id ``put_context``
lists for a write it could not cover is never the one cut at 4), then applies R (a copy the
context did not cover by dot,
e.g. a late twin the coordinator already holds, goes too). So the client's read carries the
ids to whichever coordinator takes its write.

Last writer wins (issue 15). In an ``lww`` namespace the coordinator stores
``value = 8-byte big-endian HLC stamp + user value``; ``lww(s)`` keeps only the
O-greatest sibling -- the highest (stamp, node id, counter); tombstones carry no stamp
and rank below every value -- and retires the rest (dots stay in the clock). It is
idempotent, and on LWW-collapsed sets ``lww(sync(a, b)) == lww(sync(lww(a), lww(b)))``;
it uses the same order as D, so D and the collapse never disagree on the survivor (with
two different orders, a retried write's two copies could each be kept on one side and
retired on the other, and a sync of the two would kill both). A blind lww write replaces
what it beats as a write with a covering context would, so ``lww(s, before)`` -- the
coordinator's collapse of the write it just made on ``before`` -- has the new sibling, if
kept, list the ids of the siblings it retires (then their lists, after its own; the bound
of 4 holds): unlisted, a late retry of a replaced write (stamped anew) got a dot and won
over its replacement. Fixed when the dot is made, so still the same on every replica; a
new write that loses the collapse lists nothing (its list would kill a newer write's other
copies). Rule R makes the kills of lww disagree between replicas: x lists y's id (y a late
retry stamped after x), so x kills y where they meet; y's stamp kills z, made where x had not
arrived, and z's kills x. A replica holding x (y killed) and one holding y (x killed via z)
each cover the other's survivor, and their sync keeps nothing: the key loses every value (a
Jepsen-style run, 1 key of 191). ``lww_sync(a, b)`` is ``lww(sync(a, b))`` except that
then it keeps the O-greatest of the two sides' siblings (the one with the join's vector):
not a join any more (a dead dot comes back), but once the replicas' vectors are equal every
disagreement resolves to the O-greater of two values, a total order, so replicas converge on
the O-greatest value held under any pattern of exchanges, one-way pushes included (rule R
in this pick made a rock-paper-scissors cycle of three writes whose late retries list each
other: one-way pushes round a ring never converged, a review found). It can keep a late retry
over the write R kept over it (the stamp decides, as before the lists): a value a later
write replaced, rather than none. ``retain`` is the general primitive: keep the chosen
siblings, retire the others.

Forged versions (issue 13). Counters are bounded by how many writes a coordinator has
actually made. ``update`` refuses a context whose counter for a node is more than
``max_ahead`` (default ``MAX_AHEAD`` = 2**32) beyond the server set's, so a client can
never push a counter to 2**63-1 and make the key unwritable; replicas must call
``check_plausible`` on every set a peer sends (RPut, read replies, hints, repair) before
syncing it in: it names a node that is not a member, or a counter beyond a given
per-node ceiling or too far ahead of the replica's own set for the key.

One dot, two writes. Honest dots are unique, so a dot live on both sides of a sync names
one write there; a pair in which it names two (different write ids, or one with an id and
one without: a corrupt or forged peer set, or a dot reissued past the limits in
zkv/node/replica.py) has no right answer -- keeping either copy let the argument order
decide (sync(a, b) != sync(b, a), a fuzzer of the Cython core) and a forged copy replace an
honest one. ``sync`` and everything built on it (sync_encoded, lww_sync, sync_plausible,
sync_many) refuse such a pair with ValueError in either order, as check_plausible does other
impossible input: a replica drops the peer's version and counts it malformed, keeping its
own. Only write ids are compared (pointer first; sets without any skip the check), not
values: a copy of a dot with the same write id and another value is not detected (comparing
values would cost up to their size per sync), and sync keeps a's copy.

Server-side sets never hold ``dvvset``'s anonymous (dot-less) values: the client keeps
its value apart and sends only the encoded context. The caller keeps one invariant:
only node ``i``'s own replica calls ``update(..., node_id=i)``, on its current set, so
a dot ``(i, k)`` names one value (and write id) everywhere.

Implementation: entries and siblings are C structs held inside the object (inline up
to 4 entries / 8 siblings, no malloc); ``sync`` returns one of its arguments, without
allocating, whenever that argument already is the result; when both entries' dots are
consecutive (the usual case) sync is O(1) per entry, as in ``dvvset``.
Byte formats: see the header of dvv.pxd (defined there once). Aliases and retired ids live
in each sibling as Python tuples (NULL in the usual case), so sets without them take exactly
the old paths.
"""

cimport cython
from cpython.bytes cimport PyBytes_Check, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from zkv._core.murmur3 cimport zkv_hash64, zkv_murmur3_x64_128

import os

cdef extern from "Python.h":
    # PyObject*-taking spellings of a few macros (no temporary object refs).
    char *_bytes_ptr "PyBytes_AS_STRING" (PyObject *o)
    Py_ssize_t _bytes_len "PyBytes_GET_SIZE" (PyObject *o)
    void _incref "Py_INCREF" (PyObject *o)
    void _xincref "Py_XINCREF" (PyObject *o)
    void _xdecref "Py_XDECREF" (PyObject *o)
    PyObject *_none "Py_None"

cdef int64_t COUNTER_MAX = 0x7FFFFFFFFFFFFFFF
cdef Py_ssize_t INTERN_MAX = 4096      # interned node ids kept at most (beyond: not interned)
cdef Py_ssize_t MIN_ENTRY = 1 + 1 + 8 + 4   # smallest encoded entry (1-byte id, no sibling)
cdef Py_ssize_t MIN_PAIR = 1 + 1 + 8        # smallest encoded context pair
cdef Py_ssize_t MIN_SIBLING = 1 + 4         # smallest encoded sibling (flag + length)
cdef Py_ssize_t SMALL_DEDUP = 16            # up to this many write ids: pairwise, no dict

MAX_AHEAD = 1 << 32     # default bound: a counter may be at most this far ahead of the replica's
WID_MAX = DVV_WID_MAX   # longest write id
Sibling = tuple  # DVVSet.siblings()' items: (node id, dot counter, value or None, write id)

cdef dict _ids = {}     # utf-8 id bytes -> the one interned bytes object for it
cdef dict _names = {}   # str node id -> interned utf-8 bytes


# ---------------------------------------------------------------------------
# small helpers

cdef inline object _intern(object b):
    cdef object r = _ids.get(b)
    if r is not None:
        return r
    if len(_ids) < INTERN_MAX:
        _ids[b] = b
    return b


cdef object _node_bytes(object node_id):
    """str node id -> interned utf-8 bytes (1..255 bytes)."""
    cdef object r = _names.get(node_id)
    if r is not None:
        return r
    if not isinstance(node_id, str):
        raise TypeError(f"node_id must be str, not {type(node_id).__name__}")
    try:
        b = (<str>node_id).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("node_id is not encodable as UTF-8") from None
    if not 1 <= len(b) <= 255:
        raise ValueError(f"node_id must be 1..255 bytes of UTF-8, got {len(b)}")
    b = _intern(b)
    if len(_names) < INTERN_MAX:
        _names[node_id] = b
    return b


cdef object _wid_arg(object wid):
    """A write id argument -> None (empty: no write id) or exact bytes of 1..32."""
    if wid is None:
        return None
    cdef bytes b = _as_bytes(wid, "wid")
    if len(b) == 0:
        return None
    if len(b) > DVV_WID_MAX:
        raise ValueError(f"wid must be 0..{DVV_WID_MAX} bytes, got {len(b)}")
    return b


cdef inline int _cmp(PyObject *a, PyObject *b) noexcept:
    """Bytewise order of two node ids (bytes objects)."""
    if a == b:
        return 0
    cdef Py_ssize_t la = _bytes_len(a), lb = _bytes_len(b)
    cdef int c = memcmp(_bytes_ptr(a), _bytes_ptr(b), <size_t>(la if la < lb else lb))
    if c != 0:
        return c
    return (la > lb) - (la < lb)


cdef inline bint _same_bytes(PyObject *a, PyObject *b) noexcept:
    """Two bytes objects are equal; their first bytes are compared before memcmp is called
    (write ids are random: nearly every pair of different ids differs there)."""
    if a == b:
        return True
    cdef Py_ssize_t la = _bytes_len(a)
    if la != _bytes_len(b):
        return False
    cdef const char *pa = _bytes_ptr(a)
    cdef const char *pb = _bytes_ptr(b)
    return la == 0 or (pa[0] == pb[0] and memcmp(pa, pb, <size_t>la) == 0)


cdef inline bint _same_val(PyObject *a, PyObject *b) noexcept:
    """Two sibling values (bytes or None) are equal."""
    if a == b:
        return True
    if a == _none or b == _none:
        return False
    return _same_bytes(a, b)


cdef inline bint _same_wid(PyObject *a, PyObject *b) noexcept:
    if a == NULL or b == NULL:
        return a == b
    return _same_bytes(a, b)


cdef inline bint _same_obj(PyObject *a, PyObject *b) except -1:
    """Two optional alias / retired-wid tuples are equal (NULL = none)."""
    if a == b:
        return True
    if a == NULL or b == NULL:
        return False
    return <object>a == <object>b


cdef int _ocmp(DVVSlot *p, PyObject *pn, DVVSlot *q, PyObject *qn) noexcept:
    """The sibling order O (see the module docstring): tombstones first, then values by
    their first 8 bytes, then dots (node id, counter). Sign of p - q; 0 only for one dot."""
    cdef bint tp = p.val == _none, tq = q.val == _none
    cdef Py_ssize_t lp, lq
    cdef int c
    if tp != tq:
        return -1 if tp else 1
    if not tp:
        lp = _bytes_len(p.val)
        lq = _bytes_len(q.val)
        if lp > 8:
            lp = 8
        if lq > 8:
            lq = 8
        c = memcmp(_bytes_ptr(p.val), _bytes_ptr(q.val), <size_t>(lp if lp < lq else lq))
        if c != 0:
            return 1 if c > 0 else -1
        if lp != lq:
            return 1 if lp > lq else -1
    c = _cmp(pn, qn)
    if c != 0:
        return 1 if c > 0 else -1
    return (p.dot > q.dot) - (p.dot < q.dot)


cdef inline void _put_slot(DVVSet s, PyObject *val, PyObject *wid, int64_t dot,
                           PyObject *alias=NULL, PyObject *rw=NULL) noexcept:
    """Append a sibling to s's last entry (storage already sized)."""
    cdef DVVSlot *d = &s.vals[s.n_vals]
    _incref(val)
    _xincref(wid)
    _xincref(alias)
    _xincref(rw)
    d.val = val
    d.wid = wid
    d.dot = dot
    d.alias = alias
    d.rw = rw
    s.n_vals += 1
    if wid != NULL:
        s.n_wids += 1
    if alias != NULL:
        s.n_alias += 1
    if rw != NULL:
        s.n_rw += 1
    s.ents[s.n_entries - 1].count += 1


cdef inline void _put_copy(DVVSet s, DVVSlot *src) noexcept:
    """Append a copy of sibling src (value, write id, dot, aliases, retired wids)."""
    _put_slot(s, src.val, src.wid, src.dot, src.alias, src.rw)


cdef inline void _begin_entry(DVVSet s, PyObject *node, int64_t counter) noexcept:
    """Append an entry (node, counter) with no siblings yet (storage already sized)."""
    cdef DVVEntry *e = &s.ents[s.n_entries]
    _incref(node)
    e.node = node
    e.counter = counter
    e.first = <uint32_t>s.n_vals
    e.count = 0
    s.n_entries += 1


cdef inline void _push_entry(DVVSet s, PyObject *node, int64_t counter,
                             DVVSlot *src, Py_ssize_t cnt) noexcept:
    """Append entry (node, counter, src[0:cnt]) to s (storage already sized)."""
    cdef Py_ssize_t k
    cdef DVVSlot *d
    _begin_entry(s, node, counter)
    for k in range(cnt):
        d = &s.vals[s.n_vals + k]
        d[0] = src[k]
        _incref(d.val)
        if d.wid != NULL:
            _incref(d.wid)
            s.n_wids += 1
        if d.alias != NULL:
            _incref(d.alias)
            s.n_alias += 1
        if d.rw != NULL:
            _incref(d.rw)
            s.n_rw += 1
    s.n_vals += cnt
    s.ents[s.n_entries - 1].count = <uint32_t>cnt


cdef DVVSet _alloc(Py_ssize_t ne, Py_ssize_t nv):
    """An empty set whose storage holds ne entries and nv siblings."""
    cdef DVVSet s = DVVSet.__new__(DVVSet)
    if ne > DVV_INLINE_ENTRIES:
        s.ents = <DVVEntry *>PyMem_Malloc(ne * sizeof(DVVEntry))
        if s.ents == NULL:
            s.ents = &s._ie[0]
            raise MemoryError()
    if nv > DVV_INLINE_VALUES:
        s.vals = <DVVSlot *>PyMem_Malloc(nv * sizeof(DVVSlot))
        if s.vals == NULL:
            s.vals = &s._iv[0]
            raise MemoryError()
    return s


cdef inline bint _dense(DVVSet s, DVVEntry *e) noexcept:
    """The entry's siblings carry the consecutive dots n, n-1, ... (no gap)."""
    return e.count == 0 or s.vals[e.first + e.count - 1].dot == e.counter - e.count + 1


cdef inline DVVSet _as_set(object x, str what):
    if x is None:
        return _EMPTY
    if type(x) is DVVSet:
        return <DVVSet>x
    raise TypeError(f"{what} must be a DVVSet or None, not {type(x).__name__}")


cdef inline bytes _as_bytes(object data, str what):
    """Exact bytes (a copy for bytes subclasses, bytearray, memoryview)."""
    if PyBytes_CheckExact(data):
        return <bytes>data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, not {type(data).__name__}")


# little-endian integer codec
cdef inline void _w16(unsigned char *p, uint32_t v) noexcept:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF

cdef inline void _w32(unsigned char *p, uint32_t v) noexcept:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF

cdef inline void _w64(unsigned char *p, uint64_t v) noexcept:
    cdef int k
    for k in range(8):
        p[k] = (v >> (8 * k)) & 0xFF

cdef inline uint32_t _r16(const unsigned char *p) noexcept:
    return p[0] | (<uint32_t>p[1] << 8)

cdef inline uint32_t _r32(const unsigned char *p) noexcept:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline uint64_t _r64(const unsigned char *p) noexcept:
    cdef uint64_t v = 0
    cdef int k
    for k in range(8):
        v |= (<uint64_t>p[k]) << (8 * k)
    return v


cdef bint _utf8_ok(const unsigned char *s, Py_ssize_t n) noexcept:
    """Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF)."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
            continue
        if i + 1 >= n:
            return False
        c1 = s[i + 1]
        if (c1 & 0xC0) != 0x80:
            return False
        if c < 0xF0:
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return False
            if i + 2 >= n or (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
            continue
        if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return False
        if i + 3 >= n or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
            return False
        i += 4
    return True


# ---------------------------------------------------------------------------
# the set

@cython.freelist(64)
@cython.final
cdef class DVVSet:
    """An immutable dotted version vector set: one key's siblings and causal past."""

    def __cinit__(self):
        self.ents = &self._ie[0]
        self.vals = &self._iv[0]
        self.n_entries = 0
        self.n_vals = 0
        self.n_wids = 0
        self.n_alias = 0
        self.n_rw = 0
        self._hash = -1

    def __init__(self):
        # (without it, Cython's __cinit__ ignores constructor arguments: DVVSet(1) read as
        # the empty set. Internal sets are made with DVVSet.__new__, which skips this.)
        pass

    def __dealloc__(self):
        cdef Py_ssize_t k
        for k in range(self.n_vals):
            _xdecref(self.vals[k].val)
            _xdecref(self.vals[k].wid)
            _xdecref(self.vals[k].alias)
            _xdecref(self.vals[k].rw)
        for k in range(self.n_entries):
            _xdecref(self.ents[k].node)
        if self.ents != &self._ie[0]:
            PyMem_Free(self.ents)
        if self.vals != &self._iv[0]:
            PyMem_Free(self.vals)

    def values(self):
        """All siblings (bytes, or None for a tombstone), by node id, newest first."""
        return [<object>self.vals[k].val for k in range(self.n_vals)]

    def live_values(self):
        """The siblings that are not tombstones, in values() order."""
        return [<object>self.vals[k].val for k in range(self.n_vals) if self.vals[k].val != _none]

    def siblings(self):
        """[(node id, dot counter, value or None, write id or b"")] in values() order."""
        cdef Py_ssize_t k, m
        cdef DVVEntry *e
        out = []
        for k in range(self.n_entries):
            e = &self.ents[k]
            node = (<bytes>e.node).decode("utf-8")
            for m in range(e.first, e.first + e.count):
                out.append((node, self.vals[m].dot, <object>self.vals[m].val,
                            b"" if self.vals[m].wid == NULL else <object>self.vals[m].wid))
        return out

    def aliases(self):
        """Per sibling, in values() order: the dots [(node id, counter)] of retired copies of
        the same write (rule D) that count as this sibling's own for a context; usually []."""
        cdef Py_ssize_t k
        return [[] if self.vals[k].alias == NULL else
                [((<bytes>a[0]).decode("utf-8"), a[1]) for a in <tuple>self.vals[k].alias]
                for k in range(self.n_vals)]

    def retired_wids(self):
        """Per sibling, in values() order: the write ids its write overwrote (rule R retires
        any late copy of them); usually []."""
        cdef Py_ssize_t k
        return [[] if self.vals[k].rw == NULL else list(<tuple>self.vals[k].rw)
                for k in range(self.n_vals)]

    def size(self):
        """Number of siblings."""
        return self.n_vals

    def __len__(self):
        return self.n_vals

    def is_tombstone(self):
        """True when there is at least one sibling and every sibling is a tombstone."""
        cdef Py_ssize_t k
        if self.n_vals == 0:
            return False
        for k in range(self.n_vals):
            if self.vals[k].val != _none:
                return False
        return True

    def vector(self):
        """The causal past as a version vector {node id: counter}."""
        cdef Py_ssize_t k
        return {(<bytes>self.ents[k].node).decode("utf-8"): self.ents[k].counter
                for k in range(self.n_entries)}

    def entries(self):
        """[(node id, counter, [siblings newest first])] sorted by node id (debug, tests).
        Sibling dots are in siblings() (not always n, n-1, ...)."""
        cdef Py_ssize_t k, f, m
        out = []
        for k in range(self.n_entries):
            f = self.ents[k].first
            out.append(((<bytes>self.ents[k].node).decode("utf-8"), self.ents[k].counter,
                        [<object>self.vals[f + m].val for m in range(self.ents[k].count)]))
        return out

    cpdef bytes encode(self):
        """Canonical encoding (format version 1 or 2, see dvv.pxd): equal sets, equal bytes."""
        if self._enc is not None:
            return self._enc
        cdef Py_ssize_t size = 3, k, m, ln
        cdef DVVEntry *e
        cdef DVVSlot *d
        cdef int64_t prev
        cdef bint v2 = self.n_wids > 0
        cdef bint v3 = self.n_alias > 0 or self.n_rw > 0
        if self.n_entries > 0xFFFF:
            raise ValueError("too many entries to encode (> 65535)")
        for k in range(self.n_entries):
            e = &self.ents[k]
            size += 1 + _bytes_len(e.node) + 8 + 4
            prev = e.counter + 1
            for m in range(e.first, e.first + e.count):
                d = &self.vals[m]
                size += 5
                if d.val != _none:
                    ln = _bytes_len(d.val)
                    if <uint64_t>ln > 0xFFFFFFFF:
                        raise ValueError("sibling too large to encode (>= 4 GiB)")
                    size += ln
                if d.wid != NULL:
                    size += 1 + _bytes_len(d.wid)
                if d.alias != NULL:
                    size += 1
                    for a in <tuple>d.alias:
                        size += 1 + len(<bytes>a[0]) + 8
                if d.rw != NULL:
                    size += 1
                    for a in <tuple>d.rw:
                        size += 1 + len(<bytes>a)
                if d.dot != prev - 1:
                    size += 8
                    v2 = True
                prev = d.dot
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef unsigned char *p = <unsigned char *>_bytes_ptr(<PyObject *>out)
        cdef unsigned char flags
        p[0] = DVV_FORMAT_VERSION_3 if v3 else (DVV_FORMAT_VERSION_2 if v2 else DVV_FORMAT_VERSION)
        _w16(p + 1, <uint32_t>self.n_entries)
        p += 3
        for k in range(self.n_entries):
            e = &self.ents[k]
            ln = _bytes_len(e.node)
            p[0] = <unsigned char>ln
            memcpy(p + 1, _bytes_ptr(e.node), ln)
            p += 1 + ln
            _w64(p, <uint64_t>e.counter)
            _w32(p + 8, e.count)
            p += 12
            prev = e.counter + 1
            for m in range(e.first, e.first + e.count):
                d = &self.vals[m]
                flags = DVV_F_TOMBSTONE if d.val == _none else 0
                if d.wid != NULL:
                    flags |= DVV_F_WID
                if d.dot != prev - 1:
                    flags |= DVV_F_GAP
                if d.alias != NULL:
                    flags |= DVV_F_ALIAS
                if d.rw != NULL:
                    flags |= DVV_F_RETIRED
                p[0] = flags
                p += 1
                if flags & DVV_F_GAP:
                    _w64(p, <uint64_t>(prev - 1 - d.dot))
                    p += 8
                prev = d.dot
                if d.wid != NULL:
                    ln = _bytes_len(d.wid)
                    p[0] = <unsigned char>ln
                    memcpy(p + 1, _bytes_ptr(d.wid), ln)
                    p += 1 + ln
                if d.alias != NULL:
                    p[0] = <unsigned char>len(<tuple>d.alias)
                    p += 1
                    for a in <tuple>d.alias:
                        ln = len(<bytes>a[0])
                        p[0] = <unsigned char>ln
                        memcpy(p + 1, <char *><bytes>a[0], ln)
                        _w64(p + 1 + ln, <uint64_t>(<int64_t>a[1]))
                        p += 9 + ln
                if d.rw != NULL:
                    p[0] = <unsigned char>len(<tuple>d.rw)
                    p += 1
                    for a in <tuple>d.rw:
                        ln = len(<bytes>a)
                        p[0] = <unsigned char>ln
                        memcpy(p + 1, <char *><bytes>a, ln)
                        p += 1 + ln
                if d.val == _none:
                    _w32(p, 0)
                    p += 4
                else:
                    ln = _bytes_len(d.val)
                    _w32(p, <uint32_t>ln)
                    memcpy(p + 4, _bytes_ptr(d.val), ln)
                    p += 4 + ln
        self._enc = out
        return out

    cpdef bytes context(self):
        """The encoded version vector of everything this set has seen (the client token),
        with the write ids a write covering it retires (version 2) when there are any."""
        if self.n_wids or self.n_rw:
            return _context_bytes(self, _retired_by(self, self, None))
        return _context_bytes(self, self.ctx_wids)

    @staticmethod
    def decode(data):
        """Parse encode()'s output; ValueError on anything malformed (never a crash)."""
        return _dec(data, "data")

    def digest(self):
        """16 bytes: murmur3 x64_128 (seed 0) of encode(), h1 then h2 little-endian."""
        cdef bytes enc = self.encode()
        cdef uint64_t h[2]
        cdef unsigned char out[16]
        zkv_murmur3_x64_128(_bytes_ptr(<PyObject *>enc), len(enc), 0, h)
        _w64(out, h[0])
        _w64(out + 8, h[1])
        return PyBytes_FromStringAndSize(<char *>out, 16)

    def __eq__(self, other):
        if type(other) is not DVVSet:
            return NotImplemented
        cdef DVVSet o = <DVVSet>other
        cdef Py_ssize_t k
        if self is o:
            return True
        if (self.n_entries != o.n_entries or self.n_vals != o.n_vals or self.n_wids != o.n_wids
                or self.n_alias != o.n_alias or self.n_rw != o.n_rw):
            return False
        for k in range(self.n_entries):
            if (_cmp(self.ents[k].node, o.ents[k].node) != 0
                    or self.ents[k].counter != o.ents[k].counter
                    or self.ents[k].count != o.ents[k].count):
                return False
        for k in range(self.n_vals):
            if (self.vals[k].dot != o.vals[k].dot
                    or not _same_val(self.vals[k].val, o.vals[k].val)
                    or not _same_wid(self.vals[k].wid, o.vals[k].wid)
                    or not _same_obj(self.vals[k].alias, o.vals[k].alias)
                    or not _same_obj(self.vals[k].rw, o.vals[k].rw)):
                return False
        return True

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        if self._hash == -1:
            h = hash(self.encode())
            self._hash = -2 if h == -1 else h
        return self._hash

    def __repr__(self):
        parts = []
        for node, counter, _ in self.entries():
            shown = []
            for (sn, dot, v, wid), al, rw in zip(self.siblings(), self.aliases(),
                                                 self.retired_wids()):
                if sn != node:
                    continue
                t = "None" if v is None else (
                    repr(v) if len(v) <= 32 else repr(v[:32]) + f"...<{len(v)}B>")
                shown.append(f"{t}@{dot}" + (f" wid={wid.hex()}" if wid else "")
                             + (f" alias={al}" if al else "")
                             + (f" retired={[w.hex() for w in rw]}" if rw else ""))
            parts.append(f"({node!r}, {counter}, [{', '.join(shown)}])")
        return f"DVVSet([{', '.join(parts)}])"

    def __reduce__(self):
        return (_decode_for_pickle, (self.encode(),))


def _decode_for_pickle(data):
    return DVVSet.decode(data)


cdef DVVSet _EMPTY = DVVSet()
EMPTY = _EMPTY


# ---------------------------------------------------------------------------
# decoding

cdef object _node_at(const unsigned char *p, Py_ssize_t ln, DVVSet hint, Py_ssize_t *h):
    """The node id bytes p[0:ln] as an object: hint's own object when hint holds that id
    (hint walked in order from *h, ids arrive ascending), else an interned new one."""
    cdef PyObject *o
    cdef Py_ssize_t lo
    cdef int c
    if hint is not None:
        while h[0] < hint.n_entries:
            o = hint.ents[h[0]].node
            lo = _bytes_len(o)
            c = memcmp(_bytes_ptr(o), p, <size_t>(lo if lo < ln else ln))
            if c == 0:
                c = (lo > ln) - (lo < ln)
            if c > 0:
                break
            h[0] += 1
            if c == 0:
                return <object>o
    return _id_lookup(p, ln)


cdef PyObject *_idcache[256]     # owned refs: recently decoded node ids, by FNV-1a hash slot


cdef object _id_lookup(const unsigned char *p, Py_ssize_t ln):
    """Node id bytes p[0:ln] as an interned bytes object; no allocation on a cache hit."""
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t k
    for k in range(ln):
        h = (h ^ p[k]) * 16777619u
    cdef uint32_t slot = (h ^ (h >> 16)) & 255
    cdef PyObject *o = _idcache[slot]
    if o != NULL and _bytes_len(o) == ln and memcmp(_bytes_ptr(o), p, <size_t>ln) == 0:
        return <object>o
    obj = _intern(PyBytes_FromStringAndSize(<const char *>p, ln))
    _incref(<PyObject *>obj)
    _idcache[slot] = <PyObject *>obj
    _xdecref(o)
    return obj


cdef int _check_node_id(const unsigned char *buf, Py_ssize_t at, Py_ssize_t ln,
                        Py_ssize_t prev_at, Py_ssize_t prev_len, str what) except -1:
    """A node id of an encoded set or context: UTF-8, and strictly after the previous id
    (canonical order). `what` names the format in the error."""
    cdef int c
    if not _utf8_ok(buf + at, ln):
        raise ValueError(f"{what}: node id is not UTF-8")
    if prev_at >= 0:
        c = memcmp(buf + prev_at, buf + at, <size_t>(prev_len if prev_len < ln else ln))
        if c > 0 or (c == 0 and prev_len >= ln):
            raise ValueError(f"{what}: node ids not strictly ascending")
    return 0


cdef Py_ssize_t _check_set(const unsigned char *buf, Py_ssize_t size,
                           Py_ssize_t *n_ent_out, Py_ssize_t *n_wid_out=NULL) except -1:
    """Validate an encoded set's structure completely, allocating nothing; returns the
    sibling count, and in *n_wid_out the number of write ids when rules D or R must still be
    checked on the built set (_build_set), else 0."""
    cdef Py_ssize_t pos, n_ent, k, s, n_sib, ln, vlen, total = 0, n_wid = 0, n_rw = 0
    cdef Py_ssize_t node_at = 0, ln_node = 0
    cdef Py_ssize_t prev_pos = -1, prev_len = 0
    cdef uint64_t counter, gap, prev
    cdef unsigned char flags, version
    cdef bint v2_used = False, v3_used = False
    cdef Py_ssize_t wid_at = 0, wid_len = 0, na, q, a_at, a_len, pa_at, pa_len
    cdef uint64_t ac, pac
    cdef int c
    cdef Py_ssize_t rw_at[DVV_RETIRED_MAX]
    cdef Py_ssize_t rw_len[DVV_RETIRED_MAX]
    if size < 3:
        raise ValueError("DVVSet: truncated header")
    version = buf[0]
    if (version != DVV_FORMAT_VERSION and version != DVV_FORMAT_VERSION_2
            and version != DVV_FORMAT_VERSION_3):
        raise ValueError(f"DVVSet: unknown format version {buf[0]}")
    n_ent = _r16(buf + 1)
    pos = 3
    if n_ent > (size - pos) // MIN_ENTRY:
        raise ValueError("DVVSet: entry count exceeds data")
    for k in range(n_ent):
        if size - pos < 1:
            raise ValueError("DVVSet: truncated entry")
        ln = buf[pos]
        if ln == 0:
            raise ValueError("DVVSet: empty node id")
        if size - pos - 1 < ln + 12:
            raise ValueError("DVVSet: truncated entry")
        _check_node_id(buf, pos + 1, ln, prev_pos, prev_len, "DVVSet")
        prev_pos = pos + 1
        prev_len = ln
        node_at = pos + 1
        ln_node = ln
        pos += 1 + ln
        counter = _r64(buf + pos)
        n_sib = _r32(buf + pos + 8)
        pos += 12
        if counter == 0 or counter > <uint64_t>COUNTER_MAX:
            raise ValueError("DVVSet: counter out of range")
        if <uint64_t>n_sib > counter:
            raise ValueError("DVVSet: more siblings than counter")
        if n_sib > (size - pos) // MIN_SIBLING:
            raise ValueError("DVVSet: sibling count exceeds data")
        prev = counter + 1          # the previous sibling's dot
        for s in range(n_sib):
            if size - pos < 5:
                raise ValueError("DVVSet: truncated sibling")
            flags = buf[pos]
            pos += 1
            if version == DVV_FORMAT_VERSION:
                if flags > 1:
                    raise ValueError("DVVSet: bad sibling flag")
            elif version == DVV_FORMAT_VERSION_2:
                if flags & ~(DVV_F_TOMBSTONE | DVV_F_WID | DVV_F_GAP):
                    raise ValueError("DVVSet: bad sibling flag")
            elif flags & ~(DVV_F_TOMBSTONE | DVV_F_WID | DVV_F_GAP | DVV_F_ALIAS
                           | DVV_F_RETIRED):
                raise ValueError("DVVSet: bad sibling flag")
            if (flags & DVV_F_ALIAS) and not (flags & DVV_F_WID):
                raise ValueError("DVVSet: alias list without a write id")
            gap = 0
            if flags & DVV_F_GAP:
                if size - pos < 8:
                    raise ValueError("DVVSet: truncated sibling")
                gap = _r64(buf + pos)
                pos += 8
                if gap == 0:
                    raise ValueError("DVVSet: zero gap (not canonical)")
                v2_used = True
            if prev < 2 or gap > prev - 2:      # the dot prev - 1 - gap must be >= 1
                raise ValueError("DVVSet: sibling dot below 1")
            prev = prev - 1 - gap
            if flags & DVV_F_WID:
                if size - pos < 1:
                    raise ValueError("DVVSet: truncated sibling")
                ln = buf[pos]
                if ln == 0 or ln > DVV_WID_MAX:
                    raise ValueError("DVVSet: write id length out of range")
                if size - pos - 1 < ln:
                    raise ValueError("DVVSet: truncated write id")
                wid_at = pos + 1
                wid_len = ln
                pos += 1 + ln
                v2_used = True
                n_wid += 1
            if flags & DVV_F_ALIAS:
                v3_used = True
                if size - pos < 1:
                    raise ValueError("DVVSet: truncated sibling")
                na = buf[pos]
                pos += 1
                if na == 0 or na > DVV_ALIAS_MAX:
                    raise ValueError("DVVSet: alias count out of range")
                pa_at = -1
                pa_len = 0
                pac = 0
                for q in range(na):
                    if size - pos < 1:
                        raise ValueError("DVVSet: truncated alias")
                    a_len = buf[pos]
                    if a_len == 0:
                        raise ValueError("DVVSet: empty alias node id")
                    if size - pos - 1 < a_len + 8:
                        raise ValueError("DVVSet: truncated alias")
                    a_at = pos + 1
                    if not _utf8_ok(buf + a_at, a_len):
                        raise ValueError("DVVSet: alias node id is not UTF-8")
                    ac = _r64(buf + a_at + a_len)
                    if ac == 0 or ac > <uint64_t>COUNTER_MAX:
                        raise ValueError("DVVSet: alias counter out of range")
                    if pa_at >= 0:
                        c = memcmp(buf + pa_at, buf + a_at,
                                   <size_t>(pa_len if pa_len < a_len else a_len))
                        if c == 0:
                            c = (pa_len > a_len) - (pa_len < a_len)
                        if c > 0 or (c == 0 and pac >= ac):
                            raise ValueError("DVVSet: aliases not strictly ascending")
                    if (a_len == ln_node and ac == prev
                            and memcmp(buf + a_at, buf + node_at, <size_t>a_len) == 0):
                        raise ValueError("DVVSet: alias equal to the sibling's own dot")
                    pa_at = a_at
                    pa_len = a_len
                    pac = ac
                    pos = a_at + a_len + 8
            if flags & DVV_F_RETIRED:
                v3_used = True
                if size - pos < 1:
                    raise ValueError("DVVSet: truncated sibling")
                na = buf[pos]
                pos += 1
                if na == 0 or na > DVV_RETIRED_MAX:
                    raise ValueError("DVVSet: retired count out of range")
                for q in range(na):
                    if size - pos < 1:
                        raise ValueError("DVVSet: truncated retired write id")
                    a_len = buf[pos]
                    if a_len == 0 or a_len > DVV_WID_MAX:
                        raise ValueError("DVVSet: write id length out of range")
                    if size - pos - 1 < a_len:
                        raise ValueError("DVVSet: truncated retired write id")
                    a_at = pos + 1
                    for c in range(q):      # distinct (at most DVV_RETIRED_MAX of them)
                        if (rw_len[c] == a_len
                                and memcmp(buf + rw_at[c], buf + a_at, <size_t>a_len) == 0):
                            raise ValueError("DVVSet: retired write id listed twice")
                    rw_at[q] = a_at
                    rw_len[q] = a_len
                    if ((flags & DVV_F_WID) and a_len == wid_len
                            and memcmp(buf + a_at, buf + wid_at, <size_t>a_len) == 0):
                        raise ValueError("DVVSet: sibling retires its own write id")
                    pos = a_at + a_len
                n_rw += 1
            if size - pos < 4:
                raise ValueError("DVVSet: truncated sibling")
            vlen = _r32(buf + pos)
            if (flags & DVV_F_TOMBSTONE) and vlen != 0:
                raise ValueError("DVVSet: tombstone with a value")
            pos += 4
            if vlen > size - pos:
                raise ValueError("DVVSet: truncated sibling value")
            pos += vlen
        total += n_sib
    if pos != size:
        raise ValueError("DVVSet: trailing bytes")
    if version == DVV_FORMAT_VERSION_2 and not v2_used:
        raise ValueError("DVVSet: version 2 without a write id or gap (not canonical)")
    if version == DVV_FORMAT_VERSION_3 and not v3_used:
        raise ValueError("DVVSet: version 3 without an alias or retired write id "
                         "(not canonical)")
    n_ent_out[0] = n_ent
    if n_wid_out != NULL:
        # the checks that need the built set: rule D (two write ids), rule R (a write id
        # and a retired list)
        n_wid_out[0] = n_wid if n_wid >= 2 or (n_wid and n_rw) else 0
    return total


cdef DVVSet _build_set(const unsigned char *buf, Py_ssize_t n_ent, Py_ssize_t total,
                       DVVSet hint):
    """Build a set from an encoding _check_set accepted; ValueError unless D- and R-normal."""
    cdef DVVSet out = _alloc(n_ent, total)
    cdef object obj, wid, alias, rw
    cdef Py_ssize_t pos = 3, k, s, ln, vlen, h = 0, n_sib, q, na
    cdef int64_t prev
    cdef unsigned char flags
    for k in range(n_ent):
        ln = buf[pos]
        obj = _node_at(buf + pos + 1, ln, hint, &h)
        pos += 1 + ln
        _begin_entry(out, <PyObject *>obj, <int64_t>_r64(buf + pos))
        n_sib = _r32(buf + pos + 8)
        prev = out.ents[k].counter + 1
        pos += 12
        for s in range(n_sib):
            flags = buf[pos]
            pos += 1
            if flags & DVV_F_GAP:
                prev -= 1 + <int64_t>_r64(buf + pos)
                pos += 8
            else:
                prev -= 1
            wid = None
            if flags & DVV_F_WID:
                ln = buf[pos]
                wid = PyBytes_FromStringAndSize(<const char *>buf + pos + 1, ln)
                pos += 1 + ln
            alias = None
            if flags & DVV_F_ALIAS:
                na = buf[pos]
                pos += 1
                lst = []
                for q in range(na):
                    ln = buf[pos]
                    lst.append((_id_lookup(buf + pos + 1, ln),
                                <int64_t>_r64(buf + pos + 1 + ln)))
                    pos += 9 + ln
                alias = tuple(lst)
            rw = None
            if flags & DVV_F_RETIRED:
                na = buf[pos]
                pos += 1
                lst = []
                for q in range(na):
                    ln = buf[pos]
                    lst.append(PyBytes_FromStringAndSize(<const char *>buf + pos + 1, ln))
                    pos += 1 + ln
                rw = tuple(lst)
            vlen = _r32(buf + pos)
            if flags & DVV_F_TOMBSTONE:
                obj = None
            else:
                obj = PyBytes_FromStringAndSize(<const char *>buf + pos + 4, vlen)
            pos += 4 + vlen
            _put_slot(out, <PyObject *>obj, NULL if wid is None else <PyObject *>wid, prev,
                      NULL if alias is None else <PyObject *>alias,
                      NULL if rw is None else <PyObject *>rw)
    if out.n_wids >= 2 and _dedup(out, False):
        raise ValueError("DVVSet: two live siblings share a write id (not canonical)")
    if out.n_rw and out.n_wids and _retire_rw(out, False):
        raise ValueError("DVVSet: a live sibling's write id is retired by another "
                         "(not canonical)")
    return out


cdef DVVSet dvv_decode(const unsigned char *buf, Py_ssize_t size):
    """Parse an encoded set; ValueError on anything malformed."""
    cdef Py_ssize_t n_ent = 0
    cdef Py_ssize_t total = _check_set(buf, size, &n_ent)
    return _build_set(buf, n_ent, total, None)


cdef bytes _context_bytes(DVVSet s, object wids):
    """The context of s's vector carrying `wids` (a tuple of 1..4 write ids, or None)."""
    cdef Py_ssize_t size = 3, k, ln
    cdef DVVEntry *e
    if s.n_entries > 0xFFFF:
        raise ValueError("too many entries to encode (> 65535)")
    if s.n_entries == 0:
        wids = None   # nothing seen: nothing to retire
    for k in range(s.n_entries):
        size += 1 + _bytes_len(s.ents[k].node) + 8
    if wids is not None:
        size += 1
        for w in wids:
            size += 1 + len(<bytes>w)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *p = <unsigned char *>_bytes_ptr(<PyObject *>out)
    p[0] = DVV_FORMAT_VERSION if wids is None else DVV_CONTEXT_VERSION_2
    _w16(p + 1, <uint32_t>s.n_entries)
    p += 3
    for k in range(s.n_entries):
        e = &s.ents[k]
        ln = _bytes_len(e.node)
        p[0] = <unsigned char>ln
        memcpy(p + 1, _bytes_ptr(e.node), ln)
        _w64(p + 1 + ln, <uint64_t>e.counter)
        p += 9 + ln
    if wids is not None:
        p[0] = <unsigned char>len(wids)
        p += 1
        for w in wids:
            ln = len(<bytes>w)
            p[0] = <unsigned char>ln
            memcpy(p + 1, <const char *>(<bytes>w), ln)
            p += 1 + ln
    return out


cdef object _join_wids(object a, object b, object wid):
    """a's write ids then b's, without repeats or wid, the first DVV_RETIRED_MAX; None if
    empty (the retired list of a write whose server and context each retire some)."""
    if b is None:
        return a
    out = []
    for lst in (a, b):
        if lst is None:
            continue
        for w in lst:
            if w != wid and w not in out:
                out.append(w)
    return tuple(out[:DVV_RETIRED_MAX]) if out else None


cdef DVVSet dvv_decode_context(const unsigned char *buf, Py_ssize_t size):
    """A context as a DVVSet with entries and no siblings; b"" is the empty vector."""
    return _decode_context(buf, size, None)


cdef DVVSet _decode_context(const unsigned char *buf, Py_ssize_t size, DVVSet hint):
    cdef Py_ssize_t pos, n, k, ln, h = 0
    cdef Py_ssize_t prev_pos = -1, prev_len = 0
    cdef uint64_t counter
    if size == 0:
        return _EMPTY
    if size < 3:
        raise ValueError("context: truncated header")
    if buf[0] != DVV_FORMAT_VERSION and buf[0] != DVV_CONTEXT_VERSION_2:
        raise ValueError(f"context: unknown format version {buf[0]}")
    cdef bint v2 = buf[0] == DVV_CONTEXT_VERSION_2
    cdef Py_ssize_t end = size, nw, wl
    n = _r16(buf + 1)
    pos = 3
    if n > (size - pos) // MIN_PAIR:
        raise ValueError("context: pair count exceeds data")
    for k in range(n):
        if size - pos < 1:
            raise ValueError("context: truncated pair")
        ln = buf[pos]
        if ln == 0:
            raise ValueError("context: empty node id")
        if size - pos - 1 < ln + 8:
            raise ValueError("context: truncated pair")
        _check_node_id(buf, pos + 1, ln, prev_pos, prev_len, "context")
        prev_pos = pos + 1
        prev_len = ln
        pos += 1 + ln
        counter = _r64(buf + pos)
        if counter == 0 or counter > <uint64_t>COUNTER_MAX:
            raise ValueError("context: counter out of range")
        pos += 8
    wids = None
    if v2:   # the write ids the context retires
        if n == 0:
            raise ValueError("context: write ids without a vector")
        if pos >= size:
            raise ValueError("context: truncated write-id count")
        nw = buf[pos]
        pos += 1
        if nw == 0 or nw > DVV_RETIRED_MAX:
            raise ValueError(f"context: write-id count {nw} not in 1..{DVV_RETIRED_MAX}")
        lst = []
        for k in range(nw):
            if pos >= size:
                raise ValueError("context: truncated write id")
            wl = buf[pos]
            if wl == 0 or wl > DVV_WID_MAX:
                raise ValueError(f"context: write-id length {wl} not in 1..{DVV_WID_MAX}")
            if size - pos - 1 < wl:
                raise ValueError("context: truncated write id")
            w = PyBytes_FromStringAndSize(<const char *>(buf + pos + 1), wl)
            if w in lst:
                raise ValueError("context: repeated write id")
            lst.append(w)
            pos += 1 + wl
        wids = tuple(lst)
    if pos != size:
        raise ValueError("context: trailing bytes")
    if n == 0:
        return _EMPTY
    cdef DVVSet out = _alloc(n, 0)
    out.ctx_wids = wids
    cdef object obj
    pos = 3
    for k in range(n):
        ln = buf[pos]
        obj = _node_at(buf + pos + 1, ln, hint, &h)
        _begin_entry(out, <PyObject *>obj, <int64_t>_r64(buf + pos + 1 + ln))
        pos += 9 + ln
    return out


cdef bytes _checked(object data, str what):
    """data as exact bytes, after validating it as an encoded set (ValueError)."""
    cdef bytes b = _as_bytes(data, what)
    cdef const unsigned char *buf = <const unsigned char *>_bytes_ptr(<PyObject *>b)
    cdef Py_ssize_t n_ent = 0, n_wid = 0
    cdef Py_ssize_t total = _check_set(buf, len(b), &n_ent, &n_wid)
    if n_wid:      # rules D and R need the built set
        _build_set(buf, n_ent, total, None)
    return b


cdef inline DVVSet _ctx(object context, DVVSet hint=None):
    cdef bytes b = _as_bytes(context, "context")
    return _decode_context(<const unsigned char *>_bytes_ptr(<PyObject *>b), len(b), hint)


cdef DVVSet _dec(object data, str what, DVVSet hint=None):
    cdef bytes b = _as_bytes(data, what)
    cdef const unsigned char *buf = <const unsigned char *>_bytes_ptr(<PyObject *>b)
    cdef Py_ssize_t n_ent = 0
    cdef Py_ssize_t total = _check_set(buf, len(b), &n_ent)
    cdef DVVSet out = _build_set(buf, n_ent, total, hint)
    out._enc = b      # canonical, so the input is the encoding
    return out


# ---------------------------------------------------------------------------
# the algebra

cdef void _drop(DVVSet s, Py_ssize_t k) noexcept:
    """Kill sibling k of a set under construction (compacted by _compact)."""
    _xdecref(s.vals[k].val)
    s.vals[k].val = NULL
    if s.vals[k].wid != NULL:
        _xdecref(s.vals[k].wid)
        s.vals[k].wid = NULL
        s.n_wids -= 1
    if s.vals[k].alias != NULL:
        _xdecref(s.vals[k].alias)
        s.vals[k].alias = NULL
        s.n_alias -= 1
    if s.vals[k].rw != NULL:
        _xdecref(s.vals[k].rw)
        s.vals[k].rw = NULL
        s.n_rw -= 1


cdef void _compact(DVVSet s) noexcept:
    """Remove the siblings _drop killed (val == NULL), keeping every entry and counter."""
    cdef Py_ssize_t e, k, w = 0, nf, end
    for e in range(s.n_entries):
        nf = w
        end = s.ents[e].first + s.ents[e].count
        for k in range(s.ents[e].first, end):
            if s.vals[k].val != NULL:
                if w != k:
                    s.vals[w] = s.vals[k]
                w += 1
        s.ents[e].first = <uint32_t>nf
        s.ents[e].count = <uint32_t>(w - nf)
    s.n_vals = w


cdef object _alias_norm(object items, object own):
    """A canonical alias list: the distinct dots of items except own, sorted by (node id
    bytewise, counter), the DVV_ALIAS_MAX smallest kept; None when empty. (Keeping the k
    smallest of a union is itself a join: cap(cap(A | B) | C) == cap(A | B | C).)"""
    cdef set u = set(items)
    u.discard(own)
    if not u:
        return None
    return tuple(sorted(u)[:DVV_ALIAS_MAX])


cdef void _set_alias(DVVSet s, Py_ssize_t k, object alias) noexcept:
    """Replace sibling k's alias list (s under construction); alias None = none."""
    cdef DVVSlot *d = &s.vals[k]
    if d.alias != NULL:
        s.n_alias -= 1
        _xdecref(d.alias)
        d.alias = NULL
    if alias is not None:
        _incref(<PyObject *>alias)
        d.alias = <PyObject *>alias
        s.n_alias += 1


cdef inline object _slot_dot(DVVSet s, Py_ssize_t e, Py_ssize_t k):
    return (<object>s.ents[e].node, s.vals[k].dot)


cdef Py_ssize_t _dedup(DVVSet s, bint apply) except -1:
    """Rule D: among live siblings sharing a write id, all but the O-greatest lose. Returns
    the number of losers; with apply, kills them and adds each loser's dot and aliases to
    its winner's aliases (s must be a set under construction)."""
    cdef Py_ssize_t n = s.n_wids, cnt = 0, e, k, p, q, lost = 0, best_p
    cdef Py_ssize_t small_sl[16]
    cdef Py_ssize_t small_en[16]
    cdef Py_ssize_t small_win[16]
    cdef Py_ssize_t *sl = small_sl
    cdef Py_ssize_t *en = small_en
    cdef Py_ssize_t *win = small_win
    cdef dict best
    cdef dict gained
    cdef object b
    if n < 2:
        return 0
    if n > SMALL_DEDUP:
        sl = <Py_ssize_t *>PyMem_Malloc(n * 3 * sizeof(Py_ssize_t))
        if sl == NULL:
            raise MemoryError()
        en = sl + n
        win = en + n
    try:
        for e in range(s.n_entries):
            for k in range(s.ents[e].first, s.ents[e].first + s.ents[e].count):
                if s.vals[k].wid != NULL:
                    sl[cnt] = k
                    en[cnt] = e
                    cnt += 1
        if cnt <= SMALL_DEDUP:
            for p in range(cnt):
                best_p = p
                for q in range(cnt):
                    if q != best_p and _same_bytes(s.vals[sl[p]].wid, s.vals[sl[q]].wid):
                        if _ocmp(&s.vals[sl[q]], s.ents[en[q]].node,
                                 &s.vals[sl[best_p]], s.ents[en[best_p]].node) > 0:
                            best_p = q
                win[p] = best_p
        else:
            best = {}
            for p in range(cnt):
                w = <object>s.vals[sl[p]].wid
                b = best.get(w)
                if b is None:
                    best[w] = p
                    continue
                q = <Py_ssize_t>b
                if _ocmp(&s.vals[sl[p]], s.ents[en[p]].node,
                         &s.vals[sl[q]], s.ents[en[q]].node) > 0:
                    best[w] = p
            for p in range(cnt):
                win[p] = <Py_ssize_t>best[<object>s.vals[sl[p]].wid]
        for p in range(cnt):
            if win[p] != p:
                lost += 1
        if lost and apply:
            gained = {}
            for p in range(cnt):
                if win[p] != p:
                    lst = gained.get(win[p])
                    if lst is None:
                        lst = gained[win[p]] = []
                    lst.append(_slot_dot(s, en[p], sl[p]))
                    if s.vals[sl[p]].alias != NULL:
                        lst.extend(<tuple>s.vals[sl[p]].alias)
            for q, lst in gained.items():
                k = sl[q]
                if s.vals[k].alias != NULL:
                    lst.extend(<tuple>s.vals[k].alias)
                _set_alias(s, k, _alias_norm(lst, _slot_dot(s, en[q], k)))
            for p in range(cnt):
                if win[p] != p:
                    _drop(s, sl[p])
            _compact(s)
    finally:
        if sl != small_sl:
            PyMem_Free(sl)
    return lost


cdef enum:
    SMALL_RETIRE = 32   # retired ids compared pairwise (no hashing) up to this many


cdef Py_ssize_t _retire_rw(DVVSet s, bint apply) except -1:
    """Rule R: a live sibling whose write id a live sibling lists as retired loses (the
    lists of all live siblings before any is applied). Returns the number of losers; with
    apply, kills them (s must be a set under construction)."""
    cdef Py_ssize_t k, j, q, lost = 0, n_dead = 0
    cdef set dead
    cdef PyObject *small[SMALL_RETIRE]   # borrowed from the siblings' rw tuples
    cdef Py_ssize_t losers[SMALL_RETIRE]
    cdef tuple rw
    if s.n_rw == 0 or s.n_wids == 0:
        return 0
    for k in range(s.n_vals):
        if s.vals[k].rw != NULL:
            n_dead += len(<tuple>s.vals[k].rw)
    if n_dead <= SMALL_RETIRE and s.n_vals <= SMALL_RETIRE:
        # the common case (a few siblings, each listing at most DVV_RETIRED_MAX ids): compare
        # bytes pairwise instead of hashing every id into a set (a decode's largest cost)
        n_dead = 0
        for k in range(s.n_vals):
            if s.vals[k].rw != NULL:
                rw = <tuple>s.vals[k].rw
                for q in range(len(rw)):
                    small[n_dead] = <PyObject *>rw[q]
                    n_dead += 1
        for k in range(s.n_vals):
            if s.vals[k].wid != NULL:
                for j in range(n_dead):
                    if _same_bytes(s.vals[k].wid, small[j]):
                        losers[lost] = k
                        lost += 1
                        break
        if lost and apply:  # after the comparisons: dropping frees the tuples borrowed from
            for j in range(lost):
                _drop(s, losers[j])
            _compact(s)
        return lost
    dead = set()
    for k in range(s.n_vals):
        if s.vals[k].rw != NULL:
            dead.update(<tuple>s.vals[k].rw)
    for k in range(s.n_vals):
        if s.vals[k].wid != NULL and <object>s.vals[k].wid in dead:
            lost += 1
            if apply:
                _drop(s, k)
    if lost and apply:
        _compact(s)
    return lost


cdef Py_ssize_t _alias_union(DVVSet out, DVVSet a, DVVSet b, bint apply) except -1:
    """Give every live sibling of out the union of its aliases in a and in b (the same dot
    live there), and the aliases of each copy of its write it lists that a or b holds live
    (a copy that died in its favour somewhere and dies here too, being dead on the other
    side: without this, its aliases went with it). Returns how many siblings change; with
    apply, changes them (out must then be a set under construction)."""
    cdef Py_ssize_t e, k, q, changed = 0
    cdef dict src = {}
    cdef DVVSet x
    for x in (a, b):
        if x.n_alias == 0:
            continue
        for e in range(x.n_entries):
            for k in range(x.ents[e].first, x.ents[e].first + x.ents[e].count):
                if x.vals[k].alias != NULL and x.vals[k].wid != NULL:
                    # (with the copy's write id: a dot that names another write on the other
                    # side -- a corrupt or forged peer set -- must not lend its aliases, or the
                    # result has an alias list without a write id, which decode() refuses)
                    src.setdefault(_slot_dot(x, e, k), []).append(
                        (<object>x.vals[k].wid, <object>x.vals[k].alias))
    for e in range(out.n_entries):
        for k in range(out.ents[e].first, out.ents[e].first + out.ents[e].count):
            if out.vals[k].wid == NULL:
                continue        # aliases need a write id (dvv.pxd)
            dot = _slot_dot(out, e, k)
            lists = src.get(dot)
            if lists is None:
                continue
            items = []
            for w, al in lists:
                if _same_bytes(out.vals[k].wid, <PyObject *>w):
                    items.extend(al)
            # the copies of its write it lists (an alias is a dot of the same write) that a
            # or b holds: inputs are D-normal, one copy a side, so one step reaches them all
            for q in range(len(items)):
                more = src.get(items[q])
                if more is not None:
                    for w, al in more:
                        if _same_bytes(out.vals[k].wid, <PyObject *>w):
                            items.extend(al)
            merged = _alias_norm(items, dot)
            if not _same_obj(out.vals[k].alias,
                             NULL if merged is None else <PyObject *>merged):
                changed += 1
                if apply:
                    _set_alias(out, k, merged)
    return changed


cdef DVVSet _copy(DVVSet s):
    """A fresh copy of s (to modify while under construction)."""
    cdef DVVSet out = _alloc(s.n_entries, s.n_vals)
    cdef Py_ssize_t e
    for e in range(s.n_entries):
        _push_entry(out, s.ents[e].node, s.ents[e].counter, &s.vals[s.ents[e].first],
                    s.ents[e].count)
    return out


cdef DVVSet _with_aliases(DVVSet r, DVVSet a, DVVSet b):
    """r (a or b, already sync's result but for aliases) with the aliases of a and b joined."""
    if _alias_union(r, a, b, False) == 0:
        return r
    cdef DVVSet out = _copy(r)
    _alias_union(out, a, b, True)
    return out


cdef void _merge_scan(DVVSet a, DVVEntry *x, DVVSet b, DVVEntry *y, Py_ssize_t *kept,
                      bint *eq_a, bint *eq_b) noexcept:
    """One node's entry of sync(a, b) when dots are not consecutive: count the surviving
    siblings and say whether the merged entry is x (eq_a) or y (eq_b)."""
    cdef Py_ssize_t i = x.first, iend = x.first + x.count, j = y.first, jend = y.first + y.count
    cdef int64_t ka, kb, n1 = x.counter, n2 = y.counter
    cdef Py_ssize_t cnt = 0
    if n1 < n2:
        eq_a[0] = False
    if n2 < n1:
        eq_b[0] = False
    while i < iend or j < jend:
        ka = a.vals[i].dot if i < iend else 0
        kb = b.vals[j].dot if j < jend else 0
        if ka == kb:
            cnt += 1
            i += 1
            j += 1
        elif ka > kb:
            if ka > n2:         # unseen by b: survives, and b lacks it
                cnt += 1
                eq_b[0] = False
            else:               # dead in b: dies
                eq_a[0] = False
            i += 1
        else:
            if kb > n1:
                cnt += 1
                eq_a[0] = False
            else:
                eq_b[0] = False
            j += 1
    kept[0] += cnt


cdef void _merge_push(DVVSet out, DVVSet a, DVVEntry *x, DVVSet b, DVVEntry *y) noexcept:
    """Append the merged entry of x and y (see _merge_scan) to out."""
    cdef Py_ssize_t i = x.first, iend = x.first + x.count, j = y.first, jend = y.first + y.count
    cdef int64_t ka, kb, n1 = x.counter, n2 = y.counter
    cdef DVVSlot *d
    _begin_entry(out, x.node, n1 if n1 > n2 else n2)
    while i < iend or j < jend:
        ka = a.vals[i].dot if i < iend else 0
        kb = b.vals[j].dot if j < jend else 0
        if ka >= kb:
            d = &a.vals[i]
            i += 1
            if ka == kb:
                j += 1
            elif ka <= n2:
                continue
        else:
            d = &b.vals[j]
            j += 1
            if kb <= n1:
                continue
        _put_copy(out, d)


cdef int64_t _wid_clash(DVVSet a, DVVEntry *x, DVVSet b, DVVEntry *y) noexcept:
    """The greatest dot live in both x (of a) and y (of b), one node's entries, under two
    different write ids (NULL = none): one dot naming two writes; 0 when there is none."""
    cdef Py_ssize_t i = x.first, iend = x.first + x.count, j = y.first, jend = y.first + y.count
    cdef int64_t ka, kb
    while i < iend and j < jend:
        ka = a.vals[i].dot
        kb = b.vals[j].dot
        if ka == kb:
            if not _same_wid(a.vals[i].wid, b.vals[j].wid):
                return ka
            i += 1
            j += 1
        elif ka > kb:
            i += 1
        else:
            j += 1
    return 0


cdef int _refuse_clash(DVVSet a, DVVEntry *x, DVVSet b, DVVEntry *y, int64_t dot) except -1:
    """ValueError for sync's inputs in which `dot` of x's node names two writes (the same
    message in either argument order)."""
    cdef Py_ssize_t k
    cdef PyObject *w
    ws = []
    for k in range(x.first, x.first + x.count):
        if a.vals[k].dot == dot:
            w = a.vals[k].wid
            ws.append(b"" if w == NULL else <bytes>w)
    for k in range(y.first, y.first + y.count):
        if b.vals[k].dot == dot:
            w = b.vals[k].wid
            ws.append(b"" if w == NULL else <bytes>w)
    ws.sort()
    raise ValueError(
        f"sync: dot ({(<bytes>x.node).decode('utf-8')!r}, {dot}) names two different writes "
        f"(write ids {ws[0]!r} and {ws[1]!r}): a forged or corrupt set")


cdef DVVSet dvv_sync(DVVSet a, DVVSet b):
    """Merge two sets (dvvset:sync, aliases joined, then rules R and D). Returns a or b
    itself when it already is the result. ValueError when a dot live on both sides names two
    different writes (write ids differ: see the module docstring, Forged versions)."""
    if a is None:
        return b if b is not None else _EMPTY
    if b is None or a is b:
        return a
    cdef Py_ssize_t na = a.n_entries, nb = b.n_entries, i = 0, j = 0, ne = 0, nv = 0
    cdef bint eq_a = True, eq_b = True
    # a clash needs a write id on one side at least: sets without any skip the check
    cdef bint wids = a.n_wids != 0 or b.n_wids != 0
    cdef int64_t clash
    cdef DVVEntry *x
    cdef DVVEntry *y
    cdef int c
    cdef int64_t f1, f2, fl, top
    # pass 1: is the result a or b? if not, how big is it?
    while i < na and j < nb:
        x = &a.ents[i]
        y = &b.ents[j]
        c = _cmp(x.node, y.node)
        if c == 0:
            if wids and x.count and y.count:
                clash = _wid_clash(a, x, b, y)
                if clash:
                    _refuse_clash(a, x, b, y, clash)
            if _dense(a, x) and _dense(b, y):
                f1 = x.counter - x.count
                f2 = y.counter - y.count
                fl = f1 if f1 > f2 else f2
                top = x.counter if x.counter > y.counter else y.counter
                if top != x.counter or fl != f1:
                    eq_a = False
                if top != y.counter or fl != f2:
                    eq_b = False
                nv += top - fl
            else:
                _merge_scan(a, x, b, y, &nv, &eq_a, &eq_b)
            i += 1
            j += 1
        elif c < 0:
            eq_b = False
            nv += x.count
            i += 1
        else:
            eq_a = False
            nv += y.count
            j += 1
        ne += 1
    if i < na:
        eq_b = False
    if j < nb:
        eq_a = False
    if eq_a:
        return a if a.n_alias == 0 and b.n_alias == 0 else _with_aliases(a, a, b)
    if eq_b:
        return b if a.n_alias == 0 and b.n_alias == 0 else _with_aliases(b, a, b)
    while i < na:
        nv += a.ents[i].count
        i += 1
        ne += 1
    while j < nb:
        nv += b.ents[j].count
        j += 1
        ne += 1
    # pass 2: build
    cdef DVVSet out = _alloc(ne, nv)
    i = 0
    j = 0
    while i < na or j < nb:
        if i >= na:
            c = 1
        elif j >= nb:
            c = -1
        else:
            c = _cmp(a.ents[i].node, b.ents[j].node)
        if c == 0:
            x = &a.ents[i]
            y = &b.ents[j]
            if _dense(a, x) and _dense(b, y):
                f1 = x.counter - x.count
                f2 = y.counter - y.count
                fl = f1 if f1 > f2 else f2
                if x.counter >= y.counter:
                    _push_entry(out, x.node, x.counter, &a.vals[x.first], x.counter - fl)
                else:
                    _push_entry(out, y.node, y.counter, &b.vals[y.first], y.counter - fl)
            else:
                _merge_push(out, a, x, b, y)
            i += 1
            j += 1
        elif c < 0:
            x = &a.ents[i]
            _push_entry(out, x.node, x.counter, &a.vals[x.first], x.count)
            i += 1
        else:
            y = &b.ents[j]
            _push_entry(out, y.node, y.counter, &b.vals[y.first], y.count)
            j += 1
    if a.n_alias or b.n_alias:
        _alias_union(out, a, b, True)
    if out.n_rw and out.n_wids:
        _retire_rw(out, True)
    if out.n_wids >= 2:
        _dedup(out, True)
    return out


cdef DVVSet _event(DVVSet s, object node, object value, object wid, object rw=None):
    """s plus value (write id wid or None, retired write ids rw or None) with dot
    (node, s's counter for node + 1)."""
    cdef Py_ssize_t k, pos = 0, n = s.n_entries
    cdef PyObject *np = <PyObject *>node
    cdef int c = 1
    cdef DVVEntry *e
    while pos < n:
        c = _cmp(s.ents[pos].node, np)
        if c >= 0:
            break
        pos += 1
    cdef bint found = pos < n and c == 0
    cdef DVVSet out = _alloc(n + (0 if found else 1), s.n_vals + 1)
    cdef PyObject *wp = NULL if wid is None else <PyObject *>wid
    cdef PyObject *rp = NULL if rw is None else <PyObject *>rw
    for k in range(pos):
        e = &s.ents[k]
        _push_entry(out, e.node, e.counter, &s.vals[e.first], e.count)
    if found:
        e = &s.ents[pos]
        if e.counter >= COUNTER_MAX:
            raise ValueError("DVVSet counter would overflow (counter at 2**63-1)")
        _begin_entry(out, np, e.counter + 1)
        _put_slot(out, <PyObject *>value, wp, e.counter + 1, NULL, rp)
        # the entry's older siblings follow the new one
        for k in range(e.first, e.first + e.count):
            _put_copy(out, &s.vals[k])
        pos += 1
    else:
        _begin_entry(out, np, 1)
        _put_slot(out, <PyObject *>value, wp, 1, NULL, rp)
    for k in range(pos, n):
        e = &s.ents[k]
        _push_entry(out, e.node, e.counter, &s.vals[e.first], e.count)
    return out


cdef DVVSet dvv_update(DVVSet server, DVVSet ctx, object node, object value, object wid):
    """update() on decoded arguments: node is interned id bytes, wid None or 1..32 bytes."""
    cdef DVVSet t = dvv_sync(ctx, server)
    cdef Py_ssize_t k
    rw = None
    if ctx.n_entries and server.n_vals:
        if t.n_alias:       # a copy of a write the context covers through another copy
            t = _alias_cover(t, ctx)
        if server.n_wids or server.n_rw:
            rw = _retired_by(server, ctx, wid)
    if ctx.ctx_wids is not None:   # what the client read, wherever it read it, first: a
        # put_context that could not cover its write lists the write's id there alone, and
        # a chained put has to retire it by that id; behind 4 ids the coordinator derived
        # from unread siblings its context covered, it was cut, and the replaced value came
        # back next to the put chained on it (an outside netns run: 14 of 99,599)
        rw = _join_wids(ctx.ctx_wids, rw, wid)
    if wid is not None and t.n_wids:
        for k in range(t.n_vals):   # the retry of a write this replica already holds live
            if (t.vals[k].wid != NULL and _same_bytes(t.vals[k].wid, <PyObject *>wid)
                    and _same_val(t.vals[k].val, <PyObject *>value)):
                return t
    if wid is not None and t.n_rw:
        for k in range(t.n_vals):   # the retry of a write already overwritten: stays dead
            if t.vals[k].rw != NULL and wid in <tuple>t.vals[k].rw:
                return t
    cdef DVVSet out = _event(t, node, value, wid, rw)
    if rw is not None and out.n_wids:
        _retire_rw(out, True)   # a copy the context did not cover by dot, listed by id
    if out.n_wids >= 2:
        _dedup(out, True)
    return out


cdef bint _covered(DVVSet ctx, PyObject *node, int64_t dot) noexcept:
    return _counter_of(ctx, node) >= dot


cdef bint _alias_covered(DVVSlot *d, DVVSet ctx) except -1:
    """Some alias dot of sibling d is in ctx's causal past."""
    if d.alias == NULL:
        return False
    for al in <tuple>d.alias:
        if _covered(ctx, <PyObject *>al[0], <int64_t>al[1]):
            return True
    return False


cdef DVVSet _alias_cover(DVVSet t, DVVSet ctx):
    """t without the live siblings one of whose alias dots ctx covers."""
    cdef Py_ssize_t k
    mask = bytearray(b"\x01") * t.n_vals
    cdef unsigned char *m = mask
    for k in range(t.n_vals):
        if _alias_covered(&t.vals[k], ctx):
            m[k] = 0
    return _retain_mask(t, m)


cdef object _retired_by(DVVSet server, DVVSet ctx, object wid):
    """The retired-wid list of a write with context ctx on server, newest first: the write
    ids of the siblings it overwrites (dot or an alias covered; bytewise), then the lists
    those siblings carried (in set order), without repeats or wid, the first
    DVV_RETIRED_MAX of them; None when empty."""
    cdef Py_ssize_t e, k
    cdef list direct = [], inherited = []
    cdef DVVSlot *d
    for e in range(server.n_entries):
        for k in range(server.ents[e].first, server.ents[e].first + server.ents[e].count):
            d = &server.vals[k]
            if d.wid == NULL and d.rw == NULL:
                continue
            if _covered(ctx, server.ents[e].node, d.dot) or _alias_covered(d, ctx):
                if d.wid != NULL:
                    direct.append(<object>d.wid)
                if d.rw != NULL:
                    inherited.extend(<tuple>d.rw)
    if not direct and not inherited:
        return None
    out = []
    seen = {wid}
    for w in sorted(direct) + inherited:
        if w not in seen:
            seen.add(w)
            out.append(w)
    if not out:
        return None
    return tuple(out[:DVV_RETIRED_MAX])


cdef bint dvv_descends(DVVSet a, DVVSet b):
    """Every dot in b's causal past is in a's."""
    cdef Py_ssize_t i = 0, j, na = a.n_entries
    cdef int c
    for j in range(b.n_entries):
        while True:
            if i >= na:
                return False
            c = _cmp(a.ents[i].node, b.ents[j].node)
            if c >= 0:
                break
            i += 1
        if c > 0 or a.ents[i].counter < b.ents[j].counter:
            return False
        i += 1
    return True


cdef DVVSet _retain_mask(DVVSet s, const unsigned char *keep):
    """s with only the siblings k where keep[k] (all counters kept: the others retire)."""
    cdef Py_ssize_t e, k, nv = 0
    for k in range(s.n_vals):
        nv += keep[k] != 0
    if nv == s.n_vals:
        return s
    cdef DVVSet out = _alloc(s.n_entries, nv)
    for e in range(s.n_entries):
        _begin_entry(out, s.ents[e].node, s.ents[e].counter)
        for k in range(s.ents[e].first, s.ents[e].first + s.ents[e].count):
            if keep[k]:
                _put_copy(out, &s.vals[k])
    return out


cdef Py_ssize_t _lww_best(DVVSet s, Py_ssize_t *best_e) noexcept:
    """The index of s's O-greatest sibling (s has one at least), its entry in *best_e."""
    cdef Py_ssize_t e, k, best = -1
    for e in range(s.n_entries):
        for k in range(s.ents[e].first, s.ents[e].first + s.ents[e].count):
            if best < 0 or _ocmp(&s.vals[k], s.ents[e].node,
                                 &s.vals[best], s.ents[best_e[0]].node) > 0:
                best = k
                best_e[0] = e
    return best


cdef DVVSet dvv_lww(DVVSet s):
    """The LWW collapse: keep only the O-greatest sibling, retire the others."""
    if s.n_vals <= 1:
        return s
    cdef Py_ssize_t e, best_e = -1
    cdef Py_ssize_t best = _lww_best(s, &best_e)
    cdef DVVSet out = _alloc(s.n_entries, 1)
    for e in range(s.n_entries):
        _begin_entry(out, s.ents[e].node, s.ents[e].counter)
        if e == best_e:
            _put_copy(out, &s.vals[best])
    return out


cdef DVVSet dvv_lww_sync(DVVSet a, DVVSet b):
    """dvv_lww(dvv_sync(a, b)), never without a sibling when a or b has one: when each side
    retired the other's survivor (their kills disagree: rule R kept one over the other there,
    the stamp the other over a third here, the third beat the first elsewhere), the join's
    vector with the O-greatest of the two sides' siblings live."""
    cdef DVVSet s = dvv_lww(dvv_sync(a, b))
    if s.n_vals or not (a.n_vals or b.n_vals):
        return s
    cdef DVVSet x = a if a.n_vals else b
    cdef Py_ssize_t e, be = -1
    cdef Py_ssize_t bk = _lww_best(x, &be)
    cdef Py_ssize_t ob, oe = -1
    if a.n_vals and b.n_vals:
        ob = _lww_best(b, &oe)
        if _ocmp(&b.vals[ob], b.ents[oe].node, &a.vals[bk], a.ents[be].node) > 0:
            x, bk, be = b, ob, oe
    cdef DVVSet out = _alloc(s.n_entries, 1)
    for e in range(s.n_entries):
        _begin_entry(out, s.ents[e].node, s.ents[e].counter)
        if _cmp(s.ents[e].node, x.ents[be].node) == 0:
            _put_copy(out, &x.vals[bk])
    return out


cdef DVVSet _lww_made(DVVSet s, DVVSet before):
    """dvv_lww(s), where s is `before` plus the write its coordinator just made (update's new
    dot, the only one beyond before's counters): when that write is the one kept, it also
    lists as retired the write ids of the siblings the collapse retires, then the lists
    they carried (after its own list; without repeats or its own id; the first
    DVV_RETIRED_MAX), as a write whose context covered them would. A blind write replaces
    them in lww, so rule R, update's no-op for a listed id and the nodes' late-copy memory
    must know them: unlisted, a late retry of one (same write id, stamped anew) won over
    the write that replaced it. Only at the dot's making, like the rest of its list, so
    every replica holds the same list; a write that loses the collapse lists nothing (its
    list would retire a newer write's other copies where they meet)."""
    if s.n_vals <= 1:
        return s
    cdef Py_ssize_t e, k, best_e = -1
    cdef Py_ssize_t best = _lww_best(s, &best_e)
    cdef DVVSlot *d = &s.vals[best]
    if d.dot <= _counter_of(before, s.ents[best_e].node):
        return dvv_lww(s)   # the kept sibling was there before: its list stays as made
    cdef list direct = [], inherited = []
    for k in range(s.n_vals):
        if k != best:
            if s.vals[k].wid != NULL:
                direct.append(<object>s.vals[k].wid)
            if s.vals[k].rw != NULL:
                inherited.extend(<tuple>s.vals[k].rw)
    # the ids it just replaced first (the newest: a context write lists what its context
    # covered first too), then its own list, then what those carried; a late retry of the
    # write it replaced must find its id even when its own list is full
    own = () if d.rw == NULL else <tuple>d.rw
    cdef list out_rw = []
    seen = set()
    if d.wid != NULL:
        seen.add(<object>d.wid)
    for w in sorted(direct) + list(own) + inherited:
        if len(out_rw) >= DVV_RETIRED_MAX:
            break
        if w not in seen:
            seen.add(w)
            out_rw.append(w)
    if tuple(out_rw) == own:
        return dvv_lww(s)   # nothing to add
    rw = tuple(out_rw)
    cdef DVVSet out = _alloc(s.n_entries, 1)
    for e in range(s.n_entries):
        _begin_entry(out, s.ents[e].node, s.ents[e].counter)
        if e == best_e:
            _put_slot(out, d.val, d.wid, d.dot, d.alias, <PyObject *>rw)
    return out


cdef int64_t _counter_of(DVVSet s, PyObject *node) noexcept:
    """s's counter for node (0 when absent); linear, sets have about N entries."""
    cdef Py_ssize_t k
    for k in range(s.n_entries):
        if _cmp(s.ents[k].node, node) == 0:
            return s.ents[k].counter
    return 0


cdef int _plausible(DVVSet v, str what, object members, object limits, DVVSet base,
                    object max_ahead) except -1:
    """ValueError naming the first node id of v that is not a member, or whose counter is
    above limits[id] or more than max_ahead beyond base's counter for it."""
    cdef Py_ssize_t k
    cdef int64_t c, ahead, lim
    ahead = -1
    if limits is not None and not hasattr(limits, "get"):
        raise TypeError(f"limits must be a mapping of node id to counter ceiling, not "
                        f"{type(limits).__name__}")
    if max_ahead is not None:
        if max_ahead < 0:
            raise ValueError("max_ahead must be >= 0")
        ahead = COUNTER_MAX if max_ahead >= COUNTER_MAX else <int64_t>max_ahead
    for k in range(v.n_entries):
        c = v.ents[k].counter
        if members is not None or limits is not None:
            node = (<bytes>v.ents[k].node).decode("utf-8")
            if members is not None and node not in members:
                raise ValueError(f"{what}: names {node!r}, not a member")
            if limits is not None:
                lim_obj = limits.get(node)
                if lim_obj is not None:
                    # (clamped: a ceiling past int64 either way is no OverflowError)
                    lim = (COUNTER_MAX if lim_obj >= COUNTER_MAX else -1 if lim_obj < 0
                           else <int64_t>lim_obj)
                    if c > lim:
                        raise ValueError(f"{what}: counter {c} for {node!r} is above its "
                                         f"ceiling {lim_obj}")
        if ahead >= 0 and c - _counter_of(base, v.ents[k].node) > ahead:
            raise ValueError(
                f"{what}: counter {c} for {(<bytes>v.ents[k].node).decode('utf-8')!r} is "
                f"more than {ahead} ahead of this replica's "
                f"{_counter_of(base, v.ents[k].node)} (forged or corrupt)")
    return 0


# ---------------------------------------------------------------------------
# Python API

def update(server, context, value, node_id, wid=b"", *, max_ahead=MAX_AHEAD):
    """Coordinator node_id writes value (bytes, None = tombstone) with the client's context
    and write id (b"" = none); see the .pyi for the contract."""
    cdef DVVSet s = _as_set(server, "server")
    cdef DVVSet ctx = _ctx(context, s)
    node = _node_bytes(node_id)
    if value is not None and not PyBytes_Check(value):
        raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
    if value is not None and not PyBytes_CheckExact(value):
        value = bytes(value)
    w = _wid_arg(wid)
    if max_ahead is not None and ctx.n_entries:
        _plausible(ctx, "context", None, None, s, max_ahead)
    return dvv_update(s, ctx, node, value, w)


def sync(a, b, /):
    """Merge two replicas' sets (None = empty): commutative, associative, idempotent."""
    if type(a) is DVVSet and type(b) is DVVSet:
        return dvv_sync(<DVVSet>a, <DVVSet>b)
    return dvv_sync(_as_set(a, "a"), _as_set(b, "b"))


def sync_many(sets):
    """sync of any number of sets (None entries allowed); EMPTY for none."""
    cdef DVVSet acc = _EMPTY
    for s in sets:
        acc = dvv_sync(acc, _as_set(s, "set"))
    return acc


def descends(a, b):
    """a's causal past includes every dot of b."""
    return dvv_descends(_as_set(a, "a"), _as_set(b, "b"))


def context_descends(a, b):
    """The encoded context ``a`` has seen every write the encoded context ``b`` has."""
    cdef DVVSet ca = _ctx(a)
    return dvv_descends(ca, _ctx(b, ca))


def context_has_new_dot(a, b):
    """The encoded context ``a`` counts a dot ``b`` does not, under a node id (not under
    BLIND_ACTOR, which names no write)."""
    cdef DVVSet ca = _ctx(a)
    cdef DVVSet cb = _ctx(b, ca)
    cdef Py_ssize_t k
    for k in range(ca.n_entries):
        if (<bytes>ca.ents[k].node) != BLIND_ACTOR and \
                ca.ents[k].counter > _counter_of(cb, ca.ents[k].node):
            return True
    return False


def merge_contexts(a, b):
    """The join of two encoded contexts, encoded (vectors joined, write ids a's then b's)."""
    cdef DVVSet ca = _ctx(a)
    cdef DVVSet cb = _ctx(b, ca)
    return _context_bytes(dvv_sync(ca, cb), _join_wids(ca.ctx_wids, cb.ctx_wids, None))


# The vector entry a put's context carries its write ids in when the context it was given
# had none (put_context): an id no node issues a dot under ("~" is no node id:
# config.NODE_ID_RE), so it covers no sibling, in a context every version of zkv decodes.
BLIND_ACTOR = b"~"


def put_context(written, context, wid):
    """The context a client's put gets back: the causal past of its own write -- the context
    it wrote with joined with the new write's dot, the write ids it retires its own then
    that context's -- never a sibling it did not read. `written` is the coordinator's set
    after the write, whose context() also covers the concurrent writes the client never saw:
    a put chained on that retired them (an outside run lost acknowledged writes so). Where
    the write's dot cannot join without covering such a sibling too (a vector has no gaps: a
    concurrent write took a dot of the same coordinator below it), the client's own context
    is given back with the write's id listed as retired: a write chained on it retires this
    one by its id (rule R), not by its dot, and keeps the other's. A write with no live copy
    in `written` gets the client's context with its id listed too; one without an id, the
    client's context as it was. `written` may be encoded (decoded and checked)."""
    cdef DVVSet s = (_dec(written, "written") if isinstance(written, (bytes, bytearray))
                     else _as_set(written, "written"))
    cdef DVVSet c = _ctx(context, s)
    cdef object w = _wid_arg(wid)
    cdef Py_ssize_t k, m
    cdef DVVEntry *e
    cdef DVVSlot *d
    cdef PyObject *own_node = NULL
    cdef int64_t own_dot = 0
    if w is not None:
        for k in range(s.n_entries):
            e = &s.ents[k]
            for m in range(e.first, e.first + e.count):
                if s.vals[m].wid != NULL and _same_bytes(s.vals[m].wid, <PyObject *>w):
                    own_node, own_dot = e.node, s.vals[m].dot
    if own_node == NULL:
        if w is None:
            return _context_bytes(c, c.ctx_wids)
        # no live copy here (a late retry of a write overwritten or deleted, a write lww
        # outranked): its id listed, so a write chained on this context retires a copy of it
        # still live elsewhere by rule R (a review: the id was dropped from the answer)
        if c.n_entries == 0:
            c = _alloc(1, 0)
            _begin_entry(c, <PyObject *>BLIND_ACTOR, 1)
        return _context_bytes(c, _join_wids((w,), c.ctx_wids, None))
    cdef DVVSet one = _alloc(1, 0)
    _begin_entry(one, own_node, own_dot)
    cdef DVVSet cand = dvv_sync(c, one)
    wids = _join_wids((w,), c.ctx_wids, None)  # (its own first: never the one cut at 4)
    for k in range(s.n_entries):
        e = &s.ents[k]
        for m in range(e.first, e.first + e.count):
            d = &s.vals[m]
            if e.node == own_node and d.dot == own_dot:
                continue
            if d.dot <= _counter_of(c, e.node) or _alias_covered(d, c):
                continue  # (read by the client: its context retires it anyway)
            # a dot of the sibling, its own or an alias (the copy of a retried write another
            # coordinator made: covering either retires it), the write's dot would cover: an
            # outside review lost an acknowledged write through an alias so
            if d.dot <= _counter_of(cand, e.node) or _alias_covered(d, cand):
                # (it would cover an unread sibling) the client's vector, its write's id
                # listed as retired: a write made with it retires this one by rule R, so a
                # chain of puts does not pile its own values up as siblings (the review: 21
                # after 20 chained puts). A context's ids need a vector: a blind put's gets
                # the entry that covers nothing (BLIND_ACTOR), or a chain that began blind on
                # a key holding a value kept every value it wrote, up to the sibling limit
                # (an outside run: every time, through the key's usual coordinator)
                if c.n_entries == 0:
                    c = _alloc(1, 0)
                    _begin_entry(c, <PyObject *>BLIND_ACTOR, 1)
                return _context_bytes(c, wids)
    return _context_bytes(cand, wids)


def validate_context(ctx):
    """ValueError unless ctx is a well-formed encoded context (b"" included)."""
    _ctx(ctx)


def prune(s, Py_ssize_t max_entries):
    """Bound the entry count by forgetting sibling-less entries, smallest counters first."""
    cdef DVVSet d = _as_set(s, "s")
    cdef Py_ssize_t k, excess = d.n_entries - max_entries
    if max_entries < 0:
        raise ValueError("max_entries must be >= 0")
    if excess <= 0:
        return d
    cands = []
    for k in range(d.n_entries):
        if d.ents[k].count == 0:
            cands.append((d.ents[k].counter, <bytes>d.ents[k].node, k))
    cands.sort()
    drop = {t[2] for t in cands[:excess]}
    if not drop:
        return d
    cdef DVVSet out = _alloc(d.n_entries - len(drop), d.n_vals)
    cdef DVVEntry *e
    for k in range(d.n_entries):
        if k not in drop:
            e = &d.ents[k]
            _push_entry(out, e.node, e.counter, &d.vals[e.first], e.count)
    return out


def lww(s, before=None):
    """Last-writer-wins collapse: only the highest sibling stays; with `before`, the set a
    coordinator's write was made on, that write when kept lists what it retires (.pyi)."""
    if before is None:
        return dvv_lww(_as_set(s, "s"))
    return _lww_made(_as_set(s, "s"), _as_set(before, "before"))


def lww_sync(a, b, /):
    """lww(sync(a, b)), never without a sibling when a or b has one (see the .pyi)."""
    return dvv_lww_sync(_EMPTY if a is None else _as_set(a, "a"),
                        _EMPTY if b is None else _as_set(b, "b"))


def retain(s, keep):
    """s with only the siblings keep chooses; the others retire (see the .pyi)."""
    cdef DVVSet d = _as_set(s, "s")
    cdef Py_ssize_t k, n = d.n_vals
    if n == 0:
        return d
    mask = bytearray(n)
    cdef unsigned char *m = mask
    if callable(keep):
        for k, sib in enumerate(d.siblings()):
            if keep(sib):
                m[k] = 1
    else:
        for x in keep:  # (a Python int: one past Py_ssize_t is out of range too, not an
            if not 0 <= x < n:  # OverflowError: a fuzzer of the core)
                raise IndexError(f"sibling index {x} out of range 0..{n - 1}")
            m[<Py_ssize_t>x] = 1
    return _retain_mask(d, m)


def lww_encoded(data, before=None):
    """lww on an encoded set (`before`: None, or the encoded set the write was made on);
    returns data itself when nothing retires. Validates them."""
    cdef DVVSet d = _dec(data, "data")
    if before is None or not before:
        return dvv_lww(d).encode()
    return _lww_made(d, _dec(before, "before")).encode()


def lww_sync_encoded(a, b):
    """lww_sync on encoded sets (None = empty); returns an encoding. Validates both inputs."""
    cdef DVVSet da
    if a is None or b is None:
        if a is None and b is None:
            return _EMPTY.encode()
        return dvv_lww(_dec(b if a is None else a, "b" if a is None else "a")).encode()
    da = _dec(a, "a")
    return dvv_lww_sync(da, _dec(b, "b", da)).encode()


def retain_encoded(data, keep):
    """retain on an encoded set; returns an encoding. Validates it."""
    return retain(_dec(data, "data"), keep).encode()


def check_plausible(data, members=None, limits=None, *, base=None, max_ahead=MAX_AHEAD):
    """ValueError unless an encoded set (or DVVSet) a peer sent is plausible (see the .pyi)."""
    cdef DVVSet v = <DVVSet>data if type(data) is DVVSet else _dec(data, "data")
    cdef DVVSet b = _EMPTY
    if base is not None:
        b = <DVVSet>base if type(base) is DVVSet else _dec(base, "base")
    _plausible(v, "DVVSet", members, limits, b, max_ahead)


def check_plausible_context(ctx, members=None, limits=None, *, base=None,
                            max_ahead=MAX_AHEAD):
    """check_plausible for an encoded client context (b"" is plausible)."""
    cdef DVVSet v = _ctx(ctx)
    cdef DVVSet b = _EMPTY
    if base is not None:
        b = <DVVSet>base if type(base) is DVVSet else _dec(base, "base")
    _plausible(v, "context", members, limits, b, max_ahead)


def sync_encoded(a, b):
    """sync on encoded sets (None = empty); returns an encoding. Validates both inputs."""
    cdef bytes ba, bb
    cdef DVVSet da
    if a is None or b is None:
        if a is None and b is None:
            return _EMPTY.encode()
        return _checked(b if a is None else a, "b" if a is None else "a")
    ba = _as_bytes(a, "a")
    bb = _as_bytes(b, "b")
    if ba is bb or ba == bb:
        return _checked(ba, "a")
    da = _dec(ba, "a")
    return dvv_sync(da, _dec(bb, "b", da)).encode()


def sync_plausible(base, incoming, *, max_ahead=MAX_AHEAD, bint lww=False):
    """check_plausible(incoming, base=base) then sync_encoded(base, incoming) (lww:
    lww_sync_encoded), each input decoded once (see the .pyi)."""
    cdef DVVSet b = _EMPTY
    cdef bytes bb = None
    cdef DVVSet v = _dec(incoming, "data")  # first, as check_plausible: the same error
    cdef bytes bi = v._enc
    if base is not None:
        bb = _as_bytes(base, "base")
        b = _dec(bb, "base", v)
    _plausible(v, "DVVSet", None, None, b, max_ahead)
    if lww:
        return (dvv_lww(v) if bb is None else dvv_lww_sync(b, v)).encode()
    if bb is None:
        return bi
    if bb is bi or bb == bi:
        return bb
    return dvv_sync(b, v).encode()


def update_encoded(server, context, value, node_id, wid=b"", *, max_ahead=MAX_AHEAD):
    """update on an encoded server set (None = absent); returns the new encoding."""
    cdef DVVSet s = _EMPTY if server is None else _dec(server, "server")
    return update(s, context, value, node_id, wid, max_ahead=max_ahead).encode()


cdef inline Py_ssize_t _sibling_at(const uint8_t *p, Py_ssize_t n, Py_ssize_t pos,
                                   Py_ssize_t *wid_at, Py_ssize_t *rw_at) except -1:
    """One walk step over an encoded set (formats in dvv.pxd): `pos` at a sibling's flags
    byte; returns the position after the sibling, with *wid_at at its write-id length byte
    and *rw_at at its retired count byte (-1: none), every byte up to there bounds-checked.
    ValueError on a truncated buffer; other malformations are the decoder's job."""
    cdef uint8_t flags
    cdef uint32_t cnt, q
    wid_at[0] = rw_at[0] = -1
    if pos + 1 > n:
        raise ValueError("truncated DVV set")
    flags = p[pos]
    pos += 1
    if flags & DVV_F_GAP:
        pos += 8
    if flags & DVV_F_WID:
        if pos + 1 > n or pos + 1 + p[pos] > n:
            raise ValueError("truncated DVV set")
        wid_at[0] = pos
        pos += 1 + p[pos]
    if flags & DVV_F_ALIAS:
        if pos + 1 > n:
            raise ValueError("truncated DVV set")
        cnt = p[pos]
        pos += 1
        for q in range(cnt):
            if pos + 1 > n:
                raise ValueError("truncated DVV set")
            pos += 1 + p[pos] + 8
    if flags & DVV_F_RETIRED:
        if pos + 1 > n:
            raise ValueError("truncated DVV set")
        rw_at[0] = pos
        cnt = p[pos]
        pos += 1
        for q in range(cnt):
            if pos + 1 > n or pos + 1 + p[pos] > n:
                raise ValueError("truncated DVV set")
            pos += 1 + p[pos]
    if pos + 4 > n:
        raise ValueError("truncated DVV set")
    return pos + 4 + _r32(p + pos)


cdef inline uint32_t _entry_count(const uint8_t *p, Py_ssize_t n) except? 0xFFFFFFFF:
    """The entry count in an encoded set's header (formats in dvv.pxd), where a walk over
    its entries (`_entry_at`, `_sibling_at`) starts, at byte 3. ValueError when truncated."""
    if n < 3:
        raise ValueError("truncated DVV set")
    return p[1] | (<uint32_t>p[2] << 8)


cdef inline Py_ssize_t _entry_at(const uint8_t *p, Py_ssize_t n, Py_ssize_t pos,
                                 uint32_t *sibs) except -1:
    """`pos` at an entry of an encoded set: returns the position of its first sibling, with
    its sibling count in *sibs. ValueError on a truncated buffer."""
    if pos + 1 > n:
        raise ValueError("truncated DVV set")
    pos += 1 + p[pos] + 8  # node id, counter
    if pos + 4 > n:
        raise ValueError("truncated DVV set")
    sibs[0] = _r32(p + pos)
    return pos + 4


cdef int _siblings_kind(bytes data) except -1:
    """What an encoded set's live siblings are, walking the encoded form in C (formats in
    dvv.pxd) up to its first value: 0 none, 1 tombstones only, 2 a value among them.
    ValueError on a truncated buffer; other malformations are the decoder's job."""
    cdef const uint8_t *p = <const uint8_t *><char *>data
    cdef Py_ssize_t n = len(data), pos = 3, wid_at, rw_at
    cdef uint32_t entries, e, sibs, s
    cdef int kind = 0
    entries = _entry_count(p, n)
    for e in range(entries):
        pos = _entry_at(p, n, pos, &sibs)
        for s in range(sibs):
            if pos < n and not (p[pos] & DVV_F_TOMBSTONE):
                return 2
            pos = _sibling_at(p, n, pos, &wid_at, &rw_at)
            kind = 1
    return kind


def is_tombstone_encoded(data) -> bool:
    """``DVVSet.decode(data).is_tombstone()`` without building the set (`_siblings_kind`).
    For the replica's write path, which asks it on every write. ValueError on a truncated
    buffer; other malformations are the decoder's job."""
    if not PyBytes_CheckExact(data):
        return DVVSet.decode(data).is_tombstone()
    return _siblings_kind(<bytes>data) == 1


def has_value_encoded(data) -> bool:
    """Whether an encoded set holds a live value (a sibling that is not a tombstone), without
    building the set (`_siblings_kind`). False for a tombstone and for a set with no live
    sibling at all (every one overwritten or retired): a key listing skips both (it listed
    the second: the simulator, seed 130000 of `--client many ... --power-losses 1`).
    ValueError on a truncated buffer; other malformations are the decoder's job."""
    if not PyBytes_CheckExact(data):
        return any(v is not None for v in DVVSet.decode(data).values())
    return _siblings_kind(<bytes>data) == 2


RETIRED_MEMORY = 65536  # (key, id) pairs a RetiredWids remembers by default (~8 MB)
cdef enum:
    _RETIRED_FORMAT = 1
RETIRED_FORMAT_VERSION = _RETIRED_FORMAT  # the first byte of RetiredWids.export()


cdef Py_ssize_t _live_wids(bytes data, list live) except -1:
    """Append each live sibling's write id of an encoded set (b"" for none) to `live`;
    returns the number of live siblings. ValueError on a truncated buffer."""
    cdef const uint8_t *p = <const uint8_t *><char *>data
    cdef Py_ssize_t n = len(data), pos = 3, total = 0, wid_at, rw_at
    cdef uint32_t entries, e, sibs, s
    entries = _entry_count(p, n)
    for e in range(entries):
        pos = _entry_at(p, n, pos, &sibs)
        for s in range(sibs):
            pos = _sibling_at(p, n, pos, &wid_at, &rw_at)
            live.append(b"" if wid_at < 0 else
                        PyBytes_FromStringAndSize(<char *>p + wid_at + 1, p[wid_at]))
            total += 1
    if pos > n:
        raise ValueError("truncated DVV set")
    return total


@cython.auto_pickle(False)
cdef class RetiredWids:
    """A replica's memory of the (key, write id) pairs overwritten where it stores versions:
    rule R with a longer memory than the sets themselves carry (see the .pyi). A pair is
    kept as a 16-byte digest: MurmurHash3 x64/128 of (the key's own 128-bit hash, the write
    id), both under a seed drawn per memory (no one can aim a made-up pair at another's)."""

    def __init__(self, Py_ssize_t cap=RETIRED_MEMORY):
        if cap < 1:
            raise ValueError(f"RetiredWids: cap must be >= 1, got {cap}")
        self.cap = cap
        self._held = set()
        self._ring = [None] * cap
        self._at = 0
        self._seed = int.from_bytes(os.urandom(4), "little")

    cdef bytes _pair(self, bytes key, const unsigned char *wid, Py_ssize_t n):
        cdef unsigned char kh[16]
        zkv_murmur3_x64_128(<const char *>key, len(key), self._seed, <uint64_t *>kh)
        return self._pair_of(kh, wid, n)

    cdef bytes _pair_of(self, const unsigned char *kh, const unsigned char *wid, Py_ssize_t n):
        """The digest of (key, wid) from the key's hash `kh` (16 bytes)."""
        cdef unsigned char buf[16 + DVV_WID_MAX]
        cdef uint64_t h[2]
        if n > DVV_WID_MAX:
            n = DVV_WID_MAX  # (a longer id is the decoder's to refuse; never from a stored set)
        memcpy(buf, kh, 16)
        memcpy(buf + 16, wid, <size_t>n)
        zkv_murmur3_x64_128(buf, <size_t>(16 + n), self._seed, h)
        return PyBytes_FromStringAndSize(<char *>h, 16)

    cdef void _remember(self, bytes pair):
        cdef object old = self._ring[self._at]
        if old is not None:
            self._held.discard(old)
        self._ring[self._at] = pair
        self._held.add(pair)
        self.added += 1
        self._at += 1
        if self._at == self.cap:
            self._at = 0

    def note(self, key, data):
        """Remember the ids the live siblings of `key`'s encoded set `data` list as retired;
        the number not remembered before. Sets without retired lists (format versions 1 and
        2) cost one byte's look. A list whose first and last ids are both remembered is taken
        as remembered whole (a chain of writes adds one new id a write, first in its list):
        a write's cost is two digests and lookups per sibling that lists ids. Nothing is
        remembered from a set found truncated (ValueError)."""
        if not PyBytes_CheckExact(key) or not PyBytes_CheckExact(data):
            raise TypeError("RetiredWids.note: key and data must be bytes")
        cdef bytes b = <bytes>data
        cdef const uint8_t *p = <const uint8_t *><char *>b
        cdef Py_ssize_t n = len(b), pos = 3, at, last, wid_at, rw_at
        cdef uint32_t entries, e, sibs, sb, cnt, q
        cdef unsigned char kh[16]
        cdef bint hashed = False
        cdef set held = self._held
        cdef list todo = []
        cdef bytes pair
        if n < 1 or p[0] != DVV_FORMAT_VERSION_3:
            return 0
        entries = _entry_count(p, n)
        for e in range(entries):
            pos = _entry_at(p, n, pos, &sibs)
            for sb in range(sibs):
                pos = _sibling_at(p, n, pos, &wid_at, &rw_at)  # (the list bounds-checked)
                if rw_at < 0 or p[rw_at] == 0:
                    continue
                cnt = p[rw_at]
                at = last = rw_at + 1
                for q in range(1, cnt):
                    last += 1 + p[last]
                if not hashed:
                    zkv_murmur3_x64_128(<const char *>key, len(<bytes>key), self._seed,
                                        <uint64_t *>kh)
                    hashed = True
                # (a write that resolved several siblings lists their ids bytewise after
                # its context's: the first known says nothing of the rest then)
                if (self._pair_of(kh, p + at + 1, p[at]) in held
                        and self._pair_of(kh, p + last + 1, p[last]) in held):
                    continue
                for q in range(cnt):
                    todo.append(self._pair_of(kh, p + at + 1, p[at]))
                    at += 1 + p[at]
        if pos > n:
            raise ValueError("truncated DVV set")
        cdef Py_ssize_t added = 0
        for pair in todo:
            if pair not in held:
                self._remember(pair)
                added += 1
        return added

    def add(self, key, wid):
        """Remember one (key, write id) pair (bytes; a write id of 1..32 bytes)."""
        if (not PyBytes_CheckExact(key) or not PyBytes_CheckExact(wid)
                or not 1 <= len(wid) <= DVV_WID_MAX):
            raise ValueError(f"RetiredWids.add: a key and a write id of 1..{DVV_WID_MAX} bytes")
        pair = self._pair(<bytes>key, <const unsigned char *><char *>wid, len(wid))
        if pair not in self._held:
            self._remember(pair)

    def holds(self, key, wid):
        """Whether (key, write id) is remembered as overwritten."""
        if not PyBytes_CheckExact(key) or not PyBytes_CheckExact(wid) or not wid:
            return False
        return self._pair(<bytes>key, <const unsigned char *><char *>wid, len(wid)) in self._held

    def strip(self, key, data):
        """`key`'s encoded set `data` with its live siblings whose (key, write id) is
        remembered, when it has two or more live siblings and at least one of them stays (a
        set whose every sibling is remembered is left as it is: what overwrote them has not
        arrived here); `data` itself (the same object) when nothing retires."""
        if not PyBytes_CheckExact(key) or not PyBytes_CheckExact(data):
            raise TypeError("RetiredWids.strip: key and data must be bytes")
        cdef bytes b = <bytes>data
        if (not self._held or len(b) < 1
                or (<const uint8_t *><char *>b)[0] == DVV_FORMAT_VERSION):
            return data  # (version 1: no write ids)
        cdef list live = []
        if _live_wids(b, live) < 2:
            return data
        cdef set held = self._held
        cdef set dead = set()
        cdef bytes w
        for w in live:
            if w and self._pair(<bytes>key, <const unsigned char *><char *>w, len(w)) in held:
                dead.add(w)
        if not dead or len(dead) == len(live):
            return data
        return retain(_dec(b, "data"), lambda sib: sib[3] not in dead).encode()

    def __len__(self):
        return len(self._held)

    def __repr__(self):
        return f"RetiredWids({len(self._held)} of {self.cap})"

    # export() / load(): the memory as bytes (what a node keeps in its data dir across a
    # restart: zkv/node/latefile.py). Little-endian, with byte counts:
    #   1    format version (RETIRED_FORMAT_VERSION, 1)
    #   4    the digests' seed (uint32)
    #   4    n: the digests that follow (uint32)
    #   16n  the digests, oldest first
    #   8    checksum: zkv_hash64 (MurmurHash3 x64/128 seed 0, first half) of the bytes before
    # 17 + 16n bytes in all (1 MB at the default cap).

    def export(self):
        """The memory as bytes (the format above): its seed and its pairs, oldest first."""
        cdef list ring = self._ring
        cdef Py_ssize_t n = len(self._held), i, slot, k = 0
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 17 + 16 * n)
        cdef unsigned char *p = <unsigned char *><char *>out
        cdef uint64_t check
        cdef object pair
        p[0] = _RETIRED_FORMAT
        _put32(p + 1, self._seed)
        _put32(p + 5, <uint32_t>n)
        for i in range(self.cap):
            slot = self._at + i
            if slot >= self.cap:
                slot -= self.cap
            pair = ring[slot]
            if pair is not None and k < n:
                memcpy(p + 9 + 16 * k, <char *><bytes>pair, 16)
                k += 1
        if k != n:
            raise AssertionError("RetiredWids: ring and set disagree")
        check = zkv_hash64(p, <size_t>(9 + 16 * n))
        for i in range(8):
            p[9 + 16 * n + i] = <unsigned char>(check >> (8 * i))
        return out

    def load(self, data):
        """Replace what this memory holds with an export's (its seed and pairs; the newest
        `cap` of them if it held more); returns the number of pairs held. ValueError, and the
        memory unchanged, unless `data` is a whole export of this format version: a short,
        long or corrupt buffer (checksum) is refused. `added` is reset to 0."""
        if not PyBytes_CheckExact(data):
            raise TypeError("RetiredWids.load: data must be bytes")
        cdef bytes b = <bytes>data
        cdef const unsigned char *p = <const unsigned char *><char *>b
        cdef Py_ssize_t size = len(b), n, i, first
        cdef uint64_t check = 0
        if size < 17:
            raise ValueError(f"RetiredWids.load: {size} bytes, an export has at least 17")
        if p[0] != _RETIRED_FORMAT:
            raise ValueError(f"RetiredWids.load: format version {p[0]}, not "
                             f"{_RETIRED_FORMAT}")
        n = _get32(p + 5)
        if size != 17 + 16 * n:
            raise ValueError(f"RetiredWids.load: {size} bytes, {n} pairs make {17 + 16 * n}")
        for i in range(8):
            check |= (<uint64_t>p[9 + 16 * n + i]) << (8 * i)
        if check != zkv_hash64(p, <size_t>(9 + 16 * n)):
            raise ValueError("RetiredWids.load: checksum mismatch (a damaged export)")
        self._seed = _get32(p + 1)
        self._held = set()
        self._ring = [None] * self.cap
        self._at = 0
        first = n - self.cap if n > self.cap else 0
        for i in range(first, n):
            pair = PyBytes_FromStringAndSize(<const char *>p + 9 + 16 * i, 16)
            if pair not in self._held:
                self._remember(pair)
        self.added = 0
        return len(self._held)


cdef inline void _put32(unsigned char *p, uint32_t v) noexcept:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef inline uint32_t _get32(const unsigned char *p) noexcept:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
