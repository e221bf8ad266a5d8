"""The socket calls made per frame (events, recv, send; send_tracked for the node's big replies)
by the node's transport and by both clients: zkv._core.zsock's C versions where it found the libzmq pyzmq runs on, else the same
calls through pyzmq.

Both behave alike (tests/test_sockcalls.py runs the same checks on each): none blocks,
`recv` answers None when nothing is queued and a whole message otherwise, `send` answers 0
or the errno that refused the message, `send_tracked` (0, a tracker whose `done` says libzmq
let go of the message) or (that errno, None). And one call made once, at a node's stop:
`term_within`, the context's term() bounded in time.

`recv(sock, meta=True)` on a ROUTER names a frame's connection as it named itself. With
ROUTER_HANDOVER (the node's ROUTER), a peer whose connection dropped while this process did
not read (paused: SIGSTOP) reconnects under the same identity; libzmq gives the identity to
the new connection and renames the old one b"\\0" + a 32-bit counter, the name it gives a
connection that sent none, and the frames the old connection had queued are then read under
that name. In plain text a name not b"peer:..." is an admin's, so a peer's queued replica
writes were refused "from an admin connection" (an outside run: 3 of 13 pauses under load).
For a frame under such a made-up name whose connection did name itself (its "Identity"
property, fixed at the handshake: the name it held before the rename), that name is given
back: the frames are the same peer's, and its replies go to its new connection, the same
DEALER, which is waiting for them.
"""

from __future__ import annotations

import logging
import threading

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
    parts = [f.bytes for f in frames[:MAX_PARTS]]
    if meta:
        fd = int(frames[-1].get(zmq.SRCFD))
        try:
            user_id = str(frames[-1].get("User-Id"))
        except zmq.ZMQError:  # no User-Id property (no ZAP handler)
            user_id = None
        if len(frames) > 1 and generated(parts[0]):  # (renamed by ROUTER_HANDOVER?)
            try:
                name = str(frames[-1].get("Identity")).encode("utf-8", "surrogateescape")
            except (zmq.ZMQError, UnicodeError):  # (pyzmq decodes it as UTF-8: a name that
                name = b""  # is not stays libzmq's made-up one)
            if name:
                parts[0] = name
    return parts, len(frames), fd, user_id


def generated(ident: bytes) -> bool:
    """A routing id libzmq made (b"\\0" + a 32-bit counter): a connection that sent none, or
    one renamed by ROUTER_HANDOVER."""
    return len(ident) == 5 and ident[0] == 0


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


TERM_WAIT = 10.0  # s a stopping node waits for its context's term() (then exits without it)


def term_within(zctx: zmq.Context, seconds: float, who: str = "",
                logger: str = "zkv.node") -> bool:
    """zctx.term(), given up after `seconds` (False then, and said as a warning naming `who`;
    the call is left to the process's exit in a daemon thread). libzmq 4.3.5 can lose a
    ROUTER closed while its pipe to a peer that has just gone still holds a message, and
    term() then waits for it for ever (about 1 close in 300 in a loop; libzmq#3252;
    tests/test_sockcalls.py): a node stopping as its peers stop, each answering the others,
    must not hang its exit on it."""
    t = threading.Thread(target=zctx.term, name="zkv-term", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        logging.getLogger(logger).warning(
            "%s: ZeroMQ's term() still blocked after %ss (a libzmq race on a closing ROUTER); "
            "exiting without it", who or "zmq", seconds)
        return False
    return True


FAST = zsock.AVAILABLE
events = zsock.events if FAST else py_events
recv = zsock.recv if FAST else py_recv
send = zsock.send if FAST else py_send
send_tracked = zsock.send_tracked if FAST else py_send_tracked
