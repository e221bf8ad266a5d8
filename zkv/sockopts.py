"""Socket options for fast failure detection and reconnection, set on every zkv socket (issue 10).

Without them a connection whose peer vanished (network cut, frozen host) stays "up" until
the kernel's retransmission backoff gives up, so both sides of a healed partition went on
missing each other for 7-10 s. With them ZeroMQ itself pings each connection, drops one that
stops answering, and redials on a short, bounded interval: a healed link is back within
about RECONNECT_IVL_MAX plus one handshake.

Call ``tune_socket(sock, role)`` after creating a socket and before its ``connect``/``bind``
(options apply to connections made afterwards). The roles:

- ``"client"``: a client's DEALER to a node (zkv.client).
- ``"peer"``: a node's DEALER to another node (the node transport).
- ``"server"``: a node's bound ROUTER (clients' and peers' connections arrive here).
- ``"gossip"``: the gossip PUB (bound) and SUB (connected) sockets.

Every role gets the same values today; the role is there so one can diverge without touching
the callers. A ZMTP heartbeat is answered by libzmq's I/O thread, not by Python: a node busy
in its loop (GIL held) still answers, only a stopped process or a dead path does not.
"""

from __future__ import annotations

import zmq

ROLES = ("client", "peer", "server", "gossip")

# ZMTP 3.1 heartbeats (libzmq >= 4.2): PING an idle connection every HEARTBEAT_IVL; drop it when
# nothing (PONG or data) came back within HEARTBEAT_TIMEOUT of a PING. HEARTBEAT_TTL asks the
# other side to drop the connection if it hears nothing from us for that long (it is sent in
# the PING, in deciseconds). Worst case from the last byte heard to the drop: IVL + TIMEOUT.
HEARTBEAT_IVL_MS = 500
HEARTBEAT_TIMEOUT_MS = 1500
HEARTBEAT_TTL_MS = 1500  # >= HEARTBEAT_IVL_MS, else every quiet connection would be dropped

# TCP keepalive: the fallback for peers without ZMTP heartbeats, and for a connection still in
# its handshake. Probe after KEEPALIVE_IDLE_S of silence, every KEEPALIVE_INTVL_S, give up after
# KEEPALIVE_CNT unanswered probes (about 2 + 3 * 1 = 5 s).
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTVL_S = 1
KEEPALIVE_CNT = 3

# Redial a lost connection after RECONNECT_IVL_MS, backing off (doubling) to at most
# RECONNECT_IVL_MAX_MS, so a healed link is noticed within a second (libzmq's default maximum
# is 0, i.e. a flat 100 ms; a bound keeps a dead node from being dialled 10 times a second
# forever by every client, yet lets a healed one back in quickly).
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000


def tune_socket(sock: zmq.Socket, role: str) -> zmq.Socket:
    """Set heartbeats, TCP keepalive and bounded reconnect intervals on `sock`; returns it.

    Call it before connect/bind. `role` is one of ROLES (ValueError otherwise).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TTL_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    return sock
