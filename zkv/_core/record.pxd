# record.pxd -- THE on-disk formats of the storage engine, defined once (implemented in record.h).
#
# Segment file "seg-<major:010d>-<minor:04d>.data": records back to back, no file header
# (every record carries its own format version). All integers little-endian.
#
#   Record (16-byte header + key + value):
#     off  size  field
#       0     4  crc      CRC32C (Castagnoli) over bytes [4, 16 + klen + vlen): header rest + body
#       4     1  version  record format version, currently 1
#       5     1  flags    bit0 TOMBSTONE (vlen == 0), bit1 ZSTD (value is a zstd frame); others 0
#       6     2  reserved 0
#       8     4  klen     key length, 1 .. 65536
#      12     4  vlen     stored value length (after compression), 0 for a tombstone
#      16  klen  key
#   16+klen vlen value
#
# Hints file "seg-<major:010d>-<minor:04d>.hint", one per immutable segment: every record of
# the segment, in order, without values, so a reopen rebuilds the keydir without reading values.
#
#   Header (16 bytes):
#       0     4  magic    b"ZKVH"
#       4     1  version  hints format version, currently 1
#       5     3  reserved 0
#       8     8  count    number of entries
#   Entry (24 bytes + key), `count` times:
#       0     8  hash     zkv_hash64(key) (murmur3 x64_128 first half, seed 0)
#       8     4  offset   record offset in the segment
#      12     4  size     record size in bytes (16 + klen + vlen)
#      16     4  klen     key length
#      20     1  flags    the record's flags
#      21     3  reserved 0
#      24  klen  key
#   Trailer (4 bytes):
#       0     4  crc      CRC32C over header and all entries; a mismatch means "scan the segment"
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

cdef extern from "record.h" nogil:
    const uint32_t ZKV_REC_HEADER      # 16: record header bytes
    const uint32_t ZKV_REC_VERSION     # 1: record format version
    const uint32_t ZKV_REC_TOMBSTONE   # flag bit0
    const uint32_t ZKV_REC_ZSTD        # flag bit1
    const uint32_t ZKV_REC_MAX_KEY     # 65536: largest key the format allows
    const uint32_t ZKV_HINT_HEADER     # 16: hints file header bytes
    const uint32_t ZKV_HINT_ENTRY      # 24: hints entry bytes before the key
    const uint32_t ZKV_HINT_TRAILER    # 4: hints trailer (CRC32C)
    const uint32_t ZKV_HINT_VERSION    # 1: hints format version
    # CRC32C of p[0:n] continuing from crc (0 to start)
    uint32_t zkv_crc32c(uint32_t crc, const void *p, size_t n)
    uint32_t zkv_ld32(const uint8_t *p)                  # little-endian loads / stores
    uint64_t zkv_ld64(const uint8_t *p)
    void zkv_st32(uint8_t *p, uint32_t v)
    void zkv_st64(uint8_t *p, uint64_t v)
    # write header+key+value (with CRC) at out (16 + klen + vlen bytes)
    void zkv_rec_write(uint8_t *out, uint8_t flags, const void *key, uint32_t klen,
                       const void *val, uint32_t vlen)
    # record size if the header at p is plausible (version, flags, lengths fit avail), else 0
    uint64_t zkv_rec_plausible(const uint8_t *p, uint64_t avail)
    # 1 if the CRC of the record of `size` bytes at p matches
    int zkv_rec_crc_ok(const uint8_t *p, uint64_t size)
    # record size if a plausible record with a good CRC starts at p, else 0
    uint64_t zkv_rec_valid(const uint8_t *p, uint64_t avail)
    # first offset in [frm, n) where a valid record starts, or -1
    int64_t zkv_rec_resync(const uint8_t *base, uint64_t frm, uint64_t n)
