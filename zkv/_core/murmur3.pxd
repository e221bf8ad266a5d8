# murmur3.pxd -- cimport-able declarations of zkv's one key hash (see murmur3.h).
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "murmur3.h" nogil:
    # out[0] == mmh3.hash64(key, signed=False)[0]; out[1] the second half
    void zkv_murmur3_x64_128(const void *key, size_t length, uint32_t seed, uint64_t out[2])
    # first 64-bit half with seed 0: the key hash used by ring, keydir and merkle
    uint64_t zkv_hash64(const void *key, size_t length)
