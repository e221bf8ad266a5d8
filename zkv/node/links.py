"""The node's outgoing ZeroMQ links: one DEALER per peer (our requests, its replies), one SUB
per member or candidate (its gossip), and a DEALER per seed while joining.

Owned by the transport (transport.py keeps the bound sockets and the loop). Every socket is
made by `socket()`: LINGER 0, keepalive/TCP timeout/bounded reconnect (`sockopts`), a frame
size cap (gossip far lower than requests) and, with keys, CurveZMQ as a client of the
cluster key. `owner_of` names what arrives on each socket: (REPLY, node id), (GOSSIP, node
id) or (SEED, endpoint), which is how the core knows whose gossip or reply it is.

A DEALER's routing identity is b"peer:<our id>/<random nonce>": unguessable, so nobody can
take over its reply route on the peer's ROUTER with ROUTER_HANDOVER. ZMQ_IMMEDIATE keeps
messages from queueing for a peer that is not connected. A peer that is connected but not
reading (paused, or slower than this node writes) gets frames queued in libzmq: its DEALER's
SNDHWM caps them in frames, and the frames over TRACK_MIN bytes are sent tracked and capped at
PEER_HELD_CAP bytes still held for the peer (without it, 1 MiB copies to a peer paused for a
minute could hold gigabytes). A frame past the cap is dropped: the operations it carried time
out at their coordinators (hinted handoff and anti-entropy deliver the copies later), and
`zkv_peer_frames_dropped` counts it.
"""

from __future__ import annotations

import logging
import os

import zmq

from zkv import security, sockcalls, wire
from zkv.node.conns import TRACK_MIN, HeldBytes, seed_routing_ids
from zkv.node.core import GOSSIP, REPLY, SEED
from zkv.node.reactor import Reactor
from zkv.sockopts import tune_socket

_ROLES: dict[int, str] = {zmq.ROUTER: "server", zmq.DEALER: "peer", zmq.PUB: "gossip",
                          zmq.SUB: "gossip"}
# bytes of one gossip frame: ~1024 members, plus the namespace registry (issue 15)
GOSSIP_LIMIT = wire.MAX_MEMBERS * 700 + 4096 + wire.MAX_NS_REGISTRY
PUB_LIMIT = 64 * 1024  # bytes of one frame into the gossip PUB (handshake, subscriptions)
# A connection to a bound socket must finish its handshake (CURVE, its ZAP answer, or plain
# text's READY) within this, or libzmq drops it: what a stranger sends before any key is
# checked is held at most this long (libzmq's default, 30 s, let 100 connections hold 1.5 GB
# of a node's memory; a handshake takes milliseconds, a ZAP answer under load well under 1 s)
HANDSHAKE_MS = 10_000
PEER_HELD_CAP = 64 * 1024 * 1024  # bytes of tracked frames libzmq may hold for one peer
BAD_ENDPOINTS_LOGGED = 64  # addresses libzmq refused, each logged once (then forgotten)

log = logging.getLogger("zkv.node")


class Links:
    def __init__(self, zctx: zmq.Context, me: str, limit: int, poller: Reactor,
                 keys: security.NodeKeys | None) -> None:
        self.zctx = zctx
        self.me = me
        self.limit = limit  # request/reply frame cap
        self.poller = poller
        self.keys = keys
        self.dealers: dict[str, zmq.Socket] = {}  # node id -> our link to it
        self.dealer_ep: dict[str, str] = {}
        self.owner_of: dict[zmq.Socket, tuple[str, str]] = {}  # socket -> (source kind, who)
        self.subs: dict[str, tuple[str, zmq.Socket]] = {}  # node id -> (gossip endpoint, SUB)
        self.seeds: dict[str, zmq.Socket] = {}
        self.bad_endpoints: set[str] = set()  # refused by connect(2)'s parser, logged once
        # what each seed's connection did (a refused key, no TCP connection, a frozen node),
        # for the joining node's log and its join error (NodeCore.seed_state)
        self.seed_watch: dict[str, security.HandshakeWatch] = {}
        self.held = HeldBytes()  # big frames to each peer that libzmq still holds
        self.dropped = 0  # frames to peers dropped past PEER_HELD_CAP (since the last report)

    def socket(self, kind: int) -> zmq.Socket:
        s = self.zctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        # keepalive, TCP timeout, bounded reconnect: a healed link is seen within ~1 s
        tune_socket(s, _ROLES[kind])
        if kind == zmq.SUB:
            s.setsockopt(zmq.MAXMSGSIZE, GOSSIP_LIMIT)
        elif kind == zmq.PUB:  # (what comes in is subscriptions: a handshake's commands and
            s.setsockopt(zmq.MAXMSGSIZE, PUB_LIMIT)  # a byte or two; unlimited, a stranger
            # announcing a 16 MiB frame before any key was checked was held in memory)
        else:
            s.setsockopt(zmq.MAXMSGSIZE, self.limit)
        if kind in (zmq.ROUTER, zmq.PUB):  # bound: strangers' connections arrive here
            s.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        if kind in (zmq.DEALER, zmq.SUB) and self.keys is not None:
            security.peer_socket(s, self.keys)
        return s

    def bind(self, kind: int, endpoint: str, options: tuple = ()) -> zmq.Socket:
        """The node's bound ROUTER (requests) or PUB (gossip, peers only): `options` set, a
        CURVE server with keys, bound to `endpoint`."""
        if kind == zmq.ROUTER:
            seed_routing_ids()  # (before the ROUTER exists: its anonymous names' counter)
        s = self.socket(kind)
        for opt, value in options:
            s.setsockopt(opt, value)
        if self.keys is not None:
            security.server_socket(s, self.keys, peers_only=kind == zmq.PUB)
        s.bind(endpoint)
        return s

    def subscribe(self, m) -> None:
        """Listen to `m`'s gossip on a socket of its own (member or candidate)."""
        if m.id == self.me:
            return
        have = self.subs.get(m.id)
        if have is not None and have[0] == m.gossip:
            return
        self.unsubscribe(m.id)
        sub = self.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        if not self._connect(sub, m.gossip, f"{m.id}'s gossip"):
            return
        self.subs[m.id] = (m.gossip, sub)
        self._watch(sub, (GOSSIP, m.id))

    def unsubscribe(self, node_id: str) -> None:
        have = self.subs.pop(node_id, None)
        if have is not None:
            self._close(have[1])

    def drop(self, node_id: str, member) -> None:
        """A candidate never heard: close its SUB (back to the member's own, if it is one)."""
        if member is None:
            self.unsubscribe(node_id)
        else:
            self.subscribe(member)

    def connect(self, m) -> None:
        if m.id == self.me:
            return
        self.subscribe(m)
        if self.dealer_ep.get(m.id) == m.listen:
            return
        old = self.dealers.pop(m.id, None)
        if old is not None:
            self._close(old)
            self.held.forget(m.id)
        self.dealer_ep[m.id] = m.listen
        d = self._dealer(m.listen, (REPLY, m.id))
        if d is not None:  # (else nothing goes to it until it announces another address)
            self.dealers[m.id] = d

    def send(self, node_id: str, msgs: list) -> None:
        """`msgs` to peer `node_id` (none if there is no link to it), in frames of at most the
        request cap; each frame over TRACK_MIN bytes tracked, and dropped past PEER_HELD_CAP."""
        sock = self.dealers.get(node_id)
        if sock is None:
            return
        self.poller.touched(sock)  # a send may take the socket's input signal (reactor.py)
        held = self.held
        for payload in wire.frames(msgs, self.limit):
            size = len(payload)
            if size < TRACK_MIN:
                if sockcalls.send(sock, payload):
                    return  # unreachable (IMMEDIATE) or SNDHWM full: the ops time out
                continue
            n = held.held(node_id)
            if n and n + size > PEER_HELD_CAP:
                self.dropped += 1
                continue
            err, tracker = sockcalls.send_tracked(sock, None, payload)
            if err:
                return
            held.add(node_id, tracker, size)

    def report(self, metrics) -> None:
        if self.dropped:
            metrics.peer_frames_dropped.inc(self.dropped)
            self.dropped = 0

    def seed(self, endpoint: str) -> zmq.Socket | None:
        """The link to seed `endpoint` (None: libzmq refused the address, logged)."""
        sock = self.seeds.get(endpoint)
        if sock is None:
            sock = self._dealer(endpoint, (SEED, endpoint), watch=True)
            if sock is not None:
                self.seeds[endpoint] = sock
        return sock

    def seed_state(self, endpoint: str) -> str:
        """What this node's link to the seed `endpoint` has seen, in words ("" once its
        handshake succeeded, or before the link exists)."""
        watch = self.seed_watch.get(endpoint)
        if watch is None:
            return ""
        refused = watch.failure()
        if refused is not None:
            return f"its handshake failed: {refused}"
        return "" if watch.ok else watch.unconnected_why()

    def close_seeds(self) -> None:
        for w in self.seed_watch.values():  # (before its socket closes)
            w.close()
        self.seed_watch.clear()
        for s in self.seeds.values():
            self._close(s)
        self.seeds.clear()

    def close(self) -> None:
        for w in self.seed_watch.values():
            w.close()
        for s in [*self.dealers.values(), *self.seeds.values(),
                  *(sub for _, sub in self.subs.values())]:
            s.close(0)

    def _dealer(self, endpoint: str, owner: tuple[str, str], watch: bool = False
                ) -> zmq.Socket | None:
        d = self.socket(zmq.DEALER)
        d.setsockopt(zmq.IDENTITY, b"peer:" + self.me.encode() + b"/"
                     + os.urandom(8).hex().encode())
        d.setsockopt(zmq.IMMEDIATE, 1)
        d.setsockopt(zmq.SNDHWM, 100_000)
        if watch:  # (the monitor exists before the connection, to see its first events)
            self.seed_watch[endpoint] = security.HandshakeWatch(d, endpoint)
        if not self._connect(d, endpoint, f"{owner[1]}" if owner[0] == REPLY else "a seed"):
            w = self.seed_watch.pop(endpoint, None) if watch else None
            if w is not None:
                w.close()
            return None
        self._watch(d, owner)
        return d

    def _connect(self, sock: zmq.Socket, endpoint: str, what: str) -> bool:
        """sock.connect(endpoint), or False with `sock` closed: an address libzmq refuses (a
        member's or seed's as announced, which this node's own checks would have refused: an
        older zkv's, or a damaged cluster.json) must neither end the turn that dials it (its
        writes and answers were lost with it) nor leave a socket open (zmq_ctx_term waits for
        every socket: the node never stopped on SIGTERM)."""
        try:
            sock.connect(endpoint)
            return True
        except zmq.ZMQError as exc:
            sock.close(0)
            if endpoint not in self.bad_endpoints:
                if len(self.bad_endpoints) >= BAD_ENDPOINTS_LOGGED:
                    self.bad_endpoints.clear()
                self.bad_endpoints.add(endpoint)
                log.error("cannot connect to %s at %s: %s (nothing is sent there until it "
                          "announces a valid address)", what, wire.clip(endpoint, 300),
                          exc.strerror)
            return False

    def _watch(self, sock: zmq.Socket, owner: tuple[str, str]) -> None:
        self.owner_of[sock] = owner
        self.poller.register(sock, zmq.POLLIN)

    def _close(self, sock: zmq.Socket) -> None:
        self.poller.unregister(sock)
        self.owner_of.pop(sock, None)
        sock.close(0)
