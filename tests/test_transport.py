"""The node's sockets: every one of them is tuned for fast reconnection (issue 10)."""

from __future__ import annotations

import pytest
import zmq

from zkv import sockopts
from zkv.config import NodeConfig
from zkv.local import free_ports
from zkv.node.transport import Node
from zkv.wire import Member


def test_every_node_socket_has_heartbeats_keepalive_and_bounded_reconnect(tmp_path):
    listen, gossip, peer_listen, peer_gossip = free_ports(4)
    cfg = NodeConfig(id="t", listen=f"tcp://127.0.0.1:{listen}",
                     gossip=f"tcp://127.0.0.1:{gossip}", data_dir=str(tmp_path / "t"))
    node = Node(cfg)
    try:
        node.core._merge_members([Member("p", f"tcp://127.0.0.1:{peer_listen}",
                                         f"tcp://127.0.0.1:{peer_gossip}", "r", 1, 1)])
        node.flush()  # makes the link to p
        socks = [node.router, node.pub, *node.links.dealers.values()]
        socks += [sub for _, sub in node.links.subs.values()]
        assert node.links.dealers and node.links.subs
        for s in socks:
            assert s.getsockopt(zmq.HEARTBEAT_IVL) == sockopts.HEARTBEAT_IVL_MS
            assert s.getsockopt(zmq.TCP_KEEPALIVE) == 1
            assert s.getsockopt(zmq.RECONNECT_IVL_MAX) == sockopts.RECONNECT_IVL_MAX_MS
    finally:
        node.shutdown()


class _Tracker:
    def __init__(self) -> None:
        self.done = False


def test_router_connections_are_capped_tracked_and_forgotten_on_close(tmp_path):
    """Issue 13's identity flood: the ROUTER refuses replies to vanished identities
    (ROUTER_MANDATORY), pairs identities with their connection, and when the connection
    closes the core forgets the identity."""
    from zkv import wire

    listen, gossip = free_ports(2)
    cfg = NodeConfig(id="t", listen=f"tcp://127.0.0.1:{listen}",
                     gossip=f"tcp://127.0.0.1:{gossip}", data_dir=str(tmp_path / "t"),
                     max_connections=16)
    node = Node(cfg)
    forgotten: list[bytes] = []
    real_forget = node.core.forget_identity
    node.conns.forget = lambda ident: (forgotten.append(ident), real_forget(ident))
    ctx = zmq.Context()
    try:
        with pytest.raises(zmq.ZMQError) as exc:  # ROUTER_MANDATORY (a write-only option)
            node.router.send_multipart([b"nobody", b"x"], zmq.NOBLOCK)
        assert exc.value.errno == zmq.EHOSTUNREACH
        assert node.conns.cap == 16
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.IDENTITY, b"flooder-1")
        d.connect(cfg.listen)
        d.send(wire.encode_one(wire.Status(1)))
        for _ in range(50):
            node.turn(max_wait=0.02)
            if b"flooder-1" in node.conns.ident_fd:
                break
        assert b"flooder-1" in node.conns.ident_fd and len(node.conns.open) == 1
        d.close(0)
        for _ in range(100):
            node.turn(max_wait=0.02)
            if forgotten:
                break
        assert forgotten == [b"flooder-1"]
        assert node.conns.open == {} and node.conns.ident_fd == {} and node.conns.fd_ident == {}
        # replies over TRACK_MIN: capped per identity until libzmq releases them
        conns, big = node.conns, node.conns.reply_cap // 2 + 1
        t1 = _Tracker()
        assert conns.may_send(b"slow", big)
        conns.sent(b"slow", t1, big)
        assert not conns.may_send(b"slow", big) and conns.dropped == 1
        t1.done = True  # the reader caught up
        assert conns.may_send(b"slow", big) and conns.queued_total == 0
        # past the cap, a connection whose tracked reply sat unread for STALL seconds makes room
        conns.sent(b"stuck", _Tracker(), 5000)
        assert conns._stalled() is None  # not yet stalled
        conns.stuck[b"stuck"] -= 10
        conns.open[12345], conns.ident_fd[b"stuck"] = None, 12345
        assert conns._stalled() == 12345
        del conns.open[12345], conns.ident_fd[b"stuck"]
    finally:
        ctx.term()
        node.shutdown()
