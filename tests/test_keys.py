"""Listing a namespace's keys (Keys / KeysOk, zkv/node/listing.py, Client.keys, `zkv keys`):
every partition's pages together are exactly the live keys, whatever the page size, prefix
and namespace; a node answers only for partitions whose copy it vouches for; a listing
survives a dead owner and says which partition it cannot list."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ops_helpers import ZKV, one_line_error, wait_for, zkv
from test_client_core import SILENT, Clock, Net
from test_security_core import OUTSIDER, Node

from zkv import wire
from zkv._core import dvv
from zkv._core.record import key_hash
from zkv._core.ring import Ring
from zkv.client import AsyncClient, Client, ClientCore
from zkv.client.core import LIST_RETRIES
from zkv.errors import InvalidRequest, QuorumError, Unavailable
from zkv.node import namespaces as nss
from zkv.node.core import ADMIN, CLIENT
from zkv.node.listing import answer_keys


def _list(node: Node, ns: str = "", prefix: bytes = b"", limit: int = 1000) -> list[bytes]:
    """Every partition's pages, cursor by cursor, as a client walks them."""
    out: list[bytes] = []
    rid = 100
    for p in range(node.core.membership.ring().q):
        cursor = 0
        while True:
            rid += 1
            (ok,) = node.ask(OUTSIDER, [wire.Keys(rid, p, ns, cursor, prefix, limit)], CLIENT)
            assert type(ok) is wire.KeysOk and ok.owner, ok
            assert len(ok.keys) <= limit  # (more only for keys of one 64-bit hash)
            out += ok.keys
            if ok.done:
                break
            assert ok.cursor > cursor
            cursor = ok.cursor
    return out


@settings(max_examples=25, deadline=None)
@given(keys=st.sets(st.binary(min_size=1, max_size=6).filter(lambda k: k[:1] != b"\x00"),
                    max_size=60),
       deleted=st.sets(st.integers(0, 59), max_size=20), limit=st.integers(1, 7),
       prefix=st.sampled_from([b"", b"a", b"\x01", b"ab"]))
def test_the_pages_of_every_partition_are_exactly_the_live_keys(tmp_path_factory, keys,
                                                                deleted, limit, prefix):
    node = Node(tmp_path_factory.mktemp("keys"))
    try:
        keys = sorted(keys)
        rid = 0
        for k in keys:
            rid += 1
            (ok,) = node.ask(OUTSIDER, [wire.Put(rid, k, b"v", w=1)], CLIENT)
            assert type(ok) is wire.PutOk
        gone = {keys[i] for i in deleted if i < len(keys)}
        for k in sorted(gone):
            rid += 1
            (got,) = node.ask(OUTSIDER, [wire.Get(rid, k, 1)], CLIENT)
            rid += 1
            (ok,) = node.ask(OUTSIDER, [wire.Delete(rid, k, got.context, 1)], CLIENT)
            assert type(ok) is wire.PutOk
        listed = _list(node, prefix=prefix, limit=limit)
        assert len(listed) == len(set(listed))
        assert set(listed) == {k for k in keys if k not in gone and k.startswith(prefix)}
    finally:
        node.close()


def test_namespaces_are_listed_apart_and_a_non_owner_does_not_answer(tmp_path):
    node = Node(tmp_path)
    try:
        node.ask(OUTSIDER, [wire.NsCreate(1, "one", 1, 1, 1, "siblings")], ADMIN)
        for i in range(40):
            node.ask(OUTSIDER, [wire.Put(10 + i, b"k%d" % i, b"v", w=1)], CLIENT)
        assert set(_list(node)) == {b"k%d" % i for i in range(40)}
        ring = node.core.membership.ring(1)
        mine = [p for p in range(ring.q) if ring.preflist(p) == ("node1",)]
        others = [p for p in range(ring.q) if p not in mine]
        assert mine and others
        one = node.core.namespaces.get("one")
        for i in range(200):  # N=1: node1 holds the keys of its own partitions only
            key = b"s%d" % i
            if ring.partition(nss.storage_key(one, key)) in mine:
                node.ask(OUTSIDER, [wire.Put(100 + i, key, b"v", w=1, ns="one")], CLIENT)
        listed = []
        for p in mine:
            (ok,) = node.ask(OUTSIDER, [wire.Keys(1000 + p, p, "one")], CLIENT)
            assert ok.owner and ok.done
            listed += ok.keys
        assert listed and all(k.startswith(b"s") for k in listed)  # user keys, no prefix
        assert b"k1" not in listed
        (ok,) = node.ask(OUTSIDER, [wire.Keys(2000, others[0], "one")], CLIENT)
        assert type(ok) is wire.KeysOk and not ok.owner and ok.keys == []
        for bad, why in ((wire.Keys(3000, 0, "nope"), "unknown namespace"),
                         (wire.Keys(3001, ring.q), "the ring has 16")):
            (err,) = node.ask(OUTSIDER, [bad], CLIENT)
            assert type(err) is wire.Error and why in err.message, err
    finally:
        node.close()


LIVE = dvv.update_encoded(None, b"", b"v", "n1")
DEAD = dvv.update_encoded(LIVE, dvv.DVVSet.decode(LIVE).context(), None, "n1")  # covers LIVE
OTHER = dvv.update_encoded(None, b"", b"w", "n2")  # concurrent with LIVE: a sibling
COPY = {"live": LIVE, "dead": DEAD, "other": OTHER}
LISTERS = [wire.Member(f"n{i}", f"tcp://10.0.0.{i}:7000", "tcp://10.0.0.1:1", f"r{i}", 1, 1,
                       features=wire.FEATURES) for i in range(4)]
STATES = ["absent", "live", "dead", "other"]


class _Copy:
    """One owner's copy of its keys, as listing.answer_keys reads a store."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def key_hashes(self, lo: int, hi: int) -> list[tuple[bytes, int]]:
        return [(k, h) for k in self.data if lo <= (h := key_hash(k)) <= hi]

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def _merged(copies: list[bytes | None]) -> list[bytes]:
    """The live values a get merging these copies answers."""
    merged = None
    for c in copies:
        if c is not None:
            merged = dvv.sync_encoded(merged, c)
    return sorted(dvv.DVVSet.decode(merged).live_values()) if merged else []


def _many_states(count: int = 300) -> dict[bytes, list[str]]:
    """Keys enough for pages of every owner to end at different hashes (Hypothesis seldom
    draws that many)."""
    rng = random.Random(1)
    return {bytes(rng.randrange(1, 256) for _ in range(3)):
            [rng.choice(STATES) for _ in range(3)] for _ in range(count)}


def _lister(node=None, **kw) -> tuple[ClientCore, Net]:
    """A ClientCore that knows LISTERS' ring (Q=16, N=3) over a fake network whose node
    `node(id)` answers for each member (none: silence), on a fake clock."""
    clock = Clock()
    core = ClientCore([m.listen for m in LISTERS], timeout=2.0, clock=clock, **kw)
    core.set_ring(wire.RingOk(0, 16, 3, 2, 2, LISTERS, []))
    return core, Net(clock, {m.listen: node(m.id) for m in LISTERS} if node else None)


@settings(max_examples=80, deadline=None)
@example(states=_many_states(), r=2, page=2, unsure=set(), silent=set(), items=False)
@example(states=_many_states(), r=3, page=3, unsure=set(), silent=set(), items=False)
@example(states=_many_states(), r=2, page=1, unsure={"n1"}, silent={"n3"}, items=False)
@example(states=_many_states(), r=2, page=2, unsure=set(), silent=set(), items=True)
@example(states=_many_states(), r=3, page=2, unsure={"n2"}, silent=set(), items=True)
@given(states=st.dictionaries(st.binary(min_size=1, max_size=4).filter(lambda k: k[:1] != b"\x00"),
                              st.lists(st.sampled_from(STATES), min_size=3, max_size=3),
                              max_size=150),
       r=st.integers(1, 3), page=st.integers(1, 4),
       unsure=st.sets(st.sampled_from(["n0", "n1", "n2", "n3"]), max_size=2),
       silent=st.sets(st.sampled_from(["n0", "n1", "n2", "n3"]), max_size=1),
       items=st.booleans())
def test_a_listing_at_r_is_the_union_of_the_first_r_owners_that_vouch(states, r, page, unsure,
                                                                      silent, items):
    """ClientCore.list_keys / list_items at r over three owners' different copies (as writes
    acknowledged by some owners leave them): each partition's keys are the union of the live
    keys of the first r owners, in the preference list's order, that answer and vouch for
    their copies (pages of each owner end at different hashes and are cut at the smallest);
    items are those owners' copies merged as a get merges them (a delete one missed still
    deletes, concurrent writes are siblings). Fewer than r such owners: keys raise
    QuorumError (none at all: Unavailable); items read that partition's listed keys with a
    get at R instead (here answered with every owner's copy merged)."""
    ring = Ring([(m.id, m.rack) for m in LISTERS], q=16, n=3)
    copies = {m.id: _Copy() for m in LISTERS}
    for key, row in states.items():
        for owner, state in zip(ring.preflist(ring.partition(key)), row, strict=True):
            if state != "absent":
                copies[owner].data[key] = COPY[state]

    def truth(key: bytes) -> list[bytes]:
        return _merged([copies[x].data.get(key) for x in ring.preflist(ring.partition(key))])

    def node(node_id: str):
        def answer(msg):
            if node_id in silent:
                return SILENT
            if type(msg) is wire.Get:  # (the items' fallback: a coordinator's answer)
                return wire.GetOk(msg.rid, truth(msg.key), b"", msg.r, 0)
            if type(msg) is wire.RingInfo:  # (a get refreshes the ring now and then)
                return wire.RingOk(msg.rid, 16, 3, 2, 2, LISTERS, [])
            if node_id in unsure:
                return wire.KeysOk(msg.rid, [], msg.cursor, False, False)
            return answer_keys(copies[node_id], ring, msg, b"", True)
        return answer

    core, net = _lister(node, owner_reads=False)
    listing = core.list_items(page=page, r=r) if items else core.list_keys(page=page, r=r)
    want: dict[bytes, list[bytes]] = {}
    short = None
    for p in range(16):
        answering = [x for x in ring.preflist(p) if x not in silent and x not in unsure][:r]
        mine = [k for k in states if ring.partition(k) == p]
        if len(answering) < r:
            if short is None and not (items and answering):
                short = (p, len(answering))
            if items and answering:  # listed by those there are, each read at R
                for k in mine:
                    if any(k in copies[x].data for x in answering) and truth(k):
                        want[k] = truth(k)
                continue
        for k in mine:
            got_here = _merged([copies[x].data.get(k) for x in answering])
            if items and got_here:
                want[k] = got_here
            elif not items and any(copies[x].data.get(k) in (LIVE, OTHER) for x in answering):
                want[k] = []
    got: list = []
    try:
        while (plan := listing.next_page()) is not None:
            got += net.run(plan)
    except (QuorumError, Unavailable) as exc:
        assert short is not None, exc
        p, acked = short
        assert f"partition {p}:" in str(exc)
        assert type(exc) is (QuorumError if acked else Unavailable), exc
        assert not (items and acked)  # (items read such a partition at R instead)
        if acked:
            assert (exc.required, exc.acked) == (r, acked)
        return
    assert short is None, short
    if items:
        assert len(got) == len({k for k, _ in got})
        assert {k: sorted(vs) for k, vs in got} == want
    else:
        assert len(got) == len(set(got)) and sorted(got) == sorted(want)


def test_items_pass_over_an_owner_whose_copies_do_not_merge():
    """A page of copies that are not versions (a broken or hostile node), or fewer copies
    than keys, is not merged: the next owner lists the partition; with none left the listing
    says why."""
    ring = Ring([(m.id, m.rack) for m in LISTERS], q=16, n=3)
    copy = _Copy()
    copy.data = {k: LIVE for k in (b"a", b"b", b"c")}
    bad = {"n0": lambda m: wire.KeysOk(m.rid, [b"a"], 0, True, True, [b"\xff" * 9]),
           "n1": lambda m: wire.KeysOk(m.rid, [b"a", b"b"], 0, True, True, [LIVE])}
    for broken, fine in ((["n0"], True), (["n1"], True), (["n0", "n1", "n2", "n3"], False)):
        def node(node_id, broken=broken):
            def answer(msg):
                if node_id in broken:
                    return bad.get(node_id, bad["n0"])(msg)
                return answer_keys(copy, ring, msg, b"", True)
            return answer

        core, net = _lister(node)
        listing = core.list_items(r=1)
        if fine:
            got = []
            while (plan := listing.next_page()) is not None:
                got += net.run(plan)
            assert sorted(got) == [(k, [b"v"]) for k in (b"a", b"b", b"c")]
        else:
            with pytest.raises(Unavailable, match="answered a copy that is not a valid version"):
                while (plan := listing.next_page()) is not None:
                    net.run(plan)


def test_a_page_an_owner_did_not_answer_is_asked_again():
    """A request or reply lost once (a reconnect, a pause) costs a try, not the listing: an
    owner that did not answer is asked again (LIST_RETRIES rounds) when the page is short of
    r; one that failed earlier in the listing is not (a dead owner costs one timeout a page)."""
    ring = Ring([(m.id, m.rack) for m in LISTERS], q=16, n=3)
    copy = _Copy()
    copy.data = {bytes([i]): LIVE for i in range(1, 60)}
    missed: list[str] = []

    def node(node_id: str):
        def answer(msg):
            if type(msg) is wire.RingInfo:  # (a listing learns the ring after a miss)
                return wire.RingOk(msg.rid, 16, 3, 2, 2, LISTERS, [])
            if node_id == "n1" and not missed:
                missed.append(node_id)
                return SILENT  # the first request to n1 is lost
            return answer_keys(copy, ring, msg, b"", True)
        return answer

    core, net = _lister(node)
    listing = core.list_keys(page=5, r=3)
    got = []
    while (plan := listing.next_page()) is not None:
        got += net.run(plan)
    assert missed == ["n1"] and sorted(got) == sorted(copy.data)
    # n1 answers no more: each of its partitions' first page costs the tries, later pages
    # of the listing one (it failed before), and the listing fails naming it
    dead = Net(net.clock, {m.listen: (lambda msg: SILENT) if m.id == "n1" else node(m.id)
                           for m in LISTERS})
    listing = core.list_keys(page=5, r=3)
    with pytest.raises(QuorumError, match=r"2 of its owners listed its keys, r=3 wanted"):
        while (plan := listing.next_page()) is not None:
            dead.run(plan)
    to_n1 = [m for ep, m, _, _ in dead.sent if ep == LISTERS[1].listen
             and type(m) is wire.Keys]
    assert len(to_n1) == 1 + LIST_RETRIES


def test_owners_holding_another_version_of_the_namespace_make_a_listing_learn_it_again():
    """A client that cached an lww namespace since dropped and made again keeping siblings
    lists its items: the owners hold another version than the one its Keys name
    (Keys.ns_ver) and list nothing; the client learns the registry again and asks the page
    again, reading the copies with the new version's settings (not a sibling's first eight
    bytes taken for an lww stamp)."""
    old = nss.Namespace(name="cart", n=3, r=2, w=2, conflicts="lww", created=1, creator="n0")
    reg = nss.Registry.for_cluster(3, 2, 2)
    reg.merge([old])
    reg.drop("cart", dropped=5)
    new = reg.create("cart", n=3, members=4, created=9, creator="n1")
    ring = Ring([(m.id, m.rack) for m in LISTERS], q=16, n=3)
    copy = _Copy()
    both = dvv.sync_encoded(dvv.update_encoded(None, b"", b"[book]", "n1"),
                            dvv.update_encoded(None, b"", b"[pen]", "n2"))
    copy.data = {nss.storage_key(new, k): both for k in (b"a", b"b")}
    asked: list[int] = []

    def node(node_id: str):
        def answer(msg):
            if type(msg) is wire.NsList:
                return wire.NsOk(msg.rid, reg.encode())
            assert type(msg) is wire.Keys
            asked.append(msg.ns_ver)
            if msg.ns_ver != nss.version_tag(new):
                return wire.KeysOk(msg.rid, [], msg.cursor, False, False, ns_changed=True)
            return answer_keys(copy, ring, msg, nss.prefix(new), False)
        return answer

    core, net = _lister(node)
    core.ns_cache["cart"] = old
    listing = core.list_items(namespace="cart", r=2)
    got = []
    while (plan := listing.next_page()) is not None:
        got += net.run(plan)
    assert sorted((k, sorted(v)) for k, v in got) == [(k, [b"[book]", b"[pen]"])
                                                     for k in (b"a", b"b")]
    assert core.ns_cache["cart"] == new
    assert asked[:2] == [nss.version_tag(old)] * 2  # the first page's r tries; then the new
    assert set(asked[2:]) == {nss.version_tag(new)}


def test_a_listing_at_more_owners_than_a_partition_has_is_refused():
    core, net = _lister()
    with pytest.raises(InvalidRequest, match="r=4 is more than N=3, the owners"):
        net.run(core.list_keys(r=4).next_page())
    with pytest.raises(InvalidRequest, match="an int from 1 to N or one of one, quorum, all"):
        core.list_keys(r="2")  # (a name of a quorum, or a number: not a numeral)
    for bad in (0, 17, True):
        with pytest.raises(InvalidRequest, match="r must be 1 to 16"):
            core.list_keys(r=bad)


@pytest.mark.cluster
def test_keys_of_a_real_cluster_through_both_clients_and_the_cli(make_cluster):
    c = make_cluster(3)
    ep = c.endpoints
    with Client(ep, timeout=5) as cl:
        cl.put_many([(b"user:%d" % i, b"v") for i in range(500)], w=3)
        got = cl.get_many([b"user:%d" % i for i in range(10)])
        cl.delete_many([(b"user:%d" % i, got[i].context) for i in range(10)], w=3)
        cl.namespace_create("sess", n=2)
        cl.put_many([(b"s%d" % i, b"v") for i in range(50)], w=2, namespace="sess")
        live = {b"user:%d" % i for i in range(10, 500)}
        assert sorted(cl.keys()) == sorted(live)
        assert set(cl.keys(prefix=b"user:4", page=7)) == {k for k in live
                                                          if k.startswith(b"user:4")}
        assert set(cl.keys("sess")) == {b"s%d" % i for i in range(50)}

        # items: each key's live values, siblings included, deleted keys left out
        cl.namespace_create("it", n=3)
        cl.put_many([(b"i%d" % i, b"v%d" % i) for i in range(30)], w=3, namespace="it")
        cl.put(b"twin", b"a", w=3, namespace="it")
        cl.put(b"twin", b"b", w=3, namespace="it")  # blind: a sibling
        cl.delete(b"i0", cl.get(b"i0", namespace="it").context, w=3, namespace="it")
        want = {b"i%d" % i: [b"v%d" % i] for i in range(1, 30)} | {b"twin": [b"a", b"b"]}
        for r in (None, 1, 3):
            got = {k: sorted(vs) for k, vs in cl.items("it", page=4, r=r)}
            assert got == want, r
        assert {k for k, _ in cl.items("it", prefix=b"i1")} == {b"i1"} | {
            b"i%d" % i for i in range(10, 20)}

    async def async_keys() -> set[bytes]:
        async with AsyncClient(ep, timeout=5) as ac:
            assert {k: sorted(vs) async for k, vs in ac.items("it", r=2)} == want
            return {k async for k in ac.keys("sess", page=3)}

    assert asyncio.run(async_keys()) == {b"s%d" % i for i in range(50)}
    out = zkv("keys", "--count", "--node", ep[0])
    assert out.returncode == 0 and out.stdout == "490\n", out
    out = subprocess.run([ZKV, "keys", "-0", "--prefix", "user:49", "--node", ep[1]],
                         capture_output=True, timeout=60)
    assert sorted(out.stdout.split(b"\0")[:-1]) == sorted(k for k in live
                                                          if k.startswith(b"user:49"))
    assert zkv("keys", "--limit", "5", "--node", ep[0]).stdout.count("\n") == 5
    # a line per key, none two keys print alike: a backslash as \\, bytes that are not
    # printable UTF-8 (a newline, a NUL, invalid UTF-8) as \xNN
    odd = [b"a\nb", b"lit\xff", b"lit\\xff", b"nul\x00", "caf\u00e9".encode()]
    with Client(ep, timeout=5) as cl:
        cl.namespace_create("odd", n=3)
        cl.put_many([(k, b"v") for k in odd], w=3, namespace="odd")
    out = zkv("keys", "--namespace", "odd", "--node", ep[0])
    assert out.returncode == 0 and sorted(out.stdout.splitlines()) == sorted(
        ["a\\x0ab", "lit\\xff", "lit\\\\xff", "nul\\x00", "caf\u00e9"]), out
    # -0 cannot show a key holding a NUL (it would read as two): left out, and said
    out = subprocess.run([ZKV, "keys", "-0", "--namespace", "odd", "--node", ep[0]],
                         capture_output=True, timeout=60)
    assert out.returncode == 1 and b"1 key(s) holding a NUL byte left out" in out.stderr, out
    assert sorted(out.stdout.split(b"\0")[:-1]) == sorted(k for k in odd if b"\0" not in k)

    def count_at_r3() -> str | None:  # every owner's copy, unioned (a new cluster's joiners
        out = zkv("keys", "--count", "--r", "3", "--node", ep[2])  # vouch once it settled)
        assert out.returncode == 0 or "not sure of its copy yet" in out.stderr, out
        return out.stdout if out.returncode == 0 else None

    assert wait_for(count_at_r3, 60, "a listing at r=3") == "490\n"
    assert "r=4 is more than N=3, the owners" in one_line_error(zkv("keys", "--r", "4", "--node",
                                                               ep[0]))
    assert "r=3 is more than N=2, the owners" in one_line_error(zkv(
        "keys", "--r", "3", "--namespace", "sess", "--node", ep[0]))
    assert "unknown namespace" in one_line_error(zkv("keys", "--namespace", "nope", "--node",
                                                     ep[0]))
    # one node dead: every partition still has an owner to list it
    c.kill("node3")
    with Client(ep[:2], timeout=2) as cl:
        assert set(cl.keys()) == live
        assert set(cl.keys("sess")) == {b"s%d" % i for i in range(50)}
        assert set(cl.keys(r=2, page=50)) == live
        with pytest.raises(QuorumError, match=r"partition 0: 2 of its owners listed its keys, "
                                              r"r=3 wanted \(node3: ") as got:
            set(cl.keys(r=3))
        assert (got.value.required, got.value.acked) == (3, 2)
    # two dead: the N=3 keys are all on node1; some N=2 partitions have no owner left
    c.kill("node2")
    with Client(ep[:1], timeout=1) as cl:
        assert set(cl.keys()) == live
        with pytest.raises(Unavailable, match=r"partition \d+: no owner could list its keys"):
            set(cl.keys("sess"))
    assert os.path.isdir(c.node("node1").data_dir)


@pytest.mark.cluster
def test_a_listing_at_r2_finds_the_keys_an_owner_missed_while_it_was_down(make_cluster):
    """Real processes, anti-entropy off and no hint delivery (handoff_batch 0): keys written
    at W=2 while node3 was dead are missing from node3's copy once it is back, so a listing
    at r=1 (which asks node3 first for the partitions it leads) misses some of them; one at
    r=2, and items at R=2, find them all."""
    c = make_cluster(3, extra_args=["--gossip-interval", "0.1", "--down-after", "1.0",
                                    "--replica-timeout", "1.0", "--aae-interval", "0",
                                    "--handoff-batch", "0"])
    c.wait_changes_settled()
    c.kill("node3")
    with Client(c.endpoints[:2], timeout=5) as cl:
        wait_for(lambda: "node3" in cl.ring_info().down, 10, "node3 seen down")
        cl.put_many([(b"late:%d" % i, b"v%d" % i) for i in range(300)], w=2)
    c.restart("node3")
    want = {b"late:%d" % i for i in range(300)}
    with Client(c.endpoints, timeout=5) as cl:
        wait_for(lambda: "node3" not in cl.ring_info(c.endpoints[0]).down, 10, "node3 up")
        missed = want - set(cl.keys(r=1))
        assert missed, "node3 listed keys it never received"
        assert set(cl.keys(r=2)) == want
        assert dict(cl.items(r=2)) == {b"late:%d" % i: [b"v%d" % i] for i in range(300)}
        assert set(cl.keys(r=1)) == want - missed  # (nothing repaired node3 meanwhile)


def test_a_page_reads_a_bounded_amount_of_values_whatever_the_limit(tmp_path, monkeypatch):
    """A client asking for 10,000 keys a page of large values gets pages cut at the read
    budget (pages of tombstones alone come back empty, not done), and every live key still
    comes in some page."""
    from zkv.node import listing

    monkeypatch.setattr(listing, "READ_BUDGET", 10_000)
    node = Node(tmp_path)
    try:
        for i in range(400):  # ~25 a partition
            node.ask(OUTSIDER, [wire.Put(1 + i, b"big%d" % i, b"x" * 3000, w=1)], CLIENT)
        for i in range(0, 400, 2):  # half deleted: their tombstones are read too
            (got,) = node.ask(OUTSIDER, [wire.Get(1000 + i, b"big%d" % i, 1)], CLIENT)
            node.ask(OUTSIDER, [wire.Delete(2000 + i, b"big%d" % i, got.context, 1)], CLIENT)
        pages = []
        for p in range(node.core.membership.ring().q):
            cursor = 0
            while True:
                (ok,) = node.ask(OUTSIDER, [wire.Keys(9000, p, "", cursor, b"", 10_000)], CLIENT)
                pages.append(ok.keys)
                if ok.done:
                    break
                cursor = ok.cursor
        assert max(len(page) for page in pages) <= 4  # 10,000 bytes: 3 values, then the 4th
        assert sorted(k for page in pages for k in page) == sorted(
            b"big%d" % i for i in range(1, 400, 2))
        assert [] in pages  # (a page of tombstones only)
    finally:
        node.close()


@pytest.mark.parametrize("head", [8, 12])
def test_items_of_an_lww_namespace_answer_the_newest_write_alone(head):
    """Two owners hold different writes of one lww key (one missed the newer): the page's
    item is the newer value alone, as a get answers (both came back as siblings); in a
    write_ttl namespace, once the newer write's own ttl is over the key is left out, and
    the older value stays hidden (it came back)."""
    from zkv import hlc
    from zkv.client.core import KeyListing, _union_page

    t0 = 1_800_000_000_000

    def write(at_ms: int, value: bytes, own: int, node: str) -> bytes:
        head_bytes = hlc.pack(at_ms << 16) + (own.to_bytes(4, "big") if head == 12 else b"")
        return dvv.update(None, b"", head_bytes + value, node).encode()

    old, new = write(t0, b"old", 0, "n1"), write(t0 + 1000, b"new", 2, "n2")
    ring = Ring([(m.id, m.rack) for m in LISTERS], q=16, n=3)
    for now, want in ((t0 + 1500, [(b"k", [b"new"])]),
                      (t0 + 3000, [] if head == 12 else [(b"k", [b"new"])])):
        for copies in ([old, new], [new, old]):
            pages = [wire.KeysOk(0, [b"k"], 0, True, True, [c]) for c in copies]
            listing = KeyListing(None, "sess", b"", 10, 2, True)  # type: ignore[arg-type]
            assert _union_page(listing, ring, b"", head, pages, True, now) == want, (now, copies)


def test_a_key_whose_version_holds_no_live_sibling_is_not_listed(tmp_path):
    """A version whose every sibling was overwritten or retired (no value, not a tombstone
    either) was listed as a live key: dvv.is_tombstone_encoded is False for it (the
    simulator's listing check, seed 130000 of `--client many --loss 0.05 --dup 0.02
    --partitions 3 --pauses 2 --crashes 1 --power-losses 1`). The listing asks whether a
    version holds a live value (dvv.has_value_encoded)."""
    from zkv._core import dvv

    node = Node(tmp_path)
    try:
        (ok,) = node.ask(OUTSIDER, [wire.Put(1, b"kept", b"v", w=1)], CLIENT)
        (ok,) = node.ask(OUTSIDER, [wire.Put(2, b"empty", b"v", w=1)], CLIENT)
        held = dvv.DVVSet.decode(node.core.store.get(b"empty"))
        none_live = dvv.retain(held, lambda sib: False).encode()
        assert not dvv.is_tombstone_encoded(none_live) and not dvv.has_value_encoded(none_live)
        node.core.store.put(b"empty", none_live)
        assert _list(node) == [b"kept"]
        tomb = dvv.update_encoded(None, b"", None, "n1", b"")
        assert dvv.has_value_encoded(node.core.store.get(b"kept"))
        assert not dvv.has_value_encoded(tomb)
        assert dvv.has_value_encoded(dvv.sync_encoded(tomb, node.core.store.get(b"kept")))
        with pytest.raises(ValueError):
            dvv.has_value_encoded(b"\x01\x01")
    finally:
        node.close()
