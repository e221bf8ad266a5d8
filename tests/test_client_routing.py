"""Client routing without a cluster: token-aware order vs spreading, suspects and down nodes last."""

from __future__ import annotations

import pytest

import zkv
from zkv import wire
from zkv._core.ring import Ring

MEMBERS = [wire.Member(f"n{i}", f"tcp://127.0.0.1:{7100 + i}", "tcp://127.0.0.1:1", f"r{i}", 1, 1)
           for i in range(4)]


def _client(routing: str, down=()) -> zkv.Client:
    c = zkv.Client(["tcp://127.0.0.1:7100"], routing=routing)
    c.core.set_ring(wire.RingOk(0, 16, 3, 2, 2, MEMBERS, list(down)))
    return c


def test_token_routing_sends_each_key_to_its_owners_first():
    c = _client("token")
    ring = Ring([(m.id, m.rack) for m in MEMBERS], q=16, n=3)
    eps = {m.id: m.listen for m in MEMBERS}
    for i in range(50):
        key = b"key%d" % i
        order = c.core.candidates(key)
        assert order[:3] == [eps[x] for x in ring.preflist_for_key(key)]
        assert sorted(order) == sorted(eps.values())
    c.close()


def test_any_routing_spreads_over_up_members_and_keeps_down_ones_last():
    c = _client("any", down=["n3"])
    firsts = [c.core.candidates(b"same-key")[0] for _ in range(30)]
    assert set(firsts) == {m.listen for m in MEMBERS[:3]}  # round robin over the up members
    assert all(c.core.candidates(b"k")[-1] == MEMBERS[3].listen for _ in range(5))
    c.core.suspect_until[MEMBERS[0].listen] = 1e18  # missed a try: tried last among the up
    # members, before the one the ring shows down (client_core: ..._even_when_suspect)
    assert all(c.core.candidates(b"k")[-2:] == [MEMBERS[0].listen, MEMBERS[3].listen]
               for _ in range(5))
    c.close()


def test_bad_routing_rejected():
    with pytest.raises(zkv.InvalidRequest):
        zkv.Client(["tcp://127.0.0.1:7100"], routing="random")
