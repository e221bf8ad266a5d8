/* murmur3.h -- MurmurHash3 x64_128 (Austin Appleby, public domain algorithm), header-only.
 *
 * The one hash zkv places keys with: ring partitions, keydir buckets and Merkle leaves all
 * use zkv_murmur3_x64_128(key, len, seed=0). Output words are little-endian-independent
 * (computed on uint64 lanes read as little-endian), so placement is identical on every
 * platform; tests pin it against the `mmh3` package (mmh3.hash64(k, signed=False)).
 */
#ifndef ZKV_MURMUR3_H
#define ZKV_MURMUR3_H
#include <stdint.h>
#include <string.h>

static inline uint64_t zkv_rotl64(uint64_t x, int8_t r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t zkv_fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t zkv_load64le(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
#endif
}

/* out[0], out[1]: the two 64-bit halves; out[0] == mmh3.hash64(key, seed, signed=False)[0]. */
static inline void zkv_murmur3_x64_128(const void *key, size_t len, uint32_t seed, uint64_t out[2]) {
    const uint8_t *data = (const uint8_t *)key;
    const size_t nblocks = len / 16;
    uint64_t h1 = seed, h2 = seed;
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    for (size_t i = 0; i < nblocks; i++) {
        uint64_t k1 = zkv_load64le(data + i * 16);
        uint64_t k2 = zkv_load64le(data + i * 16 + 8);
        k1 *= c1; k1 = zkv_rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        h1 = zkv_rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= c2; k2 = zkv_rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        h2 = zkv_rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }
    const uint8_t *tail = data + nblocks * 16;
    uint64_t k1 = 0, k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= ((uint64_t)tail[14]) << 48; /* fallthrough */
    case 14: k2 ^= ((uint64_t)tail[13]) << 40; /* fallthrough */
    case 13: k2 ^= ((uint64_t)tail[12]) << 32; /* fallthrough */
    case 12: k2 ^= ((uint64_t)tail[11]) << 24; /* fallthrough */
    case 11: k2 ^= ((uint64_t)tail[10]) << 16; /* fallthrough */
    case 10: k2 ^= ((uint64_t)tail[9]) << 8;   /* fallthrough */
    case 9:  k2 ^= ((uint64_t)tail[8]);
             k2 *= c2; k2 = zkv_rotl64(k2, 33); k2 *= c1; h2 ^= k2; /* fallthrough */
    case 8:  k1 ^= ((uint64_t)tail[7]) << 56;  /* fallthrough */
    case 7:  k1 ^= ((uint64_t)tail[6]) << 48;  /* fallthrough */
    case 6:  k1 ^= ((uint64_t)tail[5]) << 40;  /* fallthrough */
    case 5:  k1 ^= ((uint64_t)tail[4]) << 32;  /* fallthrough */
    case 4:  k1 ^= ((uint64_t)tail[3]) << 24;  /* fallthrough */
    case 3:  k1 ^= ((uint64_t)tail[2]) << 16;  /* fallthrough */
    case 2:  k1 ^= ((uint64_t)tail[1]) << 8;   /* fallthrough */
    case 1:  k1 ^= ((uint64_t)tail[0]);
             k1 *= c1; k1 = zkv_rotl64(k1, 31); k1 *= c2; h1 ^= k1;
    }
    h1 ^= (uint64_t)len; h2 ^= (uint64_t)len;
    h1 += h2; h2 += h1;
    h1 = zkv_fmix64(h1); h2 = zkv_fmix64(h2);
    h1 += h2; h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

static inline uint64_t zkv_hash64(const void *key, size_t len) {
    uint64_t out[2];
    zkv_murmur3_x64_128(key, len, 0, out);
    return out[0];
}
#endif
