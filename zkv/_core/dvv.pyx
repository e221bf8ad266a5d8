# cython: language_level=3
"""Dotted version vector sets: zkv's causality tracking and sibling store for one key.

One job: from the versions two replicas hold for a key, or from a client's write and
the causal context it read, compute the resulting set of concurrent versions
(siblings). Pure functions of bytes and ints; no I/O, no clocks.

Design. Almeida, Baquero, Gonçalves, Preguiça, Fonte, "Scalable and Accurate
Causality Tracking for Eventually Consistent Stores" (DAIS 2014), in the shape of
Riak's ``dvvset.erl``. A set is a list of entries ``(i, n, [v_k .. v_1])`` sorted by
node id ``i``: the causal past holds the dots ``i:1..n`` and the listed values are the
siblings with dots ``(i, n), (i, n-1), ...``. Because every value carries exactly one
dot, a write retires exactly the siblings its context covers, and two writes with
the same context through the same coordinator both survive (plain server-side
version vectors either lose one of them or grow false siblings). Entries exist per
coordinating replica, so a set has about N entries however many clients write.

- sync (``dvvset:sync``/``merge``): per id the counter is ``max(n1, n2)`` and a dot
  survives iff both sides hold it or the side lacking it has not seen it, i.e. the
  kept dots are ``k`` in ``(max(n1 - l1, n2 - l2), max(n1, n2)]``.
- update (``dvvset:update``/``event``): sync the client's context (entries without
  values) into the server's set, which retires the covered siblings, then add the new
  value with dot ``(node, counter + 1)``.

Server-side sets never hold ``dvvset``'s anonymous (dot-less) values: the client keeps
its value apart and sends only the encoded context. The caller keeps one invariant:
only node ``i``'s own replica calls ``update(..., node_id=i)``, on its current set, so
a dot ``(i, k)`` names one value everywhere.

Implementation: entries are C structs and siblings are PyObject refs held inside the
object (inline up to 4 entries / 8 siblings, no malloc); ``sync`` returns one of its
arguments, without allocating, whenever that argument already is the result.
Byte formats: see the header of dvv.pxd (defined there once).
"""

cimport cython
from cpython.bytes cimport PyBytes_Check, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from zkv._core.murmur3 cimport zkv_murmur3_x64_128

cdef extern from "Python.h":
    # PyObject*-taking spellings of a few macros (no temporary object refs).
    char *_bytes_ptr "PyBytes_AS_STRING" (PyObject *o)
    Py_ssize_t _bytes_len "PyBytes_GET_SIZE" (PyObject *o)
    void _incref "Py_INCREF" (PyObject *o)
    void _xdecref "Py_XDECREF" (PyObject *o)
    PyObject *_none "Py_None"

cdef int64_t COUNTER_MAX = 0x7FFFFFFFFFFFFFFF
cdef Py_ssize_t INTERN_MAX = 4096      # interned node ids kept at most (beyond: not interned)
cdef Py_ssize_t MIN_ENTRY = 1 + 1 + 8 + 4   # smallest encoded entry (1-byte id, no sibling)
cdef Py_ssize_t MIN_PAIR = 1 + 1 + 8        # smallest encoded context pair
cdef Py_ssize_t MIN_SIBLING = 1 + 4         # smallest encoded sibling (flag + length)

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


cdef inline int _cmp(PyObject *a, PyObject *b) noexcept:
    """Bytewise order of two node ids (bytes objects)."""
    if a == b:
        return 0
    cdef Py_ssize_t la = _bytes_len(a), lb = _bytes_len(b)
    cdef int c = memcmp(_bytes_ptr(a), _bytes_ptr(b), <size_t>(la if la < lb else lb))
    if c != 0:
        return c
    return (la > lb) - (la < lb)


cdef inline void _push_entry(DVVSet s, PyObject *node, int64_t counter,
                             PyObject **src, Py_ssize_t cnt) noexcept:
    """Append entry (node, counter, src[0:cnt]) to s (storage already sized)."""
    cdef DVVEntry *e = &s.ents[s.n_entries]
    cdef Py_ssize_t k
    _incref(node)
    e.node = node
    e.counter = counter
    e.first = <uint32_t>s.n_vals
    e.count = <uint32_t>cnt
    s.n_entries += 1
    for k in range(cnt):
        _incref(src[k])
        s.vals[s.n_vals] = src[k]
        s.n_vals += 1


cdef DVVSet _alloc(Py_ssize_t ne, Py_ssize_t nv):
    """An empty set whose storage holds ne entries and nv siblings."""
    cdef DVVSet s = DVVSet.__new__(DVVSet)
    if ne > DVV_INLINE_ENTRIES:
        s.ents = <DVVEntry *>PyMem_Malloc(ne * sizeof(DVVEntry))
        if s.ents == NULL:
            s.ents = &s._ie[0]
            raise MemoryError()
    if nv > DVV_INLINE_VALUES:
        s.vals = <PyObject **>PyMem_Malloc(nv * sizeof(PyObject *))
        if s.vals == NULL:
            s.vals = &s._iv[0]
            raise MemoryError()
    return s


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
        self._hash = -1

    def __dealloc__(self):
        cdef Py_ssize_t k
        for k in range(self.n_vals):
            _xdecref(self.vals[k])
        for k in range(self.n_entries):
            _xdecref(self.ents[k].node)
        if self.ents != &self._ie[0]:
            PyMem_Free(self.ents)
        if self.vals != &self._iv[0]:
            PyMem_Free(self.vals)

    def values(self):
        """All siblings (bytes, or None for a tombstone), by node id, newest first."""
        return [<object>self.vals[k] for k in range(self.n_vals)]

    def live_values(self):
        """The siblings that are not tombstones, in values() order."""
        return [<object>self.vals[k] for k in range(self.n_vals) if self.vals[k] != _none]

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
            if self.vals[k] != _none:
                return False
        return True

    def vector(self):
        """The causal past as a version vector {node id: counter}."""
        cdef Py_ssize_t k
        return {(<bytes>self.ents[k].node).decode("utf-8"): self.ents[k].counter
                for k in range(self.n_entries)}

    def entries(self):
        """[(node id, counter, [siblings newest first])] sorted by node id (debug, tests)."""
        cdef Py_ssize_t k, f, m
        out = []
        for k in range(self.n_entries):
            f = self.ents[k].first
            out.append(((<bytes>self.ents[k].node).decode("utf-8"), self.ents[k].counter,
                        [<object>self.vals[f + m] for m in range(self.ents[k].count)]))
        return out

    cpdef bytes encode(self):
        """Canonical encoding (format version 1, see dvv.pxd): equal sets, equal bytes."""
        if self._enc is not None:
            return self._enc
        cdef Py_ssize_t size = 3, k, m, ln
        cdef DVVEntry *e
        cdef PyObject *v
        if self.n_entries > 0xFFFF:
            raise ValueError("too many entries to encode (> 65535)")
        for k in range(self.n_entries):
            size += 1 + _bytes_len(self.ents[k].node) + 8 + 4
        for k in range(self.n_vals):
            v = self.vals[k]
            size += 5
            if v != _none:
                ln = _bytes_len(v)
                if <uint64_t>ln > 0xFFFFFFFF:
                    raise ValueError("sibling too large to encode (>= 4 GiB)")
                size += ln
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef unsigned char *p = <unsigned char *>_bytes_ptr(<PyObject *>out)
        p[0] = DVV_FORMAT_VERSION
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
            for m in range(e.first, e.first + e.count):
                v = self.vals[m]
                if v == _none:
                    p[0] = 1
                    _w32(p + 1, 0)
                    p += 5
                else:
                    ln = _bytes_len(v)
                    p[0] = 0
                    _w32(p + 1, <uint32_t>ln)
                    memcpy(p + 5, _bytes_ptr(v), ln)
                    p += 5 + ln
        self._enc = out
        return out

    cpdef bytes context(self):
        """The encoded version vector of everything this set has seen (the client token)."""
        cdef Py_ssize_t size = 3, k, ln
        cdef DVVEntry *e
        if self.n_entries > 0xFFFF:
            raise ValueError("too many entries to encode (> 65535)")
        for k in range(self.n_entries):
            size += 1 + _bytes_len(self.ents[k].node) + 8
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef unsigned char *p = <unsigned char *>_bytes_ptr(<PyObject *>out)
        p[0] = DVV_FORMAT_VERSION
        _w16(p + 1, <uint32_t>self.n_entries)
        p += 3
        for k in range(self.n_entries):
            e = &self.ents[k]
            ln = _bytes_len(e.node)
            p[0] = <unsigned char>ln
            memcpy(p + 1, _bytes_ptr(e.node), ln)
            _w64(p + 1 + ln, <uint64_t>e.counter)
            p += 9 + ln
        return out

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
        if self.n_entries != o.n_entries or self.n_vals != o.n_vals:
            return False
        for k in range(self.n_entries):
            if (_cmp(self.ents[k].node, o.ents[k].node) != 0
                    or self.ents[k].counter != o.ents[k].counter
                    or self.ents[k].count != o.ents[k].count):
                return False
        for k in range(self.n_vals):
            if self.vals[k] != o.vals[k] and not (<object>self.vals[k] == <object>o.vals[k]):
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
        for node, counter, vals in self.entries():
            shown = ", ".join(
                "None" if v is None else (repr(v) if len(v) <= 32 else repr(v[:32]) + f"...<{len(v)}B>")
                for v in vals)
            parts.append(f"({node!r}, {counter}, [{shown}])")
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
                           Py_ssize_t *n_ent_out) except -1:
    """Validate an encoded set completely, allocating nothing; returns the sibling count."""
    cdef Py_ssize_t pos, n_ent, k, s, n_sib, ln, vlen, total = 0
    cdef Py_ssize_t prev_pos = -1, prev_len = 0
    cdef uint64_t counter
    if size < 3:
        raise ValueError("DVVSet: truncated header")
    if buf[0] != DVV_FORMAT_VERSION:
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
        for s in range(n_sib):
            if size - pos < 5:
                raise ValueError("DVVSet: truncated sibling")
            vlen = _r32(buf + pos + 1)
            if buf[pos] > 1:
                raise ValueError("DVVSet: bad sibling flag")
            if buf[pos] == 1 and vlen != 0:
                raise ValueError("DVVSet: tombstone with a value")
            pos += 5
            if vlen > size - pos:
                raise ValueError("DVVSet: truncated sibling value")
            pos += vlen
        total += n_sib
    if pos != size:
        raise ValueError("DVVSet: trailing bytes")
    n_ent_out[0] = n_ent
    return total


cdef DVVSet _build_set(const unsigned char *buf, Py_ssize_t n_ent, Py_ssize_t total,
                       DVVSet hint):
    """Build a set from an encoding _check_set accepted."""
    cdef DVVSet out = _alloc(n_ent, total)
    cdef DVVEntry *e
    cdef object obj
    cdef Py_ssize_t pos = 3, k, s, ln, vlen, h = 0
    for k in range(n_ent):
        ln = buf[pos]
        obj = _node_at(buf + pos + 1, ln, hint, &h)
        pos += 1 + ln
        e = &out.ents[k]
        _incref(<PyObject *>obj)
        e.node = <PyObject *>obj
        e.counter = <int64_t>_r64(buf + pos)
        e.count = _r32(buf + pos + 8)
        e.first = <uint32_t>out.n_vals
        out.n_entries += 1
        pos += 12
        for s in range(e.count):
            if buf[pos] == 1:
                obj = None
                pos += 5
            else:
                vlen = _r32(buf + pos + 1)
                obj = PyBytes_FromStringAndSize(<const char *>buf + pos + 5, vlen)
                pos += 5 + vlen
            _incref(<PyObject *>obj)
            out.vals[out.n_vals] = <PyObject *>obj
            out.n_vals += 1
    return out


cdef DVVSet dvv_decode(const unsigned char *buf, Py_ssize_t size):
    """Parse an encoded set; ValueError on anything malformed."""
    cdef Py_ssize_t n_ent = 0
    cdef Py_ssize_t total = _check_set(buf, size, &n_ent)
    return _build_set(buf, n_ent, total, None)


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
    if buf[0] != DVV_FORMAT_VERSION:
        raise ValueError(f"context: unknown format version {buf[0]}")
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
    if pos != size:
        raise ValueError("context: trailing bytes")
    if n == 0:
        return _EMPTY
    cdef DVVSet out = _alloc(n, 0)
    cdef object obj
    pos = 3
    for k in range(n):
        ln = buf[pos]
        obj = _node_at(buf + pos + 1, ln, hint, &h)
        _push_entry(out, <PyObject *>obj, <int64_t>_r64(buf + pos + 1 + ln), NULL, 0)
        pos += 9 + ln
    return out


cdef bytes _checked(object data, str what):
    """data as exact bytes, after validating it as an encoded set (ValueError)."""
    cdef bytes b = _as_bytes(data, what)
    cdef Py_ssize_t n_ent = 0
    _check_set(<const unsigned char *>_bytes_ptr(<PyObject *>b), len(b), &n_ent)
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

cdef DVVSet dvv_sync(DVVSet a, DVVSet b):
    """Merge two sets (dvvset:sync). Returns a or b itself when it already is the result."""
    if a is None:
        return b if b is not None else _EMPTY
    if b is None or a is b:
        return a
    cdef Py_ssize_t na = a.n_entries, nb = b.n_entries, i = 0, j = 0, ne = 0, nv = 0
    cdef bint eq_a = True, eq_b = True
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
            f1 = x.counter - x.count
            f2 = y.counter - y.count
            fl = f1 if f1 > f2 else f2
            top = x.counter if x.counter > y.counter else y.counter
            if top != x.counter or fl != f1:
                eq_a = False
            if top != y.counter or fl != f2:
                eq_b = False
            nv += top - fl
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
        return a
    if eq_b:
        return b
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
            f1 = x.counter - x.count
            f2 = y.counter - y.count
            fl = f1 if f1 > f2 else f2
            if x.counter >= y.counter:
                _push_entry(out, x.node, x.counter, &a.vals[x.first], x.counter - fl)
            else:
                _push_entry(out, y.node, y.counter, &b.vals[y.first], y.counter - fl)
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
    return out


cdef DVVSet _event(DVVSet s, object node, object value):
    """s plus value with dot (node, s's counter for node + 1)."""
    cdef Py_ssize_t k, pos = 0, n = s.n_entries
    cdef PyObject *np = <PyObject *>node
    cdef PyObject *vp = <PyObject *>value
    cdef int c = 1
    cdef DVVEntry *e
    while pos < n:
        c = _cmp(s.ents[pos].node, np)
        if c >= 0:
            break
        pos += 1
    cdef bint found = pos < n and c == 0
    cdef DVVSet out = _alloc(n + (0 if found else 1), s.n_vals + 1)
    for k in range(pos):
        e = &s.ents[k]
        _push_entry(out, e.node, e.counter, &s.vals[e.first], e.count)
    if found:
        e = &s.ents[pos]
        if e.counter >= COUNTER_MAX:
            raise ValueError("DVVSet counter would overflow (context counter at 2**63-1)")
        _push_entry(out, np, e.counter + 1, &vp, 1)
        # the entry's older siblings follow the new one
        for k in range(e.count):
            _incref(s.vals[e.first + k])
            out.vals[out.n_vals] = s.vals[e.first + k]
            out.n_vals += 1
        out.ents[out.n_entries - 1].count += e.count
        pos += 1
    else:
        _push_entry(out, np, 1, &vp, 1)
    for k in range(pos, n):
        e = &s.ents[k]
        _push_entry(out, e.node, e.counter, &s.vals[e.first], e.count)
    return out


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


# ---------------------------------------------------------------------------
# Python API

def update(server, context, value, node_id):
    """Coordinator node_id writes value (bytes, None = tombstone) with the client's context."""
    cdef DVVSet s = _as_set(server, "server")
    cdef DVVSet ctx = _ctx(context, s)
    node = _node_bytes(node_id)
    if value is not None and not PyBytes_Check(value):
        raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
    return _event(dvv_sync(ctx, s), node, value)


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


def merge_contexts(a, b):
    """The join of two encoded contexts, encoded."""
    cdef DVVSet ca = _ctx(a)
    return dvv_sync(ca, _ctx(b, ca)).context()


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


def update_encoded(server, context, value, node_id):
    """update on an encoded server set (None = absent); returns the new encoding."""
    cdef DVVSet s = _EMPTY if server is None else _dec(server, "server")
    return update(s, context, value, node_id).encode()


def is_tombstone_encoded(data) -> bool:
    """``DVVSet.decode(data).is_tombstone()`` without building the set: walks the encoded
    form (see the format in dvv.pxd) in C. For the replica's write path, which asks it on
    every write. ValueError on a truncated buffer; other malformations are the decoder's job."""
    if not PyBytes_CheckExact(data):
        return DVVSet.decode(data).is_tombstone()
    cdef const uint8_t *p = <const uint8_t *><char *>data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t pos = 3
    cdef uint32_t entries, e, sibs, s, vlen
    cdef bint seen = False
    if n < 3:
        raise ValueError("truncated DVV set")
    entries = p[1] | (<uint32_t>p[2] << 8)
    for e in range(entries):
        if pos + 1 > n:
            raise ValueError("truncated DVV set")
        pos += 1 + p[pos] + 8  # node id, counter
        if pos + 4 > n:
            raise ValueError("truncated DVV set")
        sibs = (p[pos] | (<uint32_t>p[pos + 1] << 8) | (<uint32_t>p[pos + 2] << 16)
                | (<uint32_t>p[pos + 3] << 24))
        pos += 4
        for s in range(sibs):
            if pos + 5 > n:
                raise ValueError("truncated DVV set")
            if p[pos] != 1:
                return False
            vlen = (p[pos + 1] | (<uint32_t>p[pos + 2] << 8) | (<uint32_t>p[pos + 3] << 16)
                    | (<uint32_t>p[pos + 4] << 24))
            pos += 5 + vlen
            seen = True
    return seen
