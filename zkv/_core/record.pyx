# cython: language_level=3
"""Record and hints codec of the storage engine: pure functions of bytes (formats in record.pxd).

The engine's hot paths (append, read, segment scan, hints load) call the C functions of
record.h directly from keydir.pyx; this module is the Python-facing face of the same format,
used by compaction, the data-file inspector and the tests.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from zkv._core.record cimport *
from zkv._core.murmur3 cimport zkv_hash64

HEADER_SIZE = ZKV_REC_HEADER
VERSION = ZKV_REC_VERSION
TOMBSTONE = ZKV_REC_TOMBSTONE
ZSTD = ZKV_REC_ZSTD
MAX_KEY = ZKV_REC_MAX_KEY
HINT_HEADER_SIZE = ZKV_HINT_HEADER
HINT_ENTRY_SIZE = ZKV_HINT_ENTRY
HINT_TRAILER_SIZE = ZKV_HINT_TRAILER
HINT_VERSION = ZKV_HINT_VERSION
HINT_MAGIC = b"ZKVH"

cdef const uint8_t _EMPTY[1]


def crc32c(data, unsigned int crc=0):
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    cdef const uint8_t[::1] v = data
    if v.shape[0] == 0:
        return crc
    return zkv_crc32c(crc, &v[0], v.shape[0])


def encode(bytes key, bytes value, int flags=0):
    """One record (header + key + value, CRC set) as bytes. No size policy beyond the format's."""
    cdef Py_ssize_t kl = len(key), vl = len(value)
    if kl < 1 or kl > ZKV_REC_MAX_KEY:
        raise ValueError("key length out of range")
    if <uint64_t>vl > 0xFFFFFFFFULL - ZKV_REC_HEADER - <uint64_t>kl:
        raise ValueError("value too large for the format")
    if not 0 <= flags <= 255:  # (one byte: 256 was stored as 0, -1 as 0xff)
        raise ValueError(f"flags must be 0..255, got {flags}")
    out = PyBytes_FromStringAndSize(NULL, ZKV_REC_HEADER + kl + vl)
    zkv_rec_write(<uint8_t *>PyBytes_AS_STRING(out), <uint8_t>flags, PyBytes_AS_STRING(key),
                  <uint32_t>kl, PyBytes_AS_STRING(value), <uint32_t>vl)
    return out


def record_size(data, Py_ssize_t offset=0):
    """Size of the plausible record header at ``offset`` (0 if none); does not check the CRC."""
    cdef const uint8_t[::1] v = data
    if offset < 0 or offset >= v.shape[0]:
        return 0
    return zkv_rec_plausible(&v[offset], v.shape[0] - offset)


def decode(data, Py_ssize_t offset=0):
    """Decode the record at ``offset``: ``(flags, key, stored_value, size)``.

    Raises ``zkv.errors.CorruptRecord`` when the header is implausible or the CRC is wrong.
    The value is returned as stored (still zstd-compressed when ``flags & ZSTD``).
    """
    cdef const uint8_t[::1] v = data
    cdef uint64_t size
    cdef uint32_t kl
    if offset < 0 or offset >= v.shape[0]:
        from zkv.errors import CorruptRecord
        raise CorruptRecord(f"no record at offset {offset}")
    size = zkv_rec_valid(&v[offset], v.shape[0] - offset)
    if size == 0:
        from zkv.errors import CorruptRecord
        raise CorruptRecord(f"bad record at offset {offset}")
    kl = zkv_ld32(&v[offset + 8])
    p = <const char *>&v[offset]
    key = PyBytes_FromStringAndSize(p + ZKV_REC_HEADER, kl)
    val = PyBytes_FromStringAndSize(p + ZKV_REC_HEADER + kl, size - ZKV_REC_HEADER - kl)
    return (v[offset + 5], key, val, size)


def scan(data):
    """Walk a segment image: a list of ``(offset, size, flags, key, ok)``.

    ``ok`` is False for a record whose CRC failed (key as read, maybe garbled) and for a region
    that could not be parsed (size = bytes skipped, flags = -1, key = b""). Resynchronises after
    a bad record by searching for the next valid one.
    """
    cdef const uint8_t[::1] v = data
    cdef uint64_t n = v.shape[0], off = 0, size
    cdef int64_t nxt
    cdef uint32_t kl
    out = []
    if n == 0:
        return out
    while off < n:
        size = zkv_rec_plausible(&v[off], n - off)
        if size and zkv_rec_crc_ok(&v[off], size):
            kl = zkv_ld32(&v[off + 8])
            out.append((off, size, v[off + 5], bytes(v[off + 16:off + 16 + kl]), True))
            off += size
            continue
        nxt = zkv_rec_resync(&v[0], off + 1, n)
        end = n if nxt < 0 else <uint64_t>nxt
        if size and off + size <= end:
            kl = zkv_ld32(&v[off + 8])
            out.append((off, size, v[off + 5], bytes(v[off + 16:off + 16 + kl]), False))
            if off + size < end:
                out.append((off + size, end - off - size, -1, b"", False))
        else:
            out.append((off, end - off, -1, b"", False))
        off = end
    return out


def build_hints(data, Py_ssize_t end=-1):
    """Hints file bytes for a segment image (first ``end`` bytes): one entry per valid record.
    Both walks over the image run without the GIL (a 64 MiB segment takes tens of
    milliseconds; a store seals its segments on a thread of its own: zkv/storage/logstore.py,
    _Sealer); `data` stays exported, so its buffer cannot be released meanwhile."""
    cdef const uint8_t[::1] v = data
    cdef uint64_t n = v.shape[0] if end < 0 else min(<uint64_t>end, <uint64_t>v.shape[0])
    cdef uint64_t total
    cdef const uint8_t *base
    if n == 0:
        base = _EMPTY
    else:
        base = &v[0]
    with nogil:
        total = _hints_size(base, n)
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        _hints_fill(base, n, o)
    return out


cdef uint64_t _hints_size(const uint8_t *base, uint64_t n) noexcept nogil:
    """Bytes of the hints file of the first n bytes at base."""
    cdef uint64_t off = 0, size, total = ZKV_HINT_HEADER + ZKV_HINT_TRAILER
    cdef int64_t nxt
    while off < n:
        size = zkv_rec_valid(base + off, n - off)
        if size:
            total += ZKV_HINT_ENTRY + zkv_ld32(base + off + 8)
            off += size
        else:
            nxt = zkv_rec_resync(base, off + 1, n)
            if nxt < 0:
                break
            off = <uint64_t>nxt
    return total


cdef void _hints_fill(const uint8_t *base, uint64_t n, uint8_t *o) noexcept nogil:
    """Write the hints file of the first n bytes at base to o (_hints_size(base, n) bytes)."""
    cdef uint64_t off = 0, size, count = 0
    cdef int64_t nxt
    cdef uint32_t kl
    memcpy(o, b"ZKVH", 4)
    o[4] = ZKV_HINT_VERSION
    o[5] = 0; o[6] = 0; o[7] = 0
    cdef uint8_t *w = o + ZKV_HINT_HEADER
    while off < n:
        size = zkv_rec_valid(base + off, n - off)
        if size:
            kl = zkv_ld32(base + off + 8)
            zkv_st64(w, zkv_hash64(base + off + 16, kl))
            zkv_st32(w + 8, <uint32_t>off)
            zkv_st32(w + 12, <uint32_t>size)
            zkv_st32(w + 16, kl)
            w[20] = base[off + 5]; w[21] = 0; w[22] = 0; w[23] = 0
            memcpy(w + 24, base + off + 16, kl)
            w += ZKV_HINT_ENTRY + kl
            count += 1
            off += size
        else:
            nxt = zkv_rec_resync(base, off + 1, n)
            if nxt < 0:
                break
            off = <uint64_t>nxt
    zkv_st64(o + 8, count)
    zkv_st32(w, zkv_crc32c(0, o, <size_t>(w - o)))


def hints_ok(data):
    """True if ``data`` is a complete hints file whose magic, version, entries and CRC check.

    The same judgement as KeyDir.load_hints (which refuses what this refuses): an entry's key
    length must be a record's, 1..ZKV_REC_MAX_KEY (the engine never writes another; an empty
    key passed here while the loader refused it, so the inspector called such a file good)."""
    cdef const uint8_t[::1] v = data
    cdef uint64_t n = v.shape[0], count, i, off
    cdef uint32_t kl
    if n < ZKV_HINT_HEADER + ZKV_HINT_TRAILER:
        return False
    if bytes(v[0:4]) != b"ZKVH" or v[4] != ZKV_HINT_VERSION:
        return False
    if zkv_crc32c(0, &v[0], n - 4) != zkv_ld32(&v[n - 4]):
        return False
    count = zkv_ld64(&v[8])
    off = ZKV_HINT_HEADER
    for i in range(count):
        if off + ZKV_HINT_ENTRY > n - 4:
            return False
        kl = zkv_ld32(&v[off + 16])
        if kl < 1 or kl > ZKV_REC_MAX_KEY:
            return False
        off += ZKV_HINT_ENTRY + kl
    return off == n - 4


def parse_hints(data):
    """Entries of a hints file as ``[(hash, offset, size, flags, key)]``, or None if it is bad."""
    if not hints_ok(data):
        return None
    cdef const uint8_t[::1] v = data
    cdef uint64_t count = zkv_ld64(&v[8]), i, off = ZKV_HINT_HEADER
    cdef uint32_t kl
    out = []
    for i in range(count):
        kl = zkv_ld32(&v[off + 16])
        out.append((zkv_ld64(&v[off]), zkv_ld32(&v[off + 8]), zkv_ld32(&v[off + 12]), v[off + 20],
                    bytes(v[off + 24:off + 24 + kl])))
        off += ZKV_HINT_ENTRY + kl
    return out


def key_hash(bytes key):
    """zkv_hash64(key): the 64-bit key hash kept in the keydir and the hints."""
    return zkv_hash64(PyBytes_AS_STRING(key), len(key))
