"""Which of the node's ZeroMQ sockets may hold input: one epoll_wait per loop turn.

Part of the transport (transport.py runs the loop; links.py registers and unregisters the
peer sockets here). It replaces `zmq.Poller`, whose every call checks each registered socket
twice (ZMQ_EVENTS before and after the wait: one mailbox poll(2) and one getpid(2) inside
libzmq per socket per check). A node has two sockets per member (a DEALER and a gossip SUB)
besides its ROUTER and the ROUTER's monitor, so at 3 nodes every turn paid 12 socket checks,
and at 100 nodes ~400, whether one socket had input or none. Measured with
`strace -c -f` on the three nodes of a local cluster under a sequential client: 89 poll(2)
calls per client operation with zmq.Poller (68 before the monitor and the per-member SUBs
existed), 36 with this; see benchmarks/RESULTS.md ("Node round trip").

How: each socket's ZMQ_FD (libzmq's mailbox signal) sits in an epoll set. The fd becomes
readable when the socket has news, but any operation on the socket (a send included) may
consume that signal while messages stay queued. So a socket is drained in the next turn if
epoll names its fd, or if its last drain stopped at the per-turn limit (`again`), or if it
was sent on since (`touched`) and its ZMQ_EVENTS, asked once before the next wait, says it
holds input. A drain reads until ZMQ_EVENTS has no POLLIN (or EAGAIN), which leaves the
socket with nothing unseen. A turn
with a socket known to hold input polls epoll without waiting.

epoll is Linux's; elsewhere (macOS, the BSDs) the same fds go to poll(2), one call per turn
too (`select.poll`: the whole set per call, fine at these sizes).
"""

from __future__ import annotations

import select

import zmq

from zkv import sockcalls

POLLIN = int(zmq.POLLIN)


class Reactor:
    def __init__(self, epoll: bool = hasattr(select, "epoll")) -> None:
        # epoll takes seconds, poll milliseconds; both answer [(fd, events)]
        self.ep = select.epoll() if epoll else select.poll()
        self.unit = 1.0 if epoll else 1000.0
        self.flag = select.EPOLLIN if epoll else select.POLLIN
        self.by_fd: dict[int, zmq.Socket] = {}
        self.fd_of: dict[zmq.Socket, int] = {}
        self.hot: set[zmq.Socket] = set()  # drain these next turn, whatever epoll says
        self.sent: set[zmq.Socket] = set()  # ask these for ZMQ_EVENTS before the next wait

    def register(self, sock: zmq.Socket, flags: int = zmq.POLLIN) -> None:
        """Watch `sock` for input (`flags` is accepted for zmq.Poller's signature; only
        POLLIN is watched)."""
        if sock in self.fd_of:
            return
        fd = int(sock.getsockopt(zmq.FD))
        self.ep.register(fd, self.flag)
        self.by_fd[fd] = sock
        self.fd_of[sock] = fd
        self.hot.add(sock)  # it may hold input already

    def unregister(self, sock: zmq.Socket) -> None:
        """Stop watching `sock` (before it is closed: its fd number may be reused)."""
        fd = self.fd_of.pop(sock, None)
        if fd is None:
            return
        self.hot.discard(sock)
        self.sent.discard(sock)
        if self.by_fd.get(fd) is sock:
            del self.by_fd[fd]
            try:
                self.ep.unregister(fd)
            except (OSError, KeyError):  # epoll / poll: not registered (any more)
                pass

    def again(self, sock: zmq.Socket) -> None:
        """The drain of `sock` stopped at its limit, not empty: drain it again next turn."""
        self.hot.add(sock)

    def touched(self, sock: zmq.Socket) -> None:
        """`sock` was sent on: it may hold input its fd no longer signals."""
        if sock in self.fd_of:
            self.sent.add(sock)

    def poll(self, timeout: float) -> set[zmq.Socket]:
        """The sockets that may hold input, waiting up to `timeout` seconds if none is known
        to (0: do not wait)."""
        if self.sent:
            zmq_events = sockcalls.events
            for sent in self.sent:
                if zmq_events(sent) & POLLIN:
                    self.hot.add(sent)
            self.sent.clear()
        events = self.ep.poll(0 if self.hot else max(timeout, 0.0) * self.unit)
        ready, self.hot = self.hot, set()
        by_fd = self.by_fd
        for fd, _ in events:
            sock = by_fd.get(fd)
            if sock is not None:
                ready.add(sock)
        return ready

    def close(self) -> None:
        close = getattr(self.ep, "close", None)  # a poll object has nothing to close
        if close is not None:
            close()
