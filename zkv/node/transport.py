"""The node process: the reactor loop and framing around a `NodeCore`, over its sockets (a
ROUTER bound on --listen for clients and peers' DEALERs, a PUB on --gossip, and the links to
peers, a DEALER and a gossip SUB per member: links.py makes them). With links.py and conns.py
the only modules of the node that touch ZeroMQ; the only one with clocks or signals.

Trust boundary (issue 13, DESIGN.md 2.5). With `cfg.keys` (--keys DIR) every socket uses CurveZMQ
(security.py): ROUTER and PUB are CURVE servers behind the ZAP handler, DEALERs and SUBs CURVE
clients with the cluster key, plain text is refused at the handshake, and each request frame carries
the ZAP User-Id, mapped to the role the core checks (peer/admin/client); without keys a warning at
start. Always: frames size-capped (ZMQ_MAXMSGSIZE, gossip far lower), handshakes time-capped, queues
per connection capped (HWMs), decode errors of any kind WireError; ROUTER connections capped
(--max-connections; conns.py: a closed one's identity forgotten).

Each loop turn drains every ready socket without blocking (bounded per socket, so one busy peer
cannot starve the rest), hands each decoded frame to the core (the ROUTER's peer frames first: a
read fair-queued before a replica write sent earlier missed it: R=1 on a key's new first owner after
a ring change), runs the core's timers, then flushes: the core's writes reach the engine first (one
fsync a turn with sync="always"), then each destination's messages as one frame.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

import zmq

from zkv import security, sockcalls, wire
from zkv.config import NodeConfig, parse_endpoint
from zkv.errors import ZkvError
from zkv.local import pid_alive
from zkv.node import settings
from zkv.node.conns import TRACK_MIN, Connections, effective_cap
from zkv.node.core import GOSSIP, REPLY, REQUEST, NodeCore, Outbox
from zkv.node.links import GOSSIP_LIMIT, Links
from zkv.node.membership import load_cluster
from zkv.node.reactor import Reactor
from zkv.node.stores import open_stores
from zkv.repeatlog import RepeatLog
from zkv.storage import LogStore

log = logging.getLogger("zkv.node")

DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn
TURN_MESSAGES = 4096  # client messages a turn takes (one flooder's frames held turns for s)
ROUTER_SNDHWM = 64  # reply frames queued per connection that does not read (then dropped)
ROUTER_RCVHWM = 128  # request frames queued per connection before TCP pushes back


class Node:
    def __init__(self, cfg: NodeConfig, clock=time.monotonic, flags: dict | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.reload_asked = False  # SIGHUP
        if cfg.keys and not security.has_curve():
            raise ZkvError("--keys needs pyzmq with libsodium-backed CurveZMQ; this pyzmq "
                           "has none (or the slow tweetnacl fallback)")
        self.keys = security.NodeKeys(cfg.keys) if cfg.keys else None
        store, handoff = open_stores(cfg)
        cluster_path, keys = os.path.join(cfg.data_dir, "cluster.json"), self.keys
        # wall-clock milliseconds: a restart always outranks the previous life, even with a
        # wiped data dir (heartbeats restart from zero)
        self.core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                             now=clock(), saved=load_cluster(cluster_path),
                             cluster_path=cluster_path, seal_key=keys and keys.seal_key or None,
                             flags=flags)  # the command line's (SIGHUP, `zkv config --save`)
        # compaction draws from the node's one I/O budget (transfers, hints, anti-entropy)
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
            self.core.describe_user = self.auth.describe
        self.poller = Reactor()
        self.links = Links(self.zctx, cfg.id, self.limit, self.poller, self.keys)
        self.core.seed_state = self.links.seed_state
        self.router = self.links.bind(zmq.ROUTER, cfg.listen, (
            (zmq.ROUTER_HANDOVER, 1), (zmq.SNDHWM, ROUTER_SNDHWM), (zmq.RCVHWM, ROUTER_RCVHWM),
            (zmq.ROUTER_MANDATORY, 1)))  # (MANDATORY: a vanished identity fails fast)
        self.conns = Connections(self.router, parse_endpoint(cfg.listen)[1],
                                 effective_cap(cfg.max_connections),
                                 2 * self.core.turn_budget, self.core.forget_identity)
        self.core.settings_hooks.append(self.conns.settings_changed)  # (zkv config --set)
        self.pub = self.links.bind(zmq.PUB, cfg.gossip)
        self.poller.register(self.conns.monitor, zmq.POLLIN)
        self.poller.register(self.router, zmq.POLLIN)
        self.running = False
        self.loop_errors = RepeatLog(log)  # (one traceback per distinct error per 10 s)
        # set by LocalCluster (tests, `zkv local up`): stop when that process is gone
        self.parent_pid = int(os.environ.get("ZKV_EXIT_WITH_PARENT", "0") or 0)
        self.next_parent_check = 0.0
        if cfg.metrics_port:
            self.core.metrics.serve(cfg.metrics_port, cfg.metrics_host, clock=self.clock)
        self.flush()  # links to the members cluster.json remembers

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; ZkvError if joining through the seeds failed."""
        self.running = True
        for sig, handler in ((signal.SIGTERM, self._on_signal), (signal.SIGINT, self._on_signal),
                             (signal.SIGHUP, lambda *_: setattr(self, "reload_asked", True))):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (tests embedding a node)
                pass
        self.core.start(self.clock())
        self.core.start_ended(self.clock())  # (its rebuild is no stand-still)
        log.info("node %s serving on %s (gossip %s)", self.cfg.id, self.cfg.listen,
                 self.cfg.gossip)
        security.announce(self.keys, self.cfg.listen)  # (once bound: a refusal is one line)
        try:
            while self.running:
                try:
                    self.turn()
                except (KeyboardInterrupt, SystemExit, ZkvError):
                    raise
                except Exception:  # a bug in one handler must not take the node down
                    self.core.metrics.internal_errors.inc()
                    self.loop_errors.exception("error in the reactor loop; continuing")
                    time.sleep(0.01)
        finally:
            self.shutdown()

    def _on_signal(self, signum, frame) -> None:
        log.info("signal %d: draining and stopping", signum)
        self.running = False

    def turn(self, max_wait: float | None = None) -> None:
        core = self.core
        if self.reload_asked:  # SIGHUP: the --config file again (settings.py)
            self.reload_asked = False
            settings.reload(core)
        wait = core.next_deadline() - self.clock()
        wait = wait if max_wait is None else min(wait, max_wait)
        ready = self.poller.poll(wait)
        self.core.metrics.turns.began = self.clock()  # (long turns: stalls.py)
        if self.conns.monitor in ready:  # closes and accepts before the frames naming fds
            ready.discard(self.conns.monitor)
            self.conns.drain()
        for sock in ready:
            if sock is self.router:
                self._drain_router()
            else:
                self._drain(sock)
        now = self.clock()
        self.conns.tick(now)
        core.tick(now)
        if core.join_error:
            raise ZkvError(core.join_error)
        if core.exit_requested:  # this node left the cluster (issue 11): exit 0
            log.info("node %s left the cluster: stopping", self.cfg.id)
            self.running = False
        if now >= self.next_parent_check:
            self.next_parent_check = now + 0.5
            self.conns.report(core.metrics)
            self.links.report(core.metrics)
            if self.parent_pid and not pid_alive(self.parent_pid):
                log.warning("the process that started this node (pid %d) is gone: stopping",
                            self.parent_pid)
                self.running = False
        self.flush()
        self.core.metrics.turns.end(self.clock())

    def _drain_router(self) -> None:
        later: list = []  # (identity, messages, role) of the clients' frames
        router, core, clock, seen = self.router, self.core, self.clock, self.conns.seen
        secure = self.keys is not None
        auth, role, taken = self.auth, None, 0
        for i in range(DRAIN_LIMIT):
            if i & 63 == 63:  # a connection burst: keep the count (and the cap) current
                self.conns.drain()
            # the parts, and the connection's fd (ZMQ_SRCFD) and ZAP User-Id
            got = sockcalls.recv(router, True)
            if got is None:  # drained: nothing unseen is left (reactor.py)
                break
            frames, count, fd, user_id = got
            if auth is not None:  # (secure)
                role = auth.role_of(user_id)
            seen(frames[0], fd)
            if auth is not None and role is None:  # its key was removed since it connected
                core.refuse_unauthorised(frames[0], auth.why_refused(user_id), "key_removed",
                                         str(user_id))
                continue
            if count != 2:  # a ROUTER frame always starts with the identity
                core.refuse_frame(frames[0], f"{count - 1} message parts, expected 1")
                continue
            ident, payload = frames
            if role != "peer" and secure and ident.startswith(b"peer:"):
                role = "client"  # a client key claiming a peer's identity is a client
            try:
                msgs = wire.decode(payload, self.limit, requests=True)
            except wire.WireError as exc:
                core.refuse_frame(ident, str(exc))
                continue
            if role == "peer" or (not secure and ident.startswith(b"peer:")):
                core.handle((REQUEST, ident), msgs, clock(), role)
            else:
                later.append((ident, msgs, role, user_id))
                taken += len(msgs)
                if taken >= TURN_MESSAGES:
                    self.poller.again(router)
                    break
        else:
            self.poller.again(router)  # cut short at DRAIN_LIMIT: the rest next turn
        for ident, msgs, role, user_id in later:  # the clients' frames, after the peers' ones
            core.frame_user = None if user_id is None else str(user_id)  # (its key, for logs)
            core.handle((REQUEST, ident), msgs, clock(), role)
        core.frame_user = None

    def _drain(self, sock) -> None:
        kind, who = self.links.owner_of.get(sock, (None, None))
        if kind is None:
            return
        core, clock = self.core, self.clock
        limit = GOSSIP_LIMIT if kind == GOSSIP else self.limit
        for _ in range(DRAIN_LIMIT):
            got = sockcalls.recv(sock)
            if got is None:
                return
            frames, count = got[0], got[1]
            try:
                if count != 1:
                    raise wire.WireError(f"{count} message parts, expected 1")
                msgs = wire.decode(frames[0], limit)
            except wire.WireError as exc:
                core.malformed(who if kind in (REPLY, GOSSIP) else kind, str(exc))
                continue
            core.handle((kind, who), msgs, clock())
        self.poller.again(sock)

    # ---- output ---------------------------------------------------------------------------
    def flush(self) -> None:
        """End of a turn. The requests to peers leave first, then the engine takes the turn's
        writes (and fsyncs them with sync="always"), then every acknowledgement: the replicas
        work while this node writes (NodeCore.persist)."""
        core = self.core
        out = core.take_output(persist=False)
        self._send(out, core.persist)

    def _send(self, out: Outbox, persist: Callable[[Outbox], None] | None = None) -> None:
        links = self.links
        for m in out.connect:
            links.connect(m)
        for m in out.subscribe:
            links.subscribe(m)
        for node_id in out.drop:
            links.drop(node_id, self.membership.get(node_id))
        if links.seeds and not (self.core.joining or self.core.asking_seeds):
            links.close_seeds()
        for node_id, msgs in out.peers.items():
            links.send(node_id, msgs)
        if persist is not None:
            persist(out)
        for ident, msgs in out.clients.items():
            self._send_frames(self.router, ident, msgs)
        for endpoint, msgs in out.endpoints.items():
            sock = links.seed(endpoint)  # (None: an address libzmq refused, logged)
            if sock is not None:
                self._send_frames(sock, None, msgs)
        for msg in out.gossip:
            sockcalls.send(self.pub, wire.encode_one(msg))  # a full queue drops it

    def _send_frames(self, sock, ident: bytes | None, msgs: list) -> None:
        conns = self.conns
        self.poller.touched(sock)  # a send may take the socket's input signal (reactor.py)
        send, send_tracked = sockcalls.send, sockcalls.send_tracked
        for payload in wire.frames(msgs, self.limit):
            if ident is None or len(payload) < TRACK_MIN:
                if send(sock, payload, ident):
                    return  # peer unreachable, gone (ROUTER_MANDATORY) or flooded: ops time out
            elif conns.may_send(ident, len(payload)):  # big: byte-capped per identity
                err, tracker = send_tracked(sock, ident, payload)
                if err:
                    return
                conns.sent(ident, tracker, len(payload))

    # ---- shutdown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._send(self.core.shutdown())
        self.core.close_stores()
        self.conns.close()
        self.links.close()
        self.router.close(0)
        self.pub.close(200)  # (ms: its goodbye gossip, core.shutdown, goes out to its peers)
        self.poller.close()
        if self.auth is not None:
            self.auth.stop()
        sockcalls.term_within(self.zctx, sockcalls.TERM_WAIT, f"node {self.cfg.id}")
        log.info("node %s stopped", self.cfg.id)
