"""Namespaces on real zkv-node processes (issue 15, DESIGN.md 2.6): persistence, gossip to
a node that joins later, placement per N, last-write-wins under concurrent writers, refused
settings, and an OR-set shopping cart through Client.update()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import zmq
from conftest import FAST, held

import zkv
from zkv import wire
from zkv.crdt import ORSet
from zkv.local import LocalCluster
from zkv.node import namespaces as nss
from zkv.node.namespaces import Registry


def ask(endpoint: str, msg):
    """One request to one node, as an admin connection (plain text), its one reply."""
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send(wire.encode_one(msg))
        if not s.poll(3000):
            raise TimeoutError(endpoint)
        (reply,) = wire.decode(s.recv(), 1 << 30)
        return reply
    finally:
        ctx.destroy(0)


def names_on(endpoint: str) -> list[str]:
    reply = ask(endpoint, wire.NsList(1))
    assert isinstance(reply, wire.NsOk), reply
    return Registry.decode(reply.registry).names()


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored(c: zkv.Client, namespace: str, key: bytes) -> bytes:
    ns = next(x for x in c.namespaces() if x["name"] == namespace)
    return nss.storage_key(nss.Namespace(**ns), key)


@pytest.fixture(scope="module")
def cluster5(tmp_path_factory):
    c = LocalCluster(5, str(tmp_path_factory.mktemp("ns5")), base_port=None, extra_args=FAST)
    c.start()
    yield c
    c.stop()


def test_namespaces_survive_restarts_and_reach_a_node_that_joins_later(tmp_path):
    cl = LocalCluster(4, str(tmp_path / "j"), base_port=None, extra_args=FAST)
    late = cl.nodes.pop()  # starts after the namespace exists
    try:
        cl.start()
        with zkv.Client(cl.endpoints, timeout=3.0) as c:
            c.namespace_create("carts", n=2)
            c.namespace_create("sessions", n=3, conflicts="lww")
            c.put(b"k", b"cart-v", namespace="carts")
            c.put(b"k", b"sess-v", namespace="sessions")
        for n in cl.nodes:  # saved with the ring
            wait_for(lambda n=n: os.path.exists(os.path.join(n.data_dir, "cluster.json")) and
                     {"carts", "sessions"} <= {x["name"] for x in json.load(
                         open(os.path.join(n.data_dir, "cluster.json"))).get("namespaces", [])},
                     what=f"{n.id}'s cluster.json to list the namespaces")
        # a node that joins later learns them (JoinOk, then gossip)
        cl.nodes.append(late)
        cl._spawn(late, cl.nodes[0].listen)
        cl.wait_converged()
        wait_for(lambda: {"carts", "sessions"} <= set(names_on(late.listen)),
                 what="the late node to know the namespaces")
        # every node stopped, then started again: the namespaces and their data are back
        cl.stop()
        cl.start()
        for n in cl.nodes:
            assert {"default", "carts", "sessions"} <= set(names_on(n.listen)), n.id
        with zkv.Client(cl.endpoints, timeout=3.0) as c:
            def read_back():  # links between freshly restarted nodes may take a moment
                try:
                    return c.get(b"k", namespace="carts").values == [b"cart-v"]
                except zkv.QuorumError:
                    return False
            wait_for(read_back, what="the namespaced key to be readable after the restart")
            assert c.get(b"k", namespace="sessions").values == [b"sess-v"]
            assert c.get(b"k").values == []  # the default namespace's k is another key
            settings = {x["name"]: (x["n"], x["conflicts"]) for x in c.namespaces()}
            assert settings["carts"] == (2, "siblings") and settings["sessions"] == (3, "lww")
    finally:
        cl.stop()


@pytest.mark.parametrize("n", [1, 5])
def test_n_places_exactly_n_replicas(cluster5, n):
    name = f"place{n}"
    keys = [b"key-%d" % i for i in range(30)]
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        c.namespace_create(name, n=n)
        for k in keys:
            c.put(k, b"v-" + k, namespace=name)
        skeys = [stored(c, name, k) for k in keys]

        def counts():
            return [sum(held(ep, sk) is not None for ep in cluster5.endpoints) for sk in skeys]

        wait_for(lambda: all(x == n for x in counts()), what=f"{n} replicas of every key")
        # anti-entropy exchanges with the owners of this N only: nothing spreads further
        for ep in cluster5.endpoints:
            c.repair(node=ep)
        time.sleep(1.5)
        assert counts() == [n] * len(keys)
        for k in keys:
            assert c.get(k, namespace=name).values == [b"v-" + k]


def test_lww_concurrent_writers_one_value_never_older_than_acknowledged(cluster5):
    name = "lwwtest"
    key = b"profile-photo"
    writers, rounds = 4, 30
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        c.namespace_create(name, n=3, conflicts="lww")
    written: dict[bytes, tuple[float, float]] = {}  # value -> (write started, acked)
    reads: list[tuple[int, float, bytes | None, list[bytes]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
                for seq in range(rounds):
                    v = b"w%d-%03d" % (i, seq)
                    t0 = time.monotonic()
                    with lock:
                        written[v] = (t0, float("inf"))
                    c.put(key, v, namespace=name)
                    with lock:
                        written[v] = (t0, time.monotonic())
                    got = c.get(key, namespace=name)
                    with lock:
                        reads.append((i, t0, v, got.values))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(reads) == writers * rounds
    for i, my_start, mine, values in reads:
        assert len(values) == 1, values  # at most one value, and something was written
        (v,) = values
        assert v in written, v
        # never older than my own write acknowledged before this read began: not an earlier
        # write of mine, and no write that was acknowledged before mine even started
        if v.startswith(b"w%d-" % i):
            assert v >= mine, (v, mine)
        else:
            _, acked = written[v]
            assert not acked + 0.002 < my_start, (v, mine)


def test_lww_get_context_deletes(cluster5):
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        c.namespace_create("lwwdel", n=3, conflicts="lww")
        c.put(b"t", b"one", namespace="lwwdel")
        c.put(b"t", b"two", namespace="lwwdel")  # blind: still one value (the later)
        got = c.get(b"t", namespace="lwwdel")
        assert got.values == [b"two"]
        c.delete(b"t", got.context, namespace="lwwdel")
        assert c.get(b"t", namespace="lwwdel").values == []


def test_bad_settings_and_unknown_namespace_are_refused(cluster5):
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        for kw, text in [({"n": 0}, "n=0"), ({"n": 6}, "only 5 member"),
                         ({"conflicts": "crdt"}, "conflicts='crdt'"),
                         ({"n": 2, "r": 3}, "r=3")]:
            with pytest.raises(zkv.InvalidRequest, match=text):
                c.namespace_create("badns", **kw)
        with pytest.raises(zkv.InvalidRequest, match="name"):
            c.namespace_create("no spaces")
        for call in (lambda: c.get(b"k", namespace="nope"),
                     lambda: c.put(b"k", b"v", namespace="nope"),
                     lambda: c.delete(b"k", namespace="nope")):
            with pytest.raises(zkv.InvalidRequest, match="unknown namespace 'nope'"):
                call()
        c.namespace_create("fixed", n=2)
        assert c.namespace_create("fixed", n=2)["n"] == 2  # idempotent
        with pytest.raises(zkv.InvalidRequest, match="n and conflicts are fixed"):
            c.namespace_create("fixed", n=3)
        with pytest.raises(zkv.InvalidRequest, match="0x00"):
            c.put(b"\x00raw", b"v")  # the default namespace's reserved prefix
    # the node checks too (a client that skips the checks)
    reply = ask(cluster5.endpoints[0], wire.NsCreate(1, "rawbad", 2, 0, 0, "bogus"))
    assert isinstance(reply, wire.Error) and reply.code == wire.E_INVALID
    assert "conflicts='bogus'" in reply.message
    reply = ask(cluster5.endpoints[0], wire.Get(2, b"k", 0, "a b"))
    assert isinstance(reply, wire.Error) and "unknown namespace" in reply.message
    # CLI: one line, non-zero exit
    for argv in (["namespace", "create", "x", "--n", "0"],
                 ["get", "k", "--namespace", "nope"]):
        out = subprocess.run([sys.executable, "-m", "zkv.cli", *argv, "--node",
                              cluster5.endpoints[0]], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "InvalidRequest" in out.stderr


def _cli(cluster) -> Callable[..., subprocess.CompletedProcess]:
    """`zkv ARGV... --node` the cluster's second node, run as a user would."""
    ep = cluster.endpoints[1]

    def zkv_cli(*argv):
        return subprocess.run([sys.executable, "-m", "zkv.cli", *argv, "--node", ep],
                              capture_output=True, text=True, timeout=30)
    return zkv_cli


def test_cli_namespace_create_list_and_use(cluster5):
    zkv_cli = _cli(cluster5)
    out = zkv_cli("namespace", "create", "clins", "--n", "2", "--conflicts", "lww")
    assert out.returncode == 0, out.stderr
    assert "n=2 r=2 w=2 conflicts=lww" in out.stdout
    out = zkv_cli("namespace", "list", "--json")
    got = {x["name"]: x for x in json.loads(out.stdout)}
    assert got["clins"]["n"] == 2 and got["default"]["n"] == 3
    assert "clins" in zkv_cli("namespace", "list").stdout
    assert zkv_cli("put", "a", "1", "--namespace", "clins").returncode == 0
    out = zkv_cli("get", "a", "--namespace", "clins")
    assert out.returncode == 0 and out.stdout.strip() == "1"
    assert zkv_cli("get", "a").returncode == 3  # not in the default namespace
    assert zkv_cli("delete", "a", "--namespace", "clins").returncode == 0
    assert zkv_cli("get", "a", "--namespace", "clins").returncode == 3
    # default primary quorums: created, listed, used by a request giving none, altered
    out = zkv_cli("namespace", "create", "acct", "--pr", "2", "--pw", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "namespace acct: n=3 r=2 w=2 pr=2 pw=3 conflicts=siblings"
    listed = zkv_cli("namespace", "list").stdout
    assert any(line.split() == ["acct", "3", "2", "2", "2", "3", "siblings", "-"]
               for line in listed.splitlines()), listed
    assert zkv_cli("put", "b", "1", "--namespace", "acct").returncode == 0
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        assert c.get(b"b", namespace="acct", r=3).values == [b"1"]
        assert c.core.ns_cache["acct"].pw == 3  # (learnt by the get's routing)
    out = zkv_cli("namespace", "alter", "acct", "--pw", "0")
    assert out.returncode == 0 and "pr=2 conflicts" in out.stdout, out
    # --n on alter read as --node ("--node 2: no such member"): N is named as fixed
    out = zkv_cli("namespace", "alter", "acct", "--n", "2")
    assert out.returncode != 0 and "N is fixed when a namespace is created" in out.stderr, out
    out = zkv_cli("namespace", "create", "bad", "--pr", "4")
    assert out.returncode != 0 and "pr=4: must be between 0 (none) and n=3" in out.stderr
    long = "l" * 64  # the longest name: the columns widen to it
    assert zkv_cli("namespace", "create", long).returncode == 0
    lines = zkv_cli("namespace", "list").stdout.splitlines()
    ends = set()  # where the N column ends on each line
    for line in lines:
        name, n = line.split()[:2]
        ends.add(line.index(" " + n + " ", len(name)) + 1 + len(n))
    assert len(ends) == 1 and any(line.startswith(long + " ") for line in lines), lines


def test_quorums_by_name_in_listings_and_namespace_settings(cluster5):
    """README: every r, w, pr and pw (API and CLI) may be given by name. keys()/items(),
    namespace create/alter and `zkv keys/dump --r`, `zkv namespace create/alter --r ...`
    refused them ("r must be 1 to 16 owners, got 'quorum'", "invalid int value"); and a
    create's r past the cluster's N said "n=16"."""
    zkv_cli = _cli(cluster5)
    with zkv.Client(cluster5.endpoints, timeout=5.0) as c:
        made = c.namespace_create("named", n=5, r="quorum", w="all", pr="one")
        assert (made["n"], made["r"], made["w"], made["pr"]) == (5, 3, 5, 1)
        made = c.namespace_create("named3", r="all", w="one")  # n: the cluster's N (3)
        assert (made["n"], made["r"], made["w"]) == (3, 3, 1)
        altered = c.namespace_alter("named", r="all", pw="quorum")
        assert (altered["r"], altered["w"], altered["pw"]) == (5, 5, 3)
        with pytest.raises(zkv.InvalidRequest, match="r=5: must be between 1 and n=3"):
            c.namespace_create("toobig", r=5)
        with pytest.raises(zkv.InvalidRequest, match="r='most'"):
            c.namespace_alter("named", r="most")
        c.put_many([(b"n%d" % i, b"v") for i in range(20)], namespace="named")
        assert sorted(c.keys(namespace="named", r="quorum")) == sorted(b"n%d" % i
                                                                       for i in range(20))
        assert len(list(c.items(namespace="named", r="all"))) == 20
        with pytest.raises(zkv.InvalidRequest, match="r='some'"):
            list(c.keys(r="some"))
    out = zkv_cli("namespace", "create", "named2", "--r", "quorum", "--w", "one")
    assert out.returncode == 0 and "n=3 r=2 w=1" in out.stdout, out
    out = zkv_cli("namespace", "alter", "named2", "--w", "all")
    assert out.returncode == 0 and "w=3" in out.stdout, out
    out = zkv_cli("keys", "--count", "--r", "quorum", "--namespace", "named")
    assert out.returncode == 0 and out.stdout.strip() == "20", out
    out = zkv_cli("dump", "--r", "all", "--namespace", "named")
    assert out.returncode == 0 and '{"zkv_dump_end": 20, "chain": ' in out.stdout, out


def test_orset_cart_keeps_every_add_under_concurrent_writers(cluster5):
    name, key = "carts5", b"cart:42"
    writers, items = 4, 12
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        c.namespace_create(name, n=3)
        c.update(key, ORSet.updater(key, add=["pen", "mug"], namespace=name), namespace=name)
    errors: list[BaseException] = []

    def shopper(i: int) -> None:
        try:
            with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
                for j in range(items):
                    c.update(key, ORSet.updater(key, add=[f"item-{i}-{j}"], namespace=name),
                             namespace=name)
                    if i == 0 and j == 3:
                        c.update(key, ORSet.updater(key, remove=["pen"], namespace=name),
                                 namespace=name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        cart = ORSet.from_siblings(c.get(key, namespace=name, r=3).values).elements
    want = {f"item-{i}-{j}" for i in range(writers) for j in range(items)} | {"mug"}
    assert cart == want


async def _async_round_trip(endpoints):
    async with zkv.AsyncClient(endpoints, timeout=3.0) as c:
        await c.namespace_create("asyncns", n=2, conflicts="lww")
        assert "asyncns" in [x["name"] for x in await c.namespaces()]
        await c.put(b"a", b"1", namespace="asyncns")
        await c.put(b"a", b"2", namespace="asyncns")
        got = await c.get(b"a", namespace="asyncns")
        assert got.values == [b"2"]
        await c.update(b"a", lambda vs: b"3", namespace="asyncns")
        got = await c.get(b"a", namespace="asyncns")
        await c.delete(b"a", got.context, namespace="asyncns")
        assert (await c.get(b"a", namespace="asyncns")).values == []


def test_async_client_namespaces(cluster5):
    import asyncio

    asyncio.run(_async_round_trip(cluster5.endpoints))


def test_ttl_values_expire_on_real_nodes(cluster5):
    """`zkv namespace create --ttl`: a value is read and listed until its ttl runs out, then
    found by no read (R=1..3) or listing, and the owners' sweeps delete it from their stores
    (`zkv status` says so). A ttl on a siblings namespace, or a bad duration, is refused."""
    zkv_cli = _cli(cluster5)
    out = zkv_cli("namespace", "create", "tok", "--conflicts", "lww", "--ttl", "3")
    assert out.returncode == 0, out.stderr
    assert "conflicts=lww ttl=3s" in out.stdout
    listed = zkv_cli("namespace", "list").stdout
    assert any(line.split()[0] == "tok" and line.split()[-1] == "3s"
               for line in listed.splitlines()), listed
    out = zkv_cli("namespace", "create", "bad", "--ttl", "1h")
    assert out.returncode != 0 and "needs conflicts=lww" in out.stderr
    out = zkv_cli("namespace", "create", "bad", "--conflicts", "lww", "--ttl", "5x")
    assert out.returncode == 2 and "not a duration" in out.stderr
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        assert next(x for x in c.namespaces() if x["name"] == "tok")["ttl"] == 3

        def listed(what=c.keys):  # (a cluster started a moment ago: its owners vouch soon)
            try:
                return list(what("tok")) or [None]
            except zkv.Unavailable:
                return None
        wait_for(listed, 15.0, "a listing")
        written = time.monotonic()
        for i in range(20):
            c.put(b"t%d" % i, b"v%d" % i, namespace="tok", w=3)
        assert c.get(b"t0", namespace="tok", r=3).values == [b"v0"]
        assert len(listed()) == 20
        skey = stored(c, "tok", b"t0")
        owners = [e for e in cluster5.endpoints if held(e, skey)]
        assert len(owners) == 3, owners
        time.sleep(max(0.0, written + 3.2 - time.monotonic()))
        for r in (1, 2, 3):
            assert all(not c.get(b"t%d" % i, namespace="tok", r=r).found for i in range(20))
        assert wait_for(listed) == [None] and wait_for(lambda: listed(c.items)) == [None]
        # the sweeps (a full pass every 4 s at this ttl) delete every copy

        def swept():
            docs = [c.status(e) for e in cluster5.endpoints]
            return sum(d["expiry"]["dropped"] for d in docs) == 60 and docs  # 20 keys x 3
        docs = wait_for(swept, 15.0, "the owners' sweeps")
        assert all(d["expiry"]["namespaces"] == {"tok": 3} for d in docs)
        # written again: a value again, for another ttl
        c.put(b"t0", b"again", namespace="tok")
        assert c.get(b"t0", namespace="tok").values == [b"again"]
    status = zkv_cli("status").stdout
    assert "expiry: tok ttl=3s; " in status and "expired version(s) dropped here" in status


@pytest.mark.cluster
def test_lww_put_that_waited_in_a_stopped_node_loses_to_a_later_write(make_cluster):
    """A put sits in the socket of a node stopped with SIGSTOP; meanwhile a later write of the
    key is acknowledged by the other owners. Resumed (SIGCONT), the node coordinates the put
    that waited, stamped as of when it stopped: every owner keeps the later write (stamped on
    resuming, the old put overwrote it everywhere)."""
    cl = make_cluster(3)
    x, *others = cl.endpoints
    with zkv.Client(cl.endpoints, timeout=3.0) as c:
        c.namespace_create("last", conflicts="lww")
        c.put(b"k", b"v0", namespace="last", w=3)
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(x)
        assert isinstance(ask(x, wire.RingInfo(1)), wire.RingOk)  # (connected: x serves)
        cl.pause("node1")
        s.send(wire.encode_one(wire.Put(7, b"k", b"v1-late", ns="last", w=2)))
        time.sleep(1.5)  # the put waits in node1's socket
        with zkv.Client(others, timeout=5.0) as c:
            c.put(b"k", b"v2", namespace="last", w=2)  # node2 and node3 acknowledge
        cl.resume("node1")
        assert s.poll(10_000), "the put that waited was never answered"
        (reply,) = wire.decode(s.recv(), 1 << 30)
        # taken and outranked (its peers not held down for the heartbeats it missed)
        assert isinstance(reply, wire.PutOk), reply
    finally:
        ctx.destroy(0)
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        skey = stored(c, "last", b"k")

        def on_each() -> list:
            return [[v[nss.head_of_key(skey):] for v in held(e, skey) or [] if v is not None]
                    for e in cl.endpoints]  # (each value after its head: stamp, own ttl)
        try:
            wait_for(lambda: on_each() == [[b"v2"]] * 3, 15.0, "every owner to hold one value")
        except AssertionError:
            raise AssertionError(on_each()) from None
        assert c.get(b"k", namespace="last", r=3).values == [b"v2"]
        still = c.status(x)["stood_still"]  # (`zkv status` says it)
        assert still["count"] >= 1 and still["longest"] >= 1.0, still


def test_namespace_alter_on_real_nodes(cluster5):
    """`zkv namespace alter`: a lowered ttl expires the values older than it on every read,
    the new default r and w are listed, and what cannot change is refused in one line."""
    zkv_cli = _cli(cluster5)
    assert zkv_cli("namespace", "create", "alt", "--conflicts", "lww", "--ttl", "1h"
                   ).returncode == 0
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        c.put(b"k", b"v", namespace="alt", w=3)
        assert c.get(b"k", namespace="alt", r=3).values == [b"v"]
        written = time.monotonic()
        out = zkv_cli("namespace", "alter", "alt", "--ttl", "2", "--r", "1")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "namespace alt: n=3 r=1 w=2 conflicts=lww ttl=2s"
        listed = zkv_cli("namespace", "list").stdout
        assert any(line.split() == ["alt", "3", "1", "2", "-", "-", "lww", "2s"]
                   for line in listed.splitlines()), listed
        time.sleep(max(0.0, written + 2.2 - time.monotonic()))
        for r in (1, 2, 3):
            assert not c.get(b"k", namespace="alt", r=r).found
        # the async client too, and with the ttl removed nothing comes back
        import asyncio

        async def remove_ttl():
            async with zkv.AsyncClient(cluster5.endpoints, timeout=3.0) as ac:
                return await ac.namespace_alter("alt", ttl=0)
        assert asyncio.run(remove_ttl())["ttl"] == 0
        assert not c.get(b"k", namespace="alt", r=3).found
        status = zkv_cli("status").stdout
        assert "alt ttl=none (what had expired before it was removed stays expired)" in status
        c.put(b"k", b"again", namespace="alt")
        assert c.get(b"k", namespace="alt").values == [b"again"]
    for argv, why in ((["default", "--r", "1"], "takes the cluster's settings"),
                      (["nope", "--r", "1"], "unknown namespace 'nope'"),
                      (["alt", "--r", "4"], "r=4: must be between 1 and n=3"),
                      (["alt"], "nothing to change")):
        out = zkv_cli("namespace", "alter", *argv)
        usage = why == "nothing to change"  # (a command line it cannot take: exit 2)
        assert out.returncode == (2 if usage else 1) and why in out.stderr and len(
            out.stderr.strip().splitlines()) == 1, (argv, out)


def test_a_writes_own_ttl_on_real_nodes(cluster5):
    """`zkv put --ttl` and `put(..., ttl=)`: the value is served and listed until its own ttl
    ends, then found by no read or listing while its copies stay stored (until the
    namespace's ttl); the same key rewritten without one lives on; a ttl the namespace cannot
    keep is refused in one line, and nothing is written."""
    zkv_cli = _cli(cluster5)
    assert zkv_cli("namespace", "create", "sess", "--conflicts", "lww", "--ttl", "1h"
                   ).returncode == 0
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:

        def listed() -> list | None:
            try:
                return sorted(c.keys("sess"))
            except zkv.Unavailable:  # (a cluster started a moment ago: its owners vouch soon)
                return None
        wait_for(lambda: listed() is not None, 15.0, "a listing")
        out = zkv_cli("put", "s1", "token", "--ttl", "4", "--namespace", "sess")
        assert out.returncode == 0, out.stderr
        written = time.monotonic()  # (after s1: written before it returned)
        c.put(b"s2", b"other", namespace="sess", ttl=4)
        c.put_many([(b"s3", b"a"), (b"s4", b"b")], namespace="sess", ttl=4)
        c.put(b"kept", b"v", namespace="sess", ttl=3600)
        c.update(b"s4", lambda _: b"b2", namespace="sess")  # rewritten: the namespace's ttl
        got = c.get(b"s1", namespace="sess", r=3)
        assert got.values == [b"token"]
        # when it stops being served (Redis' PTTL): its own 4 s, not the namespace's hour
        assert 0 < got.expires_at - time.time() * 1000 <= 4_000
        with zkv.Client(cluster5.endpoints, timeout=3.0, owner_reads=False) as coordinated:
            for client in (c, coordinated):  # (read by the client itself, or a coordinator)
                kept = client.get(b"kept", namespace="sess")
                assert 3_500_000 < kept.expires_at - time.time() * 1000 <= 3_600_000
                assert 0 < client.get(b"s2", namespace="sess").expires_at - time.time() * 1000 \
                    <= 4_000
        out = zkv_cli("get", "s1", "--namespace", "sess")
        assert out.stdout.strip() == "token" and "expires in " in out.stderr, out.stderr
        assert listed() == [b"kept", b"s1", b"s2", b"s3", b"s4"]
        time.sleep(max(0.0, written + 4.2 - time.monotonic()))
        for r in (1, 2, 3):
            got = c.get_many([b"s1", b"s2", b"s3", b"s4", b"kept"], namespace="sess", r=r)
            assert [x.values for x in got] == [[], [], [], [b"b2"], [b"v"]], r
        assert listed() == [b"kept", b"s4"]
        assert sorted(c.items("sess", r=2)) == [(b"kept", [b"v"]), (b"s4", [b"b2"])]
        out = zkv_cli("get", "s1", "--namespace", "sess")
        assert out.returncode == 3 and "(not found)" in out.stdout
        skey = stored(c, "sess", b"s1")
        assert len([e for e in cluster5.endpoints if held(e, skey)]) == 3  # (kept: hides older)
        # refused, saying why, before or where the write enters the cluster
        out = zkv_cli("put", "s5", "x", "--ttl", "2h", "--namespace", "sess")
        assert out.returncode == 1 and "keeps a write at most its own ttl (3600s)" in out.stderr
        out = zkv_cli("put", "s5", "x", "--ttl", "10")
        assert out.returncode == 1 and "default namespace's values have no room" in out.stderr
        with pytest.raises(zkv.InvalidRequest, match="between 1 and"):
            c.put(b"s5", b"x", namespace="sess", ttl=0)
        assert c.get(b"s5", namespace="sess", r=3).values == []


def test_a_dump_keeps_expiry_and_a_load_serves_nothing_longer(cluster5, tmp_path):
    """`zkv dump` of a namespace whose values expire records when each stops being served;
    `zkv load` leaves out what expired since and writes the rest with the time they had left
    (their own ttl, in a namespace that keeps one); into a namespace without a ttl it says
    they will be served longer."""
    zkv_cli = _cli(cluster5)
    for name, ttl in (("src", "1h"), ("dst", "1h"), ("plain", "0")):
        out = zkv_cli("namespace", "create", name, "--conflicts", "lww", "--ttl", ttl)
        assert out.returncode == 0, out.stderr
    with zkv.Client(cluster5.endpoints, timeout=3.0) as c:
        path = tmp_path / "src.jsonl"

        def dumped() -> bool:  # (a cluster started a moment ago: its owners vouch soon)
            return zkv_cli("dump", "--namespace", "src", "--out", str(path)).returncode == 0
        wait_for(dumped, 15.0, "a dump")
        c.put(b"short", b"s", namespace="src", ttl=4)
        c.put(b"long", b"l", namespace="src")  # (the namespace's hour)
        written = time.monotonic()
        assert dumped()
        records = [json.loads(line) for line in path.read_text().splitlines()[1:-1]]
        assert sorted(r["k"] for r in records) == ["bG9uZw==", "c2hvcnQ="]
        assert all("x" in r for r in records)
        time.sleep(max(0.0, written + 4.2 - time.monotonic()))
        out = zkv_cli("load", str(path), "--namespace", "dst")
        assert out.returncode == 0, out.stderr
        assert "1 key(s) loaded into namespace 'dst', 1 left out (expired since the dump)" \
            in out.stdout
        assert c.get(b"short", namespace="dst", r=3).values == []
        assert c.get(b"long", namespace="dst", r=3).values == [b"l"]
        skey = stored(c, "dst", b"long")
        [v] = [x for e in cluster5.endpoints for x in held(e, skey) or [] if x][:1]
        assert 3590 <= int.from_bytes(v[8:12], "big") <= 3600  # (the hour it had left)
        out = zkv_cli("load", str(path), "--namespace", "plain")
        assert out.returncode == 0 and "1 key(s) loaded" in out.stdout, out.stderr
        assert "1 key(s) will be served longer than the dump says: namespace 'plain' has " \
            "no ttl" in out.stderr


def _status(endpoint: str) -> dict:
    reply = ask(endpoint, wire.Status(1))
    assert isinstance(reply, wire.StatusOk), reply
    return reply.info


def test_drop_and_truncate_on_real_nodes(make_cluster):
    """`zkv namespace drop` and `truncate` on four real nodes, one of them SIGSTOPped through
    the drop: refused without --yes, the namespace gone for requests at once, every node's
    store purged once the stopped one resumes (its keys counted in `zkv status`), the name
    made again empty, a truncate keeping the settings, and all of it after a restart."""
    cl = make_cluster(4)
    zkv_cli = _cli(cl)
    assert zkv_cli("namespace", "create", "carts").returncode == 0
    keys = [b"k%d" % i for i in range(60)]
    with zkv.Client(cl.endpoints, timeout=3.0) as c:
        c.put_many([(k, b"old-" + k) for k in keys], w=3, namespace="carts")
        held = [_status(ep)["keys"] for ep in cl.endpoints]  # (carts' copies only, so far)
        assert sum(held) >= 3 * 60, held
        out = zkv_cli("namespace", "drop", "carts")
        assert out.returncode == 1 and "add --yes" in out.stderr and len(
            out.stderr.strip().splitlines()) == 1, out
        assert c.get(b"k1", namespace="carts").values == [b"old-k1"]  # (nothing dropped)
        stopped = cl.nodes[3]
        cl.pause(stopped.id)
        try:
            out = zkv_cli("namespace", "drop", "carts", "--yes")
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("namespace carts: dropped"), out.stdout
            for argv in (("get", "k1"), ("put", "k1", "x"), ("keys", "--count")):
                out = zkv_cli(*argv, "--namespace", "carts")
                assert out.returncode == 1 and "namespace 'carts' was dropped" in out.stderr, \
                    (argv, out)
            assert "carts" not in zkv_cli("namespace", "list").stdout
            with pytest.raises(zkv.InvalidRequest, match="was dropped"):
                c.get(b"k1", namespace="carts")
        finally:
            cl.resume(stopped.id)
        # every node purges its copies: the stopped one once it hears of the drop
        wait_for(lambda: all(_status(ep)["keys"] == 0 for ep in cl.endpoints), timeout=30,
                 what="every node to purge the dropped keys")
        purged = [_status(ep)["purge"]["purged"] for ep in cl.endpoints]
        assert sum(purged) >= 3 * 60 and purged[3] > 0, purged  # (every copy; the stopped
        # node's too: a copy a previous owner kept until the ring settled may go that way)
        status_text = zkv_cli("status").stdout
        assert "dropped or truncated: carts;" in status_text, status_text
        # the name again: empty, a new generation
        assert zkv_cli("namespace", "create", "carts").returncode == 0
        assert zkv_cli("keys", "--count", "--namespace", "carts").stdout.strip() == "0"
        c.put(b"k1", b"new", namespace="carts")
        assert c.get(b"k1", namespace="carts", r=3).values == [b"new"]
        assert zkv_cli("namespace", "create", "sess", "--conflicts", "lww", "--ttl", "1h"
                       ).returncode == 0
        c.put_many([(k, b"old-" + k) for k in keys], w=3, namespace="sess")
        # truncate: the settings kept, every value gone, writable at once
        out = zkv_cli("namespace", "truncate", "sess", "--yes")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "namespace sess: truncated, n=3 r=2 w=2 conflicts=lww " \
                                     "ttl=1h", out.stdout
        assert not c.get(b"k2", namespace="sess", r=3).found
        assert zkv_cli("keys", "--count", "--namespace", "sess").stdout.strip() == "0"
        c.put(b"k2", b"new", namespace="sess")
        import asyncio

        async def truncate_again():
            async with zkv.AsyncClient(cl.endpoints, timeout=3.0) as ac:
                return await ac.namespace_truncate("sess")
        assert asyncio.run(truncate_again())["gen"] == 2
        assert not c.get(b"k2", namespace="sess", r=3).found
        c.put(b"k3", b"kept", namespace="sess", w=3)
        for argv, why in ((("drop", "default", "--yes"), "holds the keys written without one"),
                          (("truncate", "nope", "--yes"), "unknown namespace 'nope'")):
            out = zkv_cli("namespace", *argv)
            assert out.returncode == 1 and why in out.stderr, (argv, out)
    # after a restart of every node: the same namespaces, nothing old back
    cl.stop()
    cl.start()
    with zkv.Client(cl.endpoints, timeout=3.0) as c:
        def read_back():
            try:
                return c.get(b"k3", namespace="sess").values == [b"kept"]
            except (zkv.QuorumError, zkv.Unavailable):
                return False
        wait_for(read_back, what="the truncated namespace's new key after the restart")
        assert c.get(b"k1", namespace="carts", r=3).values == [b"new"]
        assert sorted(c.keys(namespace="sess")) == [b"k3"]
        assert sorted(c.keys(namespace="carts")) == [b"k1"]
        gens = {x["name"]: x["gen"] for x in c.namespaces()}
        assert gens["carts"] == 1 and gens["sess"] == 2


def test_a_client_that_cached_a_namespace_made_again_reads_the_new_one(cluster5):
    """A long-lived client cached a namespace that another process then dropped and made
    again with the other conflict mode (n=5: every node owns every key, so its owner reads
    still reached owners). It read lww stamps as values, and sibling values as stamps, and
    its update() then retired siblings it never saw. Now the owners hold another version
    than the one it sends (Read.ns_ver) and read nothing; it learns the namespaces again and
    answers as a fresh client does, in get, update and items."""
    zkv_cli = _cli(cluster5)
    with zkv.Client(cluster5.endpoints, timeout=3.0) as app, \
            zkv.Client(cluster5.endpoints, timeout=3.0) as other:
        for name, first, then in (("remade1", "lww", "siblings"),
                                  ("remade2", "siblings", "lww")):
            assert app.namespace_create(name, n=5, conflicts=first)["conflicts"] == first
            app.put(b"cart", b"old", namespace=name)
            assert app.get(b"cart", namespace=name).values == [b"old"]  # (cached, read)
            assert zkv_cli("namespace", "drop", name, "--yes").returncode == 0
            assert zkv_cli("namespace", "create", name, "--n", "5", "--conflicts", then
                           ).returncode == 0
            if then == "siblings":
                other.put(b"cart", b"[book]", namespace=name)
                other.put(b"cart", b"[pen]", namespace=name)
                want = [b"[book]", b"[pen]"]
            else:
                other.put(b"cart", b"new", namespace=name)
                want = [b"new"]
            assert sorted(other.get(b"cart", namespace=name).values) == want
            assert sorted(app.get(b"cart", namespace=name).values) == want
            assert [(k, sorted(v)) for k, v in app.items(namespace=name)] == [(b"cart", want)]
            seen = []

            def merge(values, seen=seen):
                seen.append(sorted(values))
                return b"|".join(sorted(values)) + b"+ink"
            app.update(b"cart", merge, namespace=name)
            assert seen == [want]
            assert other.get(b"cart", namespace=name).values == [b"|".join(want) + b"+ink"]
