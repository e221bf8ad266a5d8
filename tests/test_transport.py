"""The node's sockets: every one of them is tuned for fast reconnection (issue 10)."""

from __future__ import annotations

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
        socks = [node.router, node.pub, *node.dealers.values()]
        socks += [sub for _, sub in node.subs.values()]
        assert node.dealers and node.subs
        for s in socks:
            assert s.getsockopt(zmq.HEARTBEAT_IVL) == sockopts.HEARTBEAT_IVL_MS
            assert s.getsockopt(zmq.TCP_KEEPALIVE) == 1
            assert s.getsockopt(zmq.RECONNECT_IVL_MAX) == sockopts.RECONNECT_IVL_MAX_MS
    finally:
        node.shutdown()
