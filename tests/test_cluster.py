"""The cluster through its contract: real zkv-node processes on loopback (DESIGN.md §2.1-2.3)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import zmq
from ops_helpers import free_base_port

import zkv
from zkv import wire
from zkv.local import LocalCluster, free_ports

pytestmark = pytest.mark.cluster


def _client(cluster, **kw):
    return zkv.Client(cluster.endpoints, timeout=kw.pop("timeout", 3.0), **kw)


# ---- quorum configurations of the seed's figure 2 ------------------------------------------------
@pytest.mark.parametrize("r,w", [(2, 2), (1, 1), (1, 3), (3, 1)])
def test_figure2_configs_read_your_write(cluster3, r, w):
    with _client(cluster3) as c:
        key = f"fig2:{r}{w}:{random.random()}".encode()
        ctx = c.put(key, b"v1", w=w)
        assert isinstance(ctx, bytes) and ctx
        if r + w > 3:  # overlap: the read must see the write, on every try
            for _ in range(5):
                assert c.get(key, r=r).values == [b"v1"]
        else:  # R+W <= N may be stale for a moment, but converges
            deadline = time.monotonic() + 5
            while c.get(key, r=r).values != [b"v1"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        res = c.get(key, r=3)
        assert res.values == [b"v1"] and res.found


def test_quorum_error_when_too_few_replicas(make_cluster):
    cl = make_cluster(3)
    with _client(cl, timeout=4.0) as c:
        c.put(b"qe", b"v", w=3)
        cl.kill("node3")
        cl.wait_converged(expect_up=["node1", "node2"])
        # W=2 and R=2 still work with one replica gone
        c.put(b"qe", b"v2", context=c.get(b"qe", r=2).context, w=2)
        assert c.get(b"qe", r=2).values == [b"v2"]
        with pytest.raises(zkv.QuorumError) as exc:
            c.put(b"qe", b"v3", w=3)
        assert exc.value.required == 3 and exc.value.acked == 2
        with pytest.raises(zkv.QuorumError) as exc:
            c.get(b"qe", r=3)
        assert exc.value.required == 3 and exc.value.acked == 2
        # the W=3 put that failed its quorum was still stored where it could be
        assert b"v3" in c.get(b"qe", r=2).values


def test_primary_quorums_refuse_what_only_stand_ins_could_serve(make_cluster):
    """pr/pw on real processes: two of a key's three owners are killed (of four nodes). A
    put at w=2 is acknowledged by the third owner and the stand-in (a sloppy quorum); at
    pw=2 the same write, and a get at pr=2, are refused with what is missing (`zkv put
    --pw`, `zkv get --pr` too, exit 1), while pr=1 is served. Restarted, the owners serve
    pw=2 and pr=2 again, the refused write never having been stored."""
    cl = make_cluster(4)
    key = b"strict-key"
    with _client(cl, timeout=4.0) as c:
        c.put(key, b"v1", w=3)
        owners = list(c.core.ring.preflist_for_key(key))
        dead, alive = owners[:2], owners[2]
        for x in dead:
            cl.kill(x)
        deadline = time.monotonic() + 20  # until the survivors hold both down
        while any(m["state"] != "down" for n in cl.nodes if n.alive()
                  for m in cl.status_of(n)["members"] if m["id"] in dead):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ctx = c.get(key, r=2).context
        ctx = c.put(key, b"v2", ctx, w=2)  # the surviving owner and a stand-in
        with pytest.raises(zkv.Unavailable) as exc:
            c.put(key, b"v3", ctx, w=2, pw=2)
        said = str(exc.value)
        assert "pw=2 needs 2 of the key's owners" in said and "stand-ins do not count" in said
        assert "1 is reachable from" in said and alive in said
        with pytest.raises(zkv.Unavailable, match="pr=2 needs 2 of the key's owners"):
            c.get(key, r=2, pr=2)
        assert c.get(key, r=2, pr=1).values == [b"v2"]
        ep = cl.node(alive).listen
        out = _zkv("put", key.decode(), "v4", "--node", ep, "--pw", "2")
        assert out.returncode == 1 and "pw=2 needs 2 of the key's owners" in out.stderr, out
        out = _zkv("get", key.decode(), "--node", ep, "--pr", "2")
        assert out.returncode == 1 and "pr=2 needs 2 of the key's owners" in out.stderr, out
        out = _zkv("get", key.decode(), "--node", ep, "--pr", "1")
        assert out.returncode == 0 and out.stdout.strip() == "v2", out
        for x in dead:
            cl.restart(x)
        cl.wait_converged()
        deadline = time.monotonic() + 20  # (hints reach the owners back)
        while True:
            try:
                c.put(key, b"v5", c.get(key, r=3, pr=3).context, w=3, pw=3)
                break
            except (zkv.QuorumError, zkv.Unavailable):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert c.get(key, r=2, pr=2).values == [b"v5"]


# ---- versions: siblings, contexts, deletes ----------------------------------------------------------
def test_concurrent_writes_surface_as_siblings(cluster3):
    a = zkv.Client([cluster3.endpoints[0]], timeout=3.0)
    b = zkv.Client([cluster3.endpoints[2]], timeout=3.0)
    with a, b:
        a.put(b"cart", b"[book]", w=3)
        base = a.get(b"cart", r=3)
        a.put(b"cart", b"[book,pen]", context=base.context, w=3)
        b.put(b"cart", b"[book,mug]", context=base.context, w=3)
        res = a.get(b"cart", r=3)
        assert sorted(res.values) == [b"[book,mug]", b"[book,pen]"]
        # a write with the read's context retires both siblings
        a.put(b"cart", b"[book,mug,pen]", context=res.context, w=3)
        assert a.get(b"cart", r=3).values == [b"[book,mug,pen]"]


def test_same_context_same_coordinator_both_survive(cluster3):
    with _client(cluster3) as c:
        c.put(b"same", b"v0", w=3)
        ctx = c.get(b"same", r=3).context
        c.put(b"same", b"x", context=ctx, w=3)
        c.put(b"same", b"y", context=ctx, w=3)  # same token-aware coordinator
        assert sorted(c.get(b"same", r=3).values) == [b"x", b"y"]


def test_blind_write_never_hides_a_sibling(cluster3):
    with _client(cluster3) as c:
        c.put(b"blind", b"first", w=3)
        c.put(b"blind", b"second", w=3)  # no context: a sibling of what it did not see
        assert sorted(c.get(b"blind", r=3).values) == [b"first", b"second"]


@pytest.mark.parametrize("routing", ["token", "any"])
def test_a_chain_of_puts_begun_blind_on_a_key_holding_a_value_replaces_its_own(cluster3,
                                                                              routing):
    """A key holding v1; a blind put of A0, then puts each chained on the context the one
    before returned: the chain kept every value it wrote beside v1, and the 99th put was
    refused TooManySiblings (an outside run, every time through the key's coordinator).
    Each now replaces the one before; v1, never read, stays."""
    with _client(cluster3, routing=routing) as c:
        key = f"chain-{routing}".encode()
        c.put(key, b"v1", c.get(key, r=2).context, w=3)
        ctx = c.put(key, b"A0", w=3)
        for i in range(1, 30):
            ctx = c.put(key, b"A%d" % i, context=ctx, w=3)
        assert sorted(c.get(key, r=3).values) == [b"A29", b"v1"]


def test_delete_with_full_context_leaves_key_absent(cluster3):
    with _client(cluster3) as c:
        c.put(b"gone", b"v", w=3)
        res = c.get(b"gone", r=3)
        c.delete(b"gone", context=res.context, w=3)
        after = c.get(b"gone", r=3)
        assert after.values == [] and not after.found
        # a delete concurrent with a put keeps the put
        c.put(b"gone2", b"a", w=3)
        ctx = c.get(b"gone2", r=3).context
        c.put(b"gone2", b"b", context=ctx, w=3)
        c.delete(b"gone2", context=ctx, w=3)
        assert c.get(b"gone2", r=3).values == [b"b"]


def test_read_repair_fixes_a_stale_replica(make_cluster):
    from conftest import FAST, held

    # read repair alone: no anti-entropy, and no hint delivery (node1 and node2 keep a hint
    # of the write node3 missed, which would reach node3 the moment it is up again)
    cl = make_cluster(3, extra_args=FAST + ["--aae-interval", "0", "--handoff-batch", "0"])
    ep3 = cl.node("node3").listen
    with _client(cl) as c:
        c.put(b"rr", b"old", w=3)
        # killed, not paused: nothing sent to it meanwhile can wait in its socket and be
        # applied when it is back (a paused node got the write that way, or by hedged tries)
        cl.kill("node3")
        cl.wait_converged(expect_up=["node1", "node2"])
        c.put(b"rr", b"new", context=c.get(b"rr", r=2).context, w=2)
        cl.restart("node3")
        cl.wait_converged()
        assert held(ep3, b"rr") == [b"old"]  # stale: it missed the write
        deadline = time.monotonic() + 10
        while True:  # node3, just restarted, may still be catching up
            try:
                got = c.get(b"rr", r=3)
                break
            except zkv.QuorumError:
                assert time.monotonic() < deadline, "node3 never answered an r=3 read"
        assert got.values == [b"new"]  # merged across replicas...
        deadline = time.monotonic() + 5
        while held(ep3, b"rr") != [b"new"]:  # ...and pushed to node3 after the reply
            assert time.monotonic() < deadline, "read repair never reached node3"
            time.sleep(0.05)


def _dots(cl, node_id: str) -> list:
    with open(os.path.join(cl.node(node_id).data_dir, "cluster.json")) as fh:
        return json.load(fh)["dots"]


# ---- crashes and pauses --------------------------------------------------------------------------------
@pytest.mark.parametrize("sync", ["none", "always"])
def test_sigkill_restart_keeps_data(make_cluster, sync):
    cl = make_cluster(3, sync=sync)
    first = {n: _dots(cl, n) for n in ("node1", "node2")}  # taken with the new data dirs
    with _client(cl) as c:
        for i in range(100):
            c.put(b"k%d" % i, b"v%d" % i, w=3)
        cl.kill("node2")
        # requests keep succeeding while a quorum is up
        for i in range(100, 130):
            c.put(b"k%d" % i, b"v%d" % i, w=2)
            assert c.get(b"k%d" % i, r=2).values == [b"v%d" % i]
        cl.restart("node2")
        cl.wait_converged()
        # killed, node2 may have lost its unsynced tail: its new dots go under a new id
        # (replica.py, "Dots never repeat"); node1 keeps its own
        dots = {n: _dots(cl, n) for n in ("node1", "node2")}
        assert dots["node1"] == first["node1"] and dots["node1"][0].startswith("node1~")
        assert dots["node2"][0].startswith("node2~") and dots["node2"][1] > first["node2"][1]
        # with node1 and node3 gone node2 must answer from its own disk
        cl.kill("node1")
        cl.kill("node3")
        cl.wait_converged(expect_up=["node2"])
        with zkv.Client([cl.node("node2").listen], timeout=3.0) as only:
            for i in range(0, 100, 7):
                assert only.get(b"k%d" % i, r=1).values == [b"v%d" % i]


def test_paused_coordinator_costs_a_retry_not_an_error(make_cluster):
    cl = make_cluster(3)
    with zkv.Client(cl.endpoints, timeout=3.0) as c:
        c.put(b"p", b"v", w=3)
        cl.pause("node1")
        try:
            t = time.monotonic()
            for i in range(20):
                c.put(b"p%d" % i, b"x", w=2)
                assert c.get(b"p%d" % i, r=2).values == [b"x"]
            assert time.monotonic() - t < 60
        finally:
            cl.resume("node1")


def test_sigterm_drains_and_exits_zero(make_cluster):
    cl = make_cluster(1, n=1)
    with _client(cl) as c:
        c.put(b"t", b"v", w=1)
    assert cl.terminate("node1") == 0


def test_signals_repeated_while_a_node_stops_still_end_in_exit_zero(tmp_path):
    """A supervisor sending SIGTERM twice (or SIGTERM then SIGINT) while a node stopped got
    exit 143 or 130 after the node had logged a clean stop: the process's own exit restored
    the default handlers. Every stop signal after the first is taken as the same stop."""
    from ops_helpers import Nodes, free_port, wait_for

    nodes = Nodes(tmp_path)
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            port = free_port()
            p = nodes.start("--id", "n1", "--listen", f"tcp://127.0.0.1:{port}", "--gossip",
                            f"tcp://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"))
            wait_for(lambda p=p: "serving on" in nodes.log(p), timeout=30)
            p.send_signal(signal.SIGTERM)
            while p.poll() is None:  # the second signal, again and again, until it is gone
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    break
                time.sleep(0.005)
            assert p.wait(30) == 0, nodes.log(p)[-2000:]
            assert "stopped" in nodes.log(p)
    finally:
        nodes.close()


def test_a_node_stopped_with_sigterm_is_down_at_its_peers_by_its_own_word(make_cluster):
    """A SIGTERM'd node was noticed by its peers only through its silence (the detector, or
    requests timing out). Its last gossip now says it is stopping: the peers hold it down for
    that reason, and it is up again once restarted."""
    from ops_helpers import wait_for

    cl = make_cluster(3)
    cl.wait_converged()
    assert cl.terminate("node3") == 0

    def said(n) -> dict | None:
        (m,) = [m for m in cl.status_of(n)["members"] if m["id"] == "node3"]
        return m if m["state"] == "down" else None

    for n in cl.nodes[:2]:
        m = wait_for(lambda n=n: said(n), timeout=30, what="node3 down")
        assert m["reason"] == "it shut down (its last gossip said so)", m
    cl.restart("node3")
    cl.wait_converged()


# ---- bad input ------------------------------------------------------------------------------------------
def test_bad_client_input_raises_before_sending():
    # nothing listens there: an InvalidRequest proves nothing was sent (no timeout, no Unavailable)
    port = free_ports(1)[0]
    with zkv.Client([f"tcp://127.0.0.1:{port}"], timeout=0.3) as c:
        for bad in [lambda: c.get("str"), lambda: c.get(b""), lambda: c.get(b"x" * 70000),
                    lambda: c.put(b"k", "v"), lambda: c.put(b"k", b"v" * (16 * 1024 * 1024 + 1)),
                    lambda: c.put(b"k", b"v", w=0), lambda: c.get(b"k", r=-1),
                    lambda: c.put(b"k", b"v", context="ctx"), lambda: c.delete(5)]:
            with pytest.raises(zkv.InvalidRequest):
                bad()
        with pytest.raises(zkv.Unavailable):
            c.get(b"k")
    with pytest.raises(zkv.InvalidRequest):
        zkv.Client(["http://x"])


def test_bad_quorum_and_context_rejected_by_cluster(cluster3):
    with _client(cluster3) as c:
        with pytest.raises(zkv.InvalidRequest):
            c.get(b"k", r=4)
        with pytest.raises(zkv.InvalidRequest):
            c.put(b"k", b"v", context=b"\xff\x00garbage")
        assert isinstance(zkv.InvalidRequest("x"), ValueError)


def test_garbage_never_kills_or_wedges_a_node(cluster3):
    ep = cluster3.endpoints[0]
    ctx = zmq.Context()
    rng = random.Random(1234)
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
        s.send(b"")
        s.send_multipart([b"a", b"b", b"c"])
        for _ in range(3000):
            s.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))))
        import msgspec

        s.send(msgspec.msgpack.encode([7, [[1, 1, b"k", 0]]]))  # wrong version
        s.send(msgspec.msgpack.encode([1, [[1, 1, b"", 0]]]))  # empty key
        s.send(msgspec.msgpack.encode([1, [[21, 1, b"k", b"\x01garbage-dvv"]]]))  # bad peer put
        s.send(b"\x00" * (80 * 1024 * 1024))  # oversized: dropped by MAXMSGSIZE or the limit
        # a raw TCP connection speaking nonsense
        import socket

        host, port = ep[6:].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(os.urandom(4096))
        time.sleep(0.5)
    finally:
        ctx.destroy(0)
    with zkv.Client([ep], timeout=3.0) as c:
        c.put(b"after-garbage", b"ok", w=2)
        assert c.get(b"after-garbage", r=2).values == [b"ok"]
    assert all(n.alive() for n in cluster3.nodes)


def test_empty_key_from_raw_request_gets_clear_error(cluster3):
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(cluster3.endpoints[0])
        s.send(wire.encode_one(wire.Get(77, b"", 0)))
        assert s.poll(3000)
        (reply,) = wire.decode(s.recv(), 1 << 20)
        assert isinstance(reply, wire.Error) and reply.rid == 77 and reply.code == wire.E_INVALID
        assert "key" in reply.message
    finally:
        ctx.destroy(0)


def test_a_put_chained_on_the_context_a_put_returned_keeps_unread_siblings(cluster3):
    """put -> another client's blind put -> put with the first put's context -> put with
    the context that returned: the other client's acknowledged write vanished (an outside
    run): a put's context covered every sibling the key then held, read or not."""
    with zkv.Client(cluster3.endpoints, timeout=5.0) as one, \
            zkv.Client([cluster3.endpoints[-1]], timeout=5.0) as other:
        ctx = one.put(b"chain", b"A", w=2)
        other.put(b"chain", b"B", w=2)  # blind: one never read it
        ctx = one.put(b"chain", b"A2", context=ctx, w=2)
        assert sorted(one.get(b"chain", r=2).values) == [b"A2", b"B"]
        for i in range(3, 13):  # a chain goes on: its own values do not pile up (the review)
            ctx = one.put(b"chain", b"A%d" % i, context=ctx, w=2)
        assert sorted(one.get(b"chain", r=3).values) == [b"A12", b"B"]


# ---- async client ---------------------------------------------------------------------------------------
def test_a_counter_counts_no_increment_whose_update_was_refused(make_cluster):
    """200 concurrent update(+1)s of one process, max_siblings 5: 144 raised TooManySiblings
    and the counter read 200 (an outside run): each updater's total had counted the ones
    reserved before it, refused or not. It now reads exactly the updates that returned."""
    from conftest import FAST

    from zkv.crdt import PNCounter
    from zkv.errors import TooManySiblings

    cl = make_cluster(extra_args=FAST + ["--max-siblings", "3"])
    key = b"hits"

    async def main() -> tuple[int, int]:
        async with zkv.AsyncClient(cl.endpoints, timeout=20.0) as c:
            got = await asyncio.gather(*(c.update(key, PNCounter.updater(key, 1), retries=1)
                                         for _ in range(60)), return_exceptions=True)
            others = [g for g in got if isinstance(g, Exception)
                      and not isinstance(g, TooManySiblings)]
            assert not others, others[:3]
            refused = sum(isinstance(g, TooManySiblings) for g in got)
            return len(got) - refused, refused

    ok, refused = asyncio.run(main())
    assert refused, "no update was refused: the case is not made"
    with zkv.Client(cl.endpoints, timeout=10.0) as c:
        c.update(key, PNCounter.updater(key, 0))  # (merges the siblings into one value)
        assert PNCounter.from_siblings(c.get(key, r=3).values).value == ok

        class Merge:  # a user's fn with an attribute of its own named `settled`
            settled = False

            def __call__(self, siblings: list[bytes]) -> bytes:
                return b"x"

        c.update(b"plain", Merge())  # (the hook update() calls is __zkv_settled__ only)
        assert c.get(b"plain").values == [b"x"]


def test_large_writes_gathered_or_batched_fit_a_nodes_frame_limit(make_cluster):
    """An outside run gathered 100 puts of 8 MiB on one AsyncClient: every one failed. They
    went out in one frame of hundreds of MB, past the node's frame limit, and the node's
    socket dropped the connection. A client frame of several requests now stays under any
    node's limit; a request larger than that goes alone. (Values of 1 MiB at most here: the
    frame limit, 4 requests' worth, is ~4.7 MB; the 12 requests of either call are ~9 MB.)"""
    from conftest import FAST

    cl = make_cluster(extra_args=FAST + ["--max-value-size", str(1 << 20),
                                         "--replica-timeout", "10"])
    big = [bytes([97 + i]) * (800_000 + i) for i in range(12)]  # 0.8 MB each

    async def main():
        async with zkv.AsyncClient(cl.endpoints, timeout=30.0) as c:
            await asyncio.gather(*(c.put(b"big-a%d" % i, v, w=2)
                                   for i, v in enumerate(big)))
            got = await asyncio.gather(*(c.get(b"big-a%d" % i, r=2) for i in range(12)))
            assert [g.values for g in got] == [[v] for v in big]

    asyncio.run(main())
    with zkv.Client(cl.endpoints, timeout=30.0) as c:
        c.put_many([(b"big-s%d" % i, v) for i, v in enumerate(big)], w=2)
        assert [g.values for g in c.get_many([b"big-s%d" % i for i in range(12)], r=2)] == [
            [v] for v in big]


def test_async_client_many_in_flight(cluster3):
    async def main():
        async with zkv.AsyncClient(cluster3.endpoints, timeout=5.0) as c:
            await asyncio.gather(*(c.put(b"a%d" % i, b"v%d" % i, w=2) for i in range(200)))
            got = await asyncio.gather(*(c.get(b"a%d" % i, r=2) for i in range(200)))
            assert [g.values for g in got] == [[b"v%d" % i] for i in range(200)]
            await c.put(b"counter", b"0", w=2)

            def incr(values):
                return str(max(int(v) for v in values) + 1).encode()

            await asyncio.gather(*(c.update(b"counter", incr) for _ in range(5)))
            vals = (await c.get(b"counter", r=3)).values
            assert vals and all(int(v) >= 1 for v in vals)
            with pytest.raises(zkv.InvalidRequest):
                await c.get(b"")

    asyncio.run(main())


def test_update_merges_siblings(cluster3):
    with _client(cluster3) as c:
        c.put(b"u", b"a", w=3)
        c.put(b"u", b"b", w=3)  # blind: sibling
        c.update(b"u", lambda vals: b"+".join(sorted(vals)), w=3)
        assert c.get(b"u", r=3).values == [b"a+b"]


# ---- CLI, status, metrics, config -----------------------------------------------------------------------
def _zkv(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "zkv.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_status_ring_get_put(cluster3):
    ep = cluster3.endpoints[1]
    out = _zkv("status", "--json", "--node", ep)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {m["id"] for m in doc["members"]} == {"node1", "node2", "node3"}
    for m in doc["members"]:
        assert {"id", "listen", "state", "rack"} <= set(m) and m["state"] == "up"
    assert sum(m["partitions"] for m in doc["members"]) == 256
    out = _zkv("status", "--node", ep)
    assert out.returncode == 0 and "node3" in out.stdout
    out = _zkv("ring", "--json", "--node", ep)
    ring = json.loads(out.stdout)
    assert len(ring["partitions"]) == 256
    assert all(len(set(p["preflist"])) == 3 for p in ring["partitions"])
    assert _zkv("put", "cli-key", "hello", "--node", ep, "--w", "2").returncode == 0
    out = _zkv("get", "cli-key", "--node", ep, "--r", "2")
    assert out.returncode == 0 and out.stdout.strip() == "hello"
    # quorums by name (of the namespace's N), as Cassandra's consistency levels
    assert _zkv("put", "cli-key", "hi", "--node", ep, "--w", "all", "--pw", "quorum",
                "--context", out.stderr.split("context: ")[1].split()[0]).returncode == 0
    out = _zkv("get", "cli-key", "--node", ep, "--r", "ALL", "--pr", "all")
    assert out.returncode == 0 and out.stdout.strip() == "hi", out
    out = _zkv("get", "cli-key", "--node", ep, "--r", "most")
    assert out.returncode == 2 and "'most': a number, or one of one, quorum, all" in out.stderr
    assert _zkv("delete", "cli-key", "--node", ep).returncode == 0
    out = _zkv("get", "cli-key", "--node", ep)
    assert "(not found)" in out.stdout


def _wait_listening(port: int, proc, timeout: float = 30.0) -> None:
    """Until the node accepts connections (a loaded machine may take a while to import)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            assert time.monotonic() < deadline, "node never listened"
            time.sleep(0.05)


def test_node_flags_config_and_metrics(tmp_path):
    ports = free_ports(3)
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'rack = "from-file"\nring_size = 64\nn = 1\nr = 1\nw = 1\n'
                   f'metrics_port = {ports[2]}\nlisten = "tcp://127.0.0.1:1"\n'
                   'max_siblings = 2\n')
    cmd = [sys.executable, "-m", "zkv.node", "--id", "solo", "--config", str(cfg),
           "--listen", f"tcp://127.0.0.1:{ports[0]}", "--gossip", f"tcp://127.0.0.1:{ports[1]}",
           "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(ports[0], proc)
        with zkv.Client([f"tcp://127.0.0.1:{ports[0]}"], timeout=5.0) as c:
            c.put(b"m", b"v", w=1)
            assert c.get(b"m").values == [b"v"]
            c.put(b"m", b"concurrent", w=1)  # blind: a sibling
            assert len(c.get(b"m").values) == 2
            with pytest.raises(zkv.TooManySiblings, match="would make 3, over the limit of "
                               "2") as refusal:  # (an InvalidRequest)
                c.put(b"m", b"a third", w=1)  # max_siblings from the file
            assert (refusal.value.limit, refusal.value.siblings) == (2, 3)
            assert sorted(c.get(b"m").values) == [b"concurrent", b"v"]
            c.update(b"m", lambda values: b"+".join(sorted(values)))  # resolved with context
            assert c.get(b"m").values == [b"concurrent+v"]
            doc = c.status()
        assert doc["members"][0]["rack"] == "from-file"  # file wins over defaults
        assert doc["ring"]["q"] == 64 and doc["ring"]["n"] == 1
        text = urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/metrics", timeout=5).read()
        text = text.decode()
        for name in ("zkv_requests_total", "zkv_request_seconds_bucket", "zkv_quorum_total",
                     "zkv_peers", "zkv_malformed_messages_total", "zkv_siblings_bucket",
                     "zkv_sibling_writes_total", "zkv_hint_backlog", "zkv_antientropy",
                     "zkv_slow_turns_total"):
            assert name in text, name
        assert 'zkv_quorum_total{op="put",quorum="1",result="ok"} 3.0' in text
        assert "zkv_sibling_writes_total 1.0" in text
        assert "zkv_sibling_refusals_total 1.0" in text
        with zkv.Client([f"tcp://127.0.0.1:{ports[0]}"], timeout=5.0) as c:
            # other writers fill the key to the limit between update()'s read and its write:
            # refused, it reads again and merges those too (it used to raise, advising update)
            seen: list[list[bytes]] = []

            def merge(values: list[bytes]) -> bytes:
                seen.append(sorted(values))
                if len(seen) == 1:
                    c.put(b"m", b"x", context=c.get(b"m").context)  # replaces what was read
                    c.put(b"m", b"y")  # blind: {x, y}, neither covered by update's read
                return b"+".join(sorted(values))

            c.update(b"m", merge)
            assert seen == [[b"concurrent+v"], [b"x", b"y"]]
            assert c.get(b"m").values == [b"x+y"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_node_rejects_bad_flags(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zkv.node", "--id", "bad id!", "--listen", "x",
                          "--gossip", "tcp://127.0.0.1:1", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--id" in out.stderr and "--listen" in out.stderr
    out = subprocess.run([sys.executable, "-m", "zkv.node", "--id", "n1", "--listen",
                          "tcp://127.0.0.1:1", "--gossip", "tcp://127.0.0.1:2", "--data-dir",
                          str(tmp_path), "--max-siblings", "-1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "max_siblings -1: between 0 (no limit)" in out.stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("not a dir")
    out = subprocess.run([sys.executable, "-m", "zkv.node", "--id", "n1", "--listen",
                          "tcp://127.0.0.1:1", "--gossip", "tcp://127.0.0.1:2", "--data-dir",
                          str(a_file)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and f"--data-dir {a_file}: not a directory" in out.stderr, out
    help_text = subprocess.run([sys.executable, "-m", "zkv.node", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    for flag in ("--id", "--listen", "--gossip", "--data-dir", "--seed", "--rack", "--config"):
        assert flag in help_text


def test_local_up_demo_runs(tmp_path):
    port = free_base_port()
    out = subprocess.run(
        [sys.executable, "-m", "zkv.cli", "local", "up", "--dir", str(tmp_path / "d"),
         "--base-port", str(port), "--exit-after-demo"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for text in ("[1]", "R=3", "pause", "2 sibling(s)", "[book, mug, pen]", "(not found)",
                 "all nodes stopped"):
        assert text in out.stdout, (text, out.stdout)
    # 4 nodes keep 3 copies: the demo says N=3 (it said N=4, the node count: an outside
    # run), and it freezes a replica of the key it writes
    out = subprocess.run(
        [sys.executable, "-m", "zkv.cli", "local", "up", "--nodes", "4", "--dir",
         str(tmp_path / "d4"), "--base-port", str(free_base_port()), "--exit-after-demo"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(R+W=4 > N=3)" in out.stdout and "N=4" not in out.stdout, out.stdout
    assert "one of its 3 replicas, frozen" in out.stdout, out.stdout


def test_joining_cluster_spreads_settings(tmp_path):
    cl = LocalCluster(2, str(tmp_path / "j"), base_port=None, n=2,
                      extra_args=["--ring-size", "32", "--gossip-interval", "0.1"])
    cl.nodes[1].extra = ["--ring-size", "128", "--n", "1", "--r", "1", "--w", "1"]  # ignored
    try:
        cl.start()
        with zkv.Client([cl.endpoints[1]], timeout=3.0) as c:
            doc = c.status()
            assert doc["ring"]["q"] == 32 and doc["ring"]["n"] == 2
    finally:
        cl.stop()


def test_async_client_fails_over_from_a_paused_and_a_killed_node(make_cluster):
    cl = make_cluster(3)

    async def main():
        async with zkv.AsyncClient(cl.endpoints, timeout=4.0) as c:
            await c.put(b"af", b"v0", w=3)
            cl.pause("node1")
            try:
                got = await asyncio.gather(*(c.put(b"af%d" % i, b"v", w=2) for i in range(20)))
                assert all(isinstance(x, bytes) for x in got)
                assert (await c.get(b"af3", r=2)).values == [b"v"]
            finally:
                cl.resume("node1")
            cl.kill("node2")
            assert (await c.get(b"af5", r=2)).values == [b"v"]

    asyncio.run(main())


def test_local_cluster_refuses_ports_in_use(make_cluster, tmp_path):
    a = make_cluster(1, n=1)
    b = LocalCluster(1, str(tmp_path / "b"), base_port=None, n=1)
    b.nodes[0].listen = a.nodes[0].listen  # as a second `zkv local up` on the same ports
    with pytest.raises(zkv.ZkvError, match="in use"):
        b.start()
    assert b.nodes[0].proc is None  # nothing was started
