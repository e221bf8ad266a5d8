"""zkv's Cython core: pure algorithms over bytes and ints, free of I/O and clocks, and the
transport's per-frame socket calls (zsock, the one module here that does I/O).

- ring:   fixed-partition consistent-hash ring (murmur3 -> partition -> preference list)
- dvv:    dotted version vector sets (causality, siblings, contexts)
- merkle: per-partition hash trees for anti-entropy
- keydir: the storage engine's in-memory C hash table
- record: the storage engine's on-disk record codec
- zsock:  non-blocking receive/send/ZMQ_EVENTS on pyzmq sockets, straight into libzmq

Each module ships .pxd (for ``cimport zkv._core.X``), .pyx and .pyi.
"""
