# ring.pxd -- cimport-able declarations of zkv's fixed-partition consistent-hash ring.
#
# Other Cython code (the coordinator's hot path, embedding tools) does:
#     from zkv._core.ring cimport Ring, partition_of_hash
#     cdef uint32_t p = ring.c_partition(key_ptr, key_len)
#     cdef const uint16_t* pl = ring.c_preflist(p)      # ring.plen node numbers
#     node_id = ring.members[pl[0]]                      # node number -> id
# The Python-facing contract (docstrings) is in ring.pyi; the algorithm is described in ring.pyx.
#
# Fingerprint input (Ring.fingerprint() = blake2b-128 of these bytes; all integers little-endian):
#   magic      8  b"zkvring\x00"
#   version    1  RING_ALGO_VERSION (bump whenever claim or preflist rules change)
#   q          4  number of partitions
#   n          4  replicas wanted
#   m          4  number of members
#   m times, members sorted by id:
#     id_len   2  then id_len bytes of UTF-8 node id
#     rack_len 2  then rack_len bytes of UTF-8 rack name
#   only when some member is placed by a token other than its id (a replacement):
#     b"tokens", then for each such member, sorted by id:
#     id_len   2  then the node id;  token_len 2  then the UTF-8 token
#
# HRW weight of (partition p, node) = zkv_hash64(le64(node_hash) ++ le32(p)): 12 bytes hashed,
# node_hash = zkv_hash64(UTF-8 placement token); the token is the node id unless the ring was
# built with another (a node that replaced another is placed exactly where that one was).

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t

# Version of the claim/preflist algorithm, part of the fingerprint.
cdef enum:
    RING_ALGO_VERSION = 1
    RING_MAX_MEMBERS = 65535    # node numbers are uint16_t
    RING_MAX_Q_BITS = 16        # Q <= 65536

# Partition of a key whose zkv_hash64 is h, for a ring of 2**q_bits partitions (1..16).
cdef inline uint32_t partition_of_hash(uint64_t h, uint32_t q_bits) noexcept nogil:
    return <uint32_t>(h >> (64 - q_bits))


@cython.final
cdef class Ring:
    cdef readonly uint32_t q             # Q, number of partitions (power of two, 2..65536)
    cdef readonly uint32_t q_bits        # log2(Q): partition = hash64 >> (64 - q_bits)
    cdef readonly uint32_t n             # N, replicas wanted per key
    cdef readonly tuple members          # node ids sorted; position i is node number i
    cdef readonly tuple rack_violations  # partitions whose preflist spans < min(n, racks) racks
    cdef uint32_t shift                  # 64 - q_bits
    cdef uint32_t m                      # number of members (1..65535)
    cdef uint32_t plen                   # preflist length: min(n, m)
    cdef uint32_t nracks                 # number of distinct racks
    cdef uint16_t* pref                  # q * plen node numbers; row p = preflist of p, primary first
    cdef uint16_t* rack_of               # m entries: node number -> rack number (racks sorted by name)
    cdef uint64_t* node_hash             # m entries: zkv_hash64(UTF-8 node id), each node's HRW seed
    cdef tuple rack_names                # rack number -> rack name
    cdef dict rack_by_id                 # node id -> rack name
    cdef dict index                      # node id -> node number
    cdef dict token_by_id                # node id -> placement token, only where it is not the id

    # Partition of a key (hash + shift); safe without the GIL.
    cdef uint32_t c_partition(self, const char* key, size_t length) noexcept nogil
    # Preference list of partition p (< q): plen node numbers, primary first. No bounds check.
    cdef const uint16_t* c_preflist(self, uint32_t p) noexcept nogil
    # The first `count` (<= m) nodes of p's full walk order (preflist, then the per-partition
    # fallback order over all other members) into out. Returns count, or 0 if out of memory.
    cdef uint32_t c_walk(self, uint32_t p, uint16_t* out, uint32_t count) noexcept nogil
