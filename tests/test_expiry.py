"""Expiry (zkv/node/expiry.py) and a Replica with its `expired` hook: the verdict on a version,
the sweep's pace and reach, and a model-based test (Hypothesis) of one lww key with a ttl
under any order of writes, late copies, reads, sweeps and clock steps."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv import hlc
from zkv._core import dvv
from zkv.node import expiry
from zkv.node import namespaces as nsm
from zkv.node.replica import Replica
from zkv.storage import LogStore

T0 = 1_800_000_000_000  # ms


def version(stamp_ms: int, value: bytes = b"v", node: str = "c", ctr: int = 0) -> bytes:
    """An lww version written at `stamp_ms` by coordinator `node` (as NodeCore stamps it)."""
    return dvv.update(None, b"", hlc.pack((stamp_ms << 16) | ctr) + value, node).encode()


def test_the_verdict_on_a_version():
    v = version(T0)
    assert not expiry.expired(v, 60_000, T0)
    assert not expiry.expired(v, 60_000, T0 + 59_999)
    assert expiry.expired(v, 60_000, T0 + 60_000)  # exactly ttl after: expired
    assert not expiry.expired(v, 0, T0 + 10**9)  # no ttl: never
    assert not expiry.expired(b"", 60_000, T0 + 10**9)
    tomb = dvv.update(dvv.DVVSet.decode(v), dvv.DVVSet.decode(v).context(), None, "c").encode()
    assert not expiry.expired(tomb, 1, T0 + 10**9)  # a tombstone: the reaper's
    # siblings (an uncollapsed hint): the newest value decides
    both = dvv.sync_encoded(version(T0, node="a"), version(T0 + 30_000, node="b"))
    assert not expiry.expired(both, 60_000, T0 + 60_000)
    assert expiry.expired(both, 60_000, T0 + 90_000)
    with pytest.raises(ValueError):
        expiry.expired(b"\xff garbage", 60_000, T0)


def test_a_cutoff_keeps_what_had_expired_expired():
    """`before_ms` (an alter that raised or removed the ttl): a version whose newest value
    was written at or before it has expired whatever the ttl; a later one by the ttl alone."""
    old, new = version(T0), version(T0 + 1)
    assert expiry.expired(old, 0, T0 + 1, before_ms=T0)  # no ttl now, but cut off
    assert not expiry.expired(new, 0, T0 + 10**9, before_ms=T0)
    assert expiry.expired(old, 600_000, T0 + 1, before_ms=T0)
    assert not expiry.expired(new, 600_000, T0 + 599_999, before_ms=T0)
    assert expiry.expired(new, 600_000, T0 + 600_001, before_ms=T0)
    both = dvv.sync_encoded(version(T0 - 5, node="a"), version(T0 + 5, node="b"))
    assert not expiry.expired(both, 0, T0 + 10, before_ms=T0)  # (the newest decides)


def test_the_sweep_period():
    assert expiry.period(1_000) == expiry.MIN_PERIOD
    assert expiry.period(30_000) == 30.0
    assert expiry.period(86_400_000) == expiry.MAX_PERIOD


class _Registry:
    def __init__(self) -> None:
        self.reg = nsm.Registry.for_cluster(3, 2, 2)
        self.sess = self.reg.create("sess", 3, conflicts="lww", ttl=60, members=3, created=1,
                                    creator="n1")
        self.last = self.reg.create("last", 3, conflicts="lww", members=3, created=1,
                                    creator="n1")


def test_a_sweep_drops_only_expired_versions_and_passes_the_whole_store(tmp_path):
    r = _Registry()
    store = LogStore(str(tmp_path / "s"), sync="none")
    replica = Replica("n1", store)
    changes = []
    replica.on_change.append(lambda k, old, new: changes.append((k, new)))
    old_keys = [nsm.storage_key(r.sess, b"old%d" % i) for i in range(300)]
    new_keys = [nsm.storage_key(r.sess, b"new%d" % i) for i in range(300)]
    kept = ([nsm.storage_key(r.last, b"x%d" % i) for i in range(100)]  # lww, no ttl
            + [b"plain%d" % i for i in range(100)])  # the default namespace
    for k in old_keys + kept:
        store.put(k, version(T0))
    for k in new_keys:
        store.put(k, version(T0 + 50_000))
    sweep = expiry.Sweep()
    now = T0 + 70_000  # old ones expired 10 s ago; new ones live 40 s more
    rounds = 0
    while sweep.passes == 0:
        sweep.step(store, r.reg.expiry_of, now, replica.drop_expired, 1.0, 60_000)
        rounds += 1
    assert rounds == 60  # a full pass takes the ttl (60 s) at one round a second
    assert replica.expired_drops == 300
    assert sorted(store.keys()) == sorted(new_keys + kept)
    assert sorted(k for k, new in changes if new is None) == sorted(old_keys)  # trees told
    # the next pass, once the new ones expired too
    sweep.step(store, r.reg.expiry_of, T0 + 200_000, replica.drop_expired, 64.0, 60_000)
    assert sorted(store.keys()) == sorted(kept) and sweep.passes == 2
    store.close()


def _replica(tmp: str, clock: list[int]) -> tuple[Replica, _Registry]:
    r = _Registry()
    replica = Replica("n1", LogStore(tmp, sync="none"))
    def expired(key: bytes, enc: bytes) -> bool:  # (NodeCore.expired's rule)
        rule = r.reg.expiry_of(key)
        return rule is not None and expiry.expired(enc, rule[0], clock[0], rule[1])

    replica.expired = expired
    return replica, r


def test_an_expired_version_is_neither_served_nor_stored(tmp_path):
    clock = [T0]
    replica, r = _replica(str(tmp_path / "s"), clock)
    k = nsm.storage_key(r.sess, b"k")
    replica.merge(k, version(T0, b"a"))
    assert replica.read(k)
    clock[0] = T0 + 60_000
    assert replica.read(k) == b""  # not served, and dropped on access
    assert replica.store.get(k) is None and replica.expired_drops == 1
    late = version(T0 - 1, b"late", node="z")  # a late copy, expired too: not stored
    assert replica.merge(k, late) == late and replica.read(k) == b""
    assert replica.store.get(k) is None
    fresh = version(T0 + 60_000, b"b", node="y")  # a newer write: stored and served
    replica.merge(k, fresh)
    assert dvv.DVVSet.decode(replica.read(k)).live_values()[0][8:] == b"b"
    # a key of an lww namespace without ttl, and of the default one: never expire
    for key in (nsm.storage_key(r.last, b"k"), b"plain"):
        replica.merge(key, version(T0))
        assert replica.read(key)
    with pytest.raises(ValueError):  # a malformed copy is still refused
        replica.merge(k, b"\xff junk")


writes = st.tuples(st.integers(0, 120_000), st.sampled_from("abc"))  # (stamp offset, node)
steps = st.lists(st.one_of(
    st.tuples(st.just("write"), writes),
    st.tuples(st.just("tick"), st.integers(0, 40_000)),
    st.just(("read",)), st.just(("sweep",))), max_size=40)


@given(steps)
@settings(max_examples=150, deadline=None)
def test_model_one_key_with_a_ttl(ops):
    """Against a model (the newest stamp ever written): the key reads the newest write iff
    it has not expired, whatever arrived late or was swept; once swept, nothing older
    brings it back."""
    clock = [T0]
    with tempfile.TemporaryDirectory() as tmp:
        replica, r = _replica(tmp, clock)
        k = nsm.storage_key(r.sess, b"k")
        sweep = expiry.Sweep()
        newest: tuple[int, int, bytes] | None = None  # (stamp, its counter, value)
        seq = 0
        for op in ops:
            if op[0] == "write":
                offset, node = op[1]
                stamp = T0 + offset
                seq += 1
                value = b"%d" % seq
                replica.merge(k, version(stamp, value, node=node + str(seq), ctr=seq))
                cand = (stamp, seq, value)
                newest = cand if newest is None or cand[:2] > newest[:2] else newest
            elif op[0] == "tick":
                clock[0] += op[1]
            elif op[0] == "sweep":
                sweep.step(replica.store, r.reg.expiry_of, clock[0], replica.drop_expired, 64.0, 60_000)
            got = replica.read(k)
            live = newest is not None and newest[0] + 60_000 > clock[0]
            if live:
                assert got, (newest, clock[0])
                assert dvv.DVVSet.decode(got).live_values()[0][8:] == newest[2]
            else:
                assert got == b""
        replica.store.close()


def test_a_round_of_a_large_store_takes_a_window_of_about_round_keys():
    class Big:  # a store of 10M keys, spread evenly over the hash space
        windows: list[tuple[int, int]] = []

        def __len__(self):
            return 10_000_000

        def key_hashes(self, lo, hi):
            self.windows.append((lo, hi))
            return []

    store, sweep = Big(), expiry.Sweep()
    sweep.step(store, lambda k: 60_000, T0, lambda k: None, 1.0, 60_000)
    lo, hi = store.windows[0]
    assert abs((hi - lo + 1) * 10_000_000 / expiry.SPACE - expiry.ROUND_KEYS) < 1
    assert sweep.cursor == hi + 1 and sweep.passes == 0


def test_an_exchange_or_a_transfer_drops_an_expired_version_instead_of_sending_it(tmp_path):
    """answer_versions (a peer's pull) and answer_fetch (a transfer) read through
    Replica.read: the expired version is dropped there (the trees told), the live one sent."""
    from zkv._core.ring import Ring
    from zkv.node.antientropy import answer_versions
    from zkv.node.transfer import answer_fetch
    from zkv.wire import Fetch, RGetHashes

    clock = [T0 + 70_000]
    replica, r = _replica(str(tmp_path / "s"), clock)
    changes = []
    replica.on_change.append(lambda k, old, new: changes.append((k, new)))
    ring = Ring([("n1", "r1")], q=2, n=1)
    old_k, new_k = (nsm.storage_key(r.sess, b"old"), nsm.storage_key(r.sess, b"new"))
    replica.store.put(old_k, version(T0))  # expired 10 s ago
    replica.store.put(new_k, version(T0 + 50_000))
    hashes = b"".join(h.to_bytes(8, "little") for _, h in replica.store.key_hashes())
    sent = [k for p in (0, 1) for k in answer_versions(  # (any ae: only its presence is asked)
        object(), replica.store, ring, RGetHashes(1, p, hashes), None, replica.read).keys]
    assert sent == [new_k] and replica.store.get(old_k) is None
    assert changes == [(old_k, None)] and replica.expired_drops == 1
    replica.store.put(old_k, version(T0))
    sent = [k for p in (0, 1) for k in answer_fetch(
        replica.store, ring, Fetch(2, p, 0, 1 << 20), 1 << 20, None, replica.read).keys]
    assert sent == [new_k] and replica.store.get(old_k) is None
    replica.store.close()


# ---- a write's own ttl (write_ttl namespaces: stamp + own ttl + value) ----------------------
def own(stamp_ms: int, ttl: int, value: bytes = b"v", node: str = "c") -> bytes:
    """A version of a write_ttl namespace written at `stamp_ms` with its own `ttl` (s)."""
    head = hlc.pack(stamp_ms << 16) + ttl.to_bytes(nsm.TTL_BYTES, "big")
    return dvv.update(None, b"", head + value, node).encode()


def test_a_writes_own_ttl_hides_it_from_reads_and_listings_but_not_from_merges():
    from zkv.node.quorum import GetQuorum, identical_answers, read_answer

    new, forever, old = own(T0, 3, b"new", "a"), own(T0, 0, b"kept", "a"), own(T0 - 9, 0, b"old")
    [v] = dvv.DVVSet.decode(new).live_values()
    assert not expiry.own_ttl_over(v, T0 + 2_999) and expiry.own_ttl_over(v, T0 + 3_000)
    assert not expiry.own_ttl_over(dvv.DVVSet.decode(forever).live_values()[0], T0 + 10**9)
    assert expiry.served([v], 12, T0 + 3_000) == [] and expiry.served([v], 8, T0 + 9**9) == [v]
    assert not expiry.hidden(new, T0) and expiry.hidden(new, T0 + 3_000)
    assert not expiry.hidden(forever, T0 + 10**9) and not expiry.hidden(b"", T0)
    # a replica still holding the older value answers beside one holding the expired write:
    # merged, the newer write wins, and then it is not served (the older value stays hidden)
    q = GetQuorum(2, 12)
    q.add_result("n1", new)
    q.add_result("n3", old)
    ok, _ = q.response(T0 + 3_000)
    assert ok.values == [] and ok.stamp == T0 << 16 and ok.context
    assert q.response(T0 + 2_000)[0].values == [b"new"]  # (before it, served without its head)
    assert identical_answers(new, 12, 2, T0 + 3_000)[0].values == []
    assert identical_answers(new, 12, 2, T0 + 1)[0].values == [b"new"]
    assert read_answer(forever, 12, 1, T0 + 10**9)[0].values == [b"kept"]
    # when each stops being served (GetOk.expires): the write's own ttl or the namespace's,
    # whichever ends first; 0: never
    assert q.response(T0 + 2_000)[0].expires == T0 + 3_000
    assert identical_answers(new, 12, 2, T0 + 1, ttl_ms=2_000)[0].expires == T0 + 2_000
    assert read_answer(forever, 12, 1, T0 + 1, ttl_ms=60_000)[0].expires == T0 + 60_000
    assert read_answer(forever, 12, 1, T0 + 1)[0].expires == 0
    assert read_answer(version(T0), 8, 1, T0 + 1, ttl_ms=60_000)[0].expires == T0 + 60_000
    assert identical_answers(new, 12, 2, T0 + 3_000)[0].expires == 0  # (nothing served)


own_writes = st.tuples(st.integers(0, 120_000), st.sampled_from([0, 0, 1, 5, 30, 60]),
                       st.sampled_from(["a", "b", "ab"]))  # (stamp offset, own ttl s, where)
own_steps = st.lists(st.one_of(
    st.tuples(st.just("write"), own_writes),
    st.tuples(st.just("tick"), st.integers(0, 40_000)),
    st.tuples(st.just("sweep"), st.sampled_from("ab")),
    st.tuples(st.just("push"), st.sampled_from(["ab", "ba"]))), max_size=40)


@given(own_steps)
@settings(max_examples=150, deadline=None)
def test_model_two_replicas_with_writes_own_ttls(ops):
    """Two replicas of one key of a write_ttl namespace (ttl 60 s), each taking some of the
    writes (own ttls of 0-60 s), sweeping and pushing copies to the other (as an exchange
    reads and merges them) in any order. Against a model (the newest stamp written): a read
    merging both replicas' answers (GetQuorum at R=2) answers the newest write iff neither
    its own ttl nor the namespace's has ended, else nothing: never an older write's value,
    whichever replica missed the newest one."""
    from zkv.node.quorum import GetQuorum

    clock = [T0]
    with tempfile.TemporaryDirectory() as tmp:
        reps = {}
        for name in "ab":
            reps[name], r = _replica(os.path.join(tmp, name), clock)
            r.reg = nsm.Registry.for_cluster(3, 2, 2)
            ns = r.reg.create("sess", 3, conflicts="lww", ttl=60, members=3, created=1,
                              creator="n1", write_ttl=True)
            reps[name].expired = (lambda rr: lambda key, enc: (
                (rule := rr.reg.expiry_of(key)) is not None
                and expiry.expired(enc, rule[0], clock[0], rule[1])))(r)
        k = nsm.storage_key(ns, b"k")
        sweeps = {name: expiry.Sweep() for name in "ab"}
        newest: tuple[int, int, int, bytes] | None = None  # (stamp, counter, own ttl, value)
        seq = 0
        for op in ops:
            if op[0] == "write":
                offset, own_ttl, where = op[1]
                seq += 1
                stamp, value = T0 + offset, b"%d" % seq
                head = hlc.pack((stamp << 16) | seq) + own_ttl.to_bytes(4, "big")
                v = dvv.update(None, b"", head + value, f"c{seq}").encode()
                for name in where:
                    reps[name].merge(k, v)
                cand = (stamp, seq, own_ttl, value)
                newest = cand if newest is None or cand[:2] > newest[:2] else newest
            elif op[0] == "tick":
                clock[0] += op[1]
            elif op[0] == "sweep":
                sweeps[op[1]].step(reps[op[1]].store, r.reg.expiry_of, clock[0],
                                   reps[op[1]].drop_expired, 64.0, 60_000)
            else:  # an exchange pushes what one holds to the other
                got = reps[op[1][0]].read(k)
                if got:
                    reps[op[1][1]].merge(k, got)
            q = GetQuorum(2, 12)
            for name in "ab":
                q.add_result(name, reps[name].read(k))
            values = q.response(clock[0])[0].values
            live = newest is not None and newest[0] + 60_000 > clock[0] and (
                not newest[2] or newest[0] + newest[2] * 1000 > clock[0])
            assert values == ([newest[3]] if live else []), (newest, clock[0], values)
        for rep in reps.values():
            rep.store.close()
