"""The client core without sockets: its plans run over a scripted fake network and a fake clock.

Each fake node is a function from a request to what happens to it: a reply, SILENT (no answer
before the try's deadline) or UNREACHABLE (no connection). The fake driver advances the clock
the way a real one spends time: to the try's deadline on silence, by CONNECT_WAIT (at most to
the deadline) when unreachable, by a small latency on a reply.
"""

from __future__ import annotations

import random
import re
import warnings

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zkv import wire
from zkv._core import dvv
from zkv._core.ring import Ring
from zkv.client import (
    CONNECT_WAIT,
    HEDGE_FLOOR,
    RING_REFRESH,
    SLOW,
    SUSPECT_FOR,
    UNREACHABLE,
    ClientCore,
    Send,
)
from zkv.client.core import BUSY_PAUSE, BUSY_PAUSE_MAX, MANY_WINDOW, Batch
from zkv.errors import InvalidRequest, QuorumError, RequestTimeout, Unavailable, ZkvError

SILENT = object()
LATENCY = 0.001
MEMBERS = [wire.Member(f"n{i}", f"tcp://10.0.0.{i}:7000", "tcp://10.0.0.1:1", f"r{i}", 1, 1)
           for i in range(4)]
EP = {m.id: m.listen for m in MEMBERS}
RING = wire.RingOk(0, 16, 3, 2, 2, MEMBERS, [])


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Late:
    """A node's answer that arrives `delay` seconds after the try was sent."""

    def __init__(self, delay: float, reply) -> None:
        self.delay, self.reply = delay, reply


class Net:
    """A fake network: `nodes[endpoint](msg)` says what becomes of each try sent there.

    `hedge=False` plays a driver that ignores `Send.soft` / `Send.also` (allowed: they are
    optional to honour); `hedge=True` a driver that honours them: answers (a reply, or `Late`)
    arrive at their time, and a wait returns the first answer to the try or to any try it
    lists in `also`, SLOW at `soft`, None at `until`."""

    def __init__(self, clock: Clock, nodes=None, default=None, hedge: bool = False) -> None:
        self.clock = clock
        self.nodes = dict(nodes or {})
        self.default = default or (lambda msg: SILENT)
        self.sent: list[tuple[str, object, float, float]] = []  # endpoint, msg copy, at, until
        self.hedge = hedge
        self.arrivals: dict[int, tuple[float, object]] = {}  # rid -> (when, reply)
        self.steps: list[int] = []  # tries per Batch step
        self.pauses: list[float] = []  # the plan's waits that sent nothing

    def run(self, plan):
        try:
            send = next(plan)
            while True:
                if isinstance(send, Batch):
                    self.steps.append(len(send.sends))
                    send = plan.send(self.deliver_many(send.sends, send))
                else:
                    send = plan.send(self.deliver(send))
        except StopIteration as done:
            return done.value

    def deliver_many(self, sends, batch=None):
        """A Batch step as a driver plays it: every try sent at once, the step over when the
        last one has its answer (each try's own outcome as deliver() would give it), and
        when each answer came told in `batch.arrived`."""
        clock, start, end, got, arrived = self.clock, self.clock.t, self.clock.t, [], []
        for send in sends:
            clock.t = start
            got.append(self.deliver(Send(send.endpoint, send.msg, send.until)))
            arrived.append(clock.t)
            end = max(end, clock.t)
        clock.t = end
        if batch is not None:
            batch.arrived = arrived
        return got

    def deliver(self, send):
        if self.hedge:
            return self.deliver_hedged(send)
        clock = self.clock
        if send.msg is None and not send.also:  # a pause: nothing sent, nothing to hear
            self.pauses.append(send.until - clock.t)
            clock.t = send.until
            return None
        assert send.until > clock.t  # a try is never sent already late
        msg = wire.decode(wire.encode_one(send.msg), 1 << 30)[0]  # what went on the wire
        self.sent.append((send.endpoint, msg, clock.t, send.until))
        what = self.nodes.get(send.endpoint, self.default)(msg)
        if what is SILENT:
            clock.t = send.until
            return None
        if what is UNREACHABLE:
            clock.t = min(send.until, clock.t + CONNECT_WAIT)
            return UNREACHABLE
        if isinstance(what, Late):  # an answer after `delay`: silence if that is too late
            if clock.t + what.delay > send.until:
                clock.t = send.until
                return None
            clock.t += what.delay
            what = what.reply
        else:
            clock.t += LATENCY
        what.rid = send.msg.rid
        return what

    def deliver_hedged(self, send):
        clock = self.clock
        assert send.until > clock.t and (send.soft is None or send.until > send.soft > clock.t)
        if send.msg is not None:
            msg = wire.decode(wire.encode_one(send.msg), 1 << 30)[0]
            self.sent.append((send.endpoint, msg, clock.t, send.until))
            what = self.nodes.get(send.endpoint, self.default)(msg)
            if what is UNREACHABLE:  # no answer is read during the connect wait; after it,
                clock.t = min(send.until, clock.t + CONNECT_WAIT)  # one that came is
                came = sorted((self.arrivals[r] for _, r in send.also
                               if r in self.arrivals and self.arrivals[r][0] <= clock.t),
                              key=_when)
                return came[0][1] if came else UNREACHABLE
            if what is not SILENT:
                late = what if isinstance(what, Late) else Late(LATENCY, what)
                late.reply.rid = send.msg.rid
                self.arrivals[send.msg.rid] = (clock.t + late.delay, late.reply)
        rids = [rid for _, rid in send.also] + ([send.msg.rid] if send.msg is not None else [])
        end = send.until if send.soft is None else send.soft
        due = sorted((self.arrivals[r] for r in rids if r in self.arrivals
                      and self.arrivals[r][0] <= end), key=_when)  # ties: the earlier try
        if due:
            clock.t = max(clock.t, due[0][0])
            return due[0][1]
        clock.t = end
        return SLOW if send.soft is not None else None

    def kinds(self) -> list[str]:
        return [type(m).__name__ for _, m, _, _ in self.sent]


def _when(arrival: tuple[float, object]) -> float:
    return arrival[0]  # (two answers due at the same instant: replies do not compare)


def member(store: dict | None = None, *, put_error=None):
    """A healthy fake node answering the ring and a tiny key -> values store."""
    store = {} if store is None else store

    def handle(msg):
        if isinstance(msg, wire.RingInfo):
            return wire.RingOk(0, RING.q, RING.n, RING.r, RING.w, RING.members, RING.down)
        if isinstance(msg, wire.Get):
            return wire.GetOk(0, list(store.get(msg.key, [])), b"ctx:%d" % len(store.get(msg.key, [])))
        if isinstance(msg, wire.Put | wire.Delete):
            if put_error is not None:
                err = put_error(msg)
                if err is not None:
                    return err
            store[msg.key] = [msg.value] if isinstance(msg, wire.Put) else []
            return wire.PutOk(0, b"new-ctx")
        if isinstance(msg, wire.Status):
            return wire.StatusOk(0, {"node": "fake"})
        if isinstance(msg, wire.Repair):
            return wire.RepairOk(0, {"queued": 1, "partitions": 1, "asked": msg.partition})
        raise AssertionError(msg)

    return handle


def core(timeout=2.0, ring=True, **kw) -> tuple[ClientCore, Clock]:
    clock = Clock()
    c = ClientCore([EP["n0"]], timeout, clock=clock, **kw)
    if ring:
        c.set_ring(RING)
    return c, clock


def owners(key: bytes) -> list[str]:
    return [EP[x] for x in Ring([(m.id, m.rack) for m in MEMBERS], q=16, n=3).preflist_for_key(key)]


# ---- failover ----------------------------------------------------------------------------------
def test_failover_walks_the_owners_in_order_and_suspects_the_silent_one():
    c, clock = core()
    a, b, d = owners(b"k")
    net = Net(clock, {a: lambda m: SILENT, b: lambda m: UNREACHABLE}, default=member())
    assert net.run(c.get(b"k")).values == []
    assert [ep for ep, *_ in net.sent] == [a, b, d]
    assert a in c.suspect_until and b in c.suspect_until
    assert b in c.unconnectable and a not in c.unconnectable
    # the next call refreshes the ring (a miss happened) and tries the suspects last
    net.sent.clear()
    net.run(c.get(b"k"))
    assert net.kinds() == ["RingInfo", "Get"]
    assert net.sent[0][0] == c.candidates(None)[0] and net.sent[1][0] == d
    assert c.candidates(b"k")[-2:] == [a, b]
    clock.t += SUSPECT_FOR  # suspicion ends
    assert c.candidates(b"k")[:3] == [a, b, d]


def test_members_that_look_up_are_tried_before_dead_seeds_even_when_suspect():
    """Clients given a static list of ten addresses, five of them long dead, failed "no node
    reachable" for their whole timeout the moment a ring change made the three live nodes
    silent once: the live ones were suspects (tried last), the dead seeds' suspicion had run
    out, and the dead seeds came first at CONNECT_WAIT each (an outside membership run). A
    member the ring shows up now comes before any non-member seed or down member."""
    dead = [f"tcp://10.9.0.{i}:7000" for i in range(12)]
    clock = Clock()
    c = ClientCore([EP["n0"], *dead], 3.0, clock=clock)
    net = Net(clock, {ep: (lambda m: UNREACHABLE) for ep in dead}, default=member())
    net.run(c.get(b"k"))  # learns the ring
    for ep in dead:  # refused long ago: suspect no more
        c.unconnectable.add(ep)
    for ep in EP.values():  # every member silent once, just now
        c.suspect_until[ep] = clock.t + SUSPECT_FOR
    assert set(c.candidates(b"k")[:4]) == set(EP.values())
    net.sent.clear()
    assert net.run(c.put(b"k", b"v")) == b"new-ctx"
    assert not [ep for ep, *_ in net.sent if ep in dead]


def test_each_try_gets_the_per_try_budget_and_the_call_ends_at_its_deadline():
    c, clock = core(timeout=2.0)
    start = clock.t
    net = Net(clock)  # everyone connected and silent
    with pytest.raises(RequestTimeout):
        net.run(c.get(b"k"))
    tries = [(at, until) for _, m, at, until in net.sent if isinstance(m, wire.Get)]
    assert [until - at for at, until in tries] == [c.per_try, c.per_try]  # 1.0 each
    assert clock.t == start + 2.0
    c, clock = core(timeout=10.0)  # the per-try budget is capped at 1.5 s
    net = Net(clock)
    with pytest.raises(RequestTimeout):
        net.run(c.get(b"k"))
    budgets = [until - at for _, m, at, until in net.sent if isinstance(m, wire.Get)]
    # the last candidate waits for the rest of the timeout: nobody is left to move on to
    assert budgets[:-1] == [1.5] * (len(budgets) - 1) and budgets[-1] == pytest.approx(
        10.0 - 1.5 * (len(budgets) - 1))
    assert clock.t == pytest.approx(110.0)


def test_a_single_node_gets_the_whole_timeout():
    """One node (or the last one left): its try is not cut at the per-try budget; a slow
    answer within the call's timeout is an answer, not a RequestTimeout."""
    clock = Clock()
    start = clock.t
    c = ClientCore([EP["n0"]], 5.0, clock=clock)  # no ring: the seed is the only candidate
    net = Net(clock, {EP["n0"]: lambda m: Late(3.0, wire.PutOk(0, b"ctx"))})
    assert net.run(c.put(b"k", b"v")) == b"ctx"  # (its ring request went unanswered)
    (put,) = [(at, until) for _, m, at, until in net.sent if isinstance(m, wire.Put)]
    assert put[1] == start + 5.0 and put[1] - put[0] > c.per_try


def test_unavailable_only_when_no_tried_node_could_be_connected():
    c, clock = core()
    with pytest.raises(Unavailable):
        Net(clock, default=lambda m: UNREACHABLE).run(c.get(b"k"))
    c, clock = core()
    a = owners(b"k")[0]
    net = Net(clock, {a: lambda m: SILENT}, default=lambda m: UNREACHABLE)
    with pytest.raises(RequestTimeout):  # one node took the request and kept quiet
        net.run(c.get(b"k"))


def test_status_of_one_node_does_not_fail_over():
    c, clock = core()
    net = Net(clock)
    with pytest.raises(RequestTimeout):
        net.run(c.status(EP["n2"]))
    assert [ep for ep, *_ in net.sent] == [EP["n2"]]
    net = Net(clock, default=member())
    assert net.run(c.status("n3")) == {"node": "fake"}  # a member id is looked up in the ring
    assert [ep for ep, *_ in net.sent] == [EP["n3"]]
    with pytest.raises(InvalidRequest):
        net.run(c.status("nobody"))


# ---- ring refresh -------------------------------------------------------------------------------
def test_first_call_learns_the_ring_then_goes_straight_to_an_owner():
    c, clock = core(ring=False)
    net = Net(clock, default=member())
    net.run(c.put(b"k", b"v"))
    assert net.kinds() == ["RingInfo", "Put"]
    assert net.sent[1][0] == owners(b"k")[0]
    assert c.members == MEMBERS and c.n == 3
    net.sent.clear()
    clock.t += RING_REFRESH / 2
    net.run(c.get(b"k"))
    assert net.kinds() == ["Get"]  # the ring is fresh enough
    clock.t += RING_REFRESH
    net.run(c.get(b"k"))
    assert net.kinds() == ["Get", "RingInfo", "Get"]


def test_a_member_announcing_an_address_no_client_can_connect_to_is_routed_around():
    """A ring whose member announces an address libzmq refuses (a trailing newline an older
    node let through --advertise): every call routed there failed "cannot connect" at once,
    29 of 30 in an outside run. The member is left out of the routing; its keys go to the
    others."""
    key = next(b"k%d" % i for i in range(1000) if owners(b"k%d" % i)[0] == EP["n1"])
    bad = [wire.Member(m.id, m.listen + "\n", m.gossip, m.rack, 1, 1) if m.id == "n1" else m
           for m in MEMBERS]
    c, clock = core(ring=False)
    c.set_ring(wire.RingOk(0, RING.q, RING.n, RING.r, RING.w, bad, []))
    assert "n1" not in c.endpoints and len(c.endpoints) == len(MEMBERS) - 1
    net = Net(clock, default=member())
    assert net.run(c.put(key, b"v")) == b"new-ctx"
    assert net.sent[0][0] == owners(key)[1]  # the next owner, first
    assert all("\n" not in ep for ep, *_ in net.sent)


def test_a_plan_does_not_refresh_while_another_one_is_refreshing():
    c, clock = core(ring=False)
    first = c.get(b"a")
    assert isinstance(next(first).msg, wire.RingInfo)  # in flight, unanswered
    second = c.get(b"b")
    assert isinstance(next(second).msg, wire.Get)  # goes on with what it knows (the seed)
    first.close()  # an abandoned plan gives the refresh up
    assert isinstance(next(c.get(b"c")).msg, wire.RingInfo)


def test_ring_info_always_asks_and_fails_like_a_call():
    c, clock = core()
    net = Net(clock, default=member())
    assert net.run(c.ring_info()).members == MEMBERS
    assert net.kinds() == ["RingInfo"]
    with pytest.raises(Unavailable):
        Net(clock, default=lambda m: UNREACHABLE).run(c.ring_info())


# ---- request validation and result mapping -----------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda c: c.get("str-key"),
    lambda c: c.get(b"k", r=4),  # N is 3
    lambda c: c.put(b"k", "str-value"),
    lambda c: c.put(b"", b"v"),
    lambda c: c.put(b"k", b"v", context="ctx"),
    lambda c: c.delete(b"k", w=0.5),
    lambda c: c.update(b"k", "not callable"),
    lambda c: c.update(b"k", lambda vs: b"", w=9),
    lambda c: c.update(b"k", lambda vs: b"", retries=-1),
    lambda c: c.repair("all"),
    lambda c: c.get(b"k", pr=4),  # primary quorums: 1..N as r and w
    lambda c: c.put(b"k", b"v", pw=0),
    lambda c: c.delete(b"k", pw="2"),
    lambda c: c.get_many([b"k"], pr=9),
    lambda c: c.put_many([(b"k", b"v")], pw=-1),
    lambda c: c.delete_many([b"k"], pw=4),
    lambda c: c.update(b"k", lambda vs: b"", pr=4),
])
def test_bad_requests_raise_before_anything_is_sent(make):
    c, _ = core()
    with pytest.raises(InvalidRequest):
        next(make(c))


@pytest.mark.parametrize("code,exc", [
    (wire.E_INVALID, InvalidRequest), (wire.E_QUORUM, QuorumError),
    (wire.E_UNAVAILABLE, Unavailable), (wire.E_TIMEOUT, RequestTimeout),
    (wire.E_INTERNAL, ZkvError),
])
def test_error_replies_map_to_their_exceptions(code, exc):
    c, clock = core()
    net = Net(clock, default=lambda m: wire.Error(0, code, "no", 3, 1))
    with pytest.raises(exc) as info:
        net.run(c.put(b"k", b"v"))
    if exc is QuorumError:
        assert (info.value.required, info.value.acked) == (3, 1)
    if exc is Unavailable:  # "not now": every candidate is asked before it is the answer
        assert net.kinds() == ["Put"] * len(c.candidates(b"k"))
    else:
        assert net.kinds() == ["Put"]  # an answer, even an error, ends the call


def test_unexpected_reply_is_an_error_not_a_result():
    c, clock = core()
    with pytest.raises(ZkvError, match="unexpected reply"):
        Net(clock, default=lambda m: wire.StatusOk(0, {})).run(c.get(b"k"))


def test_every_operation_returns_its_result():
    c, clock = core()
    net = Net(clock, default=member())
    assert net.run(c.put(b"k", b"v", w=2)) == b"new-ctx"
    res = net.run(c.get(b"k", r=2))
    assert (res.values, res.context, res.found) == ([b"v"], b"ctx:1", True)
    assert net.run(c.delete(b"k", context=res.context)) == b"new-ctx"
    assert not net.run(c.get(b"k")).found
    assert net.run(c.repair(7, node="n1"))["asked"] == 7
    assert net.run(c.status()) == {"node": "fake"}


def test_a_delete_without_a_context_reads_the_current_one_first_and_b_empty_is_blind():
    """delete(key) used to send an empty context: a tombstone covering nothing, so the value
    stayed readable beside it (an application "deleting" a session kept serving it). It now
    reads the key first, as `zkv delete` and Riak's delete do; b"" still writes the blind
    tombstone."""
    c, clock = core()
    net = Net(clock, default=member({b"k": [b"v1", b"v2"]}))
    assert net.run(c.delete(b"k")) == b"new-ctx"
    sent = [m for _, m, _, _ in net.sent if isinstance(m, wire.Get | wire.Delete)]
    assert isinstance(sent[0], wire.Get) and sent[0].key == b"k"
    deletes = [m for m in sent if isinstance(m, wire.Delete)]
    assert deletes and {m.context for m in deletes} == {b"ctx:2"}  # what the read saw
    net.sent.clear()
    assert net.run(c.delete(b"j", b"")) == b"new-ctx"
    assert [type(m).__name__ for _, m, _, _ in net.sent] == ["Delete"]
    assert net.sent[0][1].context == b""


def test_a_timeout_says_how_long_it_waited_and_how_many_nodes_it_tried():
    """It said "no answer within 2.0s" (the client's timeout) whatever it had waited."""
    c, clock = core(timeout=1.0)
    start = clock.t
    net = Net(clock)  # every node silent
    with pytest.raises(RequestTimeout) as err:
        net.run(c.put(b"k", b"v"))
    waited = clock.t - start
    nodes, tries = len({ep for ep, *_ in net.sent}), len(net.sent)
    assert nodes >= 2 and str(err.value) == (
        f"no answer from the {nodes} node(s) tried ({tries} tries, the last ending "
        f"{waited:.2f}s into the request; timeout 1s)")
    # one node, tried again and again: one node, many tries (it said "21 node(s) tried")
    c, clock = core(timeout=1.0, ring=False)
    net = Net(clock, default=lambda m: wire.Error(0, wire.E_UNAVAILABLE, wire.BUSY + ": x")
              if clock.t < 100.5 else SILENT)
    with pytest.raises(RequestTimeout, match=r"from the 1 node\(s\) tried \(\d+ tries"):
        net.run(c.put(b"k", b"v"))
    # a shared Client's call gets what other threads' calls left of its timeout: rounded
    c, clock = core(timeout=1.0)
    c.timeout = 1.4567891
    with pytest.raises(RequestTimeout, match=r"; timeout 1\.457s\)$"):
        Net(clock).run(c.put(b"k", b"v"))


def test_update_with_an_async_fn_says_fn_must_return_the_bytes():
    """AsyncClient.update(key, async_fn) said "value must be bytes, not coroutine" and left a
    coroutine never awaited; nothing is written."""
    c, clock = core()
    net = Net(clock, default=member({b"k": [b"v"]}))

    async def merge(values):
        return b"x"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a "never awaited" RuntimeWarning fails the test)
        with pytest.raises(InvalidRequest, match="fn returned an awaitable"):
            net.run(c.update(b"k", merge))
    assert "Put" not in net.kinds()


# ---- write ids (issue 10) ----------------------------------------------------------------------
def _wids(net: Net, kind=wire.Put) -> list[bytes]:
    return [m.wid for _, m, _, _ in net.sent if isinstance(m, kind)]


def test_a_write_keeps_its_id_across_failovers_and_a_new_call_gets_a_new_one():
    c, clock = core(timeout=5.0)
    a, b, _ = owners(b"k")
    net = Net(clock, {a: lambda m: SILENT, b: lambda m: UNREACHABLE}, default=member())
    net.run(c.put(b"k", b"v"))
    first = _wids(net)
    assert len(first) == 3 and len(set(first)) == 1 and len(first[0]) == 16
    rids = [m.rid for _, m, _, _ in net.sent if isinstance(m, wire.Put)]
    assert len(set(rids)) == 3  # each try its own rid, so late answers can be told apart
    net.sent.clear()
    net.run(c.put(b"k", b"v"))
    net.run(c.delete(b"k", b""))
    assert len({first[0], *_wids(net), *_wids(net, wire.Delete)}) == 3


def test_write_ids_are_unique_and_a_forked_child_never_reuses_the_parent_s():
    import os

    c, _ = core()
    ids = [c.new_wid() for _ in range(1000)]  # several os.urandom draws
    assert len(set(ids)) == 1000 and all(len(w) == 16 for w in ids)
    left = c.new_wid()  # the pool now holds ids the parent has not used
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, b"".join(c.new_wid() for _ in range(300)))
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        child = fh.read()
    os.waitpid(pid, 0)
    theirs = {child[i:i + 16] for i in range(0, len(child), 16)}
    ours = {c.new_wid() for _ in range(300)}
    assert len(theirs) == 300 and not theirs & (ours | {left} | set(ids))


def test_an_injected_rng_makes_write_ids_reproducible():
    def wids(seed):
        c, clock = core(rng=random.Random(seed))
        net = Net(clock, default=member())
        for i in range(3):
            net.run(c.put(b"k%d" % i, b"v"))
        return _wids(net)

    assert wids(1) == wids(1) != wids(2)


def test_update_rereads_and_retries_a_missed_quorum_under_a_new_write_id():
    c, clock = core()
    fails = [QuorumError, None]

    def put_error(msg):
        if fails.pop(0) is QuorumError:
            return wire.Error(0, wire.E_QUORUM, "1 of 2", 2, 1)
        return None

    store = {b"k": [b"a", b"b"]}
    net = Net(clock, default=member(store, put_error=put_error))
    seen = []

    def merge(values):
        seen.append(values)
        return b"+".join(sorted(values))

    assert net.run(c.update(b"k", merge, w=2)) == b"new-ctx"
    assert seen == [[b"a", b"b"], [b"a", b"b"]]
    assert net.kinds() == ["Get", "Put", "Get", "Put"]
    wids = _wids(net)
    # a new id even for the same bytes: two writers retrying so, each under its first id,
    # listed each other's as retired and rule R erased both (the review's model)
    assert wids[0] != wids[1]
    assert store[b"k"] == [b"a+b"]


def test_update_gets_a_new_write_id_when_the_value_changes():
    c, clock = core()
    store = {b"k": [b"1"]}
    failed = []

    def put_error(msg):
        if not failed:
            failed.append(msg)
            store[b"k"] = [b"5"]  # someone else wrote meanwhile
            return wire.Error(0, wire.E_QUORUM, "1 of 2", 2, 1)
        return None

    net = Net(clock, default=member(store, put_error=put_error))
    net.run(c.update(b"k", lambda vs: b"%d" % (int(vs[0]) + 1)))
    assert [m.value for _, m, _, _ in net.sent if isinstance(m, wire.Put)] == [b"2", b"6"]
    assert len(set(_wids(net))) == 2


def test_update_gives_up_after_its_retries_with_the_last_error():
    c, clock = core()
    net = Net(clock, default=member(
        put_error=lambda m: wire.Error(0, wire.E_QUORUM, "0 of 2", 2, 0)))
    with pytest.raises(QuorumError):
        net.run(c.update(b"k", lambda vs: b"x", retries=2))
    assert net.kinds().count("Put") == 3
    # errors that a retry cannot fix are not retried
    net = Net(clock, default=member(put_error=lambda m: wire.Error(0, wire.E_INVALID, "no")))
    with pytest.raises(InvalidRequest):
        net.run(c.update(b"k", lambda vs: b"x"))
    assert net.kinds().count("Put") == 1


# ---- properties over arbitrary fault schedules ------------------------------------------------
fate = st.sampled_from(["ok", "silent", "unreachable"])


@settings(max_examples=200, deadline=None)
@given(fates=st.lists(fate, min_size=4, max_size=4), timeout=st.floats(0.05, 6.0),
       key=st.binary(min_size=1, max_size=8), delete=st.booleans())
def test_any_fault_schedule_keeps_the_contract(fates, timeout, key, delete):
    c, clock = core(timeout=timeout)
    start = clock.t
    order = c.candidates(key)
    by_ep = dict(zip(order, fates, strict=True))
    answers = member()
    net = Net(clock, {ep: (answers if f == "ok" else
                           (lambda m: SILENT) if f == "silent" else (lambda m: UNREACHABLE))
                      for ep, f in by_ep.items()})
    plan = c.delete(key, b"") if delete else c.put(key, b"v")  # (b"": no read first)
    try:
        result = net.run(plan)
    except (RequestTimeout, Unavailable) as exc:
        result = exc
    tried = [ep for ep, *_ in net.sent]
    assert tried == order[:len(tried)]  # best first, never the same node twice
    last = order[-1]  # the last candidate's try may take the rest of the timeout
    for ep, _, at, until in net.sent:  # each try within its own budget and the call's deadline
        assert until <= (start + timeout if ep == last else min(at + c.per_try, start + timeout))
    assert len({m.wid for _, m, *_ in net.sent}) == 1  # one write id for the whole call
    assert clock.t <= start + timeout + LATENCY
    if result == b"new-ctx":
        assert by_ep[tried[-1]] == "ok" and all(by_ep[ep] != "ok" for ep in tried[:-1])
    else:
        assert all(by_ep[ep] != "ok" for ep in tried)
        assert isinstance(result, Unavailable) == all(by_ep[ep] == "unreachable" for ep in tried)
        assert tried == order or clock.t >= start + timeout  # gave up only when out of options


# ---- hedged tries (issue 10) ---------------------------------------------------------------------
def test_a_silent_coordinator_costs_the_hedge_delay_not_the_per_try_budget():
    c, clock = core(timeout=5.0)  # per try 1.5 s
    start = clock.t
    a, b, d = owners(b"k")
    net = Net(clock, {a: lambda m: SILENT}, default=member(), hedge=True)
    assert net.run(c.put(b"k", b"v", w=3)) == b"new-ctx"
    assert clock.t == pytest.approx(start + HEDGE_FLOOR + LATENCY)
    (ea, ma, at_a, _), (eb, mb, at_b, _) = net.sent
    assert (ea, eb) == (a, b) and at_b - at_a == pytest.approx(HEDGE_FLOOR)
    assert ma.wid == mb.wid and ma.rid != mb.rid  # the same write: replicas collapse the two
    assert a in c.suspect_until  # the next call goes elsewhere first


def test_the_first_answer_wins_even_the_hedged_try_s():
    c, clock = core(timeout=5.0)
    start = clock.t
    a, b, d = owners(b"k")
    net = Net(clock, {a: lambda m: Late(0.3, wire.GetOk(0, [b"from-a"], b"")),
                      b: lambda m: Late(0.5, wire.GetOk(0, [b"from-b"], b""))},
              default=member(), hedge=True)
    assert net.run(c.get(b"k")).values == [b"from-a"]  # a answered while b's try was open
    assert clock.t == pytest.approx(start + 0.3)
    assert [ep for ep, *_ in net.sent] == [a, b]  # d never asked: a's answer came first


def test_out_of_nodes_the_hedged_tries_are_still_waited_for():
    c, clock = core(timeout=5.0)
    start = clock.t
    order = c.candidates(b"k")
    late = lambda m: Late(0.9, wire.PutOk(0, b"late-ctx"))  # noqa: E731
    net = Net(clock, {order[0]: late}, default=lambda m: UNREACHABLE, hedge=True)
    assert net.run(c.put(b"k", b"v")) == b"late-ctx"
    # seen at the end of the connect wait it arrived in (a driver reads no answers then)
    assert start + 0.9 <= clock.t <= start + 0.9 + CONNECT_WAIT


def test_a_late_busy_answer_of_a_hedged_try_is_asked_again_not_returned():
    """Out of candidates, a hedged try still listened to answered "busy, retry" (a node
    taking the writes that waited through its stall): the call returned it, and a put failed
    "busy" 1.2 s into its 10 s timeout (a review). It is asked again after a pause."""
    c, clock = core(timeout=10.0)
    order = c.candidates(b"k")
    busy = [1]

    def first(m):
        if busy[0]:
            busy[0] -= 1
            return Late(0.9, wire.Error(0, wire.E_UNAVAILABLE, wire.BUSY + ": this node has "
                                        "just resumed from standing still"))
        return member()(m)

    net = Net(clock, {order[0]: first}, default=lambda m: UNREACHABLE, hedge=True)
    assert net.run(c.put(b"k", b"v")) == b"new-ctx"
    assert [ep for ep, *_ in net.sent].count(order[0]) == 2  # asked again, the same write
    assert len({m.wid for _, m, *_ in net.sent}) == 1


def test_the_hedge_delay_follows_the_observed_round_trips():
    c, clock = core(timeout=5.0)
    assert c.hedge_delay() == HEDGE_FLOOR
    net = Net(clock, default=lambda m: Late(0.25, member()(m)), hedge=True)
    for i in range(40):
        net.run(c.get(b"k%d" % i))
    assert c.hedge_delay() == pytest.approx(3 * 0.25)
    assert min(c.per_try, c.hedge_delay()) > 0.25  # a usual answer never triggers a hedge


def test_status_and_admin_calls_are_never_hedged():
    c, clock = core(timeout=5.0)
    quiet = EP["n1"]
    net = Net(clock, {quiet: lambda m: SILENT}, default=member(), hedge=True)
    with pytest.raises(RequestTimeout):
        net.run(c.status(quiet))
    assert [ep for ep, *_ in net.sent] == [quiet]


answer = st.one_of(st.just("silent"), st.just("unreachable"),
                   st.floats(0.001, 3.0).map(lambda d: round(d, 3)))


@settings(max_examples=300, deadline=None)
@given(fates=st.lists(answer, min_size=4, max_size=4), timeout=st.floats(0.05, 6.0),
       key=st.binary(min_size=1, max_size=8))
# two answers due at the same instant (a first try at 1.0 s, its hedge at 0.2 + 0.8 s): the
# fake network compared the replies themselves to order them (found by CI's Hypothesis run)
@example(fates=[1.0, 0.8, "silent", "silent"], timeout=1.0, key=b"\x00")
def test_hedging_never_loses_an_answer_a_plain_driver_would_get(fates, timeout, key):
    def run(hedge: bool):
        c, clock = core(timeout=timeout)
        start = clock.t
        order = c.candidates(key)
        by_ep = dict(zip(order, fates, strict=True))

        def node(f):
            if f == "silent":
                return lambda m: SILENT
            if f == "unreachable":
                return lambda m: UNREACHABLE
            return lambda m: Late(f, wire.PutOk(0, b"ok"))  # a plain driver: within the try

        net = Net(clock, {ep: node(f) for ep, f in by_ep.items()}, hedge=hedge)
        try:
            result = net.run(c.put(key, b"v"))
        except (RequestTimeout, Unavailable) as exc:
            result = exc
        tried = [ep for ep, *_ in net.sent]
        assert tried == order[:len(tried)]  # best first, never the same node twice
        for ep, _, at, until in net.sent:  # (the last candidate: the rest of the timeout)
            assert until <= (start + timeout if ep == order[-1]
                             else min(at + c.per_try, start + timeout))
        assert len({m.wid for _, m, *_ in net.sent}) == 1
        assert clock.t <= start + timeout + LATENCY
        return result, [(at, by_ep[ep]) for ep, _, at, _ in net.sent], clock.t - start

    plain, _, plain_took = run(False)
    hedged, sent, _ = run(True)
    # hedging never turns a success into a failure -- unless the answer came in the last
    # CONNECT_WAIT before the deadline: a driver reads no answer while it waits for a
    # connection to a later (hedged) node, and that wait can use up the rest of the call
    if plain == b"ok" and plain_took + CONNECT_WAIT <= timeout:
        assert hedged == b"ok"
    for i, (at, _) in enumerate(sent):  # no node is asked once an answer has arrived
        for earlier, fate in sent[:i]:  # (give or take the connect wait of an unreachable one)
            if not isinstance(fate, str):
                assert at < earlier + fate + CONNECT_WAIT


def test_a_node_that_answers_not_now_costs_a_retry_not_an_error():
    c, clock = core(timeout=5.0)
    a, b, d = owners(b"k")
    joining = lambda m: wire.Error(0, wire.E_UNAVAILABLE, "n1 is still joining")  # noqa: E731
    net = Net(clock, {a: joining}, default=member())
    assert net.run(c.put(b"k", b"v")) == b"new-ctx"
    assert [ep for ep, *_ in net.sent] == [a, b] and a not in c.suspect_until  # alive
    # everyone refusing: the last refusal is the error
    net = Net(clock, default=joining)
    with pytest.raises(Unavailable, match="still joining"):
        net.run(c.get(b"k"))
    assert len(net.sent) == len(c.candidates(b"k"))
    # other errors are the answer: not retried
    net = Net(clock, default=lambda m: wire.Error(0, wire.E_INVALID, "no"))
    with pytest.raises(InvalidRequest):
        net.run(c.get(b"k"))
    assert len(net.sent) == 1


def test_busy_nodes_are_asked_again_after_growing_pauses_while_the_call_has_time():
    """Every candidate answering "busy, retry" (a node's cap on requests in flight per
    connection) failed the call with seconds of its timeout left; it now asks them again
    after a pause (doubling from BUSY_PAUSE, jittered), the write keeping its id."""
    c, clock = core(timeout=5.0)
    start = clock.t
    busy = wire.Error(0, wire.E_UNAVAILABLE, "busy, retry: 256 requests in flight on this "
                      "connection")
    left = [7]  # tries answered busy before the nodes have room again
    ok = member()

    def node(msg):
        if isinstance(msg, wire.Put) and left[0]:
            left[0] -= 1
            return wire.Error(0, busy.code, busy.message)
        return ok(msg)

    net = Net(clock, default=node)
    assert net.run(c.put(b"k", b"v")) == b"new-ctx"
    assert len({m.wid for _, m, *_ in net.sent}) == 1 and len(net.sent) == 8
    assert len(net.pauses) == 7 // len(c.candidates(b"k"))
    assert all(BUSY_PAUSE / 2 * 2 ** i <= p <= BUSY_PAUSE * 1.5 * 2 ** i
               for i, p in enumerate(net.pauses))
    # busy for good: the busy answer is the error, raised within the timeout
    c, clock = core(timeout=0.5)
    start = clock.t
    net = Net(clock, default=lambda m: wire.Error(0, busy.code, busy.message))
    with pytest.raises(Unavailable, match="busy, retry"):
        net.run(c.get(b"k"))
    # (this fake's replies take LATENCY even past a try's end: a call ends by then)
    assert start + 0.5 - BUSY_PAUSE_MAX * 1.5 <= clock.t <= start + 0.5 + LATENCY
    assert max(net.pauses) <= BUSY_PAUSE_MAX * 1.5 and len(net.pauses) >= 3
    # another refusal (joining, stopping) is not asked again
    net = Net(clock, default=lambda m: wire.Error(0, wire.E_UNAVAILABLE, "n1 is stopping"))
    with pytest.raises(Unavailable, match="stopping"):
        net.run(c.get(b"k"))
    assert net.pauses == []


def test_a_coordinator_that_saw_too_few_replicas_up_costs_one_more_coordinator():
    """A coordinator cut off from its peers but not from clients answered every get at R=2
    with a QuorumError at once ("every replica that could be asked has answered"), and the
    client took it as final while the other nodes could serve it. One other coordinator is
    asked now (a write keeps its id); a quorum missed within a wait is not retried, nor is a
    second such answer."""
    c, clock = core(timeout=5.0)
    a, b, d = owners(b"k")[:3]
    alone = lambda m: wire.Error(0, wire.E_QUORUM, "get: 1 of the required 2 replicas "  # noqa: E731
                                 f"answered, and {wire.ASKED_ALL}", 2, 1)
    net = Net(clock, {a: alone}, default=member({b"k": [b"v"]}))
    assert net.run(c.get(b"k", r=2)).values == [b"v"]
    net = Net(clock, {a: alone}, default=member())
    assert net.run(c.put(b"k", b"v", w=2)) == b"new-ctx"
    assert [ep for ep, *_ in net.sent] == [a, b] and a not in c.suspect_until
    assert len({m.wid for _, m, *_ in net.sent}) == 1
    net = Net(clock, default=alone)  # every coordinator short: two asked, the second's error
    with pytest.raises(QuorumError, match="could be asked") as err:
        net.run(c.get(b"k", r=2))
    assert len(net.sent) == 2 and (err.value.required, err.value.acked) == (2, 1)
    waited = lambda m: wire.Error(0, wire.E_QUORUM, "get: 1 of the required 2 replicas "  # noqa: E731
                                  "answered within 1.00s", 2, 1)
    net = Net(clock, default=waited)
    with pytest.raises(QuorumError, match="within 1.00s"):
        net.run(c.get(b"k", r=2))
    assert len(net.sent) == 1
    # the ring it learned (from a node on the small side of a partition) calls the key's
    # owners down: the coordinators it tries first are stand-ins on that side, and the one
    # other asked after "too few replicas up" is an owner, not the next stand-in (an outside
    # netns run: every w=3 put failed for 2|3 partitions, both tries on the small side)
    c, clock = core(timeout=5.0)
    owner_ids = [m.id for m in MEMBERS if EP[m.id] in owners(b"k")[:3]]
    c.set_ring(msgspec.structs.replace(RING, down=owner_ids))
    first = c.candidates(b"k")[0]
    assert first not in owners(b"k")[:3]
    net = Net(clock, {first: alone}, default=member())
    assert net.run(c.put(b"k", b"v", w=3)) == b"new-ctx"
    assert [ep for ep, *_ in net.sent][0] == first
    assert [ep for ep, *_ in net.sent][1] == owners(b"k")[0]
    # ... and when that owner is really down (silent), the next candidate still gets its
    # turn, as before; suspect from then on, the owner is not picked again (the review: a
    # paused owner picked every time failed 20 of 20)
    c, clock = core(timeout=5.0)
    a, b, _ = owners(b"k")[:3]
    c.set_ring(msgspec.structs.replace(RING, down=[m.id for m in MEMBERS if EP[m.id] == b]))
    net = Net(clock, {a: alone, b: lambda m: SILENT}, default=member())
    for _ in range(3):
        assert net.run(c.put(b"k", b"v", w=2)) == b"new-ctx"
    assert [ep for ep, *_ in net.sent].count(b) == 1


# ---- many operations in one call ----------------------------------------------------------------
def test_many_returns_every_result_in_order_in_windowed_steps():
    c, clock = core(timeout=5.0)
    store: dict = {}
    net = Net(clock, default=member(store))
    keys = [b"m%d" % i for i in range(300)]
    assert net.run(c.put_many([(k, k + b"=v") for k in keys], w=2)) == [b"new-ctx"] * 300
    assert net.steps == [MANY_WINDOW, MANY_WINDOW, 300 - 2 * MANY_WINDOW]
    wids = _wids(net)
    assert len(wids) == 300 and len(set(wids)) == 300  # one write id per item
    got = net.run(c.get_many(list(reversed(keys)), r=2))
    assert [g.values for g in got] == [[k + b"=v"] for k in reversed(keys)]
    ctx = dvv.update(None, b"", b"v", "n1").context()  # (a real one: the items are checked)
    assert net.run(c.delete_many([keys[0], (keys[1], ctx)])) == [b"new-ctx"] * 2
    assert [g.found for g in net.run(c.get_many(keys[:3]))] == [False, False, True]
    assert net.run(c.get_many([])) == []


def test_many_fails_over_per_item_in_the_same_steps():
    c, clock = core(timeout=5.0)
    keys = [b"f%d" % i for i in range(40)]
    silent = owners(keys[0])[0]
    net = Net(clock, {silent: lambda m: SILENT}, default=member())
    start = clock.t
    assert [g.values for g in net.run(c.get_many(keys))] == [[]] * 40
    hit = [k for k in keys if owners(k)[0] == silent]
    assert hit and net.steps == [40, len(hit)]  # the silent owner's keys tried again, together
    assert clock.t <= start + c.per_try + 2 * LATENCY  # one per-try budget, not one per key
    assert [ep for ep, m, *_ in net.sent if m.key == hit[0]] == owners(hit[0])[:2]


def test_many_leaves_errors_in_place_or_raises_the_first_after_trying_every_item():
    c, clock = core(timeout=5.0)
    refuse = member(put_error=lambda m: wire.Error(0, wire.E_QUORUM, "missed", 2, 1)
                    if m.value.startswith(b"bad") else None)
    items = [(b"k%d" % i, b"bad" if i in (3, 7) else b"ok") for i in range(10)]
    net = Net(clock, default=refuse)
    got = net.run(c.put_many(items, return_exceptions=True))
    assert [type(g) for g in got] == [bytes] * 3 + [QuorumError] + [bytes] * 3 + \
        [QuorumError] + [bytes] * 2
    assert got[3].required == 2 and got[3].acked == 1
    net.sent.clear()
    with pytest.raises(QuorumError):
        net.run(c.put_many(items))
    assert len(_wids(net)) == 10  # every write was tried before the error was raised


@pytest.mark.parametrize("call", [
    lambda c: c.get_many([b"ok", b""]),
    lambda c: c.get_many(b"not-a-list"),
    lambda c: c.get_many([b"k"], r=9),
    lambda c: c.put_many([(b"k", b"v"), (b"k", "str")]),
    lambda c: c.put_many([(b"k", b"v"), b"k"]),
    lambda c: c.put_many([(b"k", b"v", "ctx")]),
    lambda c: c.delete_many([b"k", (b"k", b"c", b"x")]),
    lambda c: c.delete_many([b"k", 7]),
])
def test_many_checks_every_item_before_anything_is_sent(call):
    c, clock = core()
    net = Net(clock, default=member())
    with pytest.raises(InvalidRequest):
        net.run(call(c))
    assert net.sent == []


def test_a_bad_item_is_named_in_the_error():
    c, clock = core()
    with pytest.raises(InvalidRequest, match="item 1: value must be bytes"):
        Net(clock, default=member()).run(c.put_many([(b"k", b"v"), (b"k", "str")]))
    # an item of the wrong shape says what it was
    with pytest.raises(InvalidRequest, match=r"item 1: .* tuple, not a tuple of 1$"):
        Net(clock, default=member()).run(c.put_many([(b"k", b"v"), (b"k",)]))
    with pytest.raises(InvalidRequest, match=r"item 0: .* tuple, not bytes$"):
        Net(clock, default=member()).run(c.put_many([b"k"]))
    with pytest.raises(InvalidRequest, match=r"item 1: .* tuple, not a tuple of 3$"):
        Net(clock, default=member()).run(c.delete_many([b"k", (b"k", b"c", b"x")]))


@settings(max_examples=100, deadline=None)
@given(fates=st.lists(fate, min_size=4, max_size=4), timeout=st.floats(0.05, 6.0),
       keys=st.lists(st.binary(min_size=1, max_size=6).filter(lambda k: k[0] != 0),
                     min_size=1, max_size=20, unique=True))  # (0x00 first: refused up front)
def test_many_keeps_each_item_s_contract_under_any_fault_schedule(fates, timeout, keys):
    """Each item of a put_many behaves as a put of its own: no node tried twice, one write id
    per item (a new one per item), within the call's deadline, answered only by a node that
    answers, and failed only when every node it tried was silent or unreachable."""
    c, clock = core(timeout=timeout)
    start = clock.t
    by_ep = dict(zip(sorted(EP.values()), fates, strict=True))
    net = Net(clock, {ep: (member() if f == "ok" else
                           (lambda m: SILENT) if f == "silent" else (lambda m: UNREACHABLE))
                      for ep, f in by_ep.items()})
    got = net.run(c.put_many([(k, b"v") for k in keys], return_exceptions=True))
    assert clock.t <= start + timeout + LATENCY
    wids = set()
    for key, result in zip(keys, got, strict=True):
        tries = [(ep, m.wid) for ep, m, *_ in net.sent if m.key == key]
        eps = [ep for ep, _ in tries]
        assert tries and len(eps) == len(set(eps))
        assert len({w for _, w in tries}) == 1
        wids.add(tries[0][1])
        if result == b"new-ctx":
            assert by_ep[eps[-1]] == "ok" and all(by_ep[ep] != "ok" for ep in eps[:-1])
        else:
            assert isinstance(result, RequestTimeout | Unavailable)
            assert all(by_ep[ep] != "ok" for ep in eps)
    assert len(wids) == len(keys)


# ---- admin calls to members of an older version --------------------------------------------
def _ring_with_features(features: dict[str, int]) -> wire.RingOk:
    members = [wire.Member(m.id, m.listen, m.gossip, m.rack, 1, 1,
                           features=features.get(m.id, wire.FEATURES)) for m in MEMBERS]
    return wire.RingOk(0, RING.q, RING.n, RING.r, RING.w, members, [])


@pytest.mark.parametrize("call, bit, why", [
    (lambda c: c.config({"max_siblings": 5}, "n1"), wire.FEATURE_CONFIG,
     "config: n1 run(s) a zkv version without zkv config (upgrade it first)"),
    (lambda c: c.config({"max_siblings": 5}, "n1", save=True), wire.FEATURE_CONFIG_SAVE,
     "config --save: n1 run(s) a zkv version without zkv config --save (upgrade it first)"),
    (lambda c: c.snapshot("s1", "n1"), wire.FEATURE_SNAPSHOT,
     "snapshot: n1 run(s) a zkv version without snapshots (upgrade it first)"),
    (lambda c: c.namespace_create("sessions", conflicts="lww", ttl=60), wire.FEATURE_TTL,
     "cannot create namespace 'sessions' with a ttl: n1 run(s) a zkv version without expiry"),
    (lambda c: c.namespace_create("acct", pr=2, pw=2), wire.FEATURE_PRIMARY,
     "cannot create namespace 'acct' with pr/pw: n1 run(s) a zkv version without primary "
     "quorums"),
    (lambda c: c.namespace_alter("acct", pw=2), wire.FEATURE_PRIMARY,
     "cannot alter namespace 'acct' to pr/pw: n1 run(s) a zkv version without primary "
     "quorums"),
])
def test_an_admin_call_a_member_version_cannot_serve_is_refused_before_it_is_sent(call, bit,
                                                                                  why):
    """Sent anyway, an older node would drop the message (the call timing out) or ignore the
    field it does not know (a change not saved, a namespace that never expires)."""
    ring = _ring_with_features({"n1": wire.FEATURES & ~bit})
    c, clock = core()
    c.set_ring(ring)
    net = Net(clock, default=lambda msg: ring if isinstance(msg, wire.RingInfo) else SILENT)
    with pytest.raises(InvalidRequest) as err:
        net.run(call(c))
    assert why in str(err.value)
    assert {type(m).__name__ for _, m, *_ in net.sent} <= {"RingInfo"}  # nothing else sent
    # the same call to a member that serves it is sent (and here answered by silence)
    ring = _ring_with_features({})
    c.set_ring(ring)
    with pytest.raises(RequestTimeout):
        net.run(call(c))


@pytest.mark.parametrize("call", [
    lambda c: c.get(b"k", pr=2), lambda c: c.put(b"k", b"v", pw=2),
    lambda c: c.delete(b"k", pw=2), lambda c: c.get_many([b"k", b"j"], pr=1),
    lambda c: c.put_many([(b"k", b"v")], pw=3), lambda c: c.delete_many([b"k"], pw=2),
    lambda c: c.update(b"k", lambda vs: b"x", pw=2),
])
def test_a_primary_quorum_is_refused_while_any_member_would_ignore_it(call):
    """pr/pw: a node of a version without them would take the request and answer it from
    stand-ins (a sloppy answer where a strict one was asked for), and any member may
    coordinate it: refused before a request is sent while any member's record lacks
    FEATURE_PRIMARY, and sent with the field once every member has it."""
    ring = _ring_with_features({"n2": wire.FEATURES & ~wire.FEATURE_PRIMARY})
    c, clock = core()
    c.set_ring(ring)
    net = Net(clock, default=lambda msg: ring if isinstance(msg, wire.RingInfo) else SILENT)
    with pytest.raises(InvalidRequest) as err:
        net.run(call(c))
    assert "pr/pw: n2 run(s) a zkv version without primary quorums" in str(err.value)
    assert {type(m).__name__ for _, m, *_ in net.sent} <= {"RingInfo"}
    ring = _ring_with_features({})
    c.set_ring(ring)
    store: dict = {}
    net = Net(clock, default=lambda msg: ring if isinstance(msg, wire.RingInfo)
              else wire.ReadOk(0, b"") if isinstance(msg, wire.Read)  # (not an owner's:
              # then a coordinator is asked)
              else member(store)(msg))
    net.run(call(c))
    sent = [m for _, m, *_ in net.sent if type(m) in (wire.Get, wire.Put, wire.Delete)]
    assert [m for m in sent if (m.pr if type(m) is wire.Get else m.pw) > 0]  # (update's
    # read asks no pr here: pw is its write's)


@pytest.mark.parametrize("call, field, want", [
    (lambda c: c.get(b"k", r="quorum"), "r", 2), (lambda c: c.get(b"k", r="ALL"), "r", 3),
    (lambda c: c.get(b"k", r=1, pr="all"), "pr", 3),
    (lambda c: c.put(b"k", b"v", w="one"), "w", 1),
    (lambda c: c.put(b"k", b"v", pw="quorum"), "pw", 2),
    (lambda c: c.delete(b"k", w="all", pw="all"), "pw", 3),
    (lambda c: c.get_many([b"k"], r="all"), "r", 3),
    (lambda c: c.put_many([(b"k", b"v")], w="quorum"), "w", 2),
    (lambda c: c.delete_many([b"k"], w="one"), "w", 1),
    (lambda c: c.update(b"k", lambda vs: b"x", r="all", w="all"), "w", 3),
])
def test_quorums_by_name_are_numbers_of_the_namespace_s_n(call, field, want):
    """r/w/pr/pw "one", "quorum", "all" (any case, as Cassandra's consistency levels) are 1,
    a majority and N of the key's namespace (the default's N=3 here, learnt from the ring
    when not known yet); what is sent is the number."""
    ring = _ring_with_features({})
    c, clock = core(ring=False)
    store: dict = {}
    net = Net(clock, default=lambda msg: ring if isinstance(msg, wire.RingInfo)
              else wire.ReadOk(0, b"") if isinstance(msg, wire.Read) else member(store)(msg))
    net.run(call(c))
    sent = [m for _, m, *_ in net.sent if type(m) in (wire.Get, wire.Put, wire.Delete)
            and hasattr(m, field)]
    assert sent and getattr(sent[-1], field) == want


@pytest.mark.parametrize("call", [
    lambda c: c.get(b"k", r="most"), lambda c: c.put(b"k", b"v", pw="majority"),
    lambda c: c.get_many([b"k"], pr="two"), lambda c: c.update(b"k", lambda vs: b"", w="any"),
])
def test_a_quorum_by_an_unknown_name_is_refused_before_anything_is_sent(call):
    c, clock = core()
    net = Net(clock, default=lambda msg: SILENT)
    with pytest.raises(InvalidRequest, match="an int from 1 to N or one of one, quorum, all"):
        net.run(call(c))
    assert not [m for _, m, *_ in net.sent if type(m) in (wire.Get, wire.Put, wire.Delete)]


@pytest.mark.parametrize("namespace", ["default", "carts"])
def test_a_quorum_by_name_with_no_node_reachable_is_unavailable(namespace):
    """w="quorum" against a cluster none of whose nodes answer raised InvalidRequest ("the N
    of namespace 'default' is not known (give a number)"), a ValueError a retry loop does not
    retry; w=2 raised Unavailable. Both raise what reaching the cluster raised."""
    for fate, exc in ((UNREACHABLE, Unavailable), (SILENT, RequestTimeout)):
        c, clock = core(ring=False, timeout=1.0)
        net = Net(clock, default=lambda msg, fate=fate: fate)
        with pytest.raises(exc):
            net.run(c.put(b"k", b"v", w="quorum", namespace=namespace))


@pytest.mark.parametrize("kw, says", [
    ({"r": -1}, "r=-1: must be between 1 and n"), ({"w": 0}, "w=0: must be between 1 and n"),
    ({"pr": -1}, "pr=-1: must be between 0 and n"), ({"pw": 99}, "pw=99: must be between"),
    ({"ttl": -1}, "ttl=-1: must be between 0 (no expiry)"), ({"ttl": -2}, "ttl=-2"),
])
def test_an_alter_to_an_out_of_range_setting_is_refused_before_anything_is_sent(kw, says):
    """namespace_alter(r=-1) (or ttl=-1, pr=-1) was sent as the wire's "as it is" and
    answered OK, changing nothing; ttl=-2 was refused by the node as an undecodable frame."""
    c, clock = core()
    net = Net(clock, default=lambda msg: SILENT)
    with pytest.raises(InvalidRequest, match=re.escape(says)):
        net.run(c.namespace_alter("carts", **kw))
    assert net.sent == []


def test_an_owner_read_at_pr_asks_as_many_owners_as_pr_needs():
    """A client-coordinated read counts only owners' own copies, each a primary's: at r=1
    pr=2 it asks two owners at once (max(r, pr)), where r=1 alone asks one; in a namespace
    whose pr is 2, a request without one does too."""
    ring = _ring_with_features({})
    for pr, asked in ((None, 1), (2, 2), (3, 3)):
        c, clock = core()
        c.set_ring(ring)
        net = Net(clock, default=lambda msg: wire.ReadOk(0, b"", True)
                  if isinstance(msg, wire.Read) else ring)
        res = net.run(c.get(b"k", r=1, pr=pr))
        assert res.values == []
        reads = [m for _, m, *_ in net.sent if type(m) is wire.Read]
        assert len(reads) == asked, (pr, reads)
        assert not [m for _, m, *_ in net.sent if type(m) is wire.Get]
    # a namespace's own pr, when the request gives none
    from zkv.node.namespaces import Namespace

    c, clock = core()
    c.set_ring(ring)
    c.ns_cache["acct"] = Namespace(name="acct", n=3, r=1, w=2, created=1, creator="n0", pr=2)
    net = Net(clock, default=lambda msg: wire.ReadOk(0, b"", True)
              if isinstance(msg, wire.Read) else ring)
    net.run(c.get(b"k", namespace="acct"))
    assert len([m for _, m, *_ in net.sent if type(m) is wire.Read]) == 2


def test_a_changed_namespace_registry_empties_the_cached_namespaces():
    """RingOk.ns_digest: a client that sees another digest (a namespace created or altered
    since) forgets the namespaces it cached, so an alter's new r and w reach it; the same
    digest, or a node too old to send one, keeps them."""
    from zkv.node.namespaces import Namespace

    c, _ = core()
    ns = Namespace(name="s", n=3, r=2, w=2, created=1, creator="n0")
    for digest, kept in ((7, True), (7, True), (9, False)):
        c.ns_cache["s"] = ns
        c.set_ring(msgspec.structs.replace(RING, ns_digest=digest))
        assert ("s" in c.ns_cache) is kept, digest
    # a later alter of the same create replaces the cached version when learned
    c.ns_cache["s"] = ns
    altered = msgspec.structs.replace(ns, r=1, changed=5)
    from zkv.node.namespaces import Registry

    reg = Registry.for_cluster(3, 2, 2)
    reg.merge([altered])
    c._learn(wire.NsOk(0, reg.encode()))
    assert c.ns_cache["s"] == altered


def test_a_writes_ttl_goes_only_where_the_namespace_has_room_for_it():
    """put(..., ttl=): refused before anything is sent in a namespace whose values have no
    room for a write's ttl (created under an older version, or siblings), which a node of
    such a version would take and ignore; sent with the ttl otherwise (the node checks the
    bound, which an alter may have moved since the client cached the namespace)."""
    from zkv.node.namespaces import Namespace

    c, _ = core()
    old = Namespace(name="old", n=3, r=2, w=2, conflicts="lww", ttl=60, created=1,
                    creator="n0")
    new = Namespace(name="new", n=3, r=2, w=2, conflicts="lww", ttl=60, created=2,
                    creator="n0", write_ttl=True)
    c.ns_cache.update(old=old, new=new)
    net = Net(c.clock, default=lambda msg: wire.PutOk(msg.rid, b"", 2, 0))
    with pytest.raises(InvalidRequest, match="without per-write ttls"):
        net.run(c.put(b"k", b"v", namespace="old", ttl=5))
    assert net.sent == []
    for bad, why in ((0, "between 1 and"), (True, "between 1 and"), (1.5, "between 1 and")):
        with pytest.raises(InvalidRequest, match=why):
            net.run(c.put(b"k", b"v", namespace="new", ttl=bad))
    with pytest.raises(InvalidRequest, match="default namespace's values have no room"):
        net.run(c.put(b"k", b"v", ttl=5))
    assert net.sent == []
    net.run(c.put(b"k", b"v", namespace="new", ttl=61))  # (the node's to refuse)
    net.run(c.put_many([(b"a", b"1"), (b"b", b"2")], namespace="new", ttl=5))
    assert [m.ttl for _, m, *_ in net.sent] == [61, 5, 5]
    net.run(c.put(b"k", b"v", namespace="new"))
    assert net.sent[-1][1].ttl == 0


def test_update_settles_a_write_refused_before_anything_was_stored_as_not_stored():
    """A counter's updater hears what became of its write: a pw refusal (the coordinator
    refused before storing or sending anything) is "not stored", so its lane keeps the
    totals it had (it was "maybe" and the next +1 counted the refused one: an outside run,
    20 of 20 keys). A refusal after a try that went unanswered, or one that may come after
    copies went out (a node shutting down), is still "maybe"."""
    pw_refusal = wire.Error(0, wire.E_UNAVAILABLE, "put: pw=3 needs 3 of the key's owners "
                            "(n1, n2, n3) and 2 are reachable from n1 (n1, n2); "
                            + wire.PRIMARY_SHORT)
    cases = [
        ([pw_refusal], False),
        ([wire.Error(0, wire.E_UNAVAILABLE, "n1 " + wire.NO_WRITES + ": disk full")], False),
        ([wire.Error(0, wire.E_UNAVAILABLE, "node n1 is shutting down")], None),
        ([SILENT, pw_refusal], None),  # (the first try may have stored it)
        # a refusal that may come after copies went out, then one made before storing: the
        # first node may have stored it (the review: settled False, and the next +1 read a
        # lagging replica and wrote over it)
        ([wire.Error(0, wire.E_UNAVAILABLE, "node n1 is shutting down"), pw_refusal], None),
        ([wire.Error(0, wire.E_UNAVAILABLE, "n1 stood still (stopped, or starved of CPU) "
                     "while forwarding this request; retry it"), pw_refusal], None),
    ]
    for answers, outcome in cases:
        c, clock = core(timeout=2.0)
        node = member()
        answers = list(answers)

        def handle(msg, answers=answers, node=node):
            if not isinstance(msg, wire.Put):
                return node(msg)
            what = answers.pop(0) if len(answers) > 1 else answers[0]  # (the last repeats)
            return what if what is SILENT else wire.decode(wire.encode_one(what), 1 << 20)[0]

        heard: list = []
        fn = lambda values: b"x"  # noqa: E731
        fn.__zkv_settled__ = lambda stored, context=b"", heard=heard: heard.append(stored)
        with pytest.raises(Unavailable):
            Net(clock, default=handle).run(c.update(b"k", fn))
        assert heard == [outcome], (answers, outcome)
    # stored: True, with the context the put returned; the read's context heard first
    c, clock = core()
    got: list = []
    reads: list = []
    fn = lambda values: b"x"  # noqa: E731
    fn.__zkv_settled__ = lambda stored, context=b"": got.append((stored, context))
    fn.__zkv_read__ = reads.append
    Net(clock, default=member()).run(c.update(b"k", fn))
    assert got == [(True, b"new-ctx")] and reads == [b"ctx:0"]


def test_put_many_checks_every_item_against_its_namespace_before_sending_any():
    """put_many(ttl=[5, 100]) in a namespace keeping writes at most 60 s, or with an item's
    key too long once the namespace's prefix is added: the node refused that item after the
    items before it had been written (an outside run: item 0 stored, then InvalidRequest
    without an item number). Now nothing is sent, and the error names the item. A cached
    namespace whose bound an alter may have moved is asked for again before refusing."""
    from zkv.node.namespaces import Namespace, Registry

    c, _ = core()
    ns = Namespace(name="s", n=3, r=2, w=2, conflicts="lww", ttl=60, created=2,
                   creator="n0", write_ttl=True)
    reg = Registry.for_cluster(3, 2, 2)
    reg.merge([ns])
    c.ns_cache["s"] = ns

    def node(msg):
        if isinstance(msg, wire.NsList):
            return wire.NsOk(msg.rid, reg.encode())
        return wire.PutOk(msg.rid, b"", 2, 0)

    net = Net(c.clock, default=node)
    with pytest.raises(InvalidRequest, match=r"^item 1: ttl=100: namespace 's' keeps"):
        net.run(c.put_many([(b"a", b"v"), (b"b", b"v")], namespace="s", ttl=[5, 100]))
    assert [type(m) for _, m, _, _ in net.sent] == [wire.NsList]  # (asked again, then no)
    long_key = b"k" * (64 * 1024 - 2)
    net.sent.clear()
    with pytest.raises(InvalidRequest, match=r"^item 1: key of 65534 bytes is too long for "
                                             r"namespace 's' \(at most \d+\)"):
        net.run(c.put_many([(b"a", b"v"), (long_key, b"v")], namespace="s"))
    with pytest.raises(InvalidRequest, match=r"^item 0: key of 65534 bytes is too long"):
        net.run(c.delete_many([(long_key, b"")], namespace="s"))
    assert not [m for _, m, _, _ in net.sent if isinstance(m, wire.Put | wire.Delete)]
    # an alter raised the bound since the client cached it: asked again, then sent
    c.ns_cache["s"] = msgspec.structs.replace(ns, ttl=10)
    net.sent.clear()
    net.run(c.put_many([(b"a", b"v"), (b"b", b"v")], namespace="s", ttl=[5, 30]))
    assert [type(m) for _, m, _, _ in net.sent] == [wire.NsList, wire.Put, wire.Put]


def test_a_namespace_change_that_times_out_says_it_may_have_been_applied():
    """namespace_alter with a member paused (up until seen down): the node took the alter and
    waited for that member; the client's timeout read as if nothing had happened, while the
    alter was in effect (an outside run, 3 of 3)."""
    from zkv.node.namespaces import Namespace, Registry

    c, clock = core(timeout=1.0)
    members = [msgspec.structs.replace(m, features=0xFFFF) for m in MEMBERS]  # (every one)
    ring_ok = msgspec.structs.replace(RING, members=members)
    c.set_ring(ring_ok)
    reg = Registry.for_cluster(3, 2, 2)
    reg.merge([Namespace(name="s", n=3, r=2, w=2, created=2, creator="n0")])

    def node(msg):
        if isinstance(msg, wire.NsList):
            return wire.NsOk(msg.rid, reg.encode())
        if isinstance(msg, wire.RingInfo):
            return msgspec.structs.replace(ring_ok)
        return SILENT

    net = Net(clock, default=node)
    with pytest.raises(RequestTimeout, match="may have been applied.*zkv namespace list"):
        net.run(c.namespace_alter("s", r=1))
    assert wire.NsAlter in {type(m) for _, m, _, _ in net.sent}


def test_many_refuses_a_default_namespace_key_beginning_with_0x00_before_sending_any():
    """get_many([b"ok", b"\\x00bad", b""]) named item 2 (the empty key), though item 1 came
    first; with return_exceptions it sent "ok" and got the node's refusal for item 1 (an
    outside run): the first bad item in order, nothing sent."""
    c, clock = core()
    net = Net(clock, default=member())
    with pytest.raises(InvalidRequest, match=r"^item 1: keys of the default namespace may not"):
        net.run(c.get_many([b"ok", b"\x00bad", b""], return_exceptions=True))
    with pytest.raises(InvalidRequest, match=r"^item 0: keys of the default namespace"):
        net.run(c.put_many([(b"\x00k", b"v")]))
    with pytest.raises(InvalidRequest, match=r"^item 0: keys of the default namespace"):
        net.run(c.delete_many([b"\x00k"]))
    assert not net.sent


def test_two_updates_retried_after_missed_quorums_never_erase_each_other():
    """Two clients' update(GSet.updater(add=["x"])) on {"a"}: both first writes stored at
    their coordinator but short of w=3, anti-entropy, then each retry re-reads and writes
    the same bytes. Reusing their first write ids, each retry listed the other's as retired
    and rule R erased both: the key held nothing after both calls succeeded (the review)."""
    from zkv._core import dvv
    from zkv.crdt import GSet

    rep: dict = {x: dvv.update(None, b"", GSet.updater(add=["a"])([]), "n1", b"seed")
                 for x in ("n1", "n2", "n3")}
    route, quorum_ok, puts = {"A": "n1", "B": "n2"}, {"A": False, "B": False}, []

    def proxy(who):
        def handle(msg):
            x = route[who]
            if isinstance(msg, wire.Get):
                return wire.GetOk(0, list(rep[x].live_values()), rep[x].context())
            assert isinstance(msg, wire.Put)
            rep[x] = dvv.update(rep[x], msg.context, msg.value, x, msg.wid)
            puts.append(who)
            if not quorum_ok[who]:
                return wire.Error(0, wire.E_QUORUM, "put: 1 of the required 3 replicas "
                                  "acknowledged within 1.00s", 3, 1)
            return wire.PutOk(0, dvv.put_context(rep[x], msg.context, msg.wid), 1)
        return handle

    (ca, clka), (cb, clkb) = core(timeout=10.0), core(timeout=10.0)
    nets = {"A": Net(clka, default=proxy("A")), "B": Net(clkb, default=proxy("B"))}
    plans = {"A": ca.update(b"k", GSet.updater(add=["x"]), w=3),
             "B": cb.update(b"k", GSet.updater(add=["x"]), w=3)}
    sends = {who: next(plan) for who, plan in plans.items()}
    done = {}

    def until_puts(who: str, n: int) -> None:
        while puts.count(who) < n:
            try:
                sends[who] = plans[who].send(nets[who].deliver(sends[who]))
            except StopIteration:
                done[who] = True
                return

    until_puts("A", 1)
    until_puts("B", 1)
    synced = dvv.sync_many(rep.values())  # anti-entropy
    rep.update(n1=synced, n2=synced, n3=synced)
    route.update(A="n2", B="n1")
    quorum_ok.update(A=True, B=True)
    until_puts("A", 2)
    until_puts("B", 2)
    until_puts("A", 3)
    until_puts("B", 3)
    assert done == {"A": True, "B": True}
    final = dvv.sync_many(rep.values()).live_values()
    assert GSet.from_siblings(final).elements == {"a", "x"}


def test_a_node_that_has_not_heard_of_a_known_namespace_yet_costs_a_retry():
    """A put right after namespace_create reached a node the create's gossip had not reached
    yet (its peers stalled) and failed with "unknown namespace", an InvalidRequest a caller
    does not retry, though the namespace existed (an outside soak). For a namespace this
    client learned from the cluster the answer is "not heard of yet": the next candidate is
    asked, and the call retries after a pause while it has time; a name no member knows is
    still refused at once."""
    from zkv.node.namespaces import Namespace

    c, clock = core(timeout=5.0)
    c.ns_cache["fresh"] = Namespace(name="fresh", n=3, r=2, w=2, created=1, creator="n0")
    unknown = wire.Error(0, wire.E_INVALID, "unknown namespace 'fresh' (create it with ...)")
    left = [4]  # tries answered so before the gossip arrives
    ok = member()

    def node(msg):
        if isinstance(msg, wire.Put) and left[0]:
            left[0] -= 1
            return wire.Error(0, unknown.code, unknown.message)
        return ok(msg)

    net = Net(clock, default=node)
    assert net.run(c.put(b"k", b"v", namespace="fresh")) == b"new-ctx"
    puts = [m for _, m, *_ in net.sent if isinstance(m, wire.Put)]
    assert len(puts) == 5 and len({m.wid for m in puts}) == 1
    # never heard of anywhere, for the whole call: Unavailable naming it, within the timeout
    c, clock = core(timeout=0.5)
    c.ns_cache["fresh"] = Namespace(name="fresh", n=3, r=2, w=2, created=1, creator="n0")
    net = Net(clock, default=lambda m: wire.Error(0, unknown.code, unknown.message)
              if isinstance(m, wire.Put) else ok(m))
    with pytest.raises(Unavailable, match="has not heard of namespace 'fresh' yet"):
        net.run(c.put(b"k", b"v", namespace="fresh"))
    # a namespace the client does not know: the node's answer stands, at once
    c, clock = core(timeout=5.0)
    other = wire.Error(0, wire.E_INVALID, "unknown namespace 'typo' (create it with ...)")
    from zkv.node.namespaces import Registry

    registry = wire.NsOk(0, Registry.for_cluster(3, 2, 2).encode())
    net = Net(clock, default=lambda m: wire.Error(0, other.code, other.message)
              if isinstance(m, (wire.Put, wire.Get)) else registry
              if isinstance(m, wire.NsList) else ok(m))
    with pytest.raises(InvalidRequest, match="unknown namespace 'typo'"):
        net.run(c.put(b"k", b"v", context=b"", namespace="typo"))


def test_a_many_item_s_malformed_context_is_refused_before_any_item_is_sent():
    """put_many/delete_many checked a context's type and size only: a malformed one (or a
    sealed one too short to hold a context) was refused by its node after the items before
    it were written, and the error did not name the item (an outside run)."""
    c, clock = core()
    net = Net(clock, default=member())
    for call in (lambda: c.put_many([(b"k0", b"v0"), (b"k1", b"v1", b"junk-context")]),
                 lambda: c.delete_many([b"k0", (b"k1", b"junk-context")]),
                 lambda: c.put_many([(b"k0", b"v0"), (b"k1", b"v1", b"S" + b"\0" * 8)])):
        with pytest.raises(InvalidRequest, match=r"^item 1: .*context"):
            net.run(call())
    assert net.sent == []
    good = dvv.update(None, b"", b"v", "n1").context()
    assert net.run(c.put_many([(b"k0", b"v0", good)])) == [b"new-ctx"]


def test_update_refuses_a_crdt_updater_made_for_another_key_or_namespace():
    """A counter updater made for k1 (or without the namespace) and used on k2 built on k1's
    per-process totals: one +1 read 6 (an outside run). Refused before anything is sent."""
    from zkv.crdt import ORSet, PNCounter

    c, clock = core()
    net = Net(clock, default=member())
    for fn, key, ns in ((PNCounter.updater(b"k1", 1), b"k2", "default"),
                        (PNCounter.updater(b"k1", 1), b"k1", "other"),
                        (ORSet.updater(b"k1", add=["x"]), b"k2", "default")):
        with pytest.raises(InvalidRequest, match="an updater made for key b'k1'"):
            net.run(c.update(key, fn, namespace=ns))
    assert net.sent == []


def test_a_client_that_only_lists_learns_who_is_down():
    """A listing whose owner did not answer marks the ring stale (as a call does), and the
    next listing learns the ring first: a long-lived client that only listed asked a frozen
    owner, and waited out its timeout, in every listing long after the cluster called it
    down (an outside run: 29 s)."""
    ring = _ring_with_features({})
    c, clock = core(timeout=1.0)
    c.set_ring(ring)

    def frozen_for_listings(msg):
        return ring if isinstance(msg, wire.RingInfo) else SILENT

    net = Net(clock, default=frozen_for_listings)
    with pytest.raises(ZkvError):
        net.run(c.keys_page(c.list_keys()))
    asked = len(net.sent)
    assert all(isinstance(m, wire.Keys) for _, m, _, _ in net.sent)
    with pytest.raises(ZkvError):
        net.run(c.keys_page(c.list_keys()))
    assert isinstance(net.sent[asked][1], wire.RingInfo)  # (learnt first)


def test_a_ring_refresh_leaves_the_call_half_its_time_and_skips_a_silent_node_next():
    """A call whose ring was due a refresh asked the candidates for it in turn until its own
    deadline: two silent ones took all of it, the request was never sent, and every call
    did the same while they stayed silent (an outside Jepsen-style run: every write of 4 s
    to three keys failed, one node paused). The refresh gets half the time left, and a node
    silent to it is asked last by the next refresh."""
    c, clock = core(timeout=2.0)
    store: dict = {}
    base = member(store)
    silent = set(c.candidates(None)[:2])

    def node(ep):
        def handle(msg):
            if isinstance(msg, wire.RingInfo) and ep in silent:
                return SILENT
            return base(msg)
        return handle

    net = Net(clock, nodes={ep: node(ep) for ep in EP.values()})
    c.ring_at = -1e9
    start = clock.t
    assert net.run(c.put(b"k", b"v")) == b"new-ctx"
    assert clock.t - start <= 2.0 and store[b"k"] == [b"v"]
    assert [type(m).__name__ for _, m, _, _ in net.sent] == ["RingInfo", "Put"]
    first = net.sent[0][0]
    assert c.candidates(None)[-1] == first  # (asked last from now on)
    c.ring_at = -1e9
    net.sent.clear()
    assert net.run(c.put(b"j", b"v")) == b"new-ctx"
    assert first not in [ep for ep, m, _, _ in net.sent if isinstance(m, wire.RingInfo)]


def test_a_batch_steps_answers_are_timed_when_they_came_not_at_its_end():
    """get_many's tries of one step, one to a silent node: the healthy coordinator's answer
    came after LATENCY (Batch.arrived) and is that round trip for the hedge delay, not the
    step's length (the silent try's budget), which made every freeze met in a batch raise
    the delay (an outside review)."""
    silent = EP["n1"]
    keys = [b"key:%d" % i for i in range(200)]
    c, clock = core(timeout=3.0)
    net = Net(clock, {silent: lambda m: SILENT}, default=member({}))
    hit = next(k for k in keys if owners(k)[0] == silent)
    others = [k for k in keys if silent not in owners(k)][:3]
    net.run(c.get_many([hit, *others], return_exceptions=True))
    assert clock.t - 100.0 > 0.2  # the step waited for the silent node
    assert c.rtts and max(c.rtts) < 0.1, sorted(c.rtts)[-3:]


@pytest.mark.parametrize("call", [
    lambda c: c.put(b"k", b"v", namespace="ns1"),
    lambda c: c.put(b"k", b"v", namespace="ns1", ttl=60),
    lambda c: c.put(b"k", b"v", w="quorum", namespace="ns1"),
    lambda c: c.delete(b"k", namespace="ns1"),
    lambda c: c.delete(b"k", b"", w="all", namespace="ns1"),
    lambda c: c.get(b"k", namespace="ns1"),
    lambda c: c.get(b"k", r="quorum", namespace="ns1"),
], ids=["put", "put-ttl", "put-level", "delete-read-first", "delete-level", "get", "get-level"])
def test_the_timeout_bounds_a_call_that_must_learn_its_namespace_first(call):
    """Every node silent, the namespace not known yet: the lookups a call makes before its
    request (the namespace's settings, a quorum's name, a delete's read) share the call's
    timeout. Each took a whole timeout of its own: a put took 2 s at timeout=1, one with a
    ttl 3 s (an outside review, sync and async clients alike)."""
    c, clock = core(timeout=1.0)
    with pytest.raises((RequestTimeout, Unavailable)):
        Net(clock).run(call(c))
    assert clock.t - 100.0 <= 1.0 + 1e-9
