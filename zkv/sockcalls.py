"""The socket calls made per frame (events, recv, send; send_tracked for the node's big replies)
by the node's transport and by both clients: zkv._core.zsock's C versions where it found the libzmq pyzmq runs on, else the same
calls through pyzmq.

Both behave alike (tests/test_sockcalls.py runs the same checks on each): none blocks,
`recv` answers None when nothing is queued and a whole message otherwise, `send` answers 0
or the errno that refused the message, `send_tracked` (0, a tracker whose `done` says libzmq
let go of the message) or (that errno, None).
"""

from __future__ import annotations

import zmq

from zkv._core import zsock

MAX_PARTS = zsock.MAX_PARTS


def py_events(sock: zmq.Socket) -> int:
    return int(sock.get(zmq.EVENTS))


def py_recv(sock: zmq.Socket, meta: bool = False
            ) -> tuple[list[bytes], int, int, str | None] | None:
    try:
        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    fd, user_id = -1, None
    if meta:
        fd = int(frames[-1].get(zmq.SRCFD))
        try:
            user_id = str(frames[-1].get("User-Id"))
        except zmq.ZMQError:  # no User-Id property (no ZAP handler)
            user_id = None
    return [f.bytes for f in frames[:MAX_PARTS]], len(frames), fd, user_id


def py_send(sock: zmq.Socket, payload: bytes, ident: bytes | None = None) -> int:
    try:
        if ident is None:
            sock.send(payload, zmq.NOBLOCK)
        else:
            sock.send_multipart([ident, payload], zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.ENOTSOCK:  # closed: a bug of the caller, as with zsock
            raise
        return exc.errno or zmq.EAGAIN
    return 0


def py_send_tracked(sock: zmq.Socket, ident: bytes | None, payload: bytes
                    ) -> tuple[int, zmq.MessageTracker | zsock.Tracker | None]:
    try:
        parts = [payload] if ident is None else [ident, payload]
        return 0, sock.send_multipart(parts, zmq.NOBLOCK, copy=False, track=True)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.ENOTSOCK:
            raise
        return exc.errno or zmq.EAGAIN, None


FAST = zsock.AVAILABLE
events = zsock.events if FAST else py_events
recv = zsock.recv if FAST else py_recv
send = zsock.send if FAST else py_send
send_tracked = zsock.send_tracked if FAST else py_send_tracked
