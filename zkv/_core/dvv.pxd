# dvv.pxd -- cimport-able declarations of zkv's dotted version vector sets (see dvv.pyx).
#
# Byte formats (defined here once; dvv.pyx implements exactly this; integers little-endian):
#
#   DVVSet, format version 1                          bytes
#     version                                         u8     = 1
#     entry count E                                   u16    0..65535
#     E x entry, node ids strictly ascending (bytewise):
#       node-id length L                              u8     1..255
#       node id                                       L      UTF-8
#       counter n                                     u64    1..2**63-1; i:1..n is in the causal past
#       sibling count S                               u32    0..n
#       S x sibling, newest first (dots (i,n), (i,n-1), ... (i,n-S+1)):
#         flag                                        u8     0 = value, 1 = tombstone (delete)
#         value length V                              u32    0 for a tombstone
#         value                                       V
#     nothing after the last entry
#
#   Context (the client's opaque token: the version vector a DVVSet has seen), version 1
#     version                                         u8     = 1
#     pair count P                                    u16    0..65535
#     P x pair, node ids strictly ascending (bytewise):
#       node-id length L                              u8     1..255
#       node id                                       L      UTF-8
#       counter                                       u64    1..2**63-1
#     nothing after the last pair
#   The empty byte string b"" is also accepted as a context: the empty vector (blind write).
#
# Canonical: for both formats one value has exactly one encoding; decoders reject
# everything else (unsorted or duplicate ids, counter 0, S > n, bad flag, trailing bytes).
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint32_t

# Entries and siblings kept inside the object itself (no malloc) up to these counts.
cdef enum:
    DVV_FORMAT_VERSION = 1     # first byte of both formats
    DVV_INLINE_ENTRIES = 4
    DVV_INLINE_VALUES = 8

cdef struct DVVEntry:
    PyObject *node      # owned ref: node id as UTF-8 bytes (interned, so equal ids are usually one object)
    int64_t counter     # n >= 1: dots i:1..n are all in the causal past
    uint32_t first      # index in DVVSet.vals of this entry's newest sibling (dot (i, n))
    uint32_t count      # sibling count S, 0..n; sibling s has dot (i, n - s)

cdef class DVVSet:
    cdef DVVEntry *ents                         # n_entries entries sorted by node id; points to _ie or malloc
    cdef Py_ssize_t n_entries                   # number of entries
    cdef PyObject **vals                        # owned refs: all siblings (bytes, or None = tombstone), entry order, newest first
    cdef Py_ssize_t n_vals                      # number of siblings
    cdef Py_hash_t _hash                        # cached hash, -1 = not computed
    cdef bytes _enc                             # cached encode(), None = not computed
    cdef DVVEntry _ie[DVV_INLINE_ENTRIES]       # inline entry storage
    cdef PyObject *_iv[DVV_INLINE_VALUES]       # inline sibling storage

    cpdef bytes encode(self)
    cpdef bytes context(self)

# C-level entry points for other Cython modules (same semantics as the Python functions).
cdef DVVSet dvv_sync(DVVSet a, DVVSet b)
cdef DVVSet dvv_decode(const unsigned char *buf, Py_ssize_t size)
cdef DVVSet dvv_decode_context(const unsigned char *buf, Py_ssize_t size)
cdef bint dvv_descends(DVVSet a, DVVSet b)
