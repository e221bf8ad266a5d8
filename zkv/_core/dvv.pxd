# dvv.pxd -- cimport-able declarations of zkv's dotted version vector sets (see dvv.pyx).
#
# Byte formats (defined here once; dvv.pyx implements exactly this; integers little-endian):
#
#   DVVSet, format version 1 (every set before write ids; still the encoding of any set
#   in which no sibling has a write id and every entry's dots are consecutive)   bytes
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
#   DVVSet, format version 2 (a set with at least one write id or one gap)   bytes
#     version                                         u8     = 2
#     entry count E                                   u16    as in version 1
#     E x entry: node-id length, node id, counter n, sibling count S   exactly as in version 1
#       S x sibling, newest first, dots strictly decreasing, all >= 1:
#         flags                                       u8     bit 0 (1) tombstone, bit 1 (2) write id
#                                                            follows, bit 2 (4) gap follows; others 0
#         gap G (only with flag 4)                    u64    1..: G dots skipped above this sibling:
#                                                            its dot is d_prev - 1 - G, where d_prev is
#                                                            the previous sibling's dot (n + 1 for the
#                                                            first); without flag 4, G = 0
#         write-id length W (only with flag 2)        u8     1..32 (DVV_WID_MAX)
#         write id (only with flag 2)                 W      opaque bytes chosen by the client
#         value length V                              u32    0 for a tombstone
#         value                                       V
#     nothing after the last entry
#   A dot of i in 1..n that no sibling carries is in the causal past and not live: overwritten
#   (covered by a write's context) or retired (write-id dedup, LWW collapse, retain); the
#   two are the same state. Version 1 is version 2 with every G = 0 and no write id.
#
#   DVVSet, format version 3 (a set with at least one alias list or retired-wid list)   bytes
#     version                                         u8     = 3
#     entry count E, E x entry                               exactly as in version 2, except:
#       S x sibling, as in version 2 with two more flags and two more optional fields:
#         flags                                       u8     bits 0..2 as in version 2, bit 3 (8)
#                                                            alias list follows, bit 4 (16)
#                                                            retired-wid list follows; others 0
#         gap G (only with flag 4)                    u64    as in version 2
#         write-id length W, write id (flag 2)        1 + W  as in version 2
#         alias count A (only with flag 8)            u8     1..8 (DVV_ALIAS_MAX); needs flag 2
#         A x alias dot, strictly ascending by (node id bytewise, counter), none equal to the
#         sibling's own dot -- the dots of retired copies of this same write (rule D):
#           node-id length L                          u8     1..255
#           node id                                   L      UTF-8
#           counter                                   u64    1..2**63-1
#         retired count R (only with flag 16)         u8     1..4 (DVV_RETIRED_MAX)
#         R x retired write id, distinct, most recently retired first, none equal to the
#         sibling's own write id -- write ids this sibling's write overwrote (an ordered list:
#         its order is part of the value, fixed by the coordinator that made the sibling):
#           write-id length W                         u8     1..32
#           write id                                  W
#         value length V, value                       4 + V  as in version 2
#     nothing after the last entry
#   Versions 1 and 2 are version 3 without aliases or retired wids, and stay the encoding of
#   such sets byte for byte (a version-3 set without either is rejected as not canonical).
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
#   Context, version 2 (a set with write ids: the vector plus the write ids it overwrites)
#     version                                         u8     = 2
#     pair count P, P x pair                                 exactly as in version 1, P >= 1
#     write-id count K                                u8     1..4 (DVV_RETIRED_MAX)
#     K x write id, distinct:
#       write-id length W                             u8     1..32
#       write id                                      W
#     nothing after the last write id
#   The K ids are the retired-wid list a write covering the whole set would carry (its live
#   siblings' write ids bytewise, then the lists they carry; rule R in dvv.pyx). A write
#   made with this context lists them too, so it retires every copy of the writes its client
#   read -- also on a coordinator that holds none of them (issue 10, the late twin).
#   context() writes version 1 when the set has no write id and no retired list.
#
# Canonical: for every format one value has exactly one encoding; decoders reject
# everything else (unsorted or duplicate ids, counter 0, S > n, bad flag, trailing bytes,
# a gap flag with G = 0, a dot below 1, a version-2 set that version 1 can express, a
# version-3 set that version 2 can express, two live siblings with the same write id -- a
# set in which write-id dedup has not been done --, a live sibling whose write id another
# live sibling lists as retired -- rule R not done --, an alias list without a write id).
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t

# Entries and siblings kept inside the object itself (no malloc) up to these counts.
cdef enum:
    DVV_FORMAT_VERSION = 1     # first byte of contexts and of sets without write ids or gaps
    DVV_FORMAT_VERSION_2 = 2   # first byte of sets with a write id or a gap
    DVV_FORMAT_VERSION_3 = 3   # first byte of sets with an alias or a retired-wid list
    DVV_CONTEXT_VERSION_2 = 2  # first byte of contexts that carry write ids
    DVV_WID_MAX = 32           # longest write id, bytes
    DVV_F_TOMBSTONE = 1        # version-2 sibling flags
    DVV_F_WID = 2
    DVV_F_GAP = 4
    DVV_F_ALIAS = 8            # version-3 sibling flags
    DVV_F_RETIRED = 16
    DVV_ALIAS_MAX = 8          # most alias dots a sibling keeps (the smallest, see dvv.pyx)
    DVV_RETIRED_MAX = 4        # most retired write ids a sibling carries
    DVV_INLINE_ENTRIES = 4
    DVV_INLINE_VALUES = 8

cdef struct DVVSlot:
    PyObject *val       # owned ref: the value (bytes), or None = tombstone
    PyObject *wid       # owned ref: the write id (bytes of 1..32), or NULL = none
    int64_t dot         # the sibling's dot is (entry node, dot); 1 <= dot <= entry counter
    PyObject *alias     # owned ref: tuple of (node id bytes, counter) sorted, 1..8, or NULL
    PyObject *rw        # owned ref: tuple of retired write ids (bytes), newest first, 1..4, or NULL

cdef struct DVVEntry:
    PyObject *node      # owned ref: node id as UTF-8 bytes (interned, so equal ids are usually one object)
    int64_t counter     # n >= 1: dots i:1..n are all in the causal past
    uint32_t first      # index in DVVSet.vals of this entry's newest sibling
    uint32_t count      # sibling count S, 0..n; dots strictly decreasing from vals[first]

cdef class DVVSet:
    cdef DVVEntry *ents                         # n_entries entries sorted by node id; points to _ie or malloc
    cdef Py_ssize_t n_entries                   # number of entries
    cdef DVVSlot *vals                          # all siblings, entry order, newest first; _iv or malloc
    cdef Py_ssize_t n_vals                      # number of siblings
    cdef Py_ssize_t n_wids                      # number of siblings with a write id
    cdef Py_ssize_t n_alias                     # number of siblings with an alias list
    cdef Py_ssize_t n_rw                        # number of siblings with a retired-wid list
    cdef Py_hash_t _hash                        # cached hash, -1 = not computed
    cdef bytes _enc                             # cached encode(), None = not computed
    cdef object ctx_wids                        # a decoded version-2 context's write ids (tuple), else None
    cdef DVVEntry _ie[DVV_INLINE_ENTRIES]       # inline entry storage
    cdef DVVSlot _iv[DVV_INLINE_VALUES]         # inline sibling storage

    cpdef bytes encode(self)
    cpdef bytes context(self)

cdef class RetiredWids:
    cdef readonly Py_ssize_t cap                # most write ids remembered
    cdef set _held                              # the (key, write id) digests remembered
    cdef list _ring                             # the same, oldest first: cap slots
    cdef Py_ssize_t _at                         # the ring slot the next pair takes
    cdef uint32_t _seed                         # the digests' seed, drawn per memory (or loaded)
    cdef readonly unsigned long long added      # pairs remembered since made or loaded

    cdef bytes _pair(self, bytes key, const unsigned char *wid, Py_ssize_t n)
    cdef bytes _pair_of(self, const unsigned char *kh, const unsigned char *wid, Py_ssize_t n)
    cdef void _remember(self, bytes pair)

# C-level entry points for other Cython modules (same semantics as the Python functions;
# dvv_sync and dvv_lww_sync raise ValueError for a dot live on both sides under two write ids).
cdef DVVSet dvv_sync(DVVSet a, DVVSet b)
cdef DVVSet dvv_decode(const unsigned char *buf, Py_ssize_t size)
cdef DVVSet dvv_decode_context(const unsigned char *buf, Py_ssize_t size)
cdef bint dvv_descends(DVVSet a, DVVSet b)
cdef DVVSet dvv_update(DVVSet server, DVVSet ctx, object node, object value, object wid)
cdef DVVSet dvv_lww(DVVSet s)
cdef DVVSet dvv_lww_sync(DVVSet a, DVVSet b)
