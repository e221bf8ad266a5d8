"""Socket options for fast failure detection and reconnection, set on every zkv socket (issue 10).

Without them a connection whose peer vanished (network cut, frozen host) stays "up" until
the kernel's retransmission backoff gives up, so both sides of a healed partition went on
missing each other for 7-10 s. With them the kernel drops such a connection within ~2-3 s
and ZeroMQ redials on a short, bounded interval, each dial giving up after CONNECT_TIMEOUT:
a healed link is back within about CONNECT_TIMEOUT + RECONNECT_IVL_MAX plus one handshake.

Call ``tune_socket(sock, role)`` after creating a socket and before its ``connect``/``bind``
(options apply to connections made afterwards). The roles:

- ``"client"``: a client's DEALER to a node (zkv.client).
- ``"peer"``: a node's DEALER to another node (the node transport).
- ``"server"``: a node's bound ROUTER (clients' and peers' connections arrive here).
- ``"gossip"``: the gossip PUB (bound) and SUB (connected) sockets.

Every role gets the same values today; the role is there so one can diverge without touching
the callers.

The dead path is found by TCP itself, not by ZMTP heartbeats (ZMQ_HEARTBEAT_*, which zkv
used until it saw them abort a node): an idle connection by keepalive probes, a busy one by
TCP_USER_TIMEOUT (ZMQ_TCP_MAXRT: data unacknowledged for that long). libzmq 4.3.5, the one
pyzmq's wheels ship, aborts the process when a connection whose input is stopped (its pipe
at RCVHWM: the application not reading for a moment, as a node's bound ROUTER under a burst)
fails, and a heartbeat then makes the engine write: its own interval timer, or the PONG
answering a PING among the bytes read before the stop ("Assertion failed: !_io_error
(src/stream_engine_base.cpp:310)"; zeromq/libzmq#4841). A node aborted that way in a
real-process chaos run (kills and pauses of its peers under client load);
`tests/test_transport.py` reproduces the first path, and the second showed in 2 of 8 of its
rounds with only the dialer pinging (RESULTS.md). With no heartbeat on either side neither
can happen, and the ROUTER keeps its RCVHWM, which bounds what one connection can queue in a
node. What this gives up: a stopped process (SIGSTOP) on a live host keeps its connections
(its kernel still acknowledges), where heartbeats dropped them; its peers' failure detector
(gossip heartbeats, membership.py) marks it down either way, and its connections serve again
the moment it resumes.
"""

from __future__ import annotations

import zmq

ROLES = ("client", "peer", "server", "gossip")

# TCP keepalive: probe after KEEPALIVE_IDLE_S of silence, every KEEPALIVE_INTVL_S; with
# TCP_MAXRT_MS set, Linux drops the connection once a probe (or any data) has gone
# unacknowledged for TCP_MAXRT_MS, so an idle dead path is dropped within about
# IDLE + MAXRT (3 s), a busy one within MAXRT of its oldest unacknowledged byte (2 s).
KEEPALIVE_IDLE_S = 1
KEEPALIVE_INTVL_S = 1
KEEPALIVE_CNT = 2
TCP_MAXRT_MS = 2000

# Redial a lost connection after RECONNECT_IVL_MS, backing off (doubling) to at most
# RECONNECT_IVL_MAX_MS, so a healed link is noticed within a second (libzmq's default maximum
# is 0, i.e. a flat 100 ms; a bound keeps a dead node from being dialled 10 times a second
# forever by every client, yet lets a healed one back in quickly).
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000

# Give up a connect() that has not completed after CONNECT_TIMEOUT_MS (and redial, as above).
# Without it a connect whose SYNs a cut link dropped waits on the kernel's SYN backoff
# (retries 1, 3, 7, 15, 31, 63 s after the first): a machine cut off for 40 s was seen down by
# its peers, and saw them down, for up to 134 s after the link came back (an outside
# Jepsen-style run; tests/test_ops_netns.py, 13 s after a 25 s cut). 1.5 s leaves the kernel's
# own first retry (at 1 s: a SYN dropped by a full accept queue) its chance.
CONNECT_TIMEOUT_MS = 1500


def tune_socket(sock: zmq.Socket, role: str) -> zmq.Socket:
    """Set TCP keepalive, TCP_USER_TIMEOUT, a connect timeout and bounded reconnect intervals
    on `sock`; returns it. No ZMTP heartbeats (see above).

    Call it before connect/bind. `role` is one of ROLES (ValueError otherwise).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    sock.setsockopt(zmq.TCP_MAXRT, TCP_MAXRT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    return sock
