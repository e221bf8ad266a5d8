# keydir.pxd -- the storage engine's in-memory index: key -> latest record location.
#
# A C hash table with no Python object per key. Three flat arrays:
#   index    open-addressing slots (linear probing, power-of-two size, load <= 0.7); a key's
#            home slot is the TOP bits of its *slot hash*, the key hash rotated left by 16
#            (keydir.pyx _mix: not its region bits, so a node holding some partitions only
#            still fills every slot range evenly):
#            uint64 = (top 32 bits of the slot hash) << 32 | (entry number + 1); 0 = empty
#            The tag (top 32 bits) holds the home slot of any table up to 2**32 slots, so a
#            rehash and a delete's backward shift never read the entries.
#   entries  dense array of kd_entry (32 bytes each), in insertion order
#   rnext/rprev  per entry (4 + 4 bytes): its neighbours (entry number + 1; 0 = none) in the
#            doubly linked list of its *region* (the top rbits bits of its key hash: 8..16, a
#            region per 4 slots), whose first entry rhead names (4 bytes a region): a hash
#            range (a ring partition, a Merkle leaf's keys) is read from its regions' lists
#   arena    key bytes, back to back; an entry points at its key by offset
# Memory per key ~ 40 (entry, links) + 9/0.35..0.7 (index, heads) + key length, plus growth
# slack.
# The active segment's write buffer also lives here so append and get are one C call each.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

ctypedef struct kd_entry:
    uint64_t hash        # zkv_hash64(key): bucket, partition / hash-range queries
    uint64_t key_off     # offset of the key bytes in the arena
    uint32_t fid         # in-process segment id (LogStore maps it to a file)
    uint32_t offset      # record offset in that segment
    uint32_t size        # record size in bytes (header + key + stored value)
    uint32_t klen_flags  # key length (low 24 bits) | record flags << 24 (KD_RELEASED in-memory only)

ctypedef struct kd_map:
    const uint8_t *base  # start of the segment's read-only mapping (NULL: not mapped)
    uint64_t length      # mapped bytes

from cpython.pythread cimport PyThread_type_lock

cdef class StoreLock:
    cdef PyThread_type_lock lk   # the mutex (PyThread lock, as threading.Lock uses)
    cdef int held                # 1 between __enter__ and __exit__: fast puts step aside

cdef class KeyDir:
    cdef uint64_t *index          # open-addressing slots
    cdef uint64_t icap            # slots (power of two)
    cdef int ishift               # 64 - log2(icap): home slot = hash >> ishift
    cdef kd_entry *entries        # dense entries
    cdef uint32_t *rnext          # per entry: the next entry + 1 of its region's list (0: last)
    cdef uint32_t *rprev          # per entry: the previous entry + 1 (0: first, rhead names it)
    cdef uint32_t *rhead          # per region (top rbits bits of the hash): first entry + 1
    cdef int rbits                # region bits (8..16, by the table's size: _rbits_for)
    cdef uint64_t n               # entries in use (live + tombstones)
    cdef uint64_t ecap            # entries allocated
    cdef uint8_t *arena           # key bytes
    cdef uint64_t alen            # arena bytes in use
    cdef uint64_t acap            # arena bytes allocated
    cdef uint64_t arena_dead      # arena bytes of removed keys
    cdef uint64_t n_tomb          # entries that are tombstones
    cdef uint64_t live_bytes_     # sum of entry sizes (records the store must keep)
    cdef kd_map *maps             # per fid read mappings
    cdef uint32_t nmaps           # maps allocated
    cdef dict views               # fid -> memoryview keeping each mapping's buffer exported
    cdef list retired             # views of unmapped segments, released at close()
    cdef uint8_t *wbuf            # active segment write buffer (records not yet written to fd)
    cdef uint64_t wlen            # bytes in wbuf
    cdef uint64_t wcap            # wbuf allocated
    cdef uint64_t wbase           # file offset of wbuf[0] in the active segment
    cdef uint64_t wlimit          # flush wbuf to the fd once it holds this many bytes
    cdef uint64_t pend            # allocated end of the active file (>= wbase; zeros past wbase)
    cdef uint64_t pchunk          # preallocation step in bytes (0: none, writes extend the file)
    cdef uint32_t afid            # active segment fid (0xFFFFFFFF: none)
    cdef int afd                  # active segment fd (-1: none)
    cdef uint64_t seq_            # records appended since creation (group commit sequence)
    cdef uint64_t max_key         # largest key accepted by append
    cdef uint64_t max_value       # largest stored value accepted by append
    cdef public object slow       # callable(key, code) for get()'s non-fast cases
    cdef public object slow_put   # callable(key, value) for put()'s non-fast cases
    cdef readonly StoreLock lock  # the owner's store lock; put() appends itself only while free
    cdef public int put_gate      # nonzero: every put() takes slow_put (e.g. keys need repair)
    cdef public int write_errno   # errno of the last failed write-out (0: none since one worked)
    cdef uint64_t seg_limit       # put(): records ending at or past this go to slow_put (rotation)
    cdef uint64_t fast_vmax       # put(): values longer than this go to slow_put (compression)
    # deferred index inserts of records appended to wbuf (see KeyDir._append): the home slot is
    # prefetched at append and the insert done up to KD_PEND appends later, so the cache misses
    # of consecutive puts overlap instead of queueing. Room for them is reserved (entries,
    # arena, slots), so applying them (_drain) never allocates and cannot fail.
    cdef uint64_t pend_h[32]      # key hash of each pending record
    cdef uint64_t pend_w[32]      # its position in wbuf
    cdef uint32_t pend_n          # pending records (0 .. KD_PEND)
    cdef uint64_t pend_kb         # their key bytes

    cdef void _drain(self) noexcept
    cdef int64_t _find(self, const uint8_t *key, uint32_t klen, uint64_t h)
    cdef int _set(self, const uint8_t *key, uint32_t klen, uint64_t h, uint32_t fid,
                  uint32_t offset, uint32_t size, uint32_t flags) except -1
    cdef void _remove_at(self, uint64_t i)
    cdef int _write_buffer(self) noexcept
    cdef int _flush(self) except -1
    cdef void _slot_put(self, uint64_t h, uint64_t idx)
    cdef int _entries_cap(self, uint64_t ncap) except -1
    cdef void _link(self, uint64_t idx, uint64_t h) noexcept
    cdef void _unlink(self, uint64_t idx) noexcept
    cdef int64_t _find_hash(self, uint32_t klen, uint64_t h)
    cdef int _grow_index(self) except -1
    cdef int _resize_index(self, uint64_t ncap) except -1
    cdef int _reserve(self, uint64_t entries, uint64_t key_bytes) except -1
    cdef int _append(self, const uint8_t *kp, uint32_t kl, const uint8_t *vp, uint32_t vl,
                     uint32_t flags) except -1
    cdef int _check_pair(self, object item) except -1
    cdef void _compact_arena(self)
    cdef int64_t _find_obj(self, key) except -2
    cdef bytes _key(self, uint64_t i)
