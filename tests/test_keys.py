"""Listing a namespace's keys (Keys / KeysOk, zkv/node/listing.py, Client.keys, `zkv keys`):
every partition's pages together are exactly the live keys, whatever the page size, prefix
and namespace; a node answers only for partitions whose copy it vouches for; a listing
survives a dead owner and says which partition it cannot list."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_helpers import ZKV, one_line_error, zkv
from test_security_core import OUTSIDER, Node

from zkv import wire
from zkv.client import AsyncClient, Client
from zkv.errors import Unavailable
from zkv.node import namespaces as nss
from zkv.node.core import ADMIN, CLIENT


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

    async def async_keys() -> set[bytes]:
        async with AsyncClient(ep, timeout=5) as ac:
            return {k async for k in ac.keys("sess", page=3)}

    assert asyncio.run(async_keys()) == {b"s%d" % i for i in range(50)}
    out = zkv("keys", "--count", "--node", ep[0])
    assert out.returncode == 0 and out.stdout == "490\n", out
    out = subprocess.run([ZKV, "keys", "-0", "--prefix", "user:49", "--node", ep[1]],
                         capture_output=True, timeout=60)
    assert sorted(out.stdout.split(b"\0")[:-1]) == sorted(k for k in live
                                                          if k.startswith(b"user:49"))
    assert zkv("keys", "--limit", "5", "--node", ep[0]).stdout.count("\n") == 5
    assert "unknown namespace" in one_line_error(zkv("keys", "--namespace", "nope", "--node",
                                                     ep[0]))
    # one node dead: every partition still has an owner to list it
    c.kill("node3")
    with Client(ep[:2], timeout=2) as cl:
        assert set(cl.keys()) == live
        assert set(cl.keys("sess")) == {b"s%d" % i for i in range(50)}
    # two dead: the N=3 keys are all on node1; some N=2 partitions have no owner left
    c.kill("node2")
    with Client(ep[:1], timeout=1) as cl:
        assert set(cl.keys()) == live
        with pytest.raises(Unavailable, match=r"partition \d+: no owner could list its keys"):
            set(cl.keys("sess"))
    assert os.path.isdir(c.node("node1").data_dir)


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
