"""The hot-key sketch (Misra-Gries) and the readiness rule, as pure functions (issue 14)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.node.health import Health, readiness
from zkv.node.hotkeys import TopK

streams = st.lists(st.integers(0, 40), max_size=400)


@settings(max_examples=300, deadline=None)
@given(stream=streams, k=st.integers(1, 12))
def test_misra_gries_guarantees(stream, k):
    s = TopK(k)
    for x in stream:
        s.add(x)
    true = Counter(stream)
    n = len(stream)
    assert len(s) <= k  # bounded memory
    assert s.total == n
    for x in set(true) | set(s.counts):
        est = s.estimate(x)
        assert est <= true[x]  # never overestimates
        assert true[x] - est <= n / (k + 1)  # and underestimates by at most n/(k+1)
        if true[x] > n / (k + 1):
            assert x in s.counts  # every heavy hitter is tracked


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 50)), max_size=100),
       k=st.integers(1, 8))
def test_weighted_updates_keep_the_bounds(items, k):
    s = TopK(k)
    true: Counter = Counter()
    for x, w in items:
        s.add(x, w)
        true[x] += w
    n = sum(true.values())
    assert len(s) <= k
    for x in true:
        assert 0 <= true[x] - s.estimate(x) <= n / (k + 1)


@settings(max_examples=100, deadline=None)
@given(stream=streams, k=st.integers(1, 8))
def test_decay_keeps_lower_bounds_and_order(stream, k):
    s = TopK(k)
    for x in stream:
        s.add(x)
    before = dict(s.counts)
    s.decay(0.5)
    for x, c in s.counts.items():
        assert c == before[x] // 2
    top = s.top()
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)


def test_top_finds_the_hot_key_in_a_long_cold_stream():
    s = TopK(8)
    for i in range(20_000):
        s.add(b"hot" if i % 3 == 0 else b"cold:%d" % i)
    (key, est), *_ = s.top(1)
    assert key == b"hot" and est >= 20_000 / 3 - 20_000 / 9


def test_bad_parameters():
    with pytest.raises(ValueError):
        TopK(0)
    with pytest.raises(ValueError):
        TopK(4).decay(2)


def test_readiness_rule():
    fp = b"\x01" * 8
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={"b": fp, "c": fp},
                        up_peers=["b", "c"], pending_in=0)
    assert ok and why["ring_agreed"]
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={"b": b"x", "c": fp},
                        up_peers=["b", "c"], pending_in=0)
    assert not ok and why["peers_disagreeing"] == ["b"]
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={"b": fp},
                        up_peers=["b", "c"], pending_in=0)
    assert not ok and why["peers_not_heard"] == ["c"]
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={}, up_peers=[],
                        pending_in=2)
    assert not ok and why["pending_transfers_in"] == 2
    assert not readiness(joined=False, fingerprint=fp, peer_fingerprints={}, up_peers=[],
                         pending_in=0)[0]
    # a down peer's opinion does not matter
    assert readiness(joined=True, fingerprint=fp, peer_fingerprints={"b": b"old"}, up_peers=[],
                     pending_in=0)[0]


def test_readiness_says_when_this_nodes_clock_is_behind_most_peers():
    """An outside run stepped one node's clock back 90 s: it refused every peer's records,
    had them all down, and /readyz still answered 200. More than half of the known peers
    refused as ahead of the clock: this node's clock is most likely the wrong one (503);
    one peer of three refused so is that peer's clock (still ready, the peer named)."""
    fp = b"\x01" * 8
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={}, up_peers=[],
                        pending_in=0, clock_refused=["b", "c"], peers=2)
    assert not ok and why["clock_behind_peers"] and why["peers_refused_as_ahead_of_clock"] == [
        "b", "c"]
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={"c": fp, "d": fp},
                        up_peers=["c", "d"], pending_in=0, clock_refused=["b"], peers=3)
    assert ok and why["peers_refused_as_ahead_of_clock"] == ["b"]
    assert "clock_behind_peers" not in why
    ok, why = readiness(joined=True, fingerprint=fp, peer_fingerprints={"d": fp},
                        up_peers=["d"], pending_in=0, clock_refused=["b", "c"], peers=3)
    assert not ok and why["clock_behind_peers"]
    # one peer in all: no telling whose clock is wrong
    assert readiness(joined=True, fingerprint=fp, peer_fingerprints={}, up_peers=[],
                     pending_in=0, clock_refused=["b"], peers=1)[0]


def test_health_measures_convergence_once_per_change():
    h = Health()
    assert h.ready()[0] is False  # not joined before the first update
    a, b = b"ring-a", b"ring-b"
    h.on_gossip("p", a)
    assert h.update(fingerprint=a, up_peers=["p"], now=1.0) == (False, None)  # first ring
    assert h.ready()[0]
    assert h.update(fingerprint=b, up_peers=["p"], now=2.0) == (True, None)  # changed here
    assert not h.ready()[0] and h.ready()[1]["peers_disagreeing"] == ["p"]
    h.on_gossip("p", b)
    rebalanced, took = h.update(fingerprint=b, up_peers=["p"], now=2.75)
    assert not rebalanced and took == pytest.approx(0.75)
    assert h.update(fingerprint=b, up_peers=["p"], now=3.0) == (False, None)  # reported once
