"""`zkv dump` / `zkv load` (zkv/dump.py): the format round-trips any keys, values and siblings;
a file that is not a dump, is damaged or was cut short is refused naming the line, with every
key before it written; and a real cluster's namespace copies into another cluster whole."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_helpers import free_port, one_line_error, zkv

from zkv import dump
from zkv.client import Client
from zkv.errors import InvalidRequest


class FakeClient:
    """What dump and load ask of a client, over a dict of key -> siblings."""

    def __init__(self, data: dict[bytes, list[bytes]] | None = None) -> None:
        self.data = data or {}
        self.written: list[tuple[bytes, bytes]] = []
        self.asked_r: set[int | None] = set()  # r of each items() call
        self.ends: dict[bytes, int] = {}  # key -> when it stops being served (items' expiry)
        self.ttls: dict[bytes, int | None] = {}  # key -> the own ttl it was written with

    def items(self, namespace, prefix, r=None, expiry=False):
        self.asked_r.add(r)
        return [(k, list(vs), self.ends.get(k, 0)) for k, vs in self.data.items()
                if k.startswith(prefix)]

    limit = 1 << 20  # the value limit the client checks (InvalidRequest for the whole call)

    def put_many(self, items, w=None, namespace="default", return_exceptions=False, ttl=None,
                 write_ids=None):
        ttls = ttl if isinstance(ttl, list) else [ttl] * len(items)
        wids = write_ids or [None] * len(items)
        for i, (_, v) in enumerate(items):
            if len(v) > self.limit:
                raise InvalidRequest(f"item {i}: value of {len(v)} bytes exceeds the limit")
        for (k, v), t, wid in zip(items, ttls, wids, strict=True):
            if wid is None or wid not in self.wids:  # (a write id seen: the same write)
                self.written.append((k, v))
            self.wids.add(wid)
            self.ttls[k] = t
        return [b"ctx"] * len(items)

    @property
    def wids(self) -> set:
        return self.__dict__.setdefault("_wids", set())


siblings = st.lists(st.binary(max_size=40), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(data=st.dictionaries(st.binary(min_size=1, max_size=20), siblings, max_size=30))
def test_a_dump_reads_back_to_the_keys_and_siblings_it_was_made_of(data):
    out = io.StringIO()
    source = FakeClient(data)
    assert dump.dump(source, out, "ns1") == len(data)
    assert source.asked_r == {None}  # (the namespace's R)
    at_r2 = FakeClient(data)
    assert dump.dump(at_r2, io.StringIO(), "ns1", r=2) == len(data)
    assert at_r2.asked_r == {2}
    head, records = dump.read(io.StringIO(out.getvalue()), "f")
    assert head["namespace"] == "ns1"
    got = {key: values for _, key, values, _ in records}
    assert got == data
    target = FakeClient()
    head, records = dump.read(io.StringIO(out.getvalue()), "f")
    run = dump.new_load_id()
    assert dump.load(target, records, "ns2", load_id=run) == (len(data), [], 0, 0, 0, "")
    assert sorted(target.written) == sorted((k, v) for k, vs in data.items() for v in vs)
    head, records = dump.read(io.StringIO(out.getvalue()), "f")  # the same load resumed:
    assert dump.load(target, records, "ns2", load_id=run).loaded == len(data)  # nothing
    assert sorted(target.written) == sorted((k, v) for k, vs in data.items() for v in vs)
    head, records = dump.read(io.StringIO(out.getvalue()), "f")  # a new load: all anew
    dump.load(target, records, "ns2", load_id=dump.new_load_id())
    assert len(target.written) == 2 * sum(len(vs) for vs in data.values())


def _file(*records: dict, end: int | None = None) -> list[str]:
    lines = [json.dumps({"zkv_dump": 1, "namespace": "default"})]
    lines += [json.dumps(r) for r in records]
    if end is not None:
        lines.append(json.dumps({"zkv_dump_end": end}))
    return [line + "\n" for line in lines]


GOOD = {"k": "YQ==", "v": ["eA=="]}  # a -> [x]


@pytest.mark.parametrize("lines, why, written", [
    ([], "not a zkv dump", 0),
    (["hello\n"], "not a zkv dump", 0),
    (['{"zkv_dump": 2}\n'], "dump format 2", 0),
    (_file(GOOD, {"k": "!!", "v": ["eA=="]}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "YQ=="}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "YQ==", "v": []}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "", "v": ["eA=="]}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, ["not", "a", "dict"], end=2), "f:3: not a dump record", 1),
    (_file(GOOD, GOOD, end=3), "f:4: the end line counts 3 keys, the file has 2", 2),
    (_file(GOOD, GOOD), "f: cut short after 2 keys", 2),
    (_file(GOOD, dict(GOOD, x=-1), end=2), "f:3: not a dump record .*not a time", 1),
    (_file(GOOD, dict(GOOD, x="soon"), end=2), "f:3: not a dump record .*not a time", 1),
])
def test_a_bad_dump_is_refused_naming_the_line_and_what_came_before_is_written(lines, why,
                                                                               written):
    """A file that is not a dump is refused before anything is written; a damaged line or a
    file cut short stops the load there, every key before it written, and says why."""
    target = FakeClient()
    try:
        head, records = dump.read(lines, "f")
    except InvalidRequest as exc:
        assert re.search(why, str(exc)) and not written, exc
        return
    got = dump.load(target, records, "default")
    assert re.search(why, got.stopped) and got.loaded == written, got
    # every good key before it, no more (GOOD twice: one write id, the same write once)
    assert target.written == [(b"a", b"x")] * min(written, 1)


def test_a_dump_that_cannot_start_writes_nothing():
    """An unknown namespace or a cluster that does not answer fails before the first page:
    `zkv dump > f` left f holding a header line alone (and printed it on a terminal before
    the error). Nothing is written until the first page is in; an empty namespace is still
    a dump (header and end line)."""

    class Refusing(FakeClient):
        def items(self, namespace, prefix, r=None, expiry=False):
            raise InvalidRequest(f"unknown namespace {namespace!r}")
            yield  # (a generator, as Client.items: it raises at the first next())

    out = io.StringIO()
    with pytest.raises(InvalidRequest, match="unknown namespace 'nope'"):
        dump.dump(Refusing(), out, "nope")
    assert out.getvalue() == ""
    out = io.StringIO()
    assert dump.dump(FakeClient(), out, "empty") == 0
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"zkv_dump": 1, "namespace": "empty"}, {"zkv_dump_end": 0}]
    dead = f"tcp://127.0.0.1:{free_port()}"  # (nothing listens there)
    line = one_line_error(got := zkv("dump", "--node", dead, "--timeout", "0.3"))
    assert got.stdout == "" and "no node reachable" in line, got


def test_a_value_the_client_refuses_fails_alone_and_a_stop_keeps_the_failures():
    """One value over the client's limit made `zkv load` stop at once, the keys after it in
    its batch and the file never written, naming "item 200" of a batch (an outside run). It
    fails alone now, named by its line; and a load that stops later (a file cut short) still
    reports it, where it said "every key before that was written"."""
    big = {"k": dump._b64(b"big"), "v": [dump._b64(b"x" * (FakeClient.limit + 1))]}
    lines = _file(GOOD, big, {"k": "Yg==", "v": ["eQ=="]})  # a, big, b; no end line
    target = FakeClient()
    _, records = dump.read(lines, "f")
    got = dump.load(target, records, "default")
    assert target.written == [(b"a", b"x"), (b"b", b"y")]
    assert [(no, key) for no, key, _ in got.failed] == [(3, b"big")]
    assert "exceeds the limit" in str(got.failed[0][2])
    assert got.loaded == 2 and got.stopped == "f: cut short after 3 keys (no end line)", got


T0 = 1_800_000_000_000  # ms


@pytest.mark.parametrize("target, ttls, expired, longer", [
    # room for a write's ttl, and a namespace ttl of an hour: each keeps the time it had left
    ({"ttl": 3600, "write_ttl": True}, {b"soon": 1, b"later": 600, b"never": None}, 1, 0),
    # the time left is longer than the target keeps values: the target's ttl, shorter
    ({"ttl": 60, "write_ttl": True}, {b"soon": 1, b"later": None, b"never": None}, 1, 0),
    # no room for a write's ttl (an older namespace), or no ttl at all: longer, and counted
    ({"ttl": 3600, "write_ttl": False}, {b"soon": None, b"later": None, b"never": None}, 1, 2),
    ({"ttl": 0, "write_ttl": True}, {b"soon": None, b"later": None, b"never": None}, 1, 2),
])
def test_a_load_serves_nothing_longer_than_the_dump_says(target, ttls, expired, longer):
    """A value's expiry ("x") goes with the dump: the load leaves out what expired since and
    writes the rest with the time left of it as their own ttl, where the target namespace
    keeps such a ttl; elsewhere the target's ttl applies, and values served longer than the
    dump says are counted."""
    source = FakeClient({b"gone": [b"g"], b"soon": [b"s"], b"later": [b"l"],
                         b"never": [b"n"]})
    source.ends = {b"gone": T0 - 1, b"soon": T0 + 1500, b"later": T0 + 600_000}
    out = io.StringIO()
    dump.dump(source, out, "sess")
    assert f'"x": {T0 + 1500}' in out.getvalue()
    sink = FakeClient()
    _, records = dump.read(io.StringIO(out.getvalue()), "f")
    got = dump.load(sink, records, "copy", target=target, now_ms=lambda: T0)
    assert got == (3, [], expired, longer, 0, "")
    assert sink.ttls == ttls and b"gone" not in dict(sink.written)


def test_the_time_left_of_a_value_is_taken_when_its_batch_is_sent():
    """A value expiring 15 s after the dump, loaded among 60,000 others, was served 22 s
    after its source's expiry (an outside run): its ttl was reckoned when its line was read,
    rounded up, and the value waited in a batch until the load's end. It is reckoned when its
    batch goes, in whole seconds left (never longer), and one whose time ran out meanwhile is
    left out."""
    clock = [T0]

    def now() -> int:
        clock[0] += 100  # 0.1 s per look at the clock
        return clock[0]

    source = FakeClient({b"soon": [b"s"], b"later": [b"l"]})
    source.ends = {b"soon": T0 + 250, b"later": T0 + 10_950}
    out = io.StringIO()
    dump.dump(source, out, "sess")
    sink = FakeClient()
    _, records = dump.read(io.StringIO(out.getvalue()), "f")
    got = dump.load(sink, records, "copy", target={"ttl": 3600, "write_ttl": True},
                    now_ms=now)
    # read at T0+100 and T0+200 (both alive), sent at T0+300: soon's time has run out,
    # later has 10.65 s left: 10
    assert sink.ttls == {b"later": 10} and got.expired == 1 and got.loaded == 1, got


@pytest.mark.cluster
def test_a_namespace_copies_into_another_cluster_siblings_and_binary_included(make_cluster,
                                                                              tmp_path):
    a, b = make_cluster(3), make_cluster(3)
    blob = bytes(range(256)) * 10
    with Client(a.endpoints, timeout=5) as ca:
        ca.put_many([(b"k:%d" % i, b"v%d" % i) for i in range(700)], w=3)  # two get batches
        ca.put(b"bin\x00\xff", blob, w=3)
        ca.put(b"sib", b"one", w=3)
        ca.put(b"sib", b"two", w=3)  # blind: a sibling
        ca.namespace_create("other", n=2)
        ca.put(b"elsewhere", b"x", w=2, namespace="other")
    out = tmp_path / "a.jsonl"
    got = zkv("dump", "--out", str(out), "--node", a.endpoints[0])
    assert got.returncode == 0 and "dumped 702 key(s)" in got.stderr, got
    assert not (tmp_path / "a.jsonl.tmp").exists()
    got = zkv("load", str(out), "--node", b.endpoints[1], "--w", "3")
    assert got.returncode == 0 and "ok: 702 key(s) loaded into namespace 'default'" in got.stdout
    with Client(a.endpoints, timeout=5) as ca, Client(b.endpoints, timeout=5) as cb:
        keys = sorted(ca.keys())
        assert sorted(cb.keys()) == keys and len(keys) == 702
        for ra, rb in zip(ca.get_many(keys, r=3), cb.get_many(keys, r=3), strict=True):
            assert sorted(ra.values) == sorted(rb.values)
        assert sorted(cb.get(b"sib").values) == [b"one", b"two"]
        assert cb.get(b"bin\x00\xff").values == [blob]
        assert b"elsewhere" not in keys  # (another namespace's: not in the default's dump)
    # the other namespace dumped on its own, loaded under another name
    got = zkv("dump", "--namespace", "other", "--out", str(tmp_path / "o.jsonl"), "--node",
              a.endpoints[0])
    assert got.returncode == 0, got
    with Client(b.endpoints, timeout=5) as cb:
        cb.namespace_create("copy", n=2)
    got = zkv("load", str(tmp_path / "o.jsonl"), "--namespace", "copy", "--node",
              b.endpoints[0])
    assert got.returncode == 0 and "1 key(s) loaded into namespace 'copy'" in got.stdout, got
    with Client(b.endpoints, timeout=5) as cb:
        assert cb.get(b"elsewhere", namespace="copy").values == [b"x"]
    # a load cut short, resumed with the id it printed: nothing written twice
    half = tmp_path / "half.jsonl"
    half.write_text("".join(out.read_text().splitlines(keepends=True)[:300]))
    got = zkv("load", str(half), "--namespace", "copy", "--node", b.endpoints[1])
    assert got.returncode == 1 and "cut short after 299 keys" in got.stderr, got
    resume = got.stdout.split("--resume ", 1)[1].split(",")[0].split()[0]
    got = zkv("load", str(out), "--namespace", "copy", "--resume", resume, "--node",
              b.endpoints[1])
    assert got.returncode == 0 and "ok: 702 key(s) loaded into namespace 'copy'" in got.stdout
    with Client(b.endpoints, timeout=5) as cb:
        assert sorted(cb.get(b"sib", r=2, namespace="copy").values) == [b"one", b"two"]
        assert cb.get(b"k:7", r=2, namespace="copy").values == [b"v7"]
        # a restore after a delete (a new load, not resumed) brings the key back
        cb.delete(b"k:7", w=2, namespace="copy")
    got = zkv("load", str(out), "--namespace", "copy", "--node", b.endpoints[1], "--w", "2")
    assert got.returncode == 0, got
    with Client(b.endpoints, timeout=5) as cb:
        assert cb.get(b"k:7", r=2, namespace="copy").values == [b"v7"]
    # a bad --w stops the load at once, one line (not one failure per key)
    assert "w must be" in one_line_error(zkv("load", str(out), "--w", "7", "--node",
                                             b.endpoints[1]))
    # a damaged file: one line naming where, and what came before it written
    lines = out.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:11] + ["{garbage"] + lines[12:]) + "\n")
    got = zkv("load", str(bad), "--node", b.endpoints[0])
    assert "bad.jsonl:12: not a dump record" in one_line_error(got)
    assert got.stdout.startswith("partly: 10 key(s) loaded") and "not read" in got.stdout, got
    assert "No such file" in one_line_error(zkv("load", str(tmp_path / "none.jsonl"),
                                                "--node", b.endpoints[0]))
    line = one_line_error(zkv("dump", "--out", str(tmp_path / "no" / "x.jsonl"), "--node",
                              a.endpoints[0]))
    assert f"--out {tmp_path / 'no' / 'x.jsonl'}: No such file" in line, line  # (not its .tmp)
    # --out through a symbolic link writes its file (the link stays); into a FIFO, as it
    # is; '-' is stdout (as load's '-' is stdin)
    real, link, fifo = tmp_path / "real.jsonl", tmp_path / "link.jsonl", tmp_path / "fifo"
    real.write_text("precious\n")
    link.symlink_to(real)
    got = zkv("dump", "--namespace", "other", "--out", str(link), "--node", a.endpoints[0])
    assert got.returncode == 0 and link.is_symlink(), got
    assert real.read_text() == (tmp_path / "o.jsonl").read_text()
    os.mkfifo(fifo)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()))
    reader.start()
    got = zkv("dump", "--namespace", "other", "--out", str(fifo), "--node", a.endpoints[0])
    reader.join(30)
    assert got.returncode == 0 and stat.S_ISFIFO(os.lstat(fifo).st_mode), got
    assert read == [real.read_text()]
    got = zkv("dump", "--namespace", "other", "--out", "-", "--node", a.endpoints[0],
              cwd=tmp_path)
    assert got.returncode == 0 and got.stdout == real.read_text(), got
    assert not (tmp_path / "-").exists()
    # into an lww namespace: one value per key, and the load says so
    with Client(b.endpoints, timeout=5) as cb:
        cb.namespace_create("last", conflicts="lww")
    got = zkv("load", str(out), "--namespace", "last", "--node", b.endpoints[0])
    assert got.returncode == 0 and "702 key(s) loaded into namespace 'last'" in got.stdout
    assert "1 key(s) had siblings in the dump; namespace 'last' is lww and keeps one value " \
           "per key" in got.stderr, got
    with Client(b.endpoints, timeout=5) as cb:
        assert cb.get(b"sib", namespace="last").values in ([b"one"], [b"two"])
    line = one_line_error(zkv("load", str(out), "--node", b.endpoints[0], "--namespace", "nope"))
    assert "namespace 'nope' does not exist" in line, line
    # a key with more siblings than the target keeps: one line for the key (not one per
    # sibling refused, its line number repeated), saying what to change
    many = tmp_path / "many.jsonl"
    many.write_text("\n".join(json.dumps(x) for x in (
        {"zkv_dump": 1, "namespace": "copy"},
        {"k": dump._b64(b"crowd"), "v": [dump._b64(b"s%d" % i) for i in range(5)]},
        {"zkv_dump_end": 1})) + "\n")
    assert zkv("config", "--set", "max_siblings=3", "--all", "--node",
               b.endpoints[0]).returncode == 0
    got = zkv("load", str(many), "--namespace", "copy", "--node", b.endpoints[0])
    said = [x for x in got.stderr.splitlines() if x.strip()]
    assert got.returncode == 1 and len(said) == 1, got
    assert "many.jsonl:2 (crowd): 2 of its values refused, the first: TooManySiblings" in said[0]
    assert "raise its limit (zkv config --set max_siblings=N --all)" in said[0]
    assert got.stdout.startswith("partly: ") and \
        "2 write(s) of 1 key(s) failed" in got.stdout, got
