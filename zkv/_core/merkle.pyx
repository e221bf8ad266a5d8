# cython: language_level=3
"""Per-partition Merkle trees for anti-entropy: which key-hash segments two replicas disagree on.

Design (riak_core ``hashtree.erl``; Merkle, "A Digital Signature Based on a Conventional
Encryption Function", CRYPTO '87; DeCandia et al., "Dynamo", SOSP 2007, section 4.7). One tree
per (partition, replica). A key is placed by its 64-bit hash ``h`` (murmur3 x64_128, first
half, seed 0: the same ``zkv_hash64`` the ring uses, whose top ``q_bits`` name the partition);
the leaves cut the partition's hash space into ``2**leaf_bits`` contiguous segments, leaf =
``(h << q_bits) >> (64 - leaf_bits)``. A leaf's hash is the sum mod 2**128 of its entries'
128-bit digests; an entry digest folds the 16-byte version digest into the key's murmur3
x64_128 and re-finalises (``zkv_merkle_entry``): the key is hashed once (that hash also places
it), nothing is allocated or concatenated. Addition makes a leaf independent of insertion order and
makes remove the exact inverse of insert, so a replica updates its tree in O(1) per write
(``replace(key, old, new)``) instead of rehashing a segment as ``hashtree.erl`` does. Inner
levels (fanout ``2**fanout_bits``; the root's may be smaller when fanout_bits does not divide
leaf_bits) hash the concatenation of their children's 16-byte hashes with blake3, truncated to
16 bytes; a node whose children are all zero is zero, so an empty leaf and any all-empty subtree
hash to 16 zero bytes and empty trees agree whatever their history. Inner hashes are lazy: a
write marks its leaf's parent dirty; ``root()``/``level_hashes()``/``diff()`` recompute only the
dirty paths, bottom-up, and stop climbing where a recomputed hash did not change.

``diff(remote)`` is ``hashtree:compare``: it asks the remote side (any function, so the exchange
does not depend on the transport) for the root, then level by level for the children of the
nodes that differ, one call per level, and returns the differing leaves. The additive leaf is
not collision-resistant against an adversary choosing keys and versions; replicas are trusted,
and an accidental collision needs two 128-bit sums to agree.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from zkv._core.murmur3 cimport zkv_murmur3_x64_128

import blake3 as _blake3_mod

cdef extern from "murmur3.h" nogil:
    uint64_t zkv_rotl64(uint64_t x, signed char r)
    uint64_t zkv_fmix64(uint64_t k)
    uint64_t zkv_load64le(const uint8_t *p)

cdef extern from "Python.h":
    # borrowed-pointer forms of the bytes macros, for the rebuild loop
    bint _bytes_check "PyBytes_Check"(PyObject *o) nogil
    char *_bytes_str "PyBytes_AS_STRING"(PyObject *o) nogil
    Py_ssize_t _bytes_len "PyBytes_GET_SIZE"(PyObject *o) nogil
    PyObject **PySequence_Fast_ITEMS(object o)
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    object PySequence_Fast(object o, const char *m)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    void *PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)  # borrowed

cdef uint8_t ZERO16[16]  # static storage: all zero

WIRE_VERSION = MERKLE_WIRE_VERSION


# ---------------------------------------------------------------------------------------------
# Entry digest and leaf arithmetic (pure C, nogil)
# ---------------------------------------------------------------------------------------------

cdef extern from *:
    void __builtin_prefetch(const void *addr) nogil

cdef enum:
    PREFETCH_AHEAD = 16  # items ahead to prefetch in the rebuild loop


cdef inline void _store64le(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (8 * i))


cdef inline void zkv_merkle_entry(uint64_t h1, uint64_t h2, const uint8_t *vd,
                                  uint64_t *e0, uint64_t *e1) noexcept nogil:
    """Entry digest of a key hashing to (h1, h2) = murmur3 x64_128(key) with version digest vd.

    Each 8-byte half of vd is rotated (31 and 33 bits, murmur3's block rotations: so a digest
    that happens to equal the key's own hash does not cancel it) and xored into its hash lane;
    the pair is re-finalised with murmur3's 128-bit finalisation (h1 += h2; h2 += h1; fmix64
    both; h1 += h2; h2 += h1), a bijection that spreads every input bit over both lanes. Four
    multiplies, no allocation: for a fixed key distinct versions give distinct digests, and
    for a fixed version distinct 128-bit key hashes do. (Premultiplying the halves as murmur3's
    body does added nothing the finalisation does not, and cost 8% of a rebuild.)
    """
    cdef uint64_t a = h1 ^ zkv_rotl64(zkv_load64le(vd), 31)
    cdef uint64_t b = h2 ^ zkv_rotl64(zkv_load64le(vd + 8), 33)
    a += b
    b += a
    a = zkv_fmix64(a)
    b = zkv_fmix64(b)
    a += b
    b += a
    e0[0] = a
    e1[0] = b


cdef inline void _leaf_add(uint64_t *s, uint64_t e0, uint64_t e1, bint sub) noexcept nogil:
    """s[0:2] (lo, hi) += or -= (e0, e1), mod 2**128."""
    cdef uint64_t lo = s[0]
    if sub:
        s[0] = lo - e0
        s[1] = s[1] - e1 - (lo < e0)
    else:
        lo = lo + e0
        s[1] = s[1] + e1 + (lo < e0)
        s[0] = lo


# ---------------------------------------------------------------------------------------------
# Borrowing bytes-like arguments without copying
# ---------------------------------------------------------------------------------------------

cdef struct Arg:
    const uint8_t *p
    Py_ssize_t n
    bint has_view
    Py_buffer view


cdef inline int _arg_get(object o, Arg *a) except -1:
    if PyBytes_Check(o):
        a.p = <const uint8_t *>PyBytes_AS_STRING(o)
        a.n = PyBytes_GET_SIZE(o)
        a.has_view = False
        return 0
    PyObject_GetBuffer(o, &a.view, PyBUF_SIMPLE)  # TypeError for non-bytes-like
    a.p = <const uint8_t *>a.view.buf
    a.n = a.view.len
    a.has_view = True
    return 0


cdef inline void _arg_release(Arg *a) noexcept:
    if a.has_view:
        a.has_view = False
        PyBuffer_Release(&a.view)


cdef inline int _check_vdigest(Arg *a) except -1:
    if a.n != MERKLE_VDIGEST_BYTES:
        raise ValueError(f"version digest must be {MERKLE_VDIGEST_BYTES} bytes, got {a.n}")
    return 0


# ---------------------------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------------------------

cdef class MerkleTree:
    def __cinit__(self, int q_bits=8, int leaf_bits=10, int fanout_bits=4):
        cdef int L
        cdef Py_ssize_t inner = 0
        if leaf_bits < 1 or leaf_bits > MERKLE_MAX_LEAF_BITS:
            raise ValueError(f"leaf_bits must be in 1..{MERKLE_MAX_LEAF_BITS}, got {leaf_bits}")
        if q_bits < 0 or q_bits + leaf_bits > 64:
            raise ValueError(f"q_bits must be >= 0 with q_bits + leaf_bits <= 64, got {q_bits}")
        if fanout_bits < 1 or fanout_bits > MERKLE_MAX_FANOUT_BITS:
            raise ValueError(f"fanout_bits must be in 1..{MERKLE_MAX_FANOUT_BITS}, got {fanout_bits}")
        self.q_bits = q_bits
        self.leaf_bits = leaf_bits
        self.fanout_bits = fanout_bits
        self.depth = (leaf_bits + fanout_bits - 1) // fanout_bits
        self.leaves = (<Py_ssize_t>1) << leaf_bits
        self.leaf_shift = 64 - leaf_bits
        for L in range(self.depth + 1):
            self.bits[L] = max(0, leaf_bits - (self.depth - L) * fanout_bits)
        for L in range(self.depth):
            self.node_off[L] = inner
            self.n_dirty[L] = 0
            inner += (<Py_ssize_t>1) << self.bits[L]
        self.sums = <uint64_t *>PyMem_Calloc(2 * self.leaves, sizeof(uint64_t))
        self.nodes = <uint8_t *>PyMem_Calloc(inner, MERKLE_HASH_BYTES)
        self.dirty = <uint8_t *>PyMem_Calloc(inner, 1)
        self.dirty_list = <uint32_t *>PyMem_Malloc(inner * sizeof(uint32_t))
        self.scratch = <uint8_t *>PyMem_Malloc(
            MERKLE_HASH_BYTES * ((<Py_ssize_t>1) << min(fanout_bits, leaf_bits)))
        if (self.sums == NULL or self.nodes == NULL or self.dirty == NULL
                or self.dirty_list == NULL or self.scratch == NULL):
            raise MemoryError()
        self.any_dirty = False
        self.n_entries = 0
        self._blake3 = _blake3_mod.blake3

    def __dealloc__(self):
        PyMem_Free(self.sums)
        PyMem_Free(self.nodes)
        PyMem_Free(self.dirty)
        PyMem_Free(self.dirty_list)
        PyMem_Free(self.scratch)

    # -- updates ------------------------------------------------------------------------------

    cdef void _mark_leaf(self, uint64_t leaf) noexcept nogil:
        cdef int L = self.depth - 1
        cdef Py_ssize_t parent = <Py_ssize_t>(leaf >> (self.bits[L + 1] - self.bits[L]))
        cdef Py_ssize_t off = self.node_off[L]
        if not self.dirty[off + parent]:
            self.dirty[off + parent] = 1
            self.dirty_list[off + self.n_dirty[L]] = <uint32_t>parent
            self.n_dirty[L] += 1
        self.any_dirty = True

    cdef void _apply_hashed(self, uint64_t h1, uint64_t h2, const uint8_t *vd,
                                   bint sub) noexcept nogil:
        cdef uint64_t e0, e1
        cdef uint64_t leaf = (h1 << self.q_bits) >> self.leaf_shift
        zkv_merkle_entry(h1, h2, vd, &e0, &e1)
        _leaf_add(self.sums + 2 * leaf, e0, e1, sub)
        self.n_entries += -1 if sub else 1
        self._mark_leaf(leaf)

    cdef void _apply(self, const uint8_t *key, size_t klen, const uint8_t *vd,
                     bint sub) noexcept nogil:
        cdef uint64_t h[2]
        zkv_murmur3_x64_128(key, klen, 0, h)
        self._apply_hashed(h[0], h[1], vd, sub)

    cdef int _one(self, object key, object vdigest, bint sub) except -1:
        cdef Arg k, v
        k.has_view = False
        v.has_view = False
        try:
            _arg_get(key, &k)
            _arg_get(vdigest, &v)
            _check_vdigest(&v)
            self._apply(k.p, <size_t>k.n, v.p, sub)
        finally:
            _arg_release(&k)
            _arg_release(&v)
        return 0

    def insert(self, key, vdigest):
        self._one(key, vdigest, False)

    def remove(self, key, vdigest):
        self._one(key, vdigest, True)

    def replace(self, key, old, new):
        cdef Arg k, o, n
        cdef uint64_t h[2]
        k.has_view = False
        o.has_view = False
        n.has_view = False
        try:
            _arg_get(key, &k)
            if old is not None:
                _arg_get(old, &o)
                _check_vdigest(&o)
            if new is not None:
                _arg_get(new, &n)
                _check_vdigest(&n)
            zkv_murmur3_x64_128(k.p, <size_t>k.n, 0, h)
            if old is not None:
                self._apply_hashed(h[0], h[1], o.p, True)
            if new is not None:
                self._apply_hashed(h[0], h[1], n.p, False)
        finally:
            _arg_release(&k)
            _arg_release(&o)
            _arg_release(&n)

    def replace_versions(self, key, old_version, new_version):
        """:meth:`replace` with the version digests computed here, in one C call: each digest is
        murmur3 x64_128 of the stored version bytes (== ``mmh3.hash_bytes(version)``). ``None``
        or empty means no version. The write path of a replica calls this on every write."""
        cdef Arg k, o, n
        cdef uint64_t h[2]
        cdef uint64_t d[2]
        cdef uint8_t vd[16]
        k.has_view = False
        o.has_view = False
        n.has_view = False
        try:
            _arg_get(key, &k)
            if old_version:
                _arg_get(old_version, &o)
            if new_version:
                _arg_get(new_version, &n)
            zkv_murmur3_x64_128(k.p, <size_t>k.n, 0, h)
            if old_version:
                zkv_murmur3_x64_128(o.p, <size_t>o.n, 0, d)
                _store64le(vd, d[0])
                _store64le(vd + 8, d[1])
                self._apply_hashed(h[0], h[1], vd, True)
            if new_version:
                zkv_murmur3_x64_128(n.p, <size_t>n.n, 0, d)
                _store64le(vd, d[0])
                _store64le(vd + 8, d[1])
                self._apply_hashed(h[0], h[1], vd, False)
        finally:
            _arg_release(&k)
            _arg_release(&o)
            _arg_release(&n)

    cdef Py_ssize_t _fast_run(self, PyObject **kp, PyObject **vp, Py_ssize_t i,
                              Py_ssize_t n) noexcept nogil:
        # The rebuild loop: items i.. while they are (bytes, 16-byte bytes); returns where it
        # stopped. Borrowed pointers, no refcounting, tree fields cached in locals.
        cdef uint64_t h[2]
        cdef uint64_t e0, e1, leaf
        cdef uint64_t *sums = self.sums
        cdef int q = self.q_bits
        cdef int ls = self.leaf_shift
        cdef int pshift = self.bits[self.depth] - self.bits[self.depth - 1]
        cdef Py_ssize_t off = self.node_off[self.depth - 1]
        cdef uint8_t *dirty = self.dirty + off
        cdef uint32_t *dlist = self.dirty_list + off
        cdef Py_ssize_t nd = self.n_dirty[self.depth - 1]
        cdef Py_ssize_t start = i
        cdef Py_ssize_t parent
        cdef PyObject *ko
        cdef PyObject *vo
        while i < n:
            if i + PREFETCH_AHEAD < n:
                # the keys and digests are separate objects scattered over the heap: ask for
                # them (header and payload) early so the loop is not a chain of cache misses
                __builtin_prefetch(kp[i + PREFETCH_AHEAD])
                __builtin_prefetch(<char *>kp[i + PREFETCH_AHEAD] + 48)
                __builtin_prefetch(vp[i + PREFETCH_AHEAD])
                __builtin_prefetch(<char *>vp[i + PREFETCH_AHEAD] + 48)
            ko = kp[i]
            vo = vp[i]
            if not (_bytes_check(ko) and _bytes_check(vo) and _bytes_len(vo) == MERKLE_VDIGEST_BYTES):
                break
            zkv_murmur3_x64_128(_bytes_str(ko), <size_t>_bytes_len(ko), 0, h)
            zkv_merkle_entry(h[0], h[1], <const uint8_t *>_bytes_str(vo), &e0, &e1)
            leaf = (h[0] << q) >> ls
            _leaf_add(sums + 2 * leaf, e0, e1, False)
            parent = <Py_ssize_t>(leaf >> pshift)
            if not dirty[parent]:
                dirty[parent] = 1
                dlist[nd] = <uint32_t>parent
                nd += 1
            i += 1
        self.n_dirty[self.depth - 1] = nd
        if nd:
            self.any_dirty = True
        self.n_entries += i - start
        return i

    def insert_many(self, keys, vdigests):
        cdef object ks = PySequence_Fast(keys, b"keys must be a sequence")
        cdef object vs = PySequence_Fast(vdigests, b"vdigests must be a sequence")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(ks)
        cdef Py_ssize_t i = 0
        cdef Arg k, v
        if PySequence_Fast_GET_SIZE(vs) != n:
            raise ValueError("keys and vdigests differ in length")
        k.has_view = False
        v.has_view = False
        try:
            while True:
                i = self._fast_run(PySequence_Fast_ITEMS(ks), PySequence_Fast_ITEMS(vs), i, n)
                if i >= n:
                    break
                # not (bytes, 16-byte bytes): the general bytes-like path, same arithmetic
                _arg_get(<object>PySequence_Fast_GET_ITEM(ks, i), &k)
                _arg_get(<object>PySequence_Fast_GET_ITEM(vs, i), &v)
                _check_vdigest(&v)
                self._apply(k.p, <size_t>k.n, v.p, False)
                _arg_release(&k)
                _arg_release(&v)
                i += 1
                if PySequence_Fast_GET_SIZE(ks) != n or PySequence_Fast_GET_SIZE(vs) != n:
                    raise RuntimeError("insert_many: a sequence changed size while being read")
        except BaseException:
            # Undo entries 0..i-1 (subtraction is exact): a bad batch leaves the tree unchanged.
            _arg_release(&k)
            _arg_release(&v)
            self._undo(ks, vs, i)
            raise

    cdef void _undo(self, object ks, object vs, Py_ssize_t upto) noexcept:
        cdef Py_ssize_t j
        cdef Arg k, v
        upto = min(upto, PySequence_Fast_GET_SIZE(ks), PySequence_Fast_GET_SIZE(vs))
        for j in range(upto):
            # these items were accepted once, so they are bytes-like with 16-byte digests
            k.has_view = False
            v.has_view = False
            try:
                _arg_get(<object>PySequence_Fast_GET_ITEM(ks, j), &k)
                _arg_get(<object>PySequence_Fast_GET_ITEM(vs, j), &v)
                if v.n == MERKLE_VDIGEST_BYTES:
                    self._apply(k.p, <size_t>k.n, v.p, True)
            except Exception:
                pass
            _arg_release(&k)
            _arg_release(&v)

    def clear(self):
        cdef int L
        cdef Py_ssize_t inner = self.node_off[self.depth - 1] + ((<Py_ssize_t>1) << self.bits[self.depth - 1])
        memset(self.sums, 0, 2 * self.leaves * sizeof(uint64_t))
        memset(self.nodes, 0, inner * MERKLE_HASH_BYTES)
        memset(self.dirty, 0, inner)
        for L in range(self.depth):
            self.n_dirty[L] = 0
        self.any_dirty = False
        self.n_entries = 0

    def count(self):
        return self.n_entries

    # -- placement ----------------------------------------------------------------------------

    def leaf_of(self, key):
        cdef Arg k
        k.has_view = False
        _arg_get(key, &k)
        cdef uint64_t h[2]
        zkv_murmur3_x64_128(k.p, <size_t>k.n, 0, h)
        _arg_release(&k)
        return (h[0] << self.q_bits) >> self.leaf_shift

    def leaf_of_hash(self, h):
        if type(h) is not int or not 0 <= h < (1 << 64):  # (1.5 was taken as leaf 0)
            raise ValueError(f"hash must be an unsigned 64-bit int, got {h!r}")
        cdef uint64_t hv = h
        return (hv << self.q_bits) >> self.leaf_shift

    # -- hashes -------------------------------------------------------------------------------

    cdef int _recompute(self) except -1:
        cdef int L, cshift
        cdef Py_ssize_t i, c, nchild, off, poff, parent, nbytes
        cdef const uint8_t *buf
        cdef uint8_t *slot
        cdef uint64_t *s
        cdef bint zero, changed
        cdef bytes d
        if not self.any_dirty:
            return 0
        for L in range(self.depth - 1, -1, -1):
            cshift = self.bits[L + 1] - self.bits[L]
            nchild = (<Py_ssize_t>1) << cshift
            nbytes = nchild * MERKLE_HASH_BYTES
            off = self.node_off[L]
            # Pop from the end, and only once the node is done: if blake3 raises, every node
            # still listed is still flagged, so the dirty list never holds a node twice.
            while self.n_dirty[L] > 0:
                i = self.dirty_list[off + self.n_dirty[L] - 1]
                if L + 1 == self.depth:
                    s = self.sums + 2 * (i << cshift)
                    for c in range(nchild):
                        _store64le(self.scratch + 16 * c, s[2 * c])
                        _store64le(self.scratch + 16 * c + 8, s[2 * c + 1])
                    buf = self.scratch
                else:
                    buf = self.nodes + (self.node_off[L + 1] + (i << cshift)) * MERKLE_HASH_BYTES
                zero = True
                for c in range(nchild):
                    if memcmp(buf + 16 * c, ZERO16, 16) != 0:
                        zero = False
                        break
                slot = self.nodes + (off + i) * MERKLE_HASH_BYTES
                changed = False
                if zero:
                    if memcmp(slot, ZERO16, 16) != 0:
                        memset(slot, 0, 16)
                        changed = True
                else:
                    d = self._blake3(PyMemoryView_FromMemory(<char *>buf, nbytes, PyBUF_READ)).digest(16)
                    if memcmp(slot, PyBytes_AS_STRING(d), 16) != 0:
                        memcpy(slot, PyBytes_AS_STRING(d), 16)
                        changed = True
                if changed and L > 0:
                    poff = self.node_off[L - 1]
                    parent = i >> (self.bits[L] - self.bits[L - 1])
                    if not self.dirty[poff + parent]:
                        self.dirty[poff + parent] = 1
                        self.dirty_list[poff + self.n_dirty[L - 1]] = <uint32_t>parent
                        self.n_dirty[L - 1] += 1
                self.dirty[off + i] = 0
                self.n_dirty[L] -= 1
        self.any_dirty = False
        return 0

    cdef void _node(self, int level, Py_ssize_t i, uint8_t *out) noexcept nogil:
        if level == self.depth:
            _store64le(out, self.sums[2 * i])
            _store64le(out + 8, self.sums[2 * i + 1])
        else:
            memcpy(out, self.nodes + (self.node_off[level] + i) * MERKLE_HASH_BYTES, 16)

    cdef Py_ssize_t _check_index(self, int level, object idx) except -1:
        cdef Py_ssize_t i
        try:
            i = idx
        except (TypeError, OverflowError):
            raise ValueError(f"node index must be an int, got {idx!r}") from None
        if i < 0 or i >= ((<Py_ssize_t>1) << self.bits[level]):
            raise ValueError(f"node {i} out of range at level {level} "
                             f"({(<Py_ssize_t>1) << self.bits[level]} nodes)")
        return i

    cdef int _check_level(self, object level) except -1:
        if not isinstance(level, int) or not 0 <= level <= self.depth:
            raise ValueError(f"level must be in 0..{self.depth}, got {level!r}")
        return level

    def root(self):
        cdef uint8_t out[16]
        self._recompute()
        self._node(0, 0, out)
        return PyBytes_FromStringAndSize(<char *>out, 16)

    def level_hashes(self, level, indices):
        cdef int L = self._check_level(level)
        cdef uint8_t out[16]
        cdef Py_ssize_t i
        cdef list res = []
        idx = [self._check_index(L, x) for x in indices]
        if L < self.depth:
            self._recompute()
        for i in idx:
            self._node(L, i, out)
            res.append(PyBytes_FromStringAndSize(<char *>out, 16))
        return res

    def encode_level(self, level, indices):
        cdef int L = self._check_level(level)
        cdef Py_ssize_t i, n, k = 0
        idx = [self._check_index(L, x) for x in indices]
        n = len(idx)
        if n > 0xFFFFFFFF:
            raise ValueError("too many nodes for one message")
        if L < self.depth:
            self._recompute()
        cdef bytes out = PyBytes_FromStringAndSize(NULL, MERKLE_WIRE_HEADER + 16 * n)
        cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
        p[0] = MERKLE_WIRE_VERSION
        for k in range(4):
            p[1 + k] = <uint8_t>((<uint64_t>n) >> (8 * k))
        p += MERKLE_WIRE_HEADER
        for i in idx:
            self._node(L, i, p)
            p += 16
        return out

    @staticmethod
    def decode_level(data):
        cdef Arg a
        cdef Py_ssize_t count, k
        cdef list res = []
        a.has_view = False
        try:
            try:
                _arg_get(data, &a)
            except TypeError:
                raise ValueError("level message must be bytes-like") from None
            if a.n < MERKLE_WIRE_HEADER:
                raise ValueError(f"level message too short ({a.n} bytes)")
            if a.p[0] != MERKLE_WIRE_VERSION:
                raise ValueError(f"unknown level message version {a.p[0]}")
            count = (<Py_ssize_t>a.p[1] | (<Py_ssize_t>a.p[2] << 8) | (<Py_ssize_t>a.p[3] << 16)
                     | (<Py_ssize_t>a.p[4] << 24))
            if a.n - MERKLE_WIRE_HEADER != 16 * count:
                raise ValueError(f"level message of {a.n} bytes does not hold {count} hashes")
            for k in range(count):
                res.append(PyBytes_FromStringAndSize(
                    <const char *>a.p + MERKLE_WIRE_HEADER + 16 * k, 16))
        finally:
            _arg_release(&a)
        return res

    # -- exchange -----------------------------------------------------------------------------

    def diff(self, remote):
        cdef int L = 0
        cdef int cshift
        cdef uint8_t mine[16]
        cdef Arg a
        cdef Py_ssize_t i, c
        cdef list want = [0]
        cdef list differing
        self._recompute()
        while True:
            theirs = remote(L, list(want))
            try:
                theirs = list(theirs)
            except TypeError:
                raise ValueError("remote must return a list of hashes") from None
            if len(theirs) != len(want):
                raise ValueError(f"remote returned {len(theirs)} hashes for {len(want)} nodes")
            differing = []
            for i, h in zip(want, theirs, strict=True):
                a.has_view = False
                try:
                    _arg_get(h, &a)
                except TypeError:
                    raise ValueError("remote hashes must be bytes") from None
                try:
                    if a.n != MERKLE_HASH_BYTES:
                        raise ValueError(f"remote hash of {a.n} bytes")
                    self._node(L, i, mine)
                    if memcmp(mine, a.p, 16) != 0:
                        differing.append(i)
                finally:
                    _arg_release(&a)
            if L == self.depth or not differing:
                return differing
            cshift = self.bits[L + 1] - self.bits[L]
            want = []
            for i in differing:
                for c in range(i << cshift, (i + 1) << cshift):
                    want.append(c)
            L += 1

    def __repr__(self):
        return (f"MerkleTree(q_bits={self.q_bits}, leaf_bits={self.leaf_bits}, "
                f"fanout_bits={self.fanout_bits}, entries={self.n_entries})")
