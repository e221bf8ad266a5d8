"""The node process: ZeroMQ sockets, the reactor loop and framing around a `NodeCore`.
The only module of the node that touches ZeroMQ, clocks or signals.

Sockets:
- ROUTER bound on --listen: client requests, and requests from peers (their DEALERs).
- one DEALER per peer, connected to the peer's --listen, for our requests to it; the peer's
  replies come back on it. ZMQ_IMMEDIATE keeps messages from queueing for dead peers. Its
  routing identity is b"peer:<our id>/<random nonce>" (unguessable, so nobody can take over
  its reply route on the peer's ROUTER with ROUTER_HANDOVER).
- PUB bound on --gossip; one SUB per member (and per candidate member) connected to its
  gossip endpoint, so the core knows whose gossip a message came on (membership.py: only X
  speaks for X).
- while joining, one DEALER per seed endpoint.

Trust boundary (issue 13, DESIGN.md 2.5). With `cfg.keys` (zkv-node --keys DIR) every socket
uses CurveZMQ (zkv/security.py): ROUTER and PUB are CURVE servers behind the ZAP handler,
DEALERs and SUBs CURVE clients with the cluster key, plain text is refused at the handshake,
and each request frame carries the ZAP User-Id, mapped to the role the core checks
(peer/admin/client). Without keys the node logs a warning at start. Whatever the mode:
frames are size-capped by ZMQ_MAXMSGSIZE (gossip far lower than requests), queues per
connection are capped (HWMs), decode errors of any kind are WireError. The core keeps
per-identity state only while that identity has requests in flight (ZMQ_ROUTER_NOTIFY,
which would report disconnects, is a draft API absent from pyzmq's bundled libzmq).

Each loop turn drains every ready socket without blocking (bounded per socket, so one busy
peer cannot starve the rest), hands each decoded frame to the core, runs the core's timers,
then flushes: the core's writes reach the engine first (one fsync per turn with
sync="always"), then every destination's messages go out as one frame.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import zmq

from zkv import security, wire
from zkv.config import NodeConfig
from zkv.errors import ZkvError
from zkv.node.core import GOSSIP, REPLY, REQUEST, SEED, NodeCore, Outbox
from zkv.node.membership import load_cluster
from zkv.node.stores import open_stores
from zkv.sockopts import tune_socket
from zkv.storage import LogStore

log = logging.getLogger("zkv.node")

_ROLES: dict[int, str] = {zmq.ROUTER: "server", zmq.DEALER: "peer", zmq.PUB: "gossip", zmq.SUB: "gossip"}
DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn
# bytes of one gossip frame: ~1024 members, plus the namespace registry (issue 15)
GOSSIP_LIMIT = wire.MAX_MEMBERS * 700 + 4096 + wire.MAX_NS_REGISTRY
ROUTER_SNDHWM = 64  # reply frames queued per connection that does not read (then dropped)
ROUTER_RCVHWM = 128  # request frames queued per connection before TCP pushes back


def _alive(pid: int) -> bool:
    """Is process `pid` still there (the `zkv local up` / test process this node serves)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Node:
    def __init__(self, cfg: NodeConfig, clock=time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.keys: security.NodeKeys | None = None
        if cfg.keys:
            if not security.has_curve():
                raise ZkvError("--keys needs pyzmq with libsodium-backed CurveZMQ; this pyzmq "
                               "has none (or the slow tweetnacl fallback)")
            self.keys = security.NodeKeys(cfg.keys)
        store, handoff = open_stores(cfg)
        cluster_path = os.path.join(cfg.data_dir, "cluster.json")
        # wall-clock milliseconds: a restart always outranks the previous life, even with a
        # wiped data dir (heartbeats restart from zero)
        self.core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                             now=clock(), saved=load_cluster(cluster_path),
                             cluster_path=cluster_path)
        # compaction of both engines draws from the node's one I/O budget (transfers, hint
        # delivery, anti-entropy): bytes rewritten, paced in its own thread
        store.throttle = self.core.transfers.budget.reserve
        if isinstance(handoff.store, LogStore):
            handoff.store.throttle = self.core.transfers.budget.reserve
        self.membership = self.core.membership
        self.limit = wire.frame_limit(cfg.max_key_size, cfg.max_value_size)
        self.zctx = zmq.Context()
        self.zctx.setsockopt(zmq.IPV6, 1)  # IPv6 literals (tcp://[::1]:7001) bind and connect
        self.auth: security.Authenticator | None = None
        if self.keys is not None:
            self.auth = security.Authenticator(self.zctx, self.keys)  # before any bind
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.SNDHWM, ROUTER_SNDHWM)
        self.router.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
        self._serve(self.router)
        self.router.bind(cfg.listen)
        self.pub = self._socket(zmq.PUB)
        self._serve(self.pub, peers_only=True)
        self.pub.bind(cfg.gossip)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.dealers: dict[str, zmq.Socket] = {}  # node id -> our link to it
        self.dealer_ep: dict[str, str] = {}
        self.owner_of: dict[zmq.Socket, tuple[str, str]] = {}  # socket -> (source kind, who)
        self.subs: dict[str, tuple[str, zmq.Socket]] = {}  # node id -> (gossip endpoint, SUB)
        self.seeds: dict[str, zmq.Socket] = {}
        self.running = False
        # set by LocalCluster (tests, `zkv local up`): stop when that process is gone
        self.parent_pid = int(os.environ.get("ZKV_EXIT_WITH_PARENT", "0") or 0)
        self.next_parent_check = 0.0
        if cfg.metrics_port:
            self.core.metrics.serve(cfg.metrics_port, cfg.metrics_host)
        self.flush()  # links to the members cluster.json remembers

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.zctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        # heartbeats, keepalive, bounded reconnect: a healed link is seen within ~1 s
        tune_socket(s, _ROLES[kind])
        if kind == zmq.SUB:
            s.setsockopt(zmq.MAXMSGSIZE, GOSSIP_LIMIT)
        elif kind != zmq.PUB:
            s.setsockopt(zmq.MAXMSGSIZE, self.limit)
        if kind in (zmq.DEALER, zmq.SUB) and self.keys is not None:
            security.peer_socket(s, self.keys)
        return s

    def _serve(self, sock: zmq.Socket, peers_only: bool = False) -> None:
        if self.keys is not None:
            security.server_socket(sock, self.keys, peers_only)

    def _subscribe(self, m) -> None:
        """Listen to `m`'s gossip on a socket of its own (member or candidate)."""
        have = self.subs.get(m.id)
        if have is not None and have[0] == m.gossip:
            return
        self._unsubscribe(m.id)
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(m.gossip)
        self.subs[m.id] = (m.gossip, sub)
        self.owner_of[sub] = (GOSSIP, m.id)
        self.poller.register(sub, zmq.POLLIN)

    def _unsubscribe(self, node_id: str) -> None:
        have = self.subs.pop(node_id, None)
        if have is not None:
            self.poller.unregister(have[1])
            self.owner_of.pop(have[1], None)
            have[1].close(0)

    def _drop(self, node_id: str) -> None:
        """A candidate never heard: close its SUB (back to the member's own, if it is one)."""
        m = self.membership.get(node_id)
        if m is None:
            self._unsubscribe(node_id)
        elif node_id != self.cfg.id:
            self._subscribe(m)

    def _connect(self, m) -> None:
        if m.id == self.cfg.id:
            return
        self._subscribe(m)
        if self.dealer_ep.get(m.id) == m.listen:
            return
        old = self.dealers.pop(m.id, None)
        if old is not None:
            self.poller.unregister(old)
            self.owner_of.pop(old, None)
            old.close(0)
        d = self._dealer(m.listen)
        self.dealers[m.id] = d
        self.dealer_ep[m.id] = m.listen
        self.owner_of[d] = (REPLY, m.id)

    def _dealer(self, endpoint: str) -> zmq.Socket:
        d = self._socket(zmq.DEALER)
        d.setsockopt(zmq.IDENTITY, b"peer:" + self.cfg.id.encode() + b"/" + os.urandom(8).hex().encode())
        d.setsockopt(zmq.IMMEDIATE, 1)
        d.setsockopt(zmq.SNDHWM, 100_000)
        d.connect(endpoint)
        self.poller.register(d, zmq.POLLIN)
        return d

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; ZkvError if joining through the seeds failed."""
        self.running = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (tests embedding a node)
                pass
        self.core.start(self.clock())
        log.info("node %s serving on %s (gossip %s)", self.cfg.id, self.cfg.listen,
                 self.cfg.gossip)
        if self.keys is not None:
            log.info("CurveZMQ on every socket (keys in %s); plain text is refused",
                     self.keys.dir)
        else:  # said once the sockets are bound, so a refusal to start stays one line
            log.warning("serving in plain text without authentication (no --keys): anyone who "
                        "can reach %s can read and write; development only", self.cfg.listen)
        try:
            while self.running:
                try:
                    self.turn()
                except (KeyboardInterrupt, SystemExit, ZkvError):
                    raise
                except Exception:  # a bug in one handler must not take the node down
                    self.core.metrics.internal_errors.inc()
                    log.exception("error in the reactor loop; continuing")
                    time.sleep(0.01)
        finally:
            self.shutdown()

    def _on_signal(self, signum, frame) -> None:
        log.info("signal %d: draining and stopping", signum)
        self.running = False

    def turn(self, max_wait: float | None = None) -> None:
        core = self.core
        wait = core.next_deadline() - self.clock()
        if max_wait is not None:
            wait = min(wait, max_wait)
        events = self.poller.poll(max(0, int(wait * 1000) + 1) if wait > 0 else 0)
        for sock, _ in events:
            if sock is self.router:
                self._drain_router()
            else:
                self._drain(sock)
        now = self.clock()
        core.tick(now)
        if core.join_error:
            raise ZkvError(core.join_error)
        if core.exit_requested:  # this node left the cluster (issue 11): exit 0
            log.info("node %s left the cluster: stopping", self.cfg.id)
            self.running = False
        if self.parent_pid and now >= self.next_parent_check:
            self.next_parent_check = now + 0.5
            if not _alive(self.parent_pid):
                log.warning("the process that started this node (pid %d) is gone: stopping",
                            self.parent_pid)
                self.running = False
        self.flush()

    def _drain_router(self) -> None:
        router, core, clock = self.router, self.core, self.clock
        secure = self.keys is not None
        role = None
        for _ in range(DRAIN_LIMIT):
            try:
                if secure:  # frames, to read the ZAP User-Id of the connection
                    zframes = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    role = security.role_of(str(zframes[-1].get("User-Id")))
                    frames = [f.bytes for f in zframes]
                else:
                    frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if secure and role is None:  # cannot happen behind ZAP; never serve it
                continue
            if len(frames) != 2:
                core.malformed(frames[0] if frames else b"?", f"{len(frames)} frames")
                continue
            ident, payload = frames
            if role != "peer" and secure and ident.startswith(b"peer:"):
                role = "client"  # a client key claiming a peer's identity is a client
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                core.malformed(ident, str(exc))
                continue
            core.handle((REQUEST, ident), msgs, clock(), role)

    def _drain(self, sock) -> None:
        kind, who = self.owner_of.get(sock, (None, None))
        if kind is None:
            return
        core, clock = self.core, self.clock
        limit = GOSSIP_LIMIT if kind == GOSSIP else self.limit
        for _ in range(DRAIN_LIMIT):
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs = wire.decode(payload, limit)
            except wire.WireError as exc:
                core.malformed(who if kind in (REPLY, GOSSIP) else kind, str(exc))
                continue
            core.handle((kind, who), msgs, clock())

    # ---- output ---------------------------------------------------------------------------
    def flush(self) -> None:
        self._send(self.core.take_output())

    def _send(self, out: Outbox) -> None:
        for m in out.connect:
            self._connect(m)
        for m in out.subscribe:
            if m.id != self.cfg.id:
                self._subscribe(m)
        for node_id in out.drop:
            self._drop(node_id)
        if not self.core.joining and self.seeds:
            for s in self.seeds.values():
                self.poller.unregister(s)
                self.owner_of.pop(s, None)
                s.close(0)
            self.seeds.clear()
        for node_id, msgs in out.peers.items():
            sock = self.dealers.get(node_id)
            if sock is not None:
                self._send_frames(sock, None, msgs)
        for ident, msgs in out.clients.items():
            self._send_frames(self.router, ident, msgs)
        for endpoint, msgs in out.endpoints.items():
            sock = self.seeds.get(endpoint)
            if sock is None:
                sock = self.seeds[endpoint] = self._dealer(endpoint)
                self.owner_of[sock] = (SEED, endpoint)
            self._send_frames(sock, None, msgs)
        for msg in out.gossip:
            try:
                self.pub.send(wire.encode_one(msg), zmq.NOBLOCK)
            except zmq.Again:
                pass

    def _send_frames(self, sock, ident: bytes | None, msgs: list) -> None:
        for payload in wire.frames(msgs, self.limit):
            try:
                if ident is None:
                    sock.send(payload, zmq.NOBLOCK)
                else:
                    sock.send_multipart([ident, payload], zmq.NOBLOCK)
            except zmq.ZMQError:
                return  # peer unreachable or flooded: its ops time out

    # ---- shutdown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        try:
            self._send(self.core.shutdown())
        except zmq.ZMQError:
            pass
        self.core.replica.flush()
        self.core.store.close()
        self.core.handoff.close()
        for s in [self.router, self.pub, *self.dealers.values(), *self.seeds.values(),
                  *(sub for _, sub in self.subs.values())]:
            s.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.zctx.term()
        log.info("node %s stopped", self.cfg.id)
