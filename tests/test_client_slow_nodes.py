"""A slow-but-alive node is asked after the key's other owners (zkv.client.core, "slow"): each
endpoint's round trips feed an estimate, and one clearly slower than the others (over
SLOW_FACTOR x the median and SLOW_FLOOR) stops being a put's first coordinator and one of the
R owners a get reads, until its estimate decays back and its answers say it is fast again.
Over test_client_core's fake network and clock: nothing here depends on wall-clock time."""

from __future__ import annotations

from test_client_core import EP, LATENCY, Late, Net, core, member, owners
from test_owner_reads import reader, replica

from zkv import wire
from zkv.client.core import SLOW_FLOOR

SLOW = EP["n1"]
KEYS = [b"key:%d" % i for i in range(200)]
FIRST = [k for k in KEYS if owners(k)[0] == SLOW]  # keys whose first owner is the slow one
READ_BY = [k for k in KEYS if SLOW in owners(k)[:2]]  # ... whose first R=2 owners hold it


def slow(handler, delay: float = 0.05):
    return lambda msg: Late(delay, handler(msg))


def first_tries(net: Net, kind) -> list[str]:
    return [ep for ep, m, *_ in net.sent if isinstance(m, kind)]


def warm_puts(c, net: Net, rounds: int = 3) -> None:
    for _ in range(rounds):
        for k in KEYS[:40]:
            net.run(c.put(k, b"v", w=2))


def test_a_slow_first_owner_stops_coordinating_puts_and_comes_back_once_fast():
    c, clock = core(timeout=2.0)
    net = Net(clock, {SLOW: slow(member())}, default=member(), hedge=True)
    net.run(c.put(FIRST[0], b"v"))
    assert first_tries(net, wire.Put) == [SLOW]  # nothing known yet: routed as ever
    warm_puts(c, net)
    assert c.slow == {SLOW}
    for k in FIRST[:5]:
        net.sent.clear()
        assert net.run(c.put(k, b"v", w=2)) == b"new-ctx"
        assert first_tries(net, wire.Put) == [owners(k)[1]]  # the next owner coordinates
    # fast again: routed around, it answers nothing, so its estimate decays back within
    # seconds, it is asked again, and its answers keep it first
    net.nodes[SLOW] = member()
    clock.t += 10.0
    warm_puts(c, net)
    assert c.slow == frozenset()
    for k in FIRST[:5]:
        net.sent.clear()
        net.run(c.put(k, b"v", w=2))
        assert first_tries(net, wire.Put) == [SLOW]


def test_a_slow_owner_is_no_longer_among_the_owners_read_first():
    c, clock = reader(timeout=2.0)
    net = Net(clock, {SLOW: slow(replica({}))}, default=replica({}))
    for _ in range(3):
        for k in KEYS[:40]:
            net.run(c.get(k))
    assert c.slow == {SLOW}
    for k in READ_BY[:5]:
        net.sent.clear()
        net.run(c.get(k))
        assert first_tries(net, wire.Read) == [ep for ep in owners(k) if ep != SLOW]
        assert first_tries(net, wire.Get) == []  # answered by the two other owners
    net.nodes[SLOW] = replica({})
    clock.t += 10.0
    for _ in range(2):
        for k in KEYS[:40]:
            net.run(c.get(k))
    assert c.slow == frozenset()
    for k in READ_BY[:5]:
        net.sent.clear()
        net.run(c.get(k))
        assert first_tries(net, wire.Read) == owners(k)[:2]


def test_get_many_learns_and_routes_around_a_slow_owner_too():
    c, clock = reader(timeout=2.0)
    net = Net(clock, {SLOW: slow(replica({}))}, default=replica({}))
    for _ in range(3):
        net.run(c.get_many(KEYS[:40]))
    assert c.slow == {SLOW}
    net.sent.clear()
    net.run(c.get_many(READ_BY[:10]))
    assert SLOW not in first_tries(net, wire.Read)


def test_healthy_nodes_are_never_reordered():
    """Differences among healthy nodes (one at 3x the others' round trip, under the floor),
    a one-off slow answer, or a cluster slow as a whole move nobody."""
    for nodes, default in (
            ({SLOW: slow(member(), 3 * LATENCY)}, member()),
            ({}, slow(member())),  # every node answers in 50 ms
    ):
        c, clock = core(timeout=2.0)
        net = Net(clock, nodes, default=default, hedge=True)
        for _ in range(4):
            for k in KEYS[:40]:
                net.sent.clear()
                net.run(c.put(k, b"v", w=2))
                assert first_tries(net, wire.Put) == [owners(k)[0]]
        assert c.slow == frozenset()
    c, clock = core(timeout=2.0)
    once = [True]

    def spike(msg):  # one answer of 60 ms among 1 ms ones
        if once[0] and isinstance(msg, wire.Put):
            once[0] = False
            return Late(0.06, member()(msg))
        return member()(msg)

    net = Net(clock, {SLOW: spike}, default=member(), hedge=True)
    for _ in range(3):
        for k in KEYS[:40]:
            net.sent.clear()
            net.run(c.put(k, b"v", w=2))
            assert first_tries(net, wire.Put) == [owners(k)[0]]
    assert not once[0] and c.slow == frozenset()
    assert max(c.latency.values()) < SLOW_FLOOR
