# cython: language_level=3
"""The storage engine's keydir: a C hash table from key to its latest record's location.

Design (Bitcask, Sheehy & Smith 2010, "Bitcask: A Log-Structured Hash Table for Fast Key/Value
Data"): every live key has one in-memory entry naming the segment file, offset and size of its
latest record, so a read is one lookup plus one read of the record. Here the table is C arrays
(see keydir.pxd for the layout): open addressing with linear probing over a slot array that
holds a 32-bit hash tag and an entry number, dense 32-byte entries, keys in an arena. No Python
object exists per key. Each entry keeps the key's 64-bit hash so anti-entropy and handoff can
list a hash range without rehashing or reading values.

The table also owns the active segment's write buffer and the per-segment read mappings, so
the hot paths are single C calls: ``put``/``append`` (validate, encode, buffer, index) and
``get_value`` (lookup, locate bytes, CRC check, copy out).

Speed comes from the memory system, not the instructions: a put or a hints entry costs one
random probe into a slot array of many MiB. So slot arrays use 2 MiB pages (one TLB entry
covers 256K slots); an append prefetches its home slot and leaves the insert pending until up
to KD_PEND appends later (every reader of the table drains the pending inserts first), so the
misses of consecutive puts overlap; ``load_hints`` reserves room for the file and prefetches
PREFETCH_AHEAD entries ahead; and a slot's tag is the top of the hash, so growing the table
streams the old slots without reading any entry. All methods run under the GIL and
never release it, so each call is atomic with respect to other Python threads. The file I/O
around it (opening, mapping, fsync, hints files, compaction) lives in zkv.storage.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, realloc, free, calloc
from libc.string cimport memcpy, memcmp, memset
from libc.errno cimport errno, EINTR
from posix.types cimport off_t
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE,
                            PyBytes_Check, PyBytes_CheckExact)
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport (PyThread_allocate_lock, PyThread_free_lock, PyThread_release_lock,
                               PyThread_acquire_lock, NOWAIT_LOCK)

from zkv._core.record cimport *
from zkv._core.murmur3 cimport zkv_hash64

from zkv.errors import InvalidRequest

cdef extern from "unistd.h" nogil:
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)

cdef extern from "fcntl.h" nogil:
    int posix_fallocate(int fd, off_t offset, off_t length)

cdef extern from *:
    void __builtin_prefetch(const void *p) nogil

cdef extern from "sys/mman.h" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    void *MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    int MADV_HUGEPAGE

DEF HUGE = 2097152  # slot arrays of this many bytes or more are mmapped, 2 MiB aligned, huge pages


cdef uint64_t *_slots_alloc(uint64_t cap) noexcept nogil:
    """A zeroed array of ``cap`` slots. From HUGE bytes up: its own mapping, aligned to and
    advised for 2 MiB pages. A put or a load probes one random slot per key; with 4 KiB pages
    each such probe into a table of many MiB is a TLB miss as well as a cache miss."""
    cdef size_t n = cap * 8, a
    cdef uint8_t *p
    if n < HUGE:
        return <uint64_t *>calloc(cap, 8)
    p = <uint8_t *>mmap(NULL, n + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if <void *>p == MAP_FAILED:
        return NULL
    a = (HUGE - (<size_t>p & (HUGE - 1))) & (HUGE - 1)  # bytes to the first 2 MiB boundary
    if a:
        munmap(p, a)
    if HUGE - a:
        munmap(p + a + n, HUGE - a)
    madvise(p + a, n, MADV_HUGEPAGE)
    return <uint64_t *>(p + a)


cdef void _slots_free(uint64_t *p, uint64_t cap) noexcept nogil:
    if cap * 8 < HUGE:
        free(p)
    else:
        munmap(p, cap * 8)


cdef extern from "pythread.h":
    int PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                    int intr_flag) nogil

DEF KD_RELEASED = 0x80
DEF RBITS = 16  # the slot hash's rotation (_mix): the finest ring's partition bits
DEF RBITS_MIN = 8  # regions (hash_range's lists): the top rbits bits of a key's hash, rbits
                   # in RBITS_MIN..RBITS by the table's size (_rbits_for)
DEF PREFETCH_AHEAD = 16  # load_hints prefetches the home slot this many keys ahead
DEF KD_GROW_MAX = 8  # preallocation steps one extension of the active file may take at most
DEF KD_PEND = 32  # appends whose index insert may be pending (keydir.pxd: pend_h)
DEF FL_MASK = 0x7F

# get_value() result codes besides bytes / None
NEED_READ = 1     # the record is not in a mapping: read it with pread and decode in Python
CORRUPT = 2       # the record failed its CRC (the caller reports and drops the key)
COMPRESSED = 3    # the value is zstd-compressed: take the slow path
RELEASED = KD_RELEASED


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    """The slot hash of a key hash: rotated left by RBITS, so a key's home slot and tag come
    from the hash's bits below its region (ring partition) bits. Homes on the hash's top bits
    (as before) put a node's keys only in the slot ranges of the partitions it holds, at a
    local load of 0.7 / (the share it holds): linear probing then ran long clusters, and a
    node of a 5-node cluster put 10x slower, of an 8- or 12-node cluster 50-60x slower, and a
    joiner holding a few partitions took hours (an outside capacity run)."""
    return (h << RBITS) | (h >> (64 - RBITS))


cdef inline int _rbits_for(uint64_t icap) noexcept nogil:
    """Region bits for a table of ``icap`` slots: a region per 4 slots (1.4-2.8 keys a list),
    from RBITS_MIN up to RBITS (a region inside the finest ring partition: no list mixes two
    partitions' keys). The heads cost 4 bytes a region: small tables keep few."""
    cdef int b = 0
    while (<uint64_t>1 << (b + 1)) <= icap:
        b += 1
    b -= 2
    return RBITS_MIN if b < RBITS_MIN else (RBITS if b > RBITS else b)


cdef inline uint32_t _klen(const kd_entry *e) noexcept nogil:
    return e.klen_flags & 0xFFFFFF


cdef inline uint32_t _flags(const kd_entry *e) noexcept nogil:
    return e.klen_flags >> 24


cdef uint32_t _damaged_klen(const uint8_t *p, uint64_t region) noexcept:
    """The key length of the damaged record at ``p``, which fills the ``region`` bytes up to
    the next valid record (or the image's end), or 0 if its key cannot be told.

    First a header that a flipped byte of version, flags, reserved, klen or vlen may have
    come from: version 1, reserved 0, flags 0..3, and klen as stored or as the region
    leaves it beside the stored vlen (vlen the rest); one whose CRC matches the stored CRC
    is the record as written, its key certain. Otherwise (the damage is in the body or the
    CRC, or in more than one field) the stored klen, if it fits the region: the key as read.
    0 (nothing fits) leaves the key unknown: its older version, if any, reads again
    (README, "embedded engine")."""
    cdef uint64_t vlen
    cdef uint32_t cands[2]
    cdef uint32_t kl, crc, fl
    cdef uint8_t h[12]
    cdef int c
    if region <= ZKV_REC_HEADER:
        return 0
    cands[0] = zkv_ld32(p + 8)
    vlen = zkv_ld32(p + 12)
    cands[1] = <uint32_t>(region - ZKV_REC_HEADER - vlen) if region > ZKV_REC_HEADER + vlen else 0
    for c in range(2):
        kl = cands[c]
        if kl == 0 or kl > ZKV_REC_MAX_KEY or ZKV_REC_HEADER + <uint64_t>kl > region:
            continue
        for fl in range(4):
            h[0] = ZKV_REC_VERSION; h[1] = <uint8_t>fl; h[2] = 0; h[3] = 0
            zkv_st32(h + 4, kl)
            zkv_st32(h + 8, <uint32_t>(region - ZKV_REC_HEADER - kl))
            crc = zkv_crc32c(0, h, 12)
            crc = zkv_crc32c(crc, p + ZKV_REC_HEADER, region - ZKV_REC_HEADER)
            if crc == zkv_ld32(p):
                return kl
    kl = cands[0]
    if kl == 0 or kl > ZKV_REC_MAX_KEY or ZKV_REC_HEADER + <uint64_t>kl > region:
        return 0
    return kl


cdef class StoreLock:
    """The store's mutex (``with lock:``), visible to C: ``KeyDir.put`` appends by itself only
    while no thread holds it, and otherwise hands the put to the store's locked slow path.

    Like ``threading.Lock`` (not reentrant); a blocked ``acquire`` waits without the GIL and
    still sees KeyboardInterrupt. ``held`` is set by the owner while it holds the GIL, so a C
    fast path that runs under the GIL never interleaves with a critical section."""

    def __cinit__(self):
        self.lk = PyThread_allocate_lock()
        if self.lk == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.lk != NULL:
            PyThread_free_lock(self.lk)

    def acquire(self):
        cdef int r
        if not PyThread_acquire_lock(self.lk, NOWAIT_LOCK):
            while True:
                with nogil:
                    r = PyThread_acquire_lock_timed(self.lk, 50000, 0)
                if r == 1:
                    break
                PyErr_CheckSignals()
        self.held = 1
        return True

    def release(self):
        if not self.held:
            raise RuntimeError("release unlocked lock")
        self.held = 0
        PyThread_release_lock(self.lk)

    def locked(self):
        return self.held != 0

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.held = 0
        PyThread_release_lock(self.lk)


cdef class KeyDir:
    """Key -> (segment fid, offset, size, flags, hash); see the module docstring."""

    def __cinit__(self, uint64_t max_key=65536, uint64_t max_value=16 << 20,
                  uint64_t write_buffer=65536):
        self.icap = 1024
        self.ishift = 64 - 10
        self.index = _slots_alloc(self.icap)
        self.ecap = 512
        self.entries = <kd_entry *>malloc(self.ecap * sizeof(kd_entry))
        self.rnext = <uint32_t *>malloc(self.ecap * 4)
        self.rprev = <uint32_t *>malloc(self.ecap * 4)
        self.rbits = _rbits_for(self.icap)
        self.rhead = <uint32_t *>calloc(<size_t>1 << self.rbits, 4)
        self.acap = 8192
        self.arena = <uint8_t *>malloc(self.acap)
        self.nmaps = 16
        self.maps = <kd_map *>calloc(self.nmaps, sizeof(kd_map))
        self.wcap = write_buffer * 2 if write_buffer else 4096
        self.wbuf = <uint8_t *>malloc(self.wcap)
        if not (self.index and self.entries and self.arena and self.maps and self.wbuf
                and self.rnext and self.rprev and self.rhead):
            raise MemoryError()
        self.wlimit = write_buffer
        self.afid = 0xFFFFFFFF
        self.afd = -1
        self.views = {}
        self.retired = []
        self.max_key = min(max_key, ZKV_REC_MAX_KEY)
        self.max_value = max_value
        self.lock = StoreLock()

    def __dealloc__(self):
        if self.index != NULL:
            _slots_free(self.index, self.icap)
        free(self.entries); free(self.arena); free(self.maps); free(self.wbuf)
        free(self.rnext); free(self.rprev); free(self.rhead)

    # ---------------------------------------------------------------- core table
    cdef void _drain(self) noexcept:
        """Insert the pending appends (in order). Every reader of the table calls this first."""
        cdef uint32_t j, n = self.pend_n, kl
        cdef const uint8_t *rec
        if n == 0:
            return
        self.pend_n = 0
        self.pend_kb = 0
        for j in range(n):
            rec = self.wbuf + self.pend_w[j]
            kl = zkv_ld32(rec + 8)
            # room was reserved when the record was deferred: this _set cannot allocate
            self._set(rec + 16, kl, self.pend_h[j], self.afid, <uint32_t>(self.wbase + self.pend_w[j]),
                      ZKV_REC_HEADER + kl + zkv_ld32(rec + 12), rec[5])

    cdef int64_t _find(self, const uint8_t *key, uint32_t klen, uint64_t h):
        cdef uint64_t mask, i, s
        cdef uint64_t m = _mix(h)
        cdef uint32_t tag = <uint32_t>(m >> 32)
        cdef kd_entry *e
        if self.pend_n:
            self._drain()
        mask = self.icap - 1
        i = m >> self.ishift
        while True:
            s = self.index[i]
            if s == 0:
                return -1
            if <uint32_t>(s >> 32) == tag:
                e = &self.entries[(s & 0xFFFFFFFFU) - 1]
                if e.hash == h and _klen(e) == klen and memcmp(self.arena + e.key_off, key, klen) == 0:
                    return <int64_t>((s & 0xFFFFFFFFU) - 1)
            i = (i + 1) & mask

    cdef int64_t _find_hash(self, uint32_t klen, uint64_t h):
        cdef uint64_t mask, i, s
        cdef uint64_t m = _mix(h)
        cdef uint32_t tag = <uint32_t>(m >> 32)
        cdef kd_entry *e
        if self.pend_n:
            self._drain()
        mask = self.icap - 1
        i = m >> self.ishift
        while True:
            s = self.index[i]
            if s == 0:
                return -1
            if <uint32_t>(s >> 32) == tag:
                e = &self.entries[(s & 0xFFFFFFFFU) - 1]
                if e.hash == h and _klen(e) == klen:
                    return <int64_t>((s & 0xFFFFFFFFU) - 1)
            i = (i + 1) & mask

    def _get_exact(self, key):
        """Slow, exact read for a key whose hash collides with another key's."""
        e = self.lookup(key)
        if e is None or e[3] & ZKV_REC_TOMBSTONE:
            return None
        rec = self.read_record(e[0], e[1], e[2])
        if rec is None:
            return NEED_READ
        from zkv._core import record as _rec
        try:
            fl, k, v, _sz = _rec.decode(rec)
        except Exception:
            return CORRUPT
        if k != key:
            return CORRUPT
        return COMPRESSED if fl & ZKV_REC_ZSTD else v

    cdef void _slot_put(self, uint64_t h, uint64_t idx):
        cdef uint64_t m = _mix(h)
        cdef uint64_t mask = self.icap - 1, i = m >> self.ishift
        while self.index[i] != 0:
            i = (i + 1) & mask
        self.index[i] = (m & 0xFFFFFFFF00000000ULL) | (idx + 1)

    cdef int _entries_cap(self, uint64_t ncap) except -1:
        """Reallocate the entries and their region links to ``ncap`` entries (>= n)."""
        cdef void *p
        p = realloc(self.rnext, ncap * 4)
        if p == NULL:
            raise MemoryError()
        self.rnext = <uint32_t *>p
        p = realloc(self.rprev, ncap * 4)
        if p == NULL:
            raise MemoryError()
        self.rprev = <uint32_t *>p
        p = realloc(self.entries, ncap * sizeof(kd_entry))
        if p == NULL:
            raise MemoryError()
        self.entries = <kd_entry *>p
        self.ecap = ncap
        return 0

    cdef inline void _link(self, uint64_t idx, uint64_t h) noexcept:
        """Put entry ``idx`` (hash ``h``) first in its region's list."""
        cdef uint32_t *head = &self.rhead[h >> (64 - self.rbits)]
        cdef uint32_t first = head[0]
        self.rnext[idx] = first
        self.rprev[idx] = 0
        if first:
            self.rprev[first - 1] = <uint32_t>(idx + 1)
        head[0] = <uint32_t>(idx + 1)

    cdef inline void _unlink(self, uint64_t idx) noexcept:
        """Take entry ``idx`` out of its region's list."""
        cdef uint32_t p = self.rprev[idx], q = self.rnext[idx]
        if p:
            self.rnext[p - 1] = q
        else:
            self.rhead[self.entries[idx].hash >> (64 - self.rbits)] = q
        if q:
            self.rprev[q - 1] = p

    cdef int _resize_index(self, uint64_t ncap) except -1:
        """Rebuild the slots at ``ncap`` (a power of two with room for every entry).

        A slot's tag is the top 32 bits of its key's hash, which hold the home slot of any
        table up to 2**32 slots: the rebuild streams the old slots in order and never touches
        the entries or the arena. Old slots in order have (wrap-around aside) ascending homes,
        so the writes to the new slots are close to sequential too."""
        cdef uint64_t *old = self.index
        cdef uint64_t ocap = self.icap, j, s, i, mask = ncap - 1
        cdef int nshift = 64
        while (<uint64_t>1 << (64 - nshift)) < ncap:
            nshift -= 1
        if nshift < 32:
            raise MemoryError("keydir index over 2**32 slots")
        cdef int nrbits = _rbits_for(ncap)
        cdef uint32_t *nheads = NULL
        if nrbits != self.rbits:  # (allocated first: a failure changes nothing)
            nheads = <uint32_t *>calloc(<size_t>1 << nrbits, 4)
            if nheads == NULL:
                raise MemoryError()
        cdef uint64_t *nidx = _slots_alloc(ncap)
        if nidx == NULL:
            free(nheads)
            raise MemoryError()
        for j in range(ocap):
            s = old[j]
            if s != 0:
                i = (s >> 32) >> (nshift - 32)
                while nidx[i] != 0:
                    i = (i + 1) & mask
                nidx[i] = s
        _slots_free(old, ocap)
        self.index = nidx
        self.icap = ncap
        self.ishift = nshift
        if nheads != NULL:  # the region lists again, at the new size's regions
            free(self.rhead)
            self.rhead = nheads
            self.rbits = nrbits
            for j in range(self.n):
                self._link(j, self.entries[j].hash)
        return 0

    cdef int _grow_index(self) except -1:
        return self._resize_index(self.icap * 2)

    cdef int _reserve(self, uint64_t entries, uint64_t key_bytes) except -1:
        """Make room for ``entries`` more entries and ``key_bytes`` more key bytes, so that
        inserting them does no rehash or realloc."""
        cdef uint64_t want, ncap = self.icap
        cdef void *p
        self._drain()
        want = self.n + entries
        while want * 10 > ncap * 7:
            ncap *= 2
        if ncap > self.icap:
            self._resize_index(ncap)
        if want > self.ecap:
            self._entries_cap(want)
        if self.alen + key_bytes > self.acap:
            p = realloc(self.arena, self.alen + key_bytes)
            if p == NULL:
                raise MemoryError()
            self.arena = <uint8_t *>p
            self.acap = self.alen + key_bytes
        return 0

    cdef int _set(self, const uint8_t *key, uint32_t klen, uint64_t h, uint32_t fid,
                  uint32_t offset, uint32_t size, uint32_t flags) except -1:
        # one probe finds the key or the empty slot where it goes
        cdef uint64_t mask, i, s, ncap, idx
        cdef uint64_t m = _mix(h)
        cdef uint32_t tag = <uint32_t>(m >> 32)
        cdef kd_entry *e = NULL
        cdef void *p
        if self.pend_n:
            self._drain()  # earlier appends first
        mask = self.icap - 1
        i = m >> self.ishift
        while True:
            s = self.index[i]
            if s == 0:
                break
            if <uint32_t>(s >> 32) == tag:
                e = &self.entries[(s & 0xFFFFFFFFU) - 1]
                if e.hash == h and _klen(e) == klen and memcmp(self.arena + e.key_off, key, klen) == 0:
                    break
                e = NULL
            i = (i + 1) & mask
        if e != NULL:
            self.live_bytes_ -= e.size
            if _flags(e) & ZKV_REC_TOMBSTONE:
                self.n_tomb -= 1
        else:
            if self.n == self.ecap:
                self._entries_cap(self.ecap + (self.ecap >> 1))  # 1.5x: less slack than 2x
            if self.alen + klen > self.acap:
                ncap = self.acap + (self.acap >> 1)
                while self.alen + klen > ncap:
                    ncap += ncap >> 1
                p = realloc(self.arena, ncap)
                if p == NULL:
                    raise MemoryError()
                self.arena = <uint8_t *>p
                self.acap = ncap
            idx = self.n
            if (self.n + 1) * 10 > self.icap * 7:
                self._grow_index()
                self._slot_put(h, idx)
            else:
                self.index[i] = (m & 0xFFFFFFFF00000000ULL) | (idx + 1)
            e = &self.entries[idx]
            e.hash = h
            self._link(idx, h)
            e.key_off = self.alen
            memcpy(self.arena + self.alen, key, klen)
            self.alen += klen
            self.n += 1
        e.fid = fid
        e.offset = offset
        e.size = size
        e.klen_flags = klen | ((flags & 0xFF) << 24)
        self.live_bytes_ += size
        if flags & ZKV_REC_TOMBSTONE:
            self.n_tomb += 1
        return 0

    cdef void _remove_at(self, uint64_t i):
        cdef uint64_t mask = self.icap - 1, j, k, s, last, home
        cdef kd_entry *e = &self.entries[i]
        self.live_bytes_ -= e.size
        if _flags(e) & ZKV_REC_TOMBSTONE:
            self.n_tomb -= 1
        self.arena_dead += _klen(e)
        self._unlink(i)
        # find and clear the slot of entry i, then backward-shift the cluster behind it
        j = _mix(e.hash) >> self.ishift
        while (self.index[j] & 0xFFFFFFFFU) != i + 1:
            j = (j + 1) & mask
        self.index[j] = 0
        k = (j + 1) & mask
        while self.index[k] != 0:
            s = self.index[k]
            home = (s >> 32) >> (self.ishift - 32)  # the tag holds the home slot
            # move s into the hole at j if its home is not in (j, k]
            if (k > j and (home <= j or home > k)) or (k < j and (home <= j and home > k)):
                self.index[j] = s
                self.index[k] = 0
                j = k
            k = (k + 1) & mask
        # move the last entry into the hole to keep entries dense
        last = self.n - 1
        if i != last:
            self.entries[i] = self.entries[last]
            # (its region list's links now name i)
            self.rprev[i], self.rnext[i] = self.rprev[last], self.rnext[last]
            if self.rprev[i]:
                self.rnext[self.rprev[i] - 1] = <uint32_t>(i + 1)
            else:
                self.rhead[self.entries[i].hash >> (64 - self.rbits)] = <uint32_t>(i + 1)
            if self.rnext[i]:
                self.rprev[self.rnext[i] - 1] = <uint32_t>(i + 1)
            j = _mix(self.entries[i].hash) >> self.ishift
            while (self.index[j] & 0xFFFFFFFFU) != last + 1:
                j = (j + 1) & mask
            self.index[j] = (self.index[j] & 0xFFFFFFFF00000000ULL) | (i + 1)
        self.n -= 1
        if self.arena_dead > 1048576 and self.arena_dead * 2 > self.alen:
            self._compact_arena()

    cdef void _compact_arena(self):
        cdef uint8_t *na = <uint8_t *>malloc(self.alen - self.arena_dead + 1)
        cdef uint64_t pos = 0, j, kl
        if na == NULL:
            return
        for j in range(self.n):
            kl = _klen(&self.entries[j])
            memcpy(na + pos, self.arena + self.entries[j].key_off, kl)
            self.entries[j].key_off = pos
            pos += kl
        free(self.arena)
        self.arena = na
        self.alen = pos
        self.acap = pos + 1
        self.arena_dead = 0

    cdef int64_t _find_obj(self, key) except -2:
        if not PyBytes_Check(key):
            return -1
        cdef uint32_t kl = <uint32_t>PyBytes_GET_SIZE(key)
        cdef const uint8_t *kp = <const uint8_t *>PyBytes_AS_STRING(key)
        return self._find(kp, kl, zkv_hash64(kp, kl))

    cdef bytes _key(self, uint64_t i):
        return PyBytes_FromStringAndSize(<char *>self.arena + self.entries[i].key_off,
                                         _klen(&self.entries[i]))

    # ---------------------------------------------------------------- Python-facing table API
    def __len__(self):
        self._drain()
        return self.n - self.n_tomb

    @property
    def count(self):
        """Entries including tombstones."""
        self._drain()
        return self.n

    @property
    def tombstone_count(self):
        self._drain()
        return self.n_tomb

    @property
    def live_bytes(self):
        """Sum of the record sizes the entries point at (what compaction would keep)."""
        self._drain()
        return self.live_bytes_

    def live_by_fid(self):
        """``{fid: bytes}``: the record sizes the entries point at, per segment (what
        compacting each would keep; compaction sizes its inputs to the room it has)."""
        self._drain()
        cdef dict out = {}
        cdef uint64_t j
        cdef uint32_t fid
        cdef uint32_t last = 0xFFFFFFFF
        cdef uint64_t run = 0
        for j in range(self.n):  # (runs of one fid are common: a dict update per run)
            fid = self.entries[j].fid
            if fid != last:
                if run:
                    out[last] = out.get(last, 0) + run
                last, run = fid, 0
            run += self.entries[j].size
        if run:
            out[last] = out.get(last, 0) + run
        return out

    def memory_bytes(self):
        """Bytes allocated by the table (slots, entries, arena), not counting the write buffer."""
        self._drain()
        return (self.icap * 8 + self.ecap * (sizeof(kd_entry) + 8) + self.acap
                + (<uint64_t>4 << self.rbits))

    def contains(self, key):
        """True if ``key`` has a live (non-tombstone) entry."""
        cdef int64_t i = self._find_obj(key)
        return i >= 0 and not (_flags(&self.entries[i]) & ZKV_REC_TOMBSTONE)

    def lookup(self, key):
        """``(fid, offset, size, flags, hash)`` of the key's latest record, or None."""
        cdef int64_t i = self._find_obj(key)
        if i < 0:
            return None
        cdef kd_entry *e = &self.entries[i]
        return (e.fid, e.offset, e.size, _flags(e), e.hash)

    def set(self, bytes key not None, uint32_t fid, uint32_t offset, uint32_t size, uint32_t flags):
        """Point ``key`` at a record (insert or overwrite)."""
        cdef uint32_t kl = <uint32_t>len(key)
        cdef const uint8_t *kp = <const uint8_t *>PyBytes_AS_STRING(key)
        if kl < 1 or kl > ZKV_REC_MAX_KEY:
            raise ValueError("key length out of range")
        if flags & ~(ZKV_REC_TOMBSTONE | ZKV_REC_ZSTD):
            # (the entry keeps 8 bits of flags, the top one its own: 256 read back as 0)
            raise ValueError(f"flags {flags}: a record's flags are TOMBSTONE (1) | ZSTD (2)")
        self._set(kp, kl, zkv_hash64(kp, kl), fid, offset, size, flags)

    def remove(self, key):
        """Drop the key's entry; True if there was one."""
        cdef int64_t i = self._find_obj(key)
        if i < 0:
            return False
        self._remove_at(i)
        return True

    def remove_if(self, key, uint32_t fid, uint32_t offset):
        """Drop the key's entry only if it still points at (fid, offset)."""
        cdef int64_t i = self._find_obj(key)
        if i < 0 or self.entries[i].fid != fid or self.entries[i].offset != offset:
            return False
        self._remove_at(i)
        return True

    def release(self, key):
        """Mark the key's tombstone as released (compaction may drop it); False if not a tombstone."""
        cdef int64_t i = self._find_obj(key)
        if i < 0 or not (_flags(&self.entries[i]) & ZKV_REC_TOMBSTONE):
            return False
        self.entries[i].klen_flags |= (KD_RELEASED << 24)
        return True

    def keys(self, bint tombstones=False):
        """Live keys (or, with ``tombstones=True``, only the keys whose latest record is one)."""
        self._drain()
        cdef uint64_t j
        cdef bint t
        out = []
        for j in range(self.n):
            t = (_flags(&self.entries[j]) & ZKV_REC_TOMBSTONE) != 0
            if t == tombstones:
                out.append(self._key(j))
        return out

    def partition_bytes(self, int q_bits, bint split=True):
        """Record bytes of the live keys per partition of a ring of 2**q_bits partitions:
        ``(sizes, apart)``, ``sizes[p]`` the sum over keys in p, except (``split``) keys whose
        first byte is 0 (a namespace's: their partition follows their own N), listed in
        ``apart`` as ``(key, size)``. One pass in C: the same from Python (a lookup per key)
        took 4.4 s at 4M keys, the node's loop stood still, and `zkv cluster plan` timed
        out (an outside capacity run)."""
        if q_bits < 1 or q_bits > 32:
            raise ValueError(f"q_bits must be in 1..32, got {q_bits}")
        self._drain()
        cdef uint64_t j, shift = 64 - q_bits
        cdef kd_entry *e
        cdef list sizes = [0] * (1 << q_bits)
        cdef uint64_t *acc = <uint64_t *>calloc(<size_t>1 << q_bits, 8)
        if acc == NULL:
            raise MemoryError()
        apart = []
        try:
            for j in range(self.n):
                e = &self.entries[j]
                if _flags(e) & ZKV_REC_TOMBSTONE:
                    continue
                if split and self.arena[e.key_off] == 0:
                    apart.append((self._key(j), e.size))
                else:
                    acc[e.hash >> shift] += e.size
            for j in range(<uint64_t>1 << q_bits):
                if acc[j]:
                    sizes[j] = acc[j]
        finally:
            free(acc)
        return sizes, apart

    def hash_range(self, uint64_t lo=0, uint64_t hi=0xFFFFFFFFFFFFFFFF):
        """``[(key, hash)]`` of live keys whose hash is in [lo, hi] inclusive.

        Walks the lists of the regions (top rbits bits of the hash) the range touches: only
        their keys are read, in no useful order (the slots are in an order of their own,
        _mix)."""
        cdef uint64_t r, h
        cdef uint32_t j
        cdef kd_entry *e
        out = []
        self._drain()
        if lo > hi or self.n == 0:
            return out
        for r in range(lo >> (64 - self.rbits), (hi >> (64 - self.rbits)) + 1):
            j = self.rhead[r]
            while j:
                e = &self.entries[j - 1]
                h = e.hash
                if lo <= h <= hi and not (_flags(e) & ZKV_REC_TOMBSTONE):
                    out.append((self._key(j - 1), h))
                j = self.rnext[j - 1]
        return out

    def longest_run(self):
        """The longest run of occupied slots (wrap-around included): the most slots a lookup
        of an absent key, or an insert, can probe. At the load kept (<= 0.7) and homes spread
        evenly it stays in the tens whatever share of the ring's partitions the keys are from."""
        cdef uint64_t i, run = 0, best = 0, first = 0
        self._drain()
        for i in range(self.icap):
            if self.index[i] != 0:
                run += 1
                if run > best:
                    best = run
            else:
                if first == 0 and run == i:
                    first = run  # (the run at the start: it continues the one at the end)
                run = 0
        if run and self.index[0] != 0 and run < self.icap:
            if run + first > best:
                best = run + first
        return best

    def fid_bytes(self):
        """``{fid: live record bytes}`` over all entries (for per-segment dead-byte accounting)."""
        self._drain()
        cdef uint64_t j
        out = {}
        for j in range(self.n):
            f = self.entries[j].fid
            out[f] = out.get(f, 0) + self.entries[j].size
        return out

    def purge_fids(self, fids):
        """Remove every entry still pointing at one of ``fids``; returns ``[(key, flags)]``."""
        self._drain()
        cdef set s = set(fids)
        cdef uint64_t j
        out = []
        j = self.n
        while j > 0:
            j -= 1
            if self.entries[j].fid in s:
                out.append((self._key(j), _flags(&self.entries[j])))
                self._remove_at(j)
        return out

    # ---------------------------------------------------------------- loading
    def reserve(self, uint64_t entries, uint64_t key_bytes=0):
        """Make room for ``entries`` more keys (and ``key_bytes`` of key bytes) at once, so
        that loading them does no rehash or array growth."""
        self._reserve(entries, key_bytes)

    def trim(self):
        """Give back room reserved but not used (after a load whose hints overlapped): the
        slots shrink to the smallest table that holds the entries, the arrays to their use."""
        cdef uint64_t ncap = 1024, cap
        cdef void *p
        self._drain()
        while self.n * 10 > ncap * 7:
            ncap *= 2
        if ncap < self.icap:
            self._resize_index(ncap)
        cap = self.n if self.n > 512 else 512
        if cap < self.ecap:
            try:
                self._entries_cap(cap)
            except MemoryError:
                pass  # (a shrink that failed: the larger arrays are kept)
        cap = self.alen if self.alen > 8192 else 8192
        if cap < self.acap:
            p = realloc(self.arena, cap)
            if p != NULL:
                self.arena = <uint8_t *>p
                self.acap = cap

    def load_hints(self, data, uint32_t fid, uint64_t limit=0xFFFFFFFFFFFFFFFF):
        """Insert every entry of a hints file for segment ``fid``; -1 (nothing done) if it is bad.
        -2 (nothing done) if an entry names a record ending past ``limit`` (the segment's size):
        the segment lost its tail since the hints were written (damage: the caller scans it).

        One C loop over the file: validate it whole (CRC, entry walk) first, reserve room for
        every entry, then insert each with the hash the file carries, prefetching the home slot
        of the entry PREFETCH_AHEAD places further on (the slots are a random walk over a table
        larger than the caches, so overlapping those misses is most of the speed)."""
        cdef const uint8_t[::1] v = data
        cdef uint64_t n = v.shape[0], count, i, off, kl, ahead, kbytes
        cdef const uint8_t *p
        cdef bint past = 0
        if n < ZKV_HINT_HEADER + ZKV_HINT_TRAILER:
            return -1
        p = &v[0]
        if memcmp(p, b"ZKVH", 4) != 0 or p[4] != ZKV_HINT_VERSION:
            return -1
        if zkv_crc32c(0, p, n - 4) != zkv_ld32(p + n - 4):
            return -1
        count = zkv_ld64(p + 8)
        off = ZKV_HINT_HEADER
        for i in range(count):          # validate the walk before touching the table
            if off + ZKV_HINT_ENTRY > n - 4:
                return -1
            kl = zkv_ld32(p + off + 16)
            if kl < 1 or kl > ZKV_REC_MAX_KEY:
                return -1
            if <uint64_t>zkv_ld32(p + off + 8) + zkv_ld32(p + off + 12) > limit:
                past = 1
            off += ZKV_HINT_ENTRY + kl
        if off != n - 4:
            return -1
        if past:
            return -2
        kbytes = n - 4 - ZKV_HINT_HEADER - count * ZKV_HINT_ENTRY
        self._reserve(count, kbytes)    # no growth below: ishift and index stay put
        off = ZKV_HINT_HEADER
        ahead = ZKV_HINT_HEADER         # the entry PREFETCH_AHEAD places after `off`
        for i in range(PREFETCH_AHEAD):
            if ahead >= n - 4:
                break
            ahead += ZKV_HINT_ENTRY + zkv_ld32(p + ahead + 16)
        for i in range(count):
            if ahead < n - 4:
                __builtin_prefetch(&self.index[_mix(zkv_ld64(p + ahead)) >> self.ishift])
                ahead += ZKV_HINT_ENTRY + zkv_ld32(p + ahead + 16)
            kl = zkv_ld32(p + off + 16)
            self._set(p + off + 24, <uint32_t>kl, zkv_ld64(p + off), fid, zkv_ld32(p + off + 8),
                      zkv_ld32(p + off + 12), p[off + 20])
            off += ZKV_HINT_ENTRY + kl
        return <int64_t>count

    def scan_load(self, data, uint32_t fid, bint active=False):
        """Index every valid record of a segment image; ``(end, records, corrupt, bad)``.

        A record whose CRC fails is skipped; if its key is readable the key's entry is dropped
        (an older version must not resurface) and the key is listed in ``corrupt``: the key
        of a record whose header is damaged too is found by ``_damaged_klen``. ``bad``
        counts skipped regions. When nothing valid follows a bad region it is a torn tail: for
        the active segment (``active=True``) the scan stops there and ``end`` is the length to
        truncate to; for an immutable segment the region counts as corruption and ``end`` is the
        image length.
        """
        cdef const uint8_t[::1] v = data
        cdef uint64_t n = v.shape[0], off = 0, size, records = 0, bad = 0
        cdef int64_t nxt, i
        cdef uint32_t kl
        cdef const uint8_t *p
        corrupt = []
        if n == 0:
            return (0, 0, corrupt, 0)
        p = &v[0]
        while off < n:
            size = zkv_rec_plausible(p + off, n - off)
            if size and zkv_rec_crc_ok(p + off, size):
                kl = zkv_ld32(p + off + 8)
                self._set(p + off + 16, kl, zkv_hash64(p + off + 16, kl), fid, <uint32_t>off,
                          <uint32_t>size, p[off + 5])
                records += 1
                off += size
                continue
            nxt = zkv_rec_resync(p, off + 1, n)
            if nxt < 0 and active:
                return (off, records, corrupt, bad)
            bad += 1
            kl = _damaged_klen(p + off, (n if nxt < 0 else <uint64_t>nxt) - off)
            if kl:
                i = self._find(p + off + 16, kl, zkv_hash64(p + off + 16, kl))
                if i >= 0:
                    self._remove_at(i)
                corrupt.append(PyBytes_FromStringAndSize(<char *>p + off + 16, kl))
            off = n if nxt < 0 else <uint64_t>nxt
        return (n, records, corrupt, bad)

    # ---------------------------------------------------------------- compaction
    def collect_live(self, data, uint32_t fid):
        """Copy out the records of segment ``fid`` that entries still point at.

        Returns ``(records, moves)``: the kept records back to back, and for each one a pair of
        little-endian u32 (old offset, offset within ``records``). Released tombstones and
        CRC-bad records are not kept (their entries are purged after the swap).
        """
        out, mv, _ = self.collect_live_from(data, fid, 0, 0)
        return (out, mv)

    def collect_live_from(self, data, uint32_t fid, uint64_t start, uint64_t limit):
        """``collect_live`` of the records from offset ``start`` (a record boundary: 0, or a
        ``next`` this returned) up to the first boundary at or past ``start + limit`` (0: the
        end). Returns ``(records, moves, next)``; ``next`` is the length of ``data`` once the
        segment is done. Each call holds the GIL (it reads the keydir), so compaction walks a
        segment 1 MiB per call: a 64 MiB segment in one call held it ~22 ms, a stall of
        every other thread (a node's loop turn)."""
        cdef const uint8_t[::1] v = data
        cdef uint64_t n = v.shape[0], off = 0, size, total = 0, nkeep = 0, w = 0, m = 0
        cdef uint64_t stop = n if limit == 0 or start + limit > n else start + limit
        cdef int64_t nxt, i
        cdef uint32_t kl
        cdef const uint8_t *p
        cdef kd_entry *e
        cdef int pass_
        cdef uint8_t *o = NULL
        cdef uint8_t *mo = NULL
        cdef bytes out = b"", mv = b""
        if start >= n:
            return (b"", b"", n)
        p = &v[0]
        # pass 1 sizes, pass 2 copy (avoids a growing buffer); both stop at the same boundary
        for pass_ in range(2):
            off = start
            if pass_ == 1:
                out = PyBytes_FromStringAndSize(NULL, total)
                mv = PyBytes_FromStringAndSize(NULL, nkeep * 8)
                o = <uint8_t *>PyBytes_AS_STRING(out)
                mo = <uint8_t *>PyBytes_AS_STRING(mv)
            while off < stop:
                size = zkv_rec_plausible(p + off, n - off)
                if size:
                    kl = zkv_ld32(p + off + 8)
                    i = self._find(p + off + 16, kl, zkv_hash64(p + off + 16, kl))
                    if i >= 0:
                        e = &self.entries[i]
                        if e.fid == fid and e.offset == off and e.size == size and not (
                                _flags(e) & KD_RELEASED) and zkv_rec_crc_ok(p + off, size):
                            if pass_ == 0:
                                total += size
                                nkeep += 1
                            else:
                                memcpy(o + w, p + off, size)
                                zkv_st32(mo + m, <uint32_t>off)
                                zkv_st32(mo + m + 4, <uint32_t>w)
                                w += size
                                m += 8
                    if zkv_rec_crc_ok(p + off, size):
                        off += size
                        continue
                nxt = zkv_rec_resync(p, off + 1, n)
                if nxt < 0:
                    off = n  # no record after this one: the segment is done
                    break
                off = <uint64_t>nxt
        return (out, mv, off)

    def apply_moves(self, moves, uint32_t src_fid, uint32_t dst_fid, uint64_t dst_base):
        """For each (old offset, new offset) move: repoint the key from (src_fid, old) to
        (dst_fid, dst_base + new), but only if its entry still points at the old location.
        Keys are read from the destination's mapping (call ``map_segment`` first)."""
        cdef const uint8_t[::1] v = moves
        cdef uint64_t n = v.shape[0] // 8, j, newoff
        cdef uint32_t old, kl
        cdef int64_t i
        cdef const uint8_t *rec
        cdef uint64_t moved = 0
        if dst_fid >= self.nmaps or self.maps[dst_fid].base == NULL:
            raise ValueError("destination segment is not mapped")
        for j in range(n):
            old = zkv_ld32(&v[j * 8])
            newoff = dst_base + zkv_ld32(&v[j * 8 + 4])
            if newoff + ZKV_REC_HEADER > self.maps[dst_fid].length:
                raise ValueError("move beyond the destination mapping")
            rec = self.maps[dst_fid].base + newoff
            kl = zkv_ld32(rec + 8)
            i = self._find(rec + 16, kl, zkv_hash64(rec + 16, kl))
            if i >= 0 and self.entries[i].fid == src_fid and self.entries[i].offset == old:
                self.entries[i].fid = dst_fid
                self.entries[i].offset = <uint32_t>newoff
                moved += 1
        return moved

    # ---------------------------------------------------------------- mappings
    def map_segment(self, uint32_t fid, data):
        """Serve reads of segment ``fid`` from ``data`` (an mmap or bytes), replacing any old map."""
        cdef const uint8_t[::1] v = data
        cdef uint32_t nn
        cdef void *p
        if fid >= self.nmaps:
            nn = self.nmaps
            while fid >= nn:
                nn *= 2
            p = realloc(self.maps, nn * sizeof(kd_map))
            if p == NULL:
                raise MemoryError()
            self.maps = <kd_map *>p
            memset(self.maps + self.nmaps, 0, (nn - self.nmaps) * sizeof(kd_map))
            self.nmaps = nn
        old = self.views.pop(fid, None)
        if old is not None:
            self.retired.append(old)
        if v.shape[0] == 0:
            self.maps[fid].base = NULL
            self.maps[fid].length = 0
            return
        self.maps[fid].base = &v[0]
        self.maps[fid].length = v.shape[0]
        self.views[fid] = v

    def mapped_length(self, uint32_t fid):
        return self.maps[fid].length if fid < self.nmaps else 0

    def unmap_segment(self, uint32_t fid):
        """Stop serving reads from segment ``fid`` (its buffer is released at ``release_maps``)."""
        if fid < self.nmaps:
            self.maps[fid].base = NULL
            self.maps[fid].length = 0
        old = self.views.pop(fid, None)
        if old is not None:
            self.retired.append(old)

    def take_retired(self):
        """The buffers of segments unmapped since (``map_segment`` replaced them), handed over
        to the caller, which drops them where it likes (dropping the last reference to an mmap
        unmaps it); the keydir keeps none."""
        out = self.retired
        self.retired = []
        return out

    def release_maps(self, bint all=False):
        """Release the buffers of unmapped segments (and, with ``all``, of every segment)."""
        cdef uint32_t j
        if all:
            for j in range(self.nmaps):
                self.maps[j].base = NULL
                self.maps[j].length = 0
            self.views.clear()
        self.retired.clear()

    # ---------------------------------------------------------------- active segment writes
    def set_active(self, uint32_t fid, int fd, uint64_t size, uint64_t prealloc=0):
        """Appends go to segment ``fid`` (file descriptor ``fd``, currently ``size`` bytes).

        ``prealloc`` > 0: whenever a write would pass the allocated end, first extend the file
        with posix_fallocate to a multiple of ``prealloc`` bytes past the write and a quarter
        past the allocated end (at most 8 ``prealloc`` steps more), so that the fdatasync after
        most writes has no file size change to journal. The file then ends in zeros past
        ``active_end``: the owner trims it (ftruncate) when sealing the segment, and recovery
        treats the zero tail as the end of the log (no record header is all zeros).
        """
        if self.wlen:
            raise RuntimeError("flush before switching the active segment")
        self.afid = fid
        self.afd = fd
        self.wbase = size
        self.pend = size
        self.pchunk = prealloc

    @property
    def active_end(self):
        """Logical size of the active segment (written + buffered)."""
        return self.wbase + self.wlen

    @property
    def buffered(self):
        return self.wlen

    @property
    def seq(self):
        """Records appended so far (the group-commit sequence number)."""
        return self.seq_

    cdef int _write_buffer(self) noexcept:
        """Write the buffered records to the active fd (no fsync); 0, or the errno of the
        failure (the buffer is then kept whole: see below). Raises nothing, so an append can
        note a failure and go on (``_append``)."""
        cdef uint64_t done = 0, need, nend, grow
        cdef ssize_t r
        self._drain()  # pending inserts read their keys from wbuf
        if self.wlen == 0:
            return 0
        need = self.wbase + self.wlen
        if self.pchunk and need > self.pend:
            # the next multiple of pchunk past the write, and a quarter past the allocated end
            # (at most KD_GROW_MAX steps): the file grows geometrically, so the store remaps
            # the active segment (to read what was just written) ~19 times up to 64 MiB
            # instead of 64 (LogStore._get_slow), while one call never zero-fills more than
            # KD_GROW_MAX steps where posix_fallocate is emulated by writing zeros
            grow = self.pend // 4
            if grow > KD_GROW_MAX * self.pchunk:
                grow = KD_GROW_MAX * self.pchunk
            nend = self.pend + grow
            if need > nend:
                nend = need
            nend = (nend + self.pchunk - 1) // self.pchunk * self.pchunk
            # Best effort: if it fails (ENOSPC, unsupported), pwrite extends the file itself.
            # Then ``pend`` stays the end really allocated, and moves only with what pwrite
            # wrote: set to ``need`` up front, a pwrite that failed too left it past the
            # written end, the next step allocated from there, and the pages between were a
            # hole. On tmpfs with the file system full, reading a hole through the mapping
            # cannot allocate its page and the process dies of SIGBUS (a reopen's scan did).
            if posix_fallocate(self.afd, <off_t>self.pend, <off_t>(nend - self.pend)) == 0:
                self.pend = nend
        while done < self.wlen:
            r = pwrite(self.afd, self.wbuf + done, self.wlen - done, <off_t>(self.wbase + done))
            if r < 0:
                if errno == EINTR:
                    continue
                # keep the whole buffer, the part written too: a record cut by the failure
                # (ENOSPC) must still read whole from the buffer, where reads of every
                # offset >= wbase go; the next flush writes it all again from wbase, over
                # the bytes written now
                if self.wbase + done > self.pend:
                    self.pend = self.wbase + done
                return errno if errno else 5  # (EIO if the C library left none)
            done += r
        self.wbase += self.wlen
        self.wlen = 0
        if self.wbase > self.pend:
            self.pend = self.wbase
        return 0

    cdef int _flush(self) except -1:
        """``_write_buffer``, raising OSError if it failed (and noting it: ``write_errno``).
        A flush that worked clears ``write_errno``."""
        cdef int err = self._write_buffer()
        if err:
            self.write_errno = err
            self.put_gate = 1
            from os import strerror
            raise OSError(err, strerror(err))
        self.write_errno = 0
        return 0

    def flush(self):
        """Write the buffered records to the active fd (no fsync). OSError if that fails (the
        records stay buffered; ``write_errno`` says so until a flush works)."""
        self._flush()

    cdef int _append(self, const uint8_t *kp, uint32_t kl, const uint8_t *vp, uint32_t vl,
                     uint32_t flags) except -1:
        """Encode one (validated) record into the write buffer and point the key at it.

        Never fails for I/O (only MemoryError): the record is buffered, and readable, whatever
        a write-out here finds. A write-out it does when the buffer is full that fails leaves
        the records buffered, notes the errno in ``write_errno`` and sets ``put_gate`` (the
        owner refuses the next writes before they change anything: LogStore, "Out of
        space"); until an explicit ``flush`` works, appends grow the buffer instead of
        writing it out. Raising there instead told the caller a put failed whose record was
        buffered and indexed all the same (and every put after it too)."""
        cdef uint64_t size = ZKV_REC_HEADER + <uint64_t>kl + vl, h, n, ncap
        cdef void *p
        cdef int err
        if self.wlen + size > self.wcap:
            if self.wlen and self.write_errno == 0:
                err = self._write_buffer()
                if err:
                    self.write_errno = err
                    self.put_gate = 1
            if self.wlen + size > self.wcap:
                ncap = self.wcap + (self.wcap >> 1)
                if ncap < self.wlen + size:
                    ncap = self.wlen + size
                p = realloc(self.wbuf, ncap)
                if p == NULL:
                    raise MemoryError()
                self.wbuf = <uint8_t *>p
                self.wcap = ncap
        zkv_rec_write(self.wbuf + self.wlen, <uint8_t>flags, kp, kl, vp, vl)
        h = zkv_hash64(kp, kl)
        if self.pend_n == KD_PEND:
            self._drain()
        n = self.n + self.pend_n + 1  # entries if every pending key is new
        if n <= self.ecap and n * 10 <= self.icap * 7 and self.alen + self.pend_kb + kl <= self.acap:
            # defer the insert (room reserved above): fetch its home slot now, insert later
            __builtin_prefetch(&self.index[_mix(h) >> self.ishift])
            self.pend_h[self.pend_n] = h
            self.pend_w[self.pend_n] = self.wlen
            self.pend_n += 1
            self.pend_kb += kl
        else:  # the table must grow: insert now (drains first), where allocation may fail
            self._set(kp, kl, h, self.afid, <uint32_t>(self.wbase + self.wlen), <uint32_t>size, flags)
        self.wlen += size
        self.seq_ += 1
        if self.wlen >= self.wlimit and self.write_errno == 0:
            err = self._write_buffer()
            if err:
                self.write_errno = err
                self.put_gate = 1
        return 0

    def append(self, key, value, uint32_t flags=0):
        """Validate, encode and buffer one record for ``key``; point the key at it.

        ``value`` is the stored value (already compressed when ``flags & ZSTD``; ``b""`` for a
        tombstone). Raises zkv.InvalidRequest (nothing written) for a non-bytes or empty key, a
        key over ``max_key`` or a value over ``max_value``. Returns the new active segment end.
        """
        self._check_pair((key, value))
        if self.afd < 0:
            raise InvalidRequest("store is not writable (closed or read-only)")
        self._append(<const uint8_t *>PyBytes_AS_STRING(key), <uint32_t>PyBytes_GET_SIZE(key),
                     <const uint8_t *>PyBytes_AS_STRING(value), <uint32_t>PyBytes_GET_SIZE(value),
                     flags)
        return self.wbase + self.wlen

    cdef int _check_pair(self, object item) except -1:
        """InvalidRequest unless ``item`` is a (key, value) pair the store accepts."""
        cdef uint64_t kl, vl
        if not PyTuple_Check(item) or PyTuple_GET_SIZE(item) != 2:
            raise InvalidRequest("put_many takes (key, value) pairs")
        key = <object>PyTuple_GET_ITEM(item, 0)
        value = <object>PyTuple_GET_ITEM(item, 1)
        if not PyBytes_Check(key):
            raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
        if not PyBytes_Check(value):
            raise InvalidRequest(f"value must be bytes, not {type(value).__name__}")
        kl = PyBytes_GET_SIZE(key)
        vl = PyBytes_GET_SIZE(value)
        if kl == 0:
            raise InvalidRequest("key must not be empty")
        if kl > self.max_key:
            raise InvalidRequest(f"key of {kl} bytes is over the {self.max_key}-byte limit")
        if vl > self.max_value:
            raise InvalidRequest(f"value of {vl} bytes is over the {self.max_value}-byte limit")
        return 0

    def put_policy(self, uint64_t segment_bytes, uint64_t compress_over, slow_put):
        """Enable ``put``: records that would end at or past ``segment_bytes`` (the segment must
        rotate) and values over ``compress_over`` bytes go to ``slow_put(key, value)``."""
        self.seg_limit = segment_bytes
        self.fast_vmax = min(compress_over, self.max_value)
        self.slow_put = slow_put

    def put(self, key, value):
        """LogStore.put in one C call for the common case: a bytes value that needs neither
        compression nor a segment rotation, while no thread holds the store lock and no key
        awaits repair (``put_gate``). Everything else, including every error, goes through
        ``slow_put(key, value)``, the store's locked Python path (same checks, same errors)."""
        cdef uint64_t kl, vl
        if self.lock.held == 0 and self.put_gate == 0 and self.afd >= 0 and \
                PyBytes_Check(key) and PyBytes_CheckExact(value):
            kl = PyBytes_GET_SIZE(key)
            vl = PyBytes_GET_SIZE(value)
            if 0 < kl <= self.max_key and vl <= self.fast_vmax and \
                    self.wbase + self.wlen + ZKV_REC_HEADER + kl + vl < self.seg_limit:
                self._append(<const uint8_t *>PyBytes_AS_STRING(key), <uint32_t>kl,
                             <const uint8_t *>PyBytes_AS_STRING(value), <uint32_t>vl, 0)
                return None
        self.slow_put(key, value)  # (its sequence number is the store's, not the caller's)
        return None

    def check_batch(self, list items not None):
        """InvalidRequest (naming the first bad item) unless every item is a valid pair."""
        cdef Py_ssize_t j
        for j in range(PyList_GET_SIZE(items)):
            try:
                self._check_pair(<object>PyList_GET_ITEM(items, j))
            except InvalidRequest as exc:
                raise InvalidRequest(f"put_many item {j}: {exc}") from None
        return None

    def append_batch(self, list items not None, Py_ssize_t start, uint64_t compress_over,
                     uint64_t segment_bytes):
        """Append ``items[start:]`` (pairs already checked by ``check_batch``) until one needs
        the caller: stops before a bytes value over ``compress_over`` bytes (compression) and
        after a record that brings the segment to ``segment_bytes`` (rotation). Returns the
        index of the first item not appended."""
        cdef Py_ssize_t j, n = PyList_GET_SIZE(items)
        cdef object item, key, value
        cdef uint64_t vl
        if self.afd < 0:
            raise InvalidRequest("store is not writable (closed or read-only)")
        for j in range(start, n):
            item = <object>PyList_GET_ITEM(items, j)
            key = <object>PyTuple_GET_ITEM(item, 0)
            value = <object>PyTuple_GET_ITEM(item, 1)
            vl = PyBytes_GET_SIZE(value)
            if vl > compress_over and PyBytes_CheckExact(value):
                return j
            self._append(<const uint8_t *>PyBytes_AS_STRING(key), <uint32_t>PyBytes_GET_SIZE(key),
                         <const uint8_t *>PyBytes_AS_STRING(value), <uint32_t>vl, 0)
            if self.wbase + self.wlen >= segment_bytes:
                return j + 1
        return n

    # ---------------------------------------------------------------- reads
    def get(self, key):
        """``get_value`` with the LogStore contract: InvalidRequest for a non-bytes key, and
        any code handed to ``self.slow(key, code)`` (the store's slow path)."""
        if not PyBytes_Check(key):
            raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
        r = self.get_value(key)
        if r is None or PyBytes_Check(r):
            return r
        return self.slow(key, r)

    def get_value(self, key):
        """The fast read path: the value bytes, None if absent or a tombstone, or a code.

        Codes: NEED_READ (record outside every mapping: read it with pread), CORRUPT (CRC
        failed), COMPRESSED (zstd value: decode in Python). Non-bytes keys give None.
        """
        cdef uint32_t kl, fl
        cdef const uint8_t *kp
        cdef const uint8_t *rec
        cdef int64_t i
        cdef uint64_t h
        cdef kd_entry *e
        if not PyBytes_Check(key):
            return None
        kp = <const uint8_t *>PyBytes_AS_STRING(key)
        kl = <uint32_t>PyBytes_GET_SIZE(key)
        h = zkv_hash64(kp, kl)
        # Match on the 64-bit hash and length only, skipping the arena (one cache miss less):
        # the record's own key is compared below, and a mismatch retries with the full lookup.
        i = self._find_hash(kl, h)
        if i < 0:
            return None
        e = &self.entries[i]
        fl = _flags(e)
        if fl & ZKV_REC_TOMBSTONE:
            return None
        if fl & ZKV_REC_ZSTD:
            return COMPRESSED
        if e.fid == self.afid and e.offset >= self.wbase:
            if <uint64_t>e.offset + e.size > self.wbase + self.wlen:
                # never read past the buffer: an entry past the written end (hints naming a
                # record a truncated segment lost) is the slow path's, which reports it corrupt
                return NEED_READ
            rec = self.wbuf + (e.offset - self.wbase)
        elif e.fid < self.nmaps and self.maps[e.fid].base != NULL and \
                <uint64_t>e.offset + e.size <= self.maps[e.fid].length:
            rec = self.maps[e.fid].base + e.offset
        else:
            return NEED_READ
        if e.size < ZKV_REC_HEADER + kl or zkv_ld32(rec + 8) != kl or memcmp(rec + 16, kp, kl) != 0:
            if self._find(kp, kl, h) != i:
                return self._get_exact(key)   # 64-bit hash collision: take the exact path
            return CORRUPT
        if not zkv_rec_crc_ok(rec, e.size):
            return CORRUPT
        return PyBytes_FromStringAndSize(<const char *>rec + 16 + kl, e.size - 16 - kl)

    def read_record(self, uint32_t fid, uint64_t offset, uint64_t size):
        """Record bytes from the write buffer or a mapping, or None if neither holds them."""
        if fid == self.afid and offset >= self.wbase:
            if offset + size > self.wbase + self.wlen:
                return None
            return PyBytes_FromStringAndSize(<const char *>self.wbuf + (offset - self.wbase), size)
        if fid < self.nmaps and self.maps[fid].base != NULL and offset + size <= self.maps[fid].length:
            return PyBytes_FromStringAndSize(<const char *>self.maps[fid].base + offset, size)
        return None

    def close(self):
        """Forget the active fd and release every mapping (the owner closes files)."""
        self._drain()
        self.afd = -1
        self.afid = 0xFFFFFFFF
        self.release_maps(True)
