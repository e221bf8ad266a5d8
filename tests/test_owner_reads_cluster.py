"""Client-coordinated reads against real `zkv-node` processes: the answer is the coordinator's,
siblings included, and a frozen owner (SIGSTOP) costs a fallback, not an error."""

from __future__ import annotations

import zkv


def _counting(c: zkv.Client) -> list[int]:
    """[answered by owners, sent to a coordinator]: wraps the client core's owner read."""
    seen = [0, 0]
    inner = c.core._owner_read

    def wrapped(*a, **kw):
        got = yield from inner(*a, **kw)
        seen[got is None] += 1
        return got

    c.core._owner_read = wrapped
    return seen


def test_owner_reads_answer_what_a_coordinator_answers(cluster3):
    # (a node's partitions gained as the cluster formed do not vouch for a client's own
    # reads until settled and verified: README, "Joint quorums until a change settles")
    cluster3.wait_verified(60)
    keys = [b"or:%d" % i for i in range(30)]
    with zkv.Client(cluster3.endpoints, timeout=3.0) as w:
        for i, k in enumerate(keys):
            w.put(k, b"a%d" % i, w=3)
            if i % 3 == 0:  # a second blind write: two siblings on every replica
                w.put(k, b"b%d" % i, w=3)
        w.delete(keys[1], context=w.get(keys[1], r=3).context, w=3)  # a tombstone
    with zkv.Client(cluster3.endpoints, timeout=3.0) as owners, \
            zkv.Client(cluster3.endpoints, timeout=3.0, owner_reads=False) as coordinated:
        seen = _counting(owners)
        for k in keys + [b"or:never-written"]:
            for r in (1, 2, 3):
                a, b = owners.get(k, r=r), coordinated.get(k, r=r)
                assert sorted(a.values) == sorted(b.values) and a.context == b.context, k
        assert owners.get(keys[0]).values and not owners.get(keys[1]).found
        assert seen[0] >= 3 * len(keys) and seen[1] == 0  # every read answered by owners


def test_a_frozen_owner_costs_a_fallback_not_an_error(make_cluster):
    cl = make_cluster(3)
    cl.wait_verified(60)  # (as above)
    with zkv.Client(cl.endpoints, timeout=3.0) as c:
        for i in range(20):
            c.put(b"fz%d" % i, b"v%d" % i, w=3)
        seen = _counting(c)
        frozen = cl.node("node2").listen
        cl.pause("node2")
        try:
            for i in range(20):
                assert c.get(b"fz%d" % i, r=2).values == [b"v%d" % i]
            assert frozen in c.core.suspect_until  # left out of the next reads
            assert seen[0] > 0 and seen[1] >= 1  # the others still answered as owners
        finally:
            cl.resume("node2")
