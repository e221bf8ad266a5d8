# zsock.pxd -- the socket fast path's C entry points (see zsock.pyx for why and how).

cdef void *_handle(object sock) except NULL
cdef int _send(void *h, bytes data, int flags)
