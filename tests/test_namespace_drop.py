"""Dropping and truncating namespaces in the registry (zkv.node.namespaces, pure): the
tombstone, generations in the stored key, which keys are dead, and convergence of drops,
truncates, re-creates and alters under gossip in any order (Hypothesis): no node ever
revives a key it once judged dead, and every node ends judging every key alike."""

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.errors import InvalidRequest
from zkv.node import expiry
from zkv.node import namespaces as nsm
from zkv.node.namespaces import Namespace, Registry


def reg() -> Registry:
    return Registry.for_cluster(3, 2, 2)


def test_a_dropped_namespace_is_gone_for_requests_and_its_keys_are_dead():
    r = reg()
    carts = r.create("carts", members=3, created=10, creator="n1")
    other = r.create("other", members=3, created=11, creator="n1")
    k, o = nsm.storage_key(carts, b"k"), nsm.storage_key(other, b"k")
    assert not r.is_dead(k) and not r.dead_gens
    tomb = r.drop("carts", dropped=20)
    assert tomb.dropped == 20 and tomb.gen == 0 and "(dropped)" in tomb.describe()
    assert r.is_dead(k) and not r.is_dead(o) and not r.is_dead(b"k")
    assert "carts" not in r and r.names() == ["default", "other"] and len(r) == 2
    assert [ns.name for ns in r] == ["default", "other"]
    assert r.find("carts") is None and r.version_of("carts") == tomb
    with pytest.raises(InvalidRequest, match="'carts' was dropped .*makes it again"):
        r.get("carts")
    with pytest.raises(InvalidRequest, match="'carts' was dropped"):
        r.alter("carts", r=1, changed=30, now_ms=0)
    with pytest.raises(InvalidRequest, match="'carts' was dropped"):
        r.truncate("carts", created=30, creator="n1")
    assert r.drop("carts", dropped=40) == tomb  # a retried drop: the same tombstone
    # the whole key family of the name dies: the losing version of a concurrent create too
    loser = msgspec.structs.replace(carts, n=2, conflicts="lww")
    assert r.is_dead(nsm.storage_key(loser, b"k"))


def test_default_and_unknown_names_cannot_be_dropped_or_truncated():
    r = reg()
    for call in (lambda: r.drop("default", dropped=5),
                 lambda: r.truncate("default", created=5, creator="n1")):
        with pytest.raises(InvalidRequest, match="holds the keys written without one"):
            call()
    with pytest.raises(InvalidRequest, match="unknown namespace 'nope'"):
        r.drop("nope", dropped=5)
    with pytest.raises(InvalidRequest, match="unknown namespace 'nope'"):
        r.truncate("nope", created=5, creator="n1")
    r.create("x", members=3, created=1, creator="n1")
    with pytest.raises(InvalidRequest, match="dropped=0 must be an HLC timestamp"):
        r.drop("x", dropped=0)


def test_a_create_after_a_drop_is_the_next_generation_under_its_own_prefix():
    r = reg()
    old = r.create("carts", members=3, created=10, creator="n1")
    r.drop("carts", dropped=20)
    assert r.dead_gens == {b"carts": 1}
    new = r.create("carts", n=2, conflicts="lww", members=3, created=30, creator="n2")
    assert r.dead_gens == {b"carts": 1}  # (the create ends nothing more: no purge again)
    assert new.gen == 1 and r.get("carts") == new and not new.dropped
    k0, k1 = nsm.storage_key(old, b"k"), nsm.storage_key(new, b"k")
    assert k1 == b"\x00\x02\x01carts#1\x00k"
    assert nsm.split_key(k1) == ("carts", b"k") and nsm.generation(k1) == (b"carts", 1)
    assert nsm.key_settings(k1) == (2, True) and nsm.head_of_key(k1) == nsm.STAMP_BYTES
    assert r.is_dead(k0) and not r.is_dead(k1)
    # a generation this registry has not heard of yet (a truncate elsewhere) is not dead
    assert not r.is_dead(nsm.storage_key(msgspec.structs.replace(new, gen=2), b"k"))
    # a malformed generation is not judged (never dead, never parsed as another name)
    for bad in (b"\x00\x03\x00carts#\x00k", b"\x00\x03\x00carts#01\x00k",
                b"\x00\x03\x00carts#x\x00k", b"\x00\x03\x00carts#99999999999\x00k"):
        assert nsm.generation(bad) is None and not r.is_dead(bad), bad
    # the same settings again: idempotent on the live generation
    assert r.create("carts", n=2, conflicts="lww", members=3, created=40, creator="n3") == new
    # the expiry rules follow the prefix of the live generation only
    r2 = reg()
    s0 = r2.create("s", conflicts="lww", ttl=60, members=3, created=1, creator="n1")
    r2.drop("s", dropped=2)
    s1 = r2.create("s", conflicts="lww", ttl=90, members=3, created=3, creator="n1")
    assert r2.expiry_of(nsm.storage_key(s1, b"k")) == (90_000, 0)
    assert r2.expiry_of(nsm.storage_key(s0, b"k")) is None


def test_truncate_keeps_the_settings_under_a_new_generation():
    r = reg()
    ns = r.create("s", conflicts="lww", ttl=60, pr=1, members=3, created=10, creator="n1")
    ns = r.alter("s", r=1, changed=15, now_ms=0)
    k0 = nsm.storage_key(ns, b"k")
    t = r.truncate("s", created=20, creator="n2", write_ttl=True)
    assert (t.gen, t.created, t.creator, t.changed) == (1, 20, "n2", 0)
    assert t.settings() == ns.settings() and t.write_ttl  # (upgraded: every member has it)
    assert r.get("s") == t and r.is_dead(k0) and not r.is_dead(nsm.storage_key(t, b"k"))
    t2 = r.truncate("s", created=30, creator="n1")
    assert t2.gen == 2 and t2.write_ttl and r.is_dead(nsm.storage_key(t, b"k"))
    assert nsm.storage_key(t2, b"k")[3:].startswith(b"s#2\x00")
    r.create("sib", members=3, created=40, creator="n1")
    assert not r.truncate("sib", created=41, creator="n1", write_ttl=True).write_ttl


def test_generations_run_out_clearly():
    r = reg()
    r.merge([Namespace(name="x", n=3, r=2, w=2, created=1, creator="n1", gen=nsm.MAX_GEN)])
    with pytest.raises(InvalidRequest, match="truncated 4294967295 times: use another name"):
        r.truncate("x", created=2, creator="n1")


def test_tombstones_travel_by_gossip_and_cluster_json_and_count_toward_the_cap():
    r = reg()
    r.create("a", members=3, created=1, creator="n1")
    r.drop("a", dropped=2)
    r.create("b", members=3, created=3, creator="n1")
    r.truncate("b", created=4, creator="n1")
    for back in (Registry.decode(r.encode()), Registry.from_builtins(r.to_builtins())):
        assert back == r and back.dead_gens == {b"a": 1, b"b": 1}
        assert back.names() == ["b", "default"]
    # an older registry (without gen/dropped) decodes as generation 0, live
    plain = reg()
    plain.create("a", members=3, created=1, creator="n1")
    legacy = [{k: v for k, v in d.items() if k not in ("gen", "dropped")}
              for d in plain.to_builtins()]
    assert Registry.from_builtins(legacy) == plain
    # out of range, or the default namespace dropped: refused whole
    for bad in ({"gen": nsm.MAX_GEN + 1}, {"dropped": 1 << 64}):
        items = r.to_builtins()
        items[0].update(bad)
        with pytest.raises(ValueError, match="bad namespace 'a'"):
            Registry.from_builtins(items)
    items = r.to_builtins()
    items[2]["dropped"] = 5
    with pytest.raises(ValueError, match="default namespace is never dropped"):
        Registry.from_builtins(items)
    # the cap counts tombstones: a dropped name still holds its place
    full = reg()
    for i in range(nsm.MAX_NAMESPACES - 1):
        full.create(f"n{i}", members=3, created=i + 1, creator="n1")
    full.drop("n0", dropped=5000)
    with pytest.raises(InvalidRequest, match="dropped ones included"):
        full.create("fresh", members=3, created=6000, creator="n1")
    assert full.create("n0", members=3, created=6001, creator="n1").gen == 1


def test_the_sweep_drops_dead_keys_only_while_purging():
    """expiry.Sweep with `dead`: a full pass drops every dead key (any namespace mode),
    keeps the rest, and without `dead` leaves them (the purge is over)."""

    class Store(dict):
        def key_hashes(self, lo, hi):
            return [(k, h) for k, h in ((k, hash(k) % (1 << 64)) for k in self)
                    if lo <= h <= hi]

    r = reg()
    a = r.create("a", members=3, created=1, creator="n1")
    b = r.create("b", conflicts="lww", members=3, created=2, creator="n1")
    store = Store({nsm.storage_key(ns, b"k%d" % i): b"v" for ns in (a, b) for i in range(50)})
    store[b"plain"] = b"v"
    r.drop("a", dropped=3)
    sweep = expiry.Sweep()
    dropped = []
    while sweep.passes == 0:
        sweep.step(store, r.expiry_of, 0, dropped.append, 1.0, 0)  # not purging: nothing
    assert dropped == []
    while sweep.passes == 1:
        sweep.step(store, r.expiry_of, 0, dropped.append, 1.0, 0, r.is_dead)
    assert sorted(dropped) == sorted(k for k in store if nsm.split_key(k)[0] == "a")


# ---- convergence and monotonic death under any gossip order --------------------------------
steps = st.lists(st.one_of(
    st.tuples(st.just("create"), st.integers(0, 3), st.sampled_from(["a", "b"]),
              st.sampled_from(nsm.MODES)),
    st.tuples(st.just("alter"), st.integers(0, 3), st.sampled_from(["a", "b"]),
              st.integers(1, 3)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.sampled_from(["a", "b"])),
    st.tuples(st.just("truncate"), st.integers(0, 3), st.sampled_from(["a", "b"])),
    st.tuples(st.just("gossip"), st.integers(0, 3), st.integers(0, 3))), max_size=40)


@given(steps, st.data())
@settings(max_examples=300, deadline=None)
def test_drops_and_truncates_in_any_gossip_order_converge_and_death_is_final(plan, data):
    nodes = [reg() for _ in range(4)]
    clock = 100
    keys: set[bytes] = set()  # every stored key any generation of a/b ever had, per mode
    dead_seen: list[set[bytes]] = [set() for _ in nodes]

    def note(i: int) -> None:
        for ns in nodes[i].versions():
            if ns.name != nsm.DEFAULT:
                keys.add(nsm.storage_key(ns, b"k"))
        for j, n in enumerate(nodes):
            now = {k for k in keys if n.is_dead(k)}
            assert dead_seen[j] <= now, "a key judged dead came back to life"
            dead_seen[j] = now

    for step in plan:
        clock += data.draw(st.integers(0, 2))
        kind, i = step[0], step[1]
        try:
            if kind == "create":
                nodes[i].create(step[2], 3, conflicts=step[3], members=3, created=clock,
                                creator=f"n{i}")
            elif kind == "alter":
                nodes[i].alter(step[2], r=step[3], changed=clock, now_ms=clock)
            elif kind == "drop":
                nodes[i].drop(step[2], dropped=clock)
            elif kind == "truncate":
                nodes[i].truncate(step[2], created=clock, creator=f"n{i}")
            else:
                nodes[i].merge(Registry.decode(nodes[step[2]].encode()))
        except InvalidRequest:
            pass
        note(i)
    for _ in range(2):
        for i in data.draw(st.permutations(range(4))):
            for j in range(4):
                nodes[i].merge(nodes[j])
            note(i)
    assert all(n == nodes[0] for n in nodes)
    for k in keys:  # every node judges every key alike, and a live name's key is alive
        assert len({n.is_dead(k) for n in nodes}) == 1, k
    for ns in nodes[0]:
        assert not nodes[0].is_dead(nsm.storage_key(ns, b"k")), ns


def test_the_wire_bounds_the_generation_as_the_registry_does():
    from zkv import wire
    assert wire.MAX_NS_GEN == nsm.MAX_GEN and wire.MAX_NS_N == nsm.MAX_N
    assert wire.MAX_NS_NAME == 64 and not nsm.valid_name("x" * 65)


def test_a_malformed_key_never_poisons_the_verdicts():
    """is_dead memoises its verdict per stored-key prefix: a key without the prefix's end
    (from a peer) is judged not dead and leaves no verdict for a real prefix to find."""
    r = reg()
    r.create("cart", members=3, created=1, creator="n1")
    cart = r.get("cart")
    r.drop("cart", dropped=2)
    assert not r.is_dead(b"\x00\x03\x00carts")  # (its [:-1] is cart's prefix)
    assert r.is_dead(nsm.storage_key(cart, b"k"))
    assert not r.is_dead(b"\x00\x03\x00cart#9\x00k")  # (a generation not heard of yet)
    r.create("cart", members=3, created=4, creator="n1")  # the memo follows the registry
    assert r.is_dead(nsm.storage_key(cart, b"k"))
    assert not r.is_dead(nsm.storage_key(r.get("cart"), b"k"))


def test_each_version_of_a_namespace_has_its_own_tag():
    """namespaces.version_tag (what Read.ns_ver and Keys.ns_ver carry): a create, an alter, a
    truncate and a create after a drop each make a version with another tag; the same
    version has the same tag wherever it is held (a copy relayed by gossip), and the
    registry's `tags` holds its live names' only."""
    r = reg()
    tags = [nsm.version_tag(r.create("carts", members=3, created=10, creator="n1"))]
    assert r.tags["carts"] == tags[0] and tags[0] != 0
    tags.append(nsm.version_tag(r.alter("carts", r=1, changed=20, now_ms=0)))
    tags.append(nsm.version_tag(r.truncate("carts", created=30, creator="n1")))
    r.drop("carts", dropped=40)
    assert "carts" not in r.tags
    tags.append(nsm.version_tag(r.create("carts", conflicts="lww", members=3, created=50,
                                         creator="n2")))
    assert len(set(tags)) == 4 and r.tags["carts"] == tags[-1]
    relayed = Registry.decode(r.encode())
    assert relayed.tags == r.tags and relayed.tags.keys() == {"default", "carts"}
