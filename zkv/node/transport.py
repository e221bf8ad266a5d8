"""The node process: ZeroMQ sockets, the reactor loop and framing around a `NodeCore`.
The only module of the node that touches ZeroMQ, clocks or signals.

Sockets:
- ROUTER bound on --listen: client requests, and requests from peers (their DEALERs).
- one DEALER per peer, connected to the peer's --listen, for our requests to it; the peer's
  replies come back on it. ZMQ_IMMEDIATE keeps messages from queueing for dead peers.
- PUB bound on --gossip; SUB connected to every member's gossip endpoint.
- while joining, one DEALER per seed endpoint.

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

from zkv import wire
from zkv.config import NodeConfig
from zkv.errors import ZkvError
from zkv.node.core import GOSSIP, REPLY, REQUEST, SEED, NodeCore, Outbox
from zkv.node.handoff import HandoffStore
from zkv.node.membership import load_cluster
from zkv.storage import LogStore

log = logging.getLogger("zkv.node")

DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn


def open_stores(cfg: NodeConfig) -> tuple[LogStore, HandoffStore]:
    """The node's two engines under cfg.data_dir: data, and handoff (hints for absent owners)."""
    os.makedirs(cfg.data_dir, exist_ok=True)
    mode = "interval" if cfg.sync == "interval" else "none"
    store = LogStore(os.path.join(cfg.data_dir, "data"), sync=mode,
                     sync_interval_ms=cfg.sync_interval_ms, max_key_size=cfg.max_key_size,
                     max_value_size=cfg.max_value_size)
    handoff_dir = os.path.join(cfg.data_dir, "handoff")
    legacy = os.path.join(cfg.data_dir, "hints")  # its name before 0.2
    if os.path.isdir(legacy) and not os.path.exists(handoff_dir):
        os.rename(legacy, handoff_dir)
    return store, HandoffStore(handoff_dir, _wall_ms, sync=mode)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    def __init__(self, cfg: NodeConfig, clock=time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        store, handoff = open_stores(cfg)
        cluster_path = os.path.join(cfg.data_dir, "cluster.json")
        # wall-clock milliseconds: a restart always outranks the previous life, even with a
        # wiped data dir (heartbeats restart from zero)
        self.core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                             now=clock(), saved=load_cluster(cluster_path),
                             cluster_path=cluster_path)
        self.membership = self.core.membership
        self.limit = wire.frame_limit(cfg.max_key_size, cfg.max_value_size)
        self.zctx = zmq.Context()
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.bind(cfg.listen)
        self.pub = self._socket(zmq.PUB)
        self.pub.bind(cfg.gossip)
        self.sub = self._socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.sub, zmq.POLLIN)
        self.dealers: dict[str, zmq.Socket] = {}  # node id -> our link to it
        self.dealer_ep: dict[str, str] = {}
        self.owner_of: dict[zmq.Socket, tuple[str, str]] = {}  # socket -> (source kind, who)
        self.sub_eps: set[str] = set()
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
        if kind != zmq.PUB:
            s.setsockopt(zmq.MAXMSGSIZE, self.limit)
        return s

    def _connect(self, m) -> None:
        if m.id == self.cfg.id:
            return
        if m.gossip not in self.sub_eps:
            self.sub.connect(m.gossip)
            self.sub_eps.add(m.gossip)
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
        d.setsockopt(zmq.IDENTITY, b"peer:" + self.cfg.id.encode())
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
        if self.parent_pid and now >= self.next_parent_check:
            self.next_parent_check = now + 0.5
            if os.getppid() != self.parent_pid:
                log.warning("the process that started this node (pid %d) is gone: stopping",
                            self.parent_pid)
                self.running = False
        self.flush()

    def _drain_router(self) -> None:
        router, core, clock = self.router, self.core, self.clock
        for _ in range(DRAIN_LIMIT):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                core.malformed(frames[0] if frames else b"?", f"{len(frames)} frames")
                continue
            ident, payload = frames
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                core.malformed(ident, str(exc))
                continue
            core.handle((REQUEST, ident), msgs, clock())

    def _drain(self, sock) -> None:
        kind, who = (GOSSIP, None) if sock is self.sub else self.owner_of.get(sock, (None, None))
        if kind is None:
            return
        core, clock = self.core, self.clock
        for _ in range(DRAIN_LIMIT):
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs = wire.decode(payload, self.limit)
            except wire.WireError as exc:
                core.malformed(who if kind == REPLY else kind, str(exc))
                continue
            core.handle((kind, who), msgs, clock())

    # ---- output ---------------------------------------------------------------------------
    def flush(self) -> None:
        self._send(self.core.take_output())

    def _send(self, out: Outbox) -> None:
        for m in out.connect:
            self._connect(m)
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
        for s in [self.router, self.pub, self.sub, *self.dealers.values(), *self.seeds.values()]:
            s.close(0)
        self.zctx.term()
        log.info("node %s stopped", self.cfg.id)
