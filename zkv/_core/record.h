/* record.h -- C side of the storage record codec: CRC32C and the record / hints layouts.
 *
 * The byte layout itself is documented once, in record.pxd (read that first); this header only
 * implements it. Everything here is a pure function of bytes: no I/O, no clocks, no allocation.
 *
 * CRC32C (Castagnoli) uses the SSE4.2 crc32 instruction when the CPU has it (checked once at
 * run time, compiled with a per-function target attribute so no extra compiler flags are needed)
 * and a byte-wise table otherwise. Both give the same value as the iSCSI / RFC 3720 CRC32C.
 */
#ifndef ZKV_RECORD_H
#define ZKV_RECORD_H
#include <stdint.h>
#include <string.h>
#include <stddef.h>

#define ZKV_REC_HEADER 16u
#define ZKV_REC_VERSION 1u
#define ZKV_REC_TOMBSTONE 1u
#define ZKV_REC_ZSTD 2u
#define ZKV_REC_MAX_KEY 65536u
#define ZKV_HINT_HEADER 16u
#define ZKV_HINT_ENTRY 24u
#define ZKV_HINT_TRAILER 4u
#define ZKV_HINT_VERSION 1u

static uint32_t zkv_crc32c_table[256];
static int zkv_crc32c_ready = 0;
static int zkv_crc32c_hw = 0;

static void zkv_crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        zkv_crc32c_table[i] = c;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    zkv_crc32c_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    zkv_crc32c_ready = 1;
}

static uint32_t zkv_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) crc = zkv_crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t zkv_crc32c_hw_impl(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = (uint32_t)~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

/* CRC32C of p[0:n], continuing from crc (0 to start). */
static inline uint32_t zkv_crc32c(uint32_t crc, const void *p, size_t n) {
    if (!zkv_crc32c_ready) zkv_crc32c_init();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (zkv_crc32c_hw) return zkv_crc32c_hw_impl(crc, (const uint8_t *)p, n);
#endif
    return zkv_crc32c_sw(crc, (const uint8_t *)p, n);
}

static inline uint32_t zkv_ld32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t zkv_ld64(const uint8_t *p) {
    return (uint64_t)zkv_ld32(p) | ((uint64_t)zkv_ld32(p + 4) << 32);
}
static inline void zkv_st32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void zkv_st64(uint8_t *p, uint64_t v) {
    zkv_st32(p, (uint32_t)v);
    zkv_st32(p + 4, (uint32_t)(v >> 32));
}

/* Write one record (header + key + value) at out; out must have 16 + klen + vlen bytes. */
static inline void zkv_rec_write(uint8_t *out, uint8_t flags, const void *key, uint32_t klen,
                                 const void *val, uint32_t vlen) {
    out[4] = (uint8_t)ZKV_REC_VERSION;
    out[5] = flags;
    out[6] = 0;
    out[7] = 0;
    zkv_st32(out + 8, klen);
    zkv_st32(out + 12, vlen);
    memcpy(out + ZKV_REC_HEADER, key, klen);
    if (vlen) memcpy(out + ZKV_REC_HEADER + klen, val, vlen);
    zkv_st32(out, zkv_crc32c(0, out + 4, ZKV_REC_HEADER - 4 + (size_t)klen + vlen));
}

/* Is there a plausible header at p (avail bytes readable)? Returns the record size or 0. */
static inline uint64_t zkv_rec_plausible(const uint8_t *p, uint64_t avail) {
    if (avail < ZKV_REC_HEADER) return 0;
    if (p[4] != ZKV_REC_VERSION || (p[5] & ~(ZKV_REC_TOMBSTONE | ZKV_REC_ZSTD)) || p[6] || p[7])
        return 0;
    uint32_t klen = zkv_ld32(p + 8), vlen = zkv_ld32(p + 12);
    if (klen == 0 || klen > ZKV_REC_MAX_KEY) return 0;
    uint64_t size = (uint64_t)ZKV_REC_HEADER + klen + vlen;
    if (size > avail) return 0;
    return size;
}

/* Does the record of `size` bytes at p carry a correct CRC? */
static inline int zkv_rec_crc_ok(const uint8_t *p, uint64_t size) {
    return zkv_ld32(p) == zkv_crc32c(0, p + 4, (size_t)size - 4);
}

/* Full check: returns the record size if a valid record starts at p, else 0. */
static inline uint64_t zkv_rec_valid(const uint8_t *p, uint64_t avail) {
    uint64_t size = zkv_rec_plausible(p, avail);
    if (size && zkv_rec_crc_ok(p, size)) return size;
    return 0;
}

/* First offset in [from, n) where a valid record starts, or -1. Used to resynchronise after a
 * corrupt record: a hit means the corruption was in the middle, no hit means a torn tail. */
static inline int64_t zkv_rec_resync(const uint8_t *base, uint64_t from, uint64_t n) {
    for (uint64_t o = from; o + ZKV_REC_HEADER <= n; o++) {
        if (zkv_rec_valid(base + o, n - o)) return (int64_t)o;
    }
    return -1;
}

#endif
