# cython: language_level=3
"""The transport's per-frame socket calls in C: non-blocking receive and send on pyzmq sockets,
straight into libzmq, without pyzmq's per-call Python layer.

Why: a node handles every frame with a few socket calls, and pyzmq's cost per call is mostly
its own Python layer, not libzmq. Measured on loopback (benchmarks/RESULTS.md, "The
per-frame socket calls"): a ROUTER frame as the transport took it (recv_multipart(copy=False),
the two frames' bytes, the SRCFD and User-Id properties, then ZMQ_EVENTS) cost 7-14 us of
which libzmq's own work is ~1.5 us; every getsockopt builds a `SocketOption` enum member (~1.3 us);
every send releases and retakes the GIL. Here each call is one C function: no Frame objects,
no enums, no exceptions for EAGAIN, and the GIL is kept (every call is ZMQ_DONTWAIT: none
blocks).

How it reaches libzmq: pyzmq loads libzmq privately (RTLD_LOCAL), so this module cannot link
against it. At import it finds the libzmq the running pyzmq uses (its path in
/proc/self/maps, or pyzmq's own extension when libzmq is linked into it), checks that its
version is the one pyzmq reports, and takes the addresses of the thirteen functions it needs
with ctypes. Where that fails (not Linux, an unusual build) `AVAILABLE` is False and the
callers use pyzmq as before (zkv/sockcalls.py). Sockets are passed as pyzmq sockets;
their C handle is read from `Socket.underlying`, and a closed socket raises ZMQError(ENOTSOCK)
before libzmq is touched.
"""

from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef extern from "errno.h":
    int EAGAIN
    int EINTR

cdef enum:  # zmq.h
    ZMQ_DONTWAIT = 1
    ZMQ_SNDMORE = 2
    ZMQ_EVENTS = 15
    ZMQ_SRCFD = 2

ctypedef struct zmsg:  # zmq_msg_t: 64 opaque bytes, 8-aligned
    uint64_t _[8]

cdef extern from *:
    """
    /* A tracked send's buffer: this header, then the payload. Two holders, each dropping one
       reference: libzmq (its free function, called on its I/O thread once the message is
       written out or dropped) and the Tracker object. `done` is set by libzmq's release. */
    typedef struct { int refs; int done; } zkv_tracked;
    static inline void zkv_tracked_drop(zkv_tracked *t) {
        if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0) free(t);
    }
    static void zkv_tracked_release(void *data, void *hint) {
        zkv_tracked *t = (zkv_tracked *)hint;
        __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
        zkv_tracked_drop(t);
    }
    static inline int zkv_tracked_done(zkv_tracked *t) {
        return __atomic_load_n(&t->done, __ATOMIC_ACQUIRE);
    }
    """
    ctypedef struct zkv_tracked:
        int refs
        int done
    void zkv_tracked_drop(zkv_tracked *t) noexcept nogil
    void zkv_tracked_release(void *data, void *hint) noexcept nogil
    int zkv_tracked_done(zkv_tracked *t) noexcept nogil

ctypedef int (*f_getsockopt)(void *s, int option, void *value, size_t *size) noexcept nogil
ctypedef int (*f_send)(void *s, const void *buf, size_t len, int flags) noexcept nogil
ctypedef int (*f_msg_init)(zmsg *m) noexcept nogil
ctypedef int (*f_msg_recv)(zmsg *m, void *s, int flags) noexcept nogil
ctypedef int (*f_msg_close)(zmsg *m) noexcept nogil
ctypedef void *(*f_msg_data)(zmsg *m) noexcept nogil
ctypedef size_t (*f_msg_size)(const zmsg *m) noexcept nogil
ctypedef int (*f_msg_more)(const zmsg *m) noexcept nogil
ctypedef int (*f_msg_get)(const zmsg *m, int prop) noexcept nogil
ctypedef const char *(*f_msg_gets)(const zmsg *m, const char *prop) noexcept nogil
ctypedef int (*f_errno)() noexcept nogil
ctypedef void (*f_free)(void *data, void *hint) noexcept nogil
ctypedef int (*f_msg_init_data)(zmsg *m, void *data, size_t size, f_free ffn,
                                void *hint) noexcept nogil
ctypedef int (*f_msg_send)(zmsg *m, void *s, int flags) noexcept nogil

cdef f_getsockopt z_getsockopt = NULL
cdef f_send z_send = NULL
cdef f_msg_init z_msg_init = NULL
cdef f_msg_recv z_msg_recv = NULL
cdef f_msg_close z_msg_close = NULL
cdef f_msg_data z_msg_data = NULL
cdef f_msg_size z_msg_size = NULL
cdef f_msg_more z_msg_more = NULL
cdef f_msg_get z_msg_get = NULL
cdef f_msg_gets z_msg_gets = NULL
cdef f_errno z_errno = NULL
cdef f_msg_init_data z_msg_init_data = NULL
cdef f_msg_send z_msg_send = NULL

MAX_PARTS = 8  # parts kept of one message (the rest are read and dropped: a hostile sender)


def _libzmq_candidates():
    """Paths that may hold the libzmq pyzmq runs on: mapped libraries named libzmq, then
    pyzmq's extension itself (libzmq linked in statically)."""
    import os

    import zmq.backend.cython._zmq as ext
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(None, 5)  # address perms offset dev inode [path]
                path = fields[5].strip() if len(fields) == 6 else ""
                if "libzmq" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    paths.append(ext.__file__)
    return paths


def _bind():
    """Take libzmq's function addresses; False if no candidate is the libzmq pyzmq uses."""
    global z_getsockopt, z_send, z_msg_init, z_msg_recv, z_msg_close, z_msg_data, z_msg_size
    global z_msg_more, z_msg_get, z_msg_gets, z_errno, z_msg_init_data, z_msg_send
    import ctypes

    import zmq
    for path in _libzmq_candidates():
        try:
            lib = ctypes.CDLL(path)
            major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
            if (major.value, minor.value, patch.value) != zmq.zmq_version_info():
                continue
            addr = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in (
                "zmq_getsockopt", "zmq_send", "zmq_msg_init", "zmq_msg_recv", "zmq_msg_close",
                "zmq_msg_data", "zmq_msg_size", "zmq_msg_more", "zmq_msg_get", "zmq_msg_gets",
                "zmq_errno", "zmq_msg_init_data", "zmq_msg_send")}
        except (OSError, AttributeError):
            continue
        if not all(addr.values()):
            continue
        z_getsockopt = <f_getsockopt><uintptr_t>addr["zmq_getsockopt"]
        z_send = <f_send><uintptr_t>addr["zmq_send"]
        z_msg_init = <f_msg_init><uintptr_t>addr["zmq_msg_init"]
        z_msg_recv = <f_msg_recv><uintptr_t>addr["zmq_msg_recv"]
        z_msg_close = <f_msg_close><uintptr_t>addr["zmq_msg_close"]
        z_msg_data = <f_msg_data><uintptr_t>addr["zmq_msg_data"]
        z_msg_size = <f_msg_size><uintptr_t>addr["zmq_msg_size"]
        z_msg_more = <f_msg_more><uintptr_t>addr["zmq_msg_more"]
        z_msg_get = <f_msg_get><uintptr_t>addr["zmq_msg_get"]
        z_msg_gets = <f_msg_gets><uintptr_t>addr["zmq_msg_gets"]
        z_errno = <f_errno><uintptr_t>addr["zmq_errno"]
        z_msg_init_data = <f_msg_init_data><uintptr_t>addr["zmq_msg_init_data"]
        z_msg_send = <f_msg_send><uintptr_t>addr["zmq_msg_send"]
        return True
    return False


try:
    AVAILABLE = _bind()
except ImportError:  # no pyzmq
    AVAILABLE = False


cdef void *_handle(object sock) except NULL:
    """The libzmq socket behind a pyzmq socket (ZMQError if it is closed)."""
    if not AVAILABLE:
        raise RuntimeError("zkv._core.zsock: libzmq was not found (AVAILABLE is False)")
    if sock.closed:
        import zmq
        raise zmq.ZMQError(zmq.ENOTSOCK)
    return <void *><uintptr_t>sock.underlying


cdef object _error(int err):
    import zmq
    return zmq.ZMQError(err)


def events(sock) -> int:
    """The socket's ZMQ_EVENTS (POLLIN 1 | POLLOUT 2)."""
    cdef void *h = _handle(sock)
    cdef int value = 0
    cdef size_t size = sizeof(int)
    while z_getsockopt(h, ZMQ_EVENTS, &value, &size) != 0:
        if z_errno() != EINTR:  # a signal (SIGTERM to the node): ask again, as pyzmq does
            raise _error(z_errno())
    return value


def recv(sock, bint meta=False):
    """One whole message, without waiting: None if none is queued, else its parts (bytes; at
    most MAX_PARTS kept, and a count of every part) and, with `meta`, the connection's fd
    (ZMQ_SRCFD, -1 if unknown) and the ZAP User-Id (None without one), both read from the
    last part: ``(parts, count, fd, user_id)``. Other errors raise ZMQError.

    With `meta`, a ROUTER's first part is the routing id the connection named itself in its
    handshake (its "Identity" property) when libzmq renamed it: ROUTER_HANDOVER gives a
    reconnecting peer's identity to its new connection and names the old one b"\\0" + 4
    bytes, while the frames the old one had queued are still read (sockcalls.py says more)."""
    cdef void *h = _handle(sock)
    cdef zmsg m
    cdef int rc, more = 1, count = 0, fd = -1
    cdef const char *uid = NULL
    cdef list parts = []
    cdef object user_id = None
    while more:
        z_msg_init(&m)
        rc = z_msg_recv(&m, h, ZMQ_DONTWAIT)  # a message's parts arrive together
        while rc < 0 and z_errno() == EINTR:
            rc = z_msg_recv(&m, h, ZMQ_DONTWAIT)
        if rc < 0:
            rc = z_errno()
            z_msg_close(&m)
            if count == 0 and rc == EAGAIN:
                return None
            raise _error(rc)
        if count < MAX_PARTS:
            parts.append(PyBytes_FromStringAndSize(<char *>z_msg_data(&m), z_msg_size(&m)))
        count += 1
        more = z_msg_more(&m)
        if meta and not more:  # the last part came from the connection (a ROUTER makes
            fd = z_msg_get(&m, ZMQ_SRCFD)  # the identity part itself, without properties)
            uid = z_msg_gets(&m, b"User-Id")
            if uid != NULL:
                user_id = uid.decode("utf-8", "replace")
            if count > 1 and _generated(parts[0]):
                uid = z_msg_gets(&m, b"Identity")
                if uid != NULL and uid[0] != 0:
                    parts[0] = <bytes>uid
        z_msg_close(&m)
    return parts, count, fd, user_id


cdef inline bint _generated(bytes ident):
    """A routing id libzmq made (b"\\0" + a 32-bit counter): a connection that sent none, or
    one renamed by ROUTER_HANDOVER."""
    return PyBytes_GET_SIZE(ident) == 5 and PyBytes_AS_STRING(ident)[0] == 0


def send(sock, bytes payload, bytes ident=None) -> int:
    """Queue one message without waiting (libzmq copies it); with `ident`, a ROUTER's
    two-part [identity, payload]. Returns 0, or the errno that refused it (EAGAIN: the
    queue is full; EHOSTUNREACH: no such identity under ROUTER_MANDATORY; ...)."""
    cdef void *h = _handle(sock)
    cdef int err
    if ident is not None:
        err = _send(h, ident, ZMQ_DONTWAIT | ZMQ_SNDMORE)
        if err:
            return err
    return _send(h, payload, ZMQ_DONTWAIT)


cdef int _send(void *h, bytes data, int flags):
    """zmq_send, again after a signal; 0 or the errno."""
    while z_send(h, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), flags) < 0:
        if z_errno() != EINTR:
            return z_errno()
    return 0


cdef class Tracker:
    """Whether libzmq has let go of a reply sent with `send_tracked` (written to the
    connection, or dropped with it): `done`, as pyzmq's MessageTracker, without pyzmq's
    zero-copy machinery (a Frame, an inproc socket and a thread per release)."""

    cdef zkv_tracked *t

    def __dealloc__(self):
        if self.t != NULL:
            zkv_tracked_drop(self.t)
            self.t = NULL

    @property
    def done(self) -> bool:
        return self.t == NULL or zkv_tracked_done(self.t) != 0  # (NULL: not from a send)


def send_tracked(sock, bytes ident, bytes payload):
    """A ROUTER's [identity, payload] (or, `ident` None, a DEALER's payload) without waiting,
    the payload copied once into a buffer libzmq releases when it is done with it (the caps
    on the bytes queued per connection and per peer, zkv/node/conns.py, count until then).
    Returns (0, Tracker), or (errno, None) when refused (EAGAIN: queue full; EHOSTUNREACH:
    no such identity under ROUTER_MANDATORY)."""
    cdef void *h = _handle(sock)
    cdef size_t n = PyBytes_GET_SIZE(payload)
    cdef zmsg m
    cdef int err
    cdef zkv_tracked *t = <zkv_tracked *>malloc(sizeof(zkv_tracked) + n)
    if t == NULL:
        raise MemoryError()  # before any part is queued
    t.refs = 2
    t.done = 0
    memcpy(<char *>t + sizeof(zkv_tracked), PyBytes_AS_STRING(payload), n)
    if ident is not None:
        err = _send(h, ident, ZMQ_DONTWAIT | ZMQ_SNDMORE)
        if err:
            free(t)  # nobody else holds it yet
            return err, None
    tracker = Tracker.__new__(Tracker)
    (<Tracker>tracker).t = t  # the Tracker's reference, dropped when it is freed
    if z_msg_init_data(&m, <char *>t + sizeof(zkv_tracked), n, zkv_tracked_release, t) != 0:
        err = z_errno()
        zkv_tracked_release(NULL, t)  # libzmq never took its reference
        return err, None
    while z_msg_send(&m, h, ZMQ_DONTWAIT) < 0:
        err = z_errno()
        if err != EINTR:
            z_msg_close(&m)  # releases the buffer: libzmq's reference
            return err, None
    return 0, tracker
