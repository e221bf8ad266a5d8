"""Snapshots (`zkv snapshot`, zkv/node/snapshots.py): an admin's request hard-links a node's
stores under DATA_DIR/snapshots/NAME; the copy holds exactly what the node held then, and a
node restored from it serves that and catches up with the writes taken since."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest
from ops_helpers import ZKV, one_line_error, zkv
from test_security_core import OUTSIDER, ROGUE, Node

from zkv import wire
from zkv._core import dvv
from zkv.client import Client
from zkv.errors import InvalidRequest, ZkvError
from zkv.node.core import ADMIN, CLIENT, PEER
from zkv.storage import LogStore


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    n.close()


def test_a_snapshot_needs_an_admin_and_a_free_valid_name(node):
    (put,) = node.ask(OUTSIDER, [wire.Put(1, b"k", b"v", w=1)], ADMIN)
    assert type(put) is wire.PutOk
    for ident, role in ((OUTSIDER, CLIENT), (ROGUE, PEER)):
        (reply,) = node.ask(ident, [wire.Snapshot(2, "s1")], role)
        assert type(reply) is wire.Error and "admin key" in reply.message, reply
    assert not os.path.exists(os.path.join(node.cfg.data_dir, "snapshots", "s1"))
    (ok,) = node.ask(OUTSIDER, [wire.Snapshot(3, "s1")], ADMIN)
    assert type(ok) is wire.SnapshotOk, ok
    info = ok.info
    assert info["node"] == "node1" and info["name"] == "s1" and info["bytes"] > 0
    assert info["path"] == os.path.abspath(os.path.join(node.cfg.data_dir, "snapshots", "s1"))
    with open(os.path.join(info["path"], "snapshot.json")) as f:
        assert json.load(f) == info
    for rid, name, why in ((4, "s1", "exists"), (5, "../up", "characters"), (6, ".", "not .")):
        (reply,) = node.ask(OUTSIDER, [wire.Snapshot(rid, name)], ADMIN)
        assert type(reply) is wire.Error and reply.code == wire.E_INVALID, reply
        assert why in reply.message, reply
    assert sorted(os.listdir(os.path.join(node.cfg.data_dir, "snapshots"))) == ["s1"]
    # listed, with what only it holds (its manifest and the marks a restore brings back:
    # the store still links every segment)
    (ok,) = node.ask(OUTSIDER, [wire.Snapshot(8, "", "list")], ADMIN)
    (listed,) = ok.info["snapshots"]
    manifest = sum(os.path.getsize(os.path.join(info["path"], *f)) for f in (
        ("snapshot.json",), ("data", "SNAPSHOT"), ("handoff", "SNAPSHOT")))
    assert listed == {**info, "held": manifest}
    os.mkdir(os.path.join(node.cfg.data_dir, "snapshots", "cut-short"))  # a crash mid-take
    (ok,) = node.ask(OUTSIDER, [wire.Snapshot(9, "", "list")], ADMIN)
    assert [(s["name"], s.get("incomplete", False)) for s in ok.info["snapshots"]] == \
        [("cut-short", True), ("s1", False)]
    # the copy opens to what the node held (opened in place: it gains a LOCK and hints file)
    with LogStore(os.path.join(info["path"], "data")) as copy:
        value = copy.get(b"k")
        assert value is not None and dvv.DVVSet.decode(value).values() == [b"v"]
    # compaction replaces the segments: the snapshot alone holds them now
    node.core.store.put(b"k", b"overwritten")
    node.core.store.compact()
    (ok,) = node.ask(OUTSIDER, [wire.Snapshot(10, "", "list")], ADMIN)
    held = {s["name"]: s["held"] for s in ok.info["snapshots"]}
    assert held["s1"] >= manifest + info["stores"]["data"]["bytes"] and held["cut-short"] == 0
    for rid, name in ((11, "s1"), (12, "cut-short")):
        (ok,) = node.ask(OUTSIDER, [wire.Snapshot(rid, name, "remove")], ADMIN)
        assert ok.info == {"removed": name, "freed": held[name]}
    assert os.listdir(os.path.join(node.cfg.data_dir, "snapshots")) == []
    (reply,) = node.ask(OUTSIDER, [wire.Snapshot(13, "s1", "remove")], ADMIN)
    assert type(reply) is wire.Error and "no snapshot 's1'" in reply.message
    for action in ("list", "remove"):  # admins only, as taking one
        (reply,) = node.ask(OUTSIDER, [wire.Snapshot(14, "s1", action)], CLIENT)
        assert type(reply) is wire.Error and "admin key" in reply.message
    # the node still takes writes after refused snapshots (a snapshot's error is its own)
    (put,) = node.ask(OUTSIDER, [wire.Put(7, b"k2", b"v", w=1)], ADMIN)
    assert type(put) is wire.PutOk


def test_a_snapshot_that_fails_on_the_node_is_logged_there(node, caplog, monkeypatch):
    """A `zkv snapshot` that failed on the node (no space left on device) was reported to
    the client only: the node's log, which has a line for each snapshot taken, had none for
    it (an operator's run). It has a WARNING naming the snapshot and the error now."""
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(node.core.store, "snapshot", full)
    with caplog.at_level("INFO", logger="zkv.node"):
        (reply,) = node.ask(OUTSIDER, [wire.Snapshot(1, "nightly")], ADMIN)
    assert type(reply) is wire.Error and reply.code == wire.E_UNAVAILABLE, reply
    assert "No space left on device" in reply.message, reply
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "nightly" in r.getMessage()]
    assert said == [("WARNING", "snapshot take 'nightly' on node1 failed: No space left on "
                                "device")], said
    assert not os.path.exists(os.path.join(node.cfg.data_dir, "snapshots", "nightly"))
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level("INFO", logger="zkv.node"):  # (one taken: its INFO line, as before)
        (ok,) = node.ask(OUTSIDER, [wire.Snapshot(2, "nightly")], ADMIN)
    assert type(ok) is wire.SnapshotOk, ok
    assert [r.levelname for r in caplog.records if "nightly" in r.getMessage()] == ["INFO"]


@pytest.mark.cluster
def test_a_node_restored_from_a_snapshot_serves_it_then_catches_up(make_cluster):
    c = make_cluster(3)
    ep = c.endpoints
    with Client(ep, timeout=5) as cl:
        cl.put_many([(b"s:%d" % i, b"v%d" % i) for i in range(100)], w=3)
    out = zkv("snapshot", "before", "--all", "--node", ep[0])
    assert out.returncode == 0, out
    assert [line.split(":")[0] for line in out.stdout.splitlines()[:3]] == \
        ["node1", "node2", "node3"], out.stdout
    assert "exists" in one_line_error(zkv("snapshot", "before", "--node", ep[1]))
    assert zkv("snapshot", "spare", "--node", ep[1]).returncode == 0
    out = zkv("snapshot", "--list", "--all", "--node", ep[0], "--json")
    assert out.returncode == 0, out
    assert {(a["node"], s["name"]) for a in json.loads(out.stdout) for s in a["snapshots"]} == \
        {("node1", "before"), ("node2", "before"), ("node2", "spare"), ("node3", "before")}
    out = zkv("snapshot", "--remove", "spare", "--node", ep[1])
    assert out.returncode == 0 and "snapshot 'spare' removed" in out.stdout, out
    out = zkv("snapshot", "--list", "--node", ep[1])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, out
    assert out.stdout.startswith(ep[1] + ": before ") and "bytes held by it alone" in out.stdout
    for bad in (["--remove"], ["--list", "x"], ["--list", "--remove", "x"],
                ["--remove", "nosuch"]):
        assert one_line_error(zkv("snapshot", *bad, "--node", ep[0])), bad
    with Client(ep, timeout=5) as cl:  # after the snapshot: overwrites, deletes, new keys
        got = cl.get_many([b"s:%d" % i for i in range(20)], r=3)
        cl.put_many([(b"s:%d" % i, b"new%d" % i, got[i].context) for i in range(10)], w=3)
        cl.delete_many([(b"s:%d" % i, got[i].context) for i in range(10, 20)], w=3)
        cl.put_many([(b"s:%d" % i, b"late%d" % i) for i in range(100, 150)], w=3)
    for n in c.nodes:  # each node's copy: what it held at the snapshot, nothing after
        with LogStore(os.path.join(n.data_dir, "snapshots", "before", "data")) as copy:
            keys = {k for k in copy.keys() if k.startswith(b"s:")}
            assert keys == {b"s:%d" % i for i in range(100)}, n.id
            assert dvv.DVVSet.decode(copy.get(b"s:3")).values() == [b"v3"]

    # node3 restored: stopped, its data replaced by the snapshot's, started again
    n3 = c.node("node3")
    assert c.terminate("node3") == 0
    shutil.rmtree(os.path.join(n3.data_dir, "data"))
    shutil.copytree(os.path.join(n3.data_dir, "snapshots", "before", "data"),
                    os.path.join(n3.data_dir, "data"))
    # the mark came back with it; had the snapshot been an hour old, the node would refuse to
    # start on it (the others forgot the deletes made since: they would come back)
    mark = os.path.join(n3.data_dir, "data", "SNAPSHOT")
    with open(mark) as f:
        taken = json.load(f)
    assert taken["snapshot"] == "before" and taken["node"] == "node3"
    with open(mark, "w") as f:
        json.dump({**taken, "created_ms": taken["created_ms"] - 3_600_000}, f)
    with pytest.raises(ZkvError, match="exited with code 1"):
        c.restart("node3")
    said = c.tail(n3)
    assert "holds snapshot 'before', taken 60 min ago" in said, said
    assert "--restore-old-snapshot" in said and os.path.exists(mark)
    with open(mark, "w") as f:
        json.dump(taken, f)  # taken a moment ago: started on, the mark removed

    def alone_on_node3(restart: bool = False) -> dict[bytes, list[bytes]]:
        """What node3 alone answers (the others stopped) at R=1 for a few keys (`restart`:
        node3 started while they are stopped: before any peer can bring it a write)."""
        for other in ("node1", "node2"):
            assert c.terminate(other) == 0
        try:
            if restart:
                c.restart("node3")
            with Client([n3.listen], timeout=5) as cl:
                keys = [b"s:3", b"s:15", b"s:120"]
                return {k: r.values for k, r in zip(keys, cl.get_many(keys, r=1), strict=True)}
        finally:
            for other in ("node1", "node2"):
                c.restart(other)
            c.wait_converged(expect_up=["node1", "node2", "node3"])

    # started on the snapshot, it serves what it held then (its peers stopped first: with them
    # up, anti-entropy may bring it the later writes before a read, on a loaded machine)
    assert alone_on_node3(restart=True) == {b"s:3": [b"v3"], b"s:15": [b"v15"], b"s:120": []}
    assert not os.path.exists(mark)
    assert "started on snapshot 'before'" in c.tail(n3)
    out = subprocess.run([ZKV, "repair", "--node", n3.listen, "--timeout", "5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out
    assert alone_on_node3() == {b"s:3": [b"new3"], b"s:15": [], b"s:120": [b"late120"]}


def test_a_restore_older_than_the_reap_memory_needs_the_flag(tmp_path):
    """check_restored: no mark, nothing; a mark within 2 x grace + 60 s (or any age with
    --restore-old-snapshot) is started on and removed; older, refused with every mark kept."""
    from zkv.node.antientropy import echo_window
    from zkv.node.snapshots import MARK, check_restored

    assert check_restored(str(tmp_path), 10**12, 180, False) is None
    for sub in ("data", "handoff"):
        (tmp_path / sub).mkdir()
    now = 1_800_000_000_000
    horizon = echo_window(60.0)
    assert horizon == 180

    def mark(age_s: float) -> None:
        for sub in ("data", "handoff"):
            (tmp_path / sub / MARK).write_text(json.dumps(
                {"snapshot": "nightly", "node": "n1", "created_ms": now - int(age_s * 1000)}))

    mark(100)
    # the memory of overwritten writes (latefile.py) is not part of a snapshot: it remembers
    # writes overwritten after it, which a rollback undid, and stripped the restored values
    # as late copies of them (a review: a concurrent write then left only its own value)
    (tmp_path / "retired").write_bytes(b"memory")
    assert check_restored(str(tmp_path), now, horizon, False) == (
        "started on snapshot 'nightly', taken 100 s ago: hints and anti-entropy bring it what "
        "was written since")
    assert not any((tmp_path / sub / MARK).exists() for sub in ("data", "handoff"))
    assert not (tmp_path / "retired").exists()
    mark(7200)
    with pytest.raises(ZkvError, match="taken 2.0 h ago: older than 3 min"):
        check_restored(str(tmp_path), now, horizon, False)
    assert all((tmp_path / sub / MARK).exists() for sub in ("data", "handoff"))
    assert "(--restore-old-snapshot)" in check_restored(str(tmp_path), now, horizon, True)
    # taken on a clock 10 min fast: its age cannot be told (it read as 0, and a restore 2 min
    # later, past the horizon, brought 50 deleted keys back: an outside clock-skew run)
    mark(-600)
    with pytest.raises(ZkvError, match="taken 10 min in the future by this machine's clock"):
        check_restored(str(tmp_path), now, horizon, False)
    assert all((tmp_path / sub / MARK).exists() for sub in ("data", "handoff"))
    assert check_restored(str(tmp_path), now, horizon, True).startswith(
        "started on snapshot 'nightly'")
    mark(-2)  # (two clocks a moment apart: taken as new)
    assert check_restored(str(tmp_path), now, horizon, False).startswith(
        "started on snapshot 'nightly', taken 0 s ago")
    mark(100)
    (tmp_path / "data" / MARK).write_text("{not json")
    with pytest.raises(ZkvError, match="cannot be read"):
        check_restored(str(tmp_path), now, horizon, False)


def test_a_restore_holding_a_generation_ended_since_is_refused_then_dumped(tmp_path):
    """check_ended: a restored store with keys of a namespace generation that the current
    registry ended after the snapshot (a truncate) refuses to start, naming it and its live
    keys (the start would purge them silently: an outside backup run lost 391 keys so);
    with --purge-ended-namespaces it starts, with a WARNING each. `zkv dump --store`
    (dump_stores) gets those keys out of the store offline, copies merged."""
    import io

    from zkv import dump
    from zkv.node.namespaces import Registry, storage_key
    from zkv.node.snapshots import MARK, check_ended

    reg = Registry.for_cluster(3, 2, 2)
    t0 = 1_800_000_000_000 << 16
    sib = reg.create("sib", n=3, members=3, created=t0, creator="n1")
    lw = reg.create("lw", n=3, conflicts="lww", members=3, created=t0 + 1, creator="n1")
    then = reg.to_builtins()
    (tmp_path / "handoff").mkdir()
    with LogStore(str(tmp_path / "data")) as s:
        for i in range(5):
            s.put(storage_key(sib, b"k%d" % i), dvv.update(None, b"", b"v%d" % i, "n1").encode())
        s.put(storage_key(sib, b"gone"), dvv.update(None, b"", None, "n1").encode())
        s.put(storage_key(lw, b"l"), dvv.update(None, b"", b"\0" * 8 + b"lv", "n1").encode())
        s.put(b"plain", dvv.update(None, b"", b"p", "n1").encode())

    def mark(namespaces) -> None:
        for sub in ("data", "handoff"):
            (tmp_path / sub / MARK).write_text(json.dumps(
                {"snapshot": "s2", "node": "n1", "created_ms": 1, "namespaces": namespaces}))

    mark(then)
    assert check_ended(str(tmp_path), then, False) == []  # nothing ended since
    reg.truncate("sib", created=t0 + 5, creator="n1")
    now = reg.to_builtins()
    with pytest.raises(ZkvError) as got:
        check_ended(str(tmp_path), now, False)
    said = str(got.value)
    assert "holds snapshot 's2'" in said and "namespace 'sib' generation 0: 5 key(s)" in said
    assert "--purge-ended-namespaces" in said and "zkv dump --store" in said
    assert "'lw'" not in said  # (live in both registries)
    assert all((tmp_path / sub / MARK).exists() for sub in ("data", "handoff"))
    (line,) = check_ended(str(tmp_path), now, True)
    assert "5 key(s) of namespace 'sib' generation 0" in line and "purged now" in line
    mark([])  # a snapshot of an older version: every dead key counts
    assert len(check_ended(str(tmp_path), now, True)) == 1
    mark(now)  # taken after the truncate: its dead keys were dead already, purged silently
    assert check_ended(str(tmp_path), now, False) == []
    reg.drop("lw", dropped=t0 + 9)
    mark(then)
    lines = check_ended(str(tmp_path), reg.to_builtins(), True)
    assert [ln.split("namespace ")[1].split(" ")[0] for ln in lines] == ["'lw'", "'sib'"]

    # the way back: the ended generation dumped offline from the store(s), copies merged
    with LogStore(str(tmp_path / "copy")) as s:  # another replica's copy: a sibling more
        s.put(storage_key(sib, b"k0"), dvv.update(None, b"", b"w0", "n2").encode())
    out = io.StringIO()
    assert dump.dump_stores([str(tmp_path / "data"), str(tmp_path / "copy")], out,
                            "sib") == (5, 0, 0)
    _, records = dump.read(out.getvalue().splitlines(), "d")
    assert {k: sorted(v) for _, k, v, _ in records} == {
        b"k0": [b"v0", b"w0"], **{b"k%d" % i: [b"v%d" % i] for i in range(1, 5)}}
    out = io.StringIO()
    assert dump.dump_stores([str(tmp_path / "data")], out, "lw") == (1, 0, 0)
    assert [(k, v) for _, k, v, _ in dump.read(out.getvalue().splitlines(), "d")[1]] == \
        [(b"l", [b"lv"])]
    with pytest.raises(InvalidRequest, match="no keys of namespace 'sib' generation 3"):
        dump.dump_stores([str(tmp_path / "data")], io.StringIO(), "sib", 3)
    # the default namespace's keys carry no prefix (an upgrade tester: "no keys of namespace
    # 'default' generation 0" for every store)
    out = io.StringIO()
    assert dump.dump_stores([str(tmp_path / "data")], out, "default") == (1, 0, 0)
    assert [(k, v) for _, k, v, _ in dump.read(out.getvalue().splitlines(), "d")[1]] == \
        [(b"plain", [b"p"])]


def test_a_restore_refused_as_too_old_logs_no_purge(tmp_path, caplog, capsys):
    """zkv-node --purge-ended-namespaces on a restored store holding an ended generation and
    older than the reap memory: check_ended logged "purged now", then check_restored refused
    the start, so nothing was purged. Both decide before either logs: the refusal alone."""
    import signal

    from zkv.cli import node_main
    from zkv.node.namespaces import Registry, storage_key
    from zkv.node.snapshots import MARK, check_ended

    reg = Registry.for_cluster(3, 2, 2)
    sib = reg.create("sib", n=3, members=3, created=1 << 16, creator="n1")
    then = reg.to_builtins()
    reg.truncate("sib", created=2 << 16, creator="n1")
    (tmp_path / "handoff").mkdir()
    with LogStore(str(tmp_path / "data")) as s:
        s.put(storage_key(sib, b"k"), dvv.update(None, b"", b"v", "n1").encode())
    (tmp_path / "data" / MARK).write_text(json.dumps(  # (taken long ago)
        {"snapshot": "s", "node": "n1", "created_ms": 1, "namespaces": then}))
    (tmp_path / "cluster.json").write_text(json.dumps({"namespaces": reg.to_builtins()}))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = node_main(["--id", "n1", "--listen", "tcp://127.0.0.1:48731", "--gossip",
                        "tcp://127.0.0.1:48732", "--data-dir", str(tmp_path), "--seed",
                        "tcp://127.0.0.1:48733", "--purge-ended-namespaces"])
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    said = capsys.readouterr().err
    assert rc == 1 and "older than" in said and "--restore-old-snapshot" in said, said
    assert "purged" not in caplog.text + said, caplog.text
    assert (tmp_path / "data" / MARK).exists()  # (nothing changed: refused again next start)
    with pytest.raises(ZkvError, match="generation 0: 1 key"):  # (... and still refusable)
        check_ended(str(tmp_path), reg.to_builtins(), False)


def test_an_offline_dump_streams_a_namespace_larger_than_what_it_holds(tmp_path, monkeypatch):
    """dump_stores held every value of the name in a dict before writing (an outside run: a
    500k-key, 100 MB namespace peaked at 436 MB RSS): now it holds one window of keys and
    one key's copies at a time, the copies of every store merged key by key, in (hash, key)
    order whatever the stores."""
    import tracemalloc

    from zkv import dump
    from zkv.node.namespaces import Registry, storage_key

    reg = Registry.for_cluster(3, 2, 2)
    big = reg.create("big", n=3, members=3, created=1 << 16, creator="n1")
    value = b"x" * 8192
    with LogStore(str(tmp_path / "a")) as s:
        for i in range(3000):  # 24 MiB of values
            s.put(storage_key(big, b"k%d" % i), dvv.update(None, b"", value + b"%d" % i,
                                                           "n1").encode())
        s.put(b"plain", dvv.update(None, b"", b"p", "n1").encode())
    with LogStore(str(tmp_path / "b")) as s:  # another replica: a sibling more of a few
        for i in range(0, 3000, 100):
            s.put(storage_key(big, b"k%d" % i), dvv.update(None, b"", b"w%d" % i,
                                                           "n2").encode())
    monkeypatch.setattr(dump, "WINDOW_KEYS", 200, raising=False)  # (many windows)
    stores = [str(tmp_path / "a"), str(tmp_path / "b")]
    tracemalloc.start()
    try:
        with open(tmp_path / "big.jsonl", "w") as f:
            got = dump.dump_stores(stores, f, "big")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, peak  # (the values alone are 24 MiB)
    assert got == (3000, 0, 0)
    with open(tmp_path / "big.jsonl") as f:
        records = list(dump.read(f, "big.jsonl")[1])
    assert {k: sorted(v) for _, k, v, _ in records} == {
        b"k%d" % i: sorted([value + b"%d" % i] + ([b"w%d" % i] if i % 100 == 0 else []))
        for i in range(3000)}
    from zkv._core.ring import hash64
    order = [(hash64(storage_key(big, k)), k) for _, k, _, _ in records]
    assert order == sorted(order)
    with open(tmp_path / "again.jsonl", "w") as f:  # the stores named the other way round
        dump.dump_stores(stores[::-1], f, "big")
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "big.jsonl").read_text()


def test_an_offline_dump_reads_as_a_get_does_with_the_snapshots_settings(tmp_path):
    """dump_stores re-implemented the read merge and knew nothing of expiry: values whose
    namespace ttl or own ttl had passed were dumped, and lived a whole new ttl once loaded.
    Now each key is read as a coordinator reads it, with the settings of the generation the
    snapshot's mark records: an expired copy reads as none, a value past its own ttl is left
    out, every value carries its expiry ("x"). A mark without a registry: said (warn), and
    the namespace's ttl is not applied."""
    import io

    from zkv import dump
    from zkv.node.namespaces import Registry, storage_key
    from zkv.node.snapshots import MARK

    now = 1_800_000_000_000
    reg = Registry.for_cluster(3, 2, 2)
    ses = reg.create("ses", n=3, conflicts="lww", members=3, created=1 << 16, creator="n1",
                     ttl=100, write_ttl=True)

    def stored(age_s: int, own: int, what: bytes) -> bytes:
        head = ((now - age_s * 1000) << 16).to_bytes(8, "big") + own.to_bytes(4, "big")
        return dvv.update(None, b"", head + what, "n1").encode()

    with LogStore(str(tmp_path / "a")) as s:
        s.put(storage_key(ses, b"fresh"), stored(10, 0, b"f"))
        s.put(storage_key(ses, b"old"), stored(200, 0, b"o"))  # past the namespace's ttl
        s.put(storage_key(ses, b"own"), stored(10, 5, b"w"))  # past its own
        s.put(storage_key(ses, b"own-live"), stored(10, 50, b"l"))
        s.put(storage_key(ses, b"two"), stored(200, 0, b"t-old"))
    with LogStore(str(tmp_path / "b")) as s:  # another replica: a newer write of "two"
        s.put(storage_key(ses, b"two"), dvv.update(None, b"", (
            (now - 20_000) << 16).to_bytes(8, "big") + bytes(4) + b"t-new", "n2").encode())
    stores = [str(tmp_path / "a"), str(tmp_path / "b")]
    (tmp_path / "a" / MARK).write_text(json.dumps(
        {"snapshot": "s", "node": "n1", "created_ms": now, "namespaces": reg.to_builtins()}))
    said: list[str] = []
    out = io.StringIO()
    assert dump.dump_stores(stores, out, "ses", now_ms=lambda: now,
                            warn=said.append) == (3, 0, 2)
    assert said == []
    got = {k: (v, x) for _, k, v, x in dump.read(out.getvalue().splitlines(), "d")[1]}
    assert got == {b"fresh": ([b"f"], now - 10_000 + 100_000),
                   b"own-live": ([b"l"], now - 10_000 + 50_000),
                   b"two": ([b"t-new"], now - 20_000 + 100_000)}

    (tmp_path / "a" / MARK).write_text(json.dumps(  # an older zkv's mark: no registry
        {"snapshot": "s", "node": "n1", "created_ms": now}))
    out = io.StringIO()
    assert dump.dump_stores(stores, out, "ses", now_ms=lambda: now,
                            warn=said.append) == (4, 0, 1)
    assert len(said) == 1 and "settings are unknown" in said[0] and "ttl" in said[0]
    got = {k: (v, x) for _, k, v, x in dump.read(out.getvalue().splitlines(), "d")[1]}
    assert got == {b"fresh": ([b"f"], 0), b"old": ([b"o"], 0),
                   b"own-live": ([b"l"], now - 10_000 + 50_000), b"two": ([b"t-new"], 0)}


def test_an_offline_dump_of_a_store_a_node_holds_says_so(tmp_path):
    """A store a running node holds was refused with the engine's lock error, which told
    the user to "use another --data-dir": it names the node and the ways out."""
    import io

    from zkv import dump

    with LogStore(str(tmp_path / "data")):  # (held, as a node holds it)
        with pytest.raises(InvalidRequest) as got:
            dump.dump_stores([str(tmp_path / "data")], io.StringIO(), "sib")
    said = str(got.value)
    assert "a node is running on this store" in said and "snapshot" in said, said
    assert "stop the node" in said and "--data-dir" not in said, said


@pytest.mark.cluster
def test_a_whole_cluster_restored_after_a_truncate_loses_nothing_silently(make_cluster):
    """An outside backup run: every node restored from snapshots taken before `zkv namespace
    truncate` started, and purged every restored key of the namespace, saying nothing but
    "started on snapshot". Now each refuses, naming the namespace and its keys; `zkv dump
    --store` copies them out; started with --purge-ended-namespaces (the truncate stands) and
    `zkv load`, the namespace holds them again; the snapshots still hold them too."""
    c = make_cluster(3)
    ep = c.endpoints
    assert zkv("namespace", "create", "sib", "--node", ep[0]).returncode == 0
    with Client(ep, timeout=5) as cl:
        cl.put_many([(b"k%d" % i, b"v%d" % i) for i in range(60)], namespace="sib", w=3)
        cl.put(b"k0", b"w0", namespace="sib", w=3)  # (a sibling: both come back)
    assert zkv("snapshot", "s2", "--all", "--node", ep[0]).returncode == 0
    out = zkv("namespace", "truncate", "sib", "--yes", "--node", ep[0])
    assert out.returncode == 0, out
    for n in c.nodes:  # every node killed, its stores replaced by its snapshot's
        c.kill(n.id)
    for n in c.nodes:
        for sub in ("data", "handoff"):
            shutil.rmtree(os.path.join(n.data_dir, sub))
            shutil.copytree(os.path.join(n.data_dir, "snapshots", "s2", sub),
                            os.path.join(n.data_dir, sub))
    n1 = c.node("node1")
    with pytest.raises(ZkvError, match="exited with code 1"):
        c.restart("node1")
    said = c.tail(n1)
    assert "holds snapshot 's2', taken before namespace(s) were truncated" in said, said
    assert "namespace 'sib' generation 0: 60 key(s)" in said and "zkv dump --store" in said
    assert os.path.exists(os.path.join(n1.data_dir, "data", "SNAPSHOT"))
    dumped = os.path.join(c.dir, "sib.jsonl")
    out = subprocess.run([ZKV, "dump", "--namespace", "sib", "--out", dumped,
                          *[a for n in c.nodes for a in ("--store", os.path.join(
                              n.data_dir, "data"))]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "dumped 60 key(s) of namespace 'sib' generation 0" in \
        out.stderr, out
    for n in c.nodes:
        n.extra = [*n.extra, "--purge-ended-namespaces"]
        c.restart(n.id)
    c.wait_converged(expect_up=["node1", "node2", "node3"])
    said = c.tail(n1, 40)
    assert "holds 60 key(s) of namespace 'sib' generation 0" in said and "purged now" in said
    out = zkv("keys", "--namespace", "sib", "--count", "--node", ep[0])
    assert out.returncode == 0 and out.stdout.strip() == "0", out  # (the truncate stood)
    out = zkv("load", dumped, "--node", ep[0])
    assert out.returncode == 0, out
    with Client(ep, timeout=5) as cl:
        got = cl.get_many([b"k%d" % i for i in range(60)], namespace="sib", r=2)
    assert sorted(got[0].values) == [b"v0", b"w0"]
    assert [r.values for r in got[1:]] == [[b"v%d" % i] for i in range(1, 60)]
    for n in c.nodes:  # the snapshot itself still holds the keys, purge or not
        with LogStore(os.path.join(n.data_dir, "snapshots", "s2", "data"), readonly=True) as s:
            assert sum(1 for k in s.keys() if k.startswith(b"\x00\x03\x00sib\x00")) == 60
