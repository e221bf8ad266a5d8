"""Hybrid logical clock (zkv.hlc): monotonic under a backwards physical clock, receive
after send, bounded skew, byte layout (pure, no sockets or real time)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkv import hlc
from zkv.hlc import HLC, ClockSkewError


class FakeClock:
    def __init__(self, ms: int = 1_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_follows_physical_time_when_it_advances():
    clk = FakeClock(5_000)
    c = HLC(clk)
    assert hlc.split(c.now()) == (5_000, 0)
    assert hlc.split(c.now()) == (5_000, 1)
    clk.ms = 7_000
    assert hlc.split(c.now()) == (7_000, 0)


def test_clock_going_backwards_keeps_counting():
    clk = FakeClock(5_000)
    c = HLC(clk)
    a = c.now()
    clk.ms = 1_000  # NTP step backwards
    b = c.now()
    assert b > a and hlc.split(b) == (5_000, 1)


def test_counter_overflow_borrows_next_millisecond():
    c = HLC(FakeClock(10), last=hlc.make(10, hlc.LOGICAL_MASK))
    assert hlc.split(c.now()) == (11, 0)


def test_observe_jumps_past_remote_and_node_behind_orders_after():
    behind, ahead = HLC(FakeClock(1_000)), HLC(FakeClock(9_000))
    sent = ahead.now()
    got = behind.observe(sent)
    assert got > sent
    assert behind.now() > got  # later local writes of the slow node order after what it saw


def test_skew_refused_and_counted():
    c = HLC(FakeClock(1_000), max_skew_ms=100)
    before = c.last
    with pytest.raises(ClockSkewError, match="ahead of the local clock"):
        c.observe(hlc.make(1_101))
    assert c.skewed == 1 and c.last == before
    assert c.observe(hlc.make(1_100, 7)) > hlc.make(1_100, 7)  # exactly at the bound is fine


def test_skew_clamped_and_counted():
    c = HLC(FakeClock(1_000), max_skew_ms=100, skew="clamp")
    ts = c.observe(hlc.make(50_000))
    assert c.skewed == 1
    assert hlc.split(ts)[0] <= 1_101  # the clock did not jump 49 s into the future


def test_pack_layout_is_big_endian_and_ordered():
    ts = hlc.make(0x0102_0304_0506, 0x0708)
    assert hlc.pack(ts) == bytes(range(1, 9))
    assert hlc.unpack(hlc.pack(ts)) == ts
    with pytest.raises(ValueError):
        hlc.unpack(b"\x00" * 7)


def test_bad_inputs_rejected():
    with pytest.raises(ValueError):
        hlc.make(-1)
    with pytest.raises(ValueError):
        hlc.make(1, 1 << 16)
    with pytest.raises(ValueError):
        HLC(FakeClock(), skew="ignore")
    with pytest.raises(ValueError):
        HLC(FakeClock()).observe(-5)
    with pytest.raises(ValueError, match="physical clock"):
        HLC(FakeClock(-3)).now()


def test_lww_tiebreak_by_node_id():
    ts = hlc.make(100, 3)
    assert hlc.newer(ts, "n2", ts, "n1") and not hlc.newer(ts, "n1", ts, "n2")
    assert hlc.newer(ts + 1, "a", ts, "z")
    assert max([(ts, "n1"), (ts, "n3"), (ts, "n2")], key=lambda v: hlc.lww_key(*v))[1] == "n3"


events = st.lists(
    st.tuples(st.sampled_from(["tick", "now", "send", "jump"]), st.integers(0, 2),
              st.integers(-5_000, 5_000)),
    max_size=200)


@given(events)
def test_monotonic_per_node_and_receive_after_send(evs):
    """Three nodes with independently wandering (even backwards) physical clocks exchange
    timestamps: each node's timestamps strictly increase and every receive is > what it got."""
    clocks = [FakeClock(10_000 + 777 * i) for i in range(3)]
    nodes = [HLC(clocks[i], max_skew_ms=1 << 40) for i in range(3)]
    last = [0, 0, 0]
    for kind, i, delta in evs:
        if kind in ("tick", "jump"):
            clocks[i].ms = max(0, clocks[i].ms + (delta if kind == "tick" else 50 * delta))
            continue
        if kind == "now":
            ts = nodes[i].now()
        else:
            sent = nodes[(i + 1) % 3].now()
            ts = nodes[i].observe(sent)
            assert ts > sent
            last[(i + 1) % 3] = sent
        assert ts > last[i]
        last[i] = ts
        # never behind the node's own physical clock
        assert hlc.split(ts)[0] >= clocks[i].ms


@given(st.integers(0, hlc.MAX_MS), st.integers(0, hlc.LOGICAL_MASK))
def test_make_split_pack_round_trip(ms, c):
    ts = hlc.make(ms, c)
    assert hlc.split(ts) == (ms, c)
    assert hlc.unpack(hlc.pack(ts)) == ts


@given(st.integers(0, hlc.MAX_TS), st.integers(0, hlc.MAX_TS))
def test_byte_order_matches_int_order(a, b):
    assert (hlc.pack(a) < hlc.pack(b)) == (a < b)
