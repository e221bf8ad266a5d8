# merkle.pxd -- cimport-able declarations of the per-partition anti-entropy Merkle tree.
#
# Shape (see merkle.pyx for the algorithm and merkle.pyi for the Python contract):
#   level `depth` = leaves: 2**leaf_bits contiguous segments of the partition's key-hash space;
#   level L < depth has 2**bits[L] nodes, bits[L] = max(0, leaf_bits - (depth - L) * fanout_bits),
#   so every level has fanout 2**fanout_bits except the root's, which may be shorter.
#
# Formats (all integers little-endian):
#   leaf hash    16 B  sum mod 2**128 of the entry digests of the leaf's entries (lo u64, hi u64)
#   entry digest 16 B  (h1, h2) = murmur3 x64_128(key); lanes xored with the 8-byte halves of
#                      the version digest rotated by 31 / 33, then murmur3's 128-bit finalisation
#                      (zkv_merkle_entry in merkle.pyx)
#   inner hash   16 B  blake3(concatenated children hashes)[:16]; all-zero children -> 16 zero B
#   level wire    1 B  format version (MERKLE_WIRE_VERSION)
#                 4 B  u32 count
#           count*16 B node hashes, in the order requested
cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    MERKLE_HASH_BYTES = 16      # every node, leaf and entry digest is 16 bytes
    MERKLE_VDIGEST_BYTES = 16   # a version digest (summary of a key's DVV set) is 16 bytes
    MERKLE_WIRE_VERSION = 1     # first byte of encode_level's output
    MERKLE_WIRE_HEADER = 5      # version byte + u32 count
    MERKLE_MAX_LEAF_BITS = 24   # 16 Mi leaves (256 MiB of leaf sums): beyond that, split partitions
    MERKLE_MAX_FANOUT_BITS = 16 # a node hashes at most 64 Ki children (1 MiB) at once
    MERKLE_MAX_LEVELS = 25      # depth + 1 <= MERKLE_MAX_LEAF_BITS + 1

@cython.final
cdef class MerkleTree:
    cdef readonly int q_bits       # top bits of the key hash that name the partition (ignored here)
    cdef readonly int leaf_bits    # leaves = 2**leaf_bits
    cdef readonly int fanout_bits  # inner fanout = 2**fanout_bits (the root's may be smaller)
    cdef readonly int depth        # levels above the leaves; root at 0, leaves at `depth`
    cdef readonly Py_ssize_t leaves  # number of leaves
    cdef int leaf_shift            # 64 - leaf_bits: leaf = (h << q_bits) >> leaf_shift
    cdef int64_t n_entries         # insert +1, remove -1
    cdef uint64_t *sums            # 2 * leaves u64: (lo, hi) running sum per leaf
    cdef uint8_t *nodes            # inner hashes, levels 0..depth-1 back to back, 16 B each
    cdef uint8_t *dirty            # one flag per inner node, same indexing as `nodes`
    cdef uint32_t *dirty_list      # per inner level, indices of dirty nodes (each once)
    cdef uint8_t *scratch          # (2**fanout_bits) * 16 B: children of the node being hashed
    cdef int bits[MERKLE_MAX_LEVELS]            # log2(node count) of each level
    cdef Py_ssize_t node_off[MERKLE_MAX_LEVELS] # first node of each inner level in `nodes`/`dirty`
    cdef Py_ssize_t n_dirty[MERKLE_MAX_LEVELS]  # length of each inner level's dirty list
    cdef bint any_dirty            # some leaf changed since the last recompute
    cdef object _blake3            # the blake3.blake3 constructor

    # Mark leaf `leaf`'s parent dirty (pushes it on the deepest inner level's dirty list).
    cdef void _mark_leaf(self, uint64_t leaf) noexcept nogil
    # Fold an entry whose key hashed to (h1, h2) into / out of its leaf; counts it.
    cdef void _apply_hashed(self, uint64_t h1, uint64_t h2, const uint8_t *vd, bint sub) noexcept nogil
    # insert()/remove() body: borrow key and digest, check the digest size, apply.
    cdef int _one(self, object key, object vdigest, bint sub) except -1
    # insert_many's loop over items i..n-1 that are (bytes, 16-byte bytes); returns where it stopped.
    cdef Py_ssize_t _fast_run(self, PyObject **kp, PyObject **vp, Py_ssize_t i, Py_ssize_t n) noexcept nogil
    # Roll back the first `upto` entries of a failed insert_many (subtraction is exact).
    cdef void _undo(self, object ks, object vs, Py_ssize_t upto) noexcept
    # Argument checks for level_hashes()/encode_level(): ValueError when out of range.
    cdef Py_ssize_t _check_index(self, int level, object idx) except -1
    cdef int _check_level(self, object level) except -1
    # Fold one entry into (sub=False) or out of (sub=True) its leaf; marks the path dirty.
    cdef void _apply(self, const uint8_t *key, size_t klen, const uint8_t *vd, bint sub) noexcept nogil
    # Recompute every dirty inner node, bottom-up (the lazy half of root()/level_hashes()).
    cdef int _recompute(self) except -1
    # Copy node `i` of `level` (leaves included) as 16 canonical bytes into `out`.
    cdef void _node(self, int level, Py_ssize_t i, uint8_t *out) noexcept nogil
