"""Namespace registry (zkv.node.namespaces): validation, idempotent create, gossip merge that
converges in any order, and the gossip / cluster.json codecs (pure)."""

import json
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.errors import InvalidRequest
from zkv.node import namespaces as nsm
from zkv.node.namespaces import Namespace, Registry


def reg() -> Registry:
    return Registry.for_cluster(3, 2, 2)


def test_default_exists_from_cluster_settings():
    r = reg()
    d = r.get()
    assert r.get("default") is d and (d.n, d.r, d.w, d.conflicts) == (3, 2, 2, "siblings")
    assert d.created == 0 and d.creator == "" and not d.lww
    assert Registry.for_cluster(3, 2, 2) == r  # every node builds the same one


def test_unknown_namespace_is_invalid_request():
    with pytest.raises(InvalidRequest, match="unknown namespace 'nope'.*known: default"):
        reg().get("nope")
    with pytest.raises(ValueError):  # InvalidRequest is a ValueError too
        reg().get("nope")
    many = reg()  # (1,024 namespaces made a 4 KB error: the first 20 are named)
    many.merge([Namespace(name=f"ns{i:03d}", n=3, r=2, w=2, created=i + 1, creator="n1")
                for i in range(30)])
    with pytest.raises(InvalidRequest, match=r"known: default, ns000, .*ns018 and 11 more "
                                             r"\(`zkv namespace list`\)\)$"):
        many.get("nope")


def test_create_defaults_and_lww():
    r = reg()
    s = r.create("sessions", 5, conflicts="lww", members=5, created=10, creator="n1")
    assert (s.n, s.r, s.w, s.lww) == (5, 3, 3, True)
    one = r.create("scratch", 1, members=5, created=11, creator="n1")
    assert (one.n, one.r, one.w) == (1, 1, 1)
    dflt = r.create("carts", members=2, created=12, creator="n1")
    assert dflt.n == 2  # default n (3) capped by the members
    assert r.names() == ["carts", "default", "scratch", "sessions"]


@pytest.mark.parametrize("kw, msg", [
    (dict(name="x", n=0), "n=0: must be between 1 and 16"),
    (dict(name="x", n=17), "n=17"),
    (dict(name="x", n=4), "only 3 member"),
    (dict(name="x", n=3, r=4), "r=4: must be between 1 and n=3"),
    (dict(name="x", n=3, w=0), "w=0"),
    (dict(name="x", n=3, conflicts="crdt"), "conflicts='crdt': must be one of siblings, lww"),
    (dict(name="", n=1), "name ''"),
    (dict(name="a b", n=1), "name 'a b'"),
    (dict(name="x" * 65, n=1), "1 to 64 characters"),
    (dict(name="..", n=1), "not . or .."),
    (dict(name="x", n=True), "n=True"),
])
def test_bad_settings_refused_clearly(kw, msg):
    with pytest.raises(InvalidRequest, match=msg.replace(".", r"\.").replace("(", r"\(")):
        reg().create(**kw, members=3, created=1, creator="n1")


def test_every_problem_named_at_once():
    with pytest.raises(InvalidRequest) as e:
        reg().create("bad name", 0, 0, 0, "x", members=3, created=1, creator="n1")
    assert str(e.value).count(";") == 4


def test_create_idempotent_and_conflicting_create_refused():
    r = reg()
    a = r.create("carts", 3, members=3, created=5, creator="n1")
    assert r.create("carts", 3, 2, 2, members=3, created=99, creator="n2") is a
    with pytest.raises(InvalidRequest,
                       match="already exists with n=3.*namespace alter.*n and conflicts are fixed"):
        r.create("carts", 2, members=3, created=6, creator="n1")
    with pytest.raises(InvalidRequest, match="already exists"):
        r.create("default", 1, members=3, created=6, creator="n1")


def test_quorums_per_request():
    ns = reg().create("s", 5, members=5, created=1, creator="n1")
    assert ns.quorums() == (3, 3) and ns.quorums(0, 0) == (3, 3) and ns.quorums(1, 5) == (1, 5)
    with pytest.raises(InvalidRequest, match="r=6"):
        ns.quorums(r=6)


def test_concurrent_conflicting_creates_lowest_rank_wins_and_loser_reported():
    a, b = reg(), reg()
    na = a.create("x", 3, members=3, created=200, creator="n1")
    nb = b.create("x", 1, conflicts="lww", members=3, created=100, creator="n2")
    a0 = Registry.decode(a.encode())
    ca, cb = a.merge(b), b.merge(a0)
    assert a == b and a.get("x") == nb
    assert ca == [nsm.Conflict("x", nb, na)] and cb == [nsm.Conflict("x", nb, na)]
    assert "dropped n=3" in str(ca[0])
    # equal timestamps: the node id decides
    c, d = reg(), reg()
    c.create("y", 1, members=3, created=7, creator="n9")
    d.create("y", 2, members=3, created=7, creator="n10")
    c.merge(d), d.merge(c)
    assert c == d and c.get("y").creator == "n10"


def test_same_settings_concurrently_is_no_conflict():
    a, b = reg(), reg()
    a.create("x", 2, members=3, created=5, creator="n1")
    b.create("x", 2, members=3, created=3, creator="n2")
    assert a.merge(b) == [] and a.get("x").creator == "n2"


def test_gossip_codec_round_trip_and_bounds():
    r = reg()
    r.create("sessions", 1, conflicts="lww", members=3, created=1 << 40, creator="n1")
    blob = r.encode()
    assert Registry.decode(blob) == r
    with pytest.raises(ValueError, match="over the 10-byte limit"):
        Registry.decode(blob, max_bytes=10)
    with pytest.raises(ValueError, match="version 7"):
        Registry.decode(msgspec.msgpack.encode((7, [])))
    with pytest.raises(ValueError, match="without 'default'"):
        Registry.decode(msgspec.msgpack.encode((1, [])))
    bad = msgspec.to_builtins(list(r))
    bad[1]["n"] = 0
    with pytest.raises(ValueError, match="bad namespace 'sessions'"):
        Registry.decode(msgspec.msgpack.encode((1, bad)))
    with pytest.raises(ValueError, match="sorted by name"):
        Registry.decode(msgspec.msgpack.encode((1, list(reversed(list(r))))))


def test_cluster_json_round_trip_ignores_unknown_fields():
    r = reg()
    r.create("carts", 2, members=3, created=9, creator="n1")
    doc = json.loads(json.dumps(r.to_builtins()))
    assert doc[0]["name"] == "carts" and doc[0]["conflicts"] == "siblings"
    doc[0]["future_field"] = 1
    assert Registry.from_builtins(doc) == r
    with pytest.raises(ValueError):
        Registry.from_builtins([{"name": "default"}])


@given(st.binary(max_size=200))
def test_garbage_gossip_is_value_error_only(junk):
    for blob in (junk, b"\x92\x01" + junk):
        try:
            Registry.decode(blob)
        except ValueError:
            pass


# ---- convergence --------------------------------------------------------------------------
names = st.sampled_from(["a", "b", "c", "carts", "default"])
creates = st.tuples(st.integers(0, 3), names, st.integers(1, 3), st.sampled_from(nsm.MODES),
                    st.integers(0, 20), st.sampled_from([0, 0, 60, 3600]), st.booleans())


@st.composite
def cluster_histories(draw):
    """Four nodes, each creating namespaces locally (refused creates are skipped: a ttl
    without lww, among others)."""
    nodes = [reg() for _ in range(4)]
    for node, name, n, mode, ts, ttl, write_ttl in draw(st.lists(creates, max_size=12)):
        try:
            nodes[node].create(name, n, conflicts=mode, members=3, created=ts,
                               creator=f"n{node}", ttl=ttl, write_ttl=write_ttl)
        except InvalidRequest:
            pass
    return nodes


def _as_older_node(r: Registry) -> Registry:
    """What a node of a version without ttl relays: every namespace with ttl 0."""
    return Registry.decode(msgspec.msgpack.encode(
        (nsm.REGISTRY_VERSION, [msgspec.structs.replace(ns, ttl=0) for ns in r])))


@given(cluster_histories(), st.data())
@settings(max_examples=200)
def test_a_relay_by_an_older_node_never_takes_a_ttl_away(nodes, data):
    """Copies relayed by nodes that drop the field (ttl 0) mixed in, in any order: every
    node ends with the originals' registry, ttls included, and reports no conflict for them."""
    expected = reg()
    for n in nodes:
        expected.merge(n)
    pool = nodes + [_as_older_node(n) for n in nodes]
    for dst, src in data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7)),
                                       max_size=30)):
        nodes[dst].merge(pool[src])
    for i in range(4):
        for src in data.draw(st.permutations(range(8))):
            nodes[i].merge(pool[src])
    assert all(n == expected for n in nodes)
    for ns in expected:
        skey = nsm.storage_key(ns, b"k")
        assert all(n.expiry_of(skey) == ((ns.ttl * 1000, 0) if ns.ttl else None)
                   for n in nodes), ns


@given(cluster_histories(), st.data())
@settings(max_examples=200)
def test_any_gossip_order_converges(nodes, data):
    expected = reg()
    for n in nodes:
        expected.merge(n)
    merges = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30))
    for dst, src in merges:
        nodes[dst].merge(Registry.decode(nodes[src].encode()))
    # then one full round in a drawn order: everyone agrees, on the same registry
    order = data.draw(st.permutations(range(4)))
    for i in order:
        for j in order:
            nodes[i].merge(nodes[j])
    for i in order:
        for j in order:
            nodes[i].merge(nodes[j])
    assert all(n == expected for n in nodes)
    for ns in expected:  # every kept version has the lowest rank among those created
        assert all(ns.rank() <= n._ns[ns.name].rank() for n in nodes if ns.name in n)


@given(cluster_histories())
def test_merge_is_a_join(nodes):
    a, b, c = (Registry.decode(n.encode()) for n in nodes[:3])

    def m(x, y):
        out = Registry.decode(x.encode())
        out.merge(y)
        return out

    assert m(a, b) == m(b, a)
    assert m(m(a, b), c) == m(a, m(b, c))
    assert m(a, a) == a


def test_namespace_is_immutable():
    ns = reg().get()
    with pytest.raises(AttributeError):
        ns.n = 5
    assert isinstance(ns, Namespace)


# ---- ttl ----------------------------------------------------------------------------------
def test_ttl_needs_lww_and_bounds():
    r = reg()
    with pytest.raises(InvalidRequest, match="ttl=60: needs conflicts=lww"):
        r.create("s", 3, conflicts="siblings", ttl=60, members=3, created=1, creator="n1")
    for bad in (-1, nsm.MAX_TTL + 1, 1.5, True, "60"):
        with pytest.raises(InvalidRequest, match="must be between 0 .no expiry. and"):
            r.create("s", 3, conflicts="lww", ttl=bad, members=3, created=1, creator="n1")
    ns = r.create("s", 3, conflicts="lww", ttl=60, members=3, created=1, creator="n1")
    assert ns.ttl == 60 and ns.describe() == "n=3 r=2 w=2 lww ttl=60s"
    assert r.create("s", 3, conflicts="lww", ttl=60, members=3, created=2, creator="n2") is ns
    with pytest.raises(InvalidRequest, match="already exists with n=3 r=2 w=2 lww ttl=60s"):
        r.create("s", 3, conflicts="lww", ttl=61, members=3, created=2, creator="n2")


def test_expiry_of_a_stored_key():
    r = reg()
    r.create("sess", 3, conflicts="lww", ttl=90, members=3, created=1, creator="n1")
    r.create("last", 3, conflicts="lww", members=3, created=1, creator="n1")
    assert r.expiry_of(nsm.storage_key(r.get("sess"), b"k")) == (90_000, 0)
    assert r.expiry_of(nsm.storage_key(r.get("last"), b"k")) is None
    assert r.expiry_of(b"plain") is None and r.expiry_of(b"\x00") is None
    assert r.expiry_of(b"") is None
    # a stored key of another version of the name (another N): not this namespace's ttl
    other = Namespace(name="sess", n=2, r=1, w=1, conflicts="lww", created=5, creator="n9")
    assert r.expiry_of(nsm.storage_key(other, b"k")) is None
    # the ttl travels in the gossip codec and in cluster.json
    assert Registry.decode(r.encode()).expiry_of(nsm.storage_key(r.get("sess"), b"k")) == (
        90_000, 0)
    back = Registry.from_builtins(json.loads(json.dumps(r.to_builtins())))
    assert back == r and back.get("sess").ttl == 90


def test_an_older_registry_without_ttl_decodes():
    """cluster.json and gossip written by a version without the field: ttl 0."""
    old = [{k: v for k, v in ns.items() if k != "ttl"} for ns in reg().to_builtins()]
    assert Registry.from_builtins(old) == reg()


def test_alter_changes_r_w_and_ttl_and_keeps_what_had_expired_expired():
    r = reg()
    r.create("s", 3, conflicts="lww", members=3, created=10, creator="n1", ttl=60)
    r.create("carts", 3, members=3, created=11, creator="n1")
    for name, kw, why in (
            ("default", {}, "takes the cluster's settings"),
            ("nope", {}, "unknown namespace 'nope'"),
            ("s", {"r": 4}, "r=4: must be between 1 and n=3"),
            ("carts", {"ttl": 60}, "ttl=60: needs conflicts=lww"),
            ("s", {"ttl": nsm.MAX_TTL + 1}, r"must be between 0 \(no expiry\)")):
        with pytest.raises(InvalidRequest, match=why):
            r.alter(name, changed=99, now_ms=10**6, **kw)
    assert r.get("s").changed == 0  # (nothing changed)
    low = r.alter("s", r=1, ttl=30, changed=20, now_ms=1_000_000)
    assert (low.r, low.w, low.ttl, low.changed, low.expired_before) == (1, 2, 30, 20, 0)
    assert r.expiry_of(nsm.storage_key(low, b"k")) == (30_000, 0)
    assert r.alter("s", ttl=30, changed=25, now_ms=1_000_000) is low  # nothing to change
    with pytest.raises(InvalidRequest, match="must follow 20"):
        r.alter("s", ttl=40, changed=20, now_ms=1_000_000)
    # raised: what had expired under 30 s at the alter stays expired
    high = r.alter("s", ttl=120, changed=30, now_ms=2_000_000)
    assert high.expired_before == 2_000_000 - 30_000
    # removed: nothing written before the alter's cutoff comes back
    gone = r.alter("s", ttl=0, changed=40, now_ms=3_000_000)
    assert gone.expired_before == 3_000_000 - 120_000 and gone.expires
    assert r.expiry_of(nsm.storage_key(gone, b"k")) == (0, 3_000_000 - 120_000)
    assert Registry.decode(r.encode()) == r  # (the new fields travel)
    assert "expired_before" in json.dumps(r.to_builtins())
    # every replica of the registry takes the last alter, whatever order they hear them in
    for order in ([low, high, gone], [gone, low, high], [high, gone, low]):
        other = reg()
        other.create("s", 3, conflicts="lww", members=3, created=10, creator="n1", ttl=60)
        for version in order:
            assert other.merge([version]) == []  # (one create altered: no conflict)
        assert other.get("s") == gone


@given(st.data())
@settings(max_examples=300)
def test_alters_in_any_gossip_order_converge_on_each_creates_last_alter(data):
    """Creates, alters (some at the same HLC timestamp on two nodes) and gossip in any order:
    after full rounds every node holds the same registry, and each namespace is the last
    alter (highest `changed`) made anywhere of the create that won its name."""
    nodes = [reg() for _ in range(4)]
    made: list[Namespace] = []
    clock = 1000
    steps = data.draw(st.lists(st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3), st.sampled_from(["a", "b"]),
                  st.sampled_from(nsm.MODES)),
        st.tuples(st.just("alter"), st.integers(0, 3), st.sampled_from(["a", "b"]),
                  st.integers(1, 3), st.sampled_from([None, 0, 60, 3600])),
        st.tuples(st.just("gossip"), st.integers(0, 3), st.integers(0, 3))), max_size=30))
    for step in steps:
        clock += data.draw(st.integers(0, 2))  # (0: the same timestamp as the step before)
        try:
            if step[0] == "create":
                _, i, name, mode = step
                made.append(nodes[i].create(name, 3, conflicts=mode, members=3, created=clock,
                                            creator=f"n{i}"))
            elif step[0] == "alter" and step[2] in nodes[step[1]]:
                _, i, name, r, ttl = step
                made.append(nodes[i].alter(name, r=r, ttl=ttl, changed=clock, now_ms=clock))
            elif step[0] == "gossip":
                nodes[step[1]].merge(Registry.decode(nodes[step[2]].encode()))
        except InvalidRequest:
            pass
    for _ in range(2):
        for i in data.draw(st.permutations(range(4))):
            for j in range(4):
                nodes[i].merge(nodes[j])
    assert all(n == nodes[0] for n in nodes)
    for ns in nodes[0]:
        if ns.name != nsm.DEFAULT:
            same = [v for v in made if (v.name, v.created, v.creator)
                    == (ns.name, ns.created, ns.creator)]
            assert ns.changed == max(v.changed for v in same), (ns, same)


# ---- a write's own ttl: write_ttl namespaces -----------------------------------------------
def test_write_ttl_namespaces_store_under_mode_2_and_say_their_head():
    r = reg()
    s = r.create("sess", 3, conflicts="lww", ttl=60, members=3, created=5, creator="n1",
                 write_ttl=True)
    old = r.create("old", 3, conflicts="lww", ttl=60, members=3, created=6, creator="n1")
    sib = r.create("sib", 3, members=3, created=7, creator="n1", write_ttl=True)
    assert (s.head, old.head, sib.head, r.get("default").head) == (12, 8, 0, 0)
    assert not sib.write_ttl  # (siblings values carry no stamp to put a ttl after)
    for ns, mode in ((s, 2), (old, 1), (sib, 0)):
        skey = nsm.storage_key(ns, b"k")
        assert skey[2] == mode and nsm.key_settings(skey) == (3, mode != 0)
        assert nsm.head_of_key(skey) == ns.head and nsm.is_lww(skey) == (mode != 0)
        assert nsm.split_key(skey) == (ns.name, b"k")
    assert nsm.head_of_key(b"plain") == 0
    assert nsm.key_settings(b"\x00\x03\x03sess\x00k") is None  # (no mode 3)
    # idempotent whatever the layout: a create from a client that retries it after an upgrade
    assert r.create("old", 3, conflicts="lww", ttl=60, members=3, created=9, creator="n2",
                    write_ttl=True) is old


def test_a_write_ttl_is_checked_against_its_namespace():
    r = reg()
    s = r.create("sess", 3, conflicts="lww", ttl=60, members=3, created=5, creator="n1",
                 write_ttl=True)
    s.check_write_ttl(1)
    s.check_write_ttl(60)
    for ttl, why in ((61, "keeps a write at most its own ttl (60s)"), (0, "between 1 and"),
                     (True, "between 1 and"), ("5", "between 1 and"),
                     (nsm.MAX_TTL + 1, "between 1 and")):
        with pytest.raises(InvalidRequest, match=re.escape(why)):
            s.check_write_ttl(ttl)
    cases = ((r.create("forever", 3, conflicts="lww", members=3, created=6, creator="n1",
                       write_ttl=True), "has no ttl, so its writes carry none"),
             (r.create("old", 3, conflicts="lww", ttl=60, members=3, created=7, creator="n1"),
              "without per-write ttls"),
             (r.get("default"), "needs an lww namespace"))
    for ns, why in cases:
        with pytest.raises(InvalidRequest, match=re.escape(why)):
            ns.check_write_ttl(5)


def test_a_relay_without_write_ttl_never_wins_and_an_older_registry_decodes():
    """A copy relayed by a node of a version without the field (write_ttl false) ranks after
    the original, so every node keeps the layout its values were written with; cluster.json
    and gossip of such a version decode with write_ttl false, and a siblings namespace that
    claims it is refused."""
    r = reg()
    r.create("sess", 3, conflicts="lww", ttl=60, members=3, created=5, creator="n1",
             write_ttl=True)
    relayed = Registry.decode(msgspec.msgpack.encode(
        (nsm.REGISTRY_VERSION, [msgspec.structs.replace(ns, write_ttl=False) for ns in r])))
    for a, b in ((r, relayed), (relayed, r)):
        x = Registry.decode(a.encode())
        assert x.merge(b) == [] and x.get("sess").write_ttl
    old = [{k: v for k, v in ns.items() if k != "write_ttl"} for ns in r.to_builtins()]
    assert not Registry.from_builtins(old).get("sess").write_ttl
    bad = [dict(ns, write_ttl=True) if ns["name"] == "default" else ns for ns in r.to_builtins()]
    with pytest.raises(ValueError, match="write_ttl: needs conflicts=lww"):
        Registry.from_builtins(bad)


def test_default_primary_quorums_are_settings_altered_like_r_and_w():
    """pr/pw of a namespace (0: none, at most n): part of its settings (a create with other
    ones is refused), altered like r and w (an alter to 0 removes them), described, and
    checked in gossip; a relay by a node of a version without them (which drops the fields)
    ranks after the original, so it never takes them away."""
    r = reg()
    s = r.create("acct", 3, pr=2, pw=2, members=3, created=5, creator="n1")
    assert (s.pr, s.pw) == (2, 2) and s.describe() == "n=3 r=2 w=2 pr=2 pw=2 siblings"
    assert r.create("acct", 3, pr=2, pw=2, members=3, created=6, creator="n2") is s
    with pytest.raises(InvalidRequest, match="already exists with n=3 r=2 w=2 pr=2 pw=2"):
        r.create("acct", 3, members=3, created=7, creator="n2")
    with pytest.raises(InvalidRequest, match=re.escape("pr=4: must be between 0 (none) and n=3")):
        r.create("other", 3, pr=4, members=3, created=8, creator="n1")
    with pytest.raises(InvalidRequest, match=re.escape("pw=-1: must be between 0 (none)")):
        r.alter("acct", pw=-1, changed=9, now_ms=0)
    a = r.alter("acct", pr=1, changed=10, now_ms=0)
    assert (a.pr, a.pw, a.changed) == (1, 2, 10)
    b = r.alter("acct", pr=0, pw=0, changed=11, now_ms=0)
    assert (b.pr, b.pw) == (0, 0) and b.describe() == "n=3 r=2 w=2 siblings"
    r.alter("acct", pw=3, changed=12, now_ms=0)
    relayed = Registry.decode(msgspec.msgpack.encode(
        (nsm.REGISTRY_VERSION, [msgspec.structs.replace(ns, pr=0, pw=0) for ns in r])))
    for x, y in ((r, relayed), (relayed, r)):
        got = Registry.decode(x.encode())
        assert got.merge(y) == [] and got.get("acct").pw == 3
    old = [{k: v for k, v in ns.items() if k not in ("pr", "pw")} for ns in r.to_builtins()]
    assert Registry.from_builtins(old).get("acct").pw == 0  # an older cluster.json decodes
    bad = [dict(ns, pr=9) if ns["name"] == "acct" else ns for ns in r.to_builtins()]
    with pytest.raises(ValueError, match="pr=9: must be between 0"):
        Registry.from_builtins(bad)
