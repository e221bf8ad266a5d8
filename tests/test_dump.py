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
OTHER = {"k": "Yg==", "v": ["eQ=="]}  # b -> [y]


@pytest.mark.parametrize("lines, why, written", [
    ([], "f: empty, not a zkv dump", 0),
    (["\n"], "f: empty, not a zkv dump", 0),
    (["hello\n"], "not a zkv dump", 0),
    (['{"zkv_dump": 3}\n'], "dump format 3, this version reads 1 and 2", 0),
    (['{"zkv_dump": 2}\n'], "f:1: not a zkv dump header", 0),
    (_file(GOOD, {"k": "!!", "v": ["eA=="]}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "YQ=="}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "YQ==", "v": []}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, {"k": "", "v": ["eA=="]}, end=2), "f:3: not a dump record", 1),
    (_file(GOOD, ["not", "a", "dict"], end=2), "f:3: not a dump record", 1),
    (_file(GOOD, OTHER, end=3), "f:4: the end line counts 3 keys, the file has 2", 2),
    (_file(GOOD, OTHER), "f: cut short after 2 keys", 2),
    (_file(GOOD, dict(GOOD, x=-1), end=2), "f:3: not a dump record .*not a time", 1),
    (_file(GOOD, dict(GOOD, x="soon"), end=2), "f:3: not a dump record .*not a time", 1),
    # a key twice: a line duplicated (format 1 has no digests, but a key read twice is damage)
    (_file(GOOD, OTHER, GOOD, end=3), "f:4: key b'a' a second time", 2),
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
    assert target.written == [(b"a", b"x"), (b"b", b"y")][:written]  # (no more)


def _dumped(n: int = 6) -> list[str]:
    """A format-2 dump of keys k0.. (k1 with two siblings, k2 expiring), as lines."""
    source = FakeClient({b"k%d" % i: [b"v%d" % i] + [b"w"] * (i == 1) for i in range(n)})
    source.ends = {b"k2": T0}
    out = io.StringIO()
    dump.dump(source, out, "ns1")
    return out.getvalue().splitlines(keepends=True)


def _flip(line: str, field: str) -> str:
    """The line with one base64 character of `field`'s text changed (still valid base64)."""
    rec = json.loads(line)
    text = rec[field] if isinstance(rec[field], str) else rec[field][0]
    text = ("b" if text[0] != "b" else "c") + text[1:]
    if isinstance(rec[field], str):
        rec[field] = text
    else:
        rec[field][0] = text
    return json.dumps(rec) + "\n"


def _damaged(lines: list[str], how: str) -> list[str]:
    lines = list(lines)  # 0 header, 1..6 records (k0..k5), 7 the end line
    if how == "value":
        lines[3] = _flip(lines[3], "v")
    elif how == "key":
        lines[3] = _flip(lines[3], "k")
    elif how == "expiry":
        lines[3] = lines[3].replace(f'"x": {T0}', f'"x": {T0 + 1}')
    elif how == "place":
        lines[3] = lines[3].replace('"n": 3', '"n": 4')
    elif how == "lost+dup":  # (the operator's: the count at the end still matches)
        lines[3:] = lines[4:5] + lines[4:]
    elif how == "dup":
        lines[4:4] = lines[3:4]
    elif how == "swapped":
        lines[3], lines[4] = lines[4], lines[3]
    elif how == "last lost":  # (its count fixed too)
        lines[6:] = [json.dumps(dict(json.loads(lines[7]), zkv_dump_end=5)) + "\n"]
    elif how == "header":
        lines[0] = lines[0].replace("ns1", "ns2")
    elif how == "format 1":  # (one character of the header: every check would be off)
        lines[0] = lines[0].replace('"zkv_dump": 2', '"zkv_dump": 1')
        lines[3] = _flip(lines[3], "v")
    elif how == "no digest":
        lines[3] = json.dumps({k: v for k, v in json.loads(lines[3]).items() if k != "h"})
    return lines


@pytest.mark.parametrize("how, why, written", [
    ("value", r"f:4: damaged record: its digest h=\w{32} does not match", 2),
    ("key", "f:4: damaged record", 2),
    ("expiry", "f:4: damaged record", 2),
    ("place", "f:4: damaged record", 2),
    ("no digest", "f:4: not a dump record", 2),
    ("format 1", "f:2: not a dump record \\(a record with digests under a format-1", 0),
    ("lost+dup", "f:4: record 4 where record 3 was expected: a line lost or moved", 2),
    ("dup", "f:5: record 3 where record 4 was expected: a line duplicated or moved", 3),
    ("swapped", "f:4: record 4 where record 3 was expected", 2),
    ("last lost", "f:7: the end line's chain of the records' digests .* does not match", 5),
    ("header", "f:8: the end line's chain .* the header changed", 6),
])
def test_a_damaged_record_stops_the_load_at_its_line_before_any_of_it_is_written(how, why,
                                                                                 written):
    """One base64 character of a value or key changed, or a line lost and another
    duplicated (the end line's count still right), loaded "ok" into a cluster: a damaged
    value, a value under another key, a key missing (an operator's runs). Each record has
    a digest and a place, and the end line a chain of the digests: the load stops at the
    first line that does not hold, naming it, with the records before it written and
    nothing of that one."""
    lines = _dumped()
    assert json.loads(lines[0]) == {"zkv_dump": 2, "namespace": "ns1"}
    _, records = dump.read(lines, "f")
    got = dump.load(FakeClient(), records, "ns1", now_ms=lambda: T0 - 1)  # (undamaged)
    assert got.loaded == 6 and not got.stopped, got
    target = FakeClient()
    _, records = dump.read(_damaged(lines, how), "f")
    got = dump.load(target, records, "ns1", now_ms=lambda: T0 - 1)
    assert re.search(why, got.stopped) and got.loaded == written, got
    want = [(b"k%d" % i, v) for i in range(written) for v in [b"v%d" % i] + [b"w"] * (i == 1)]
    assert target.written == want


def test_a_format_1_dump_loads_as_before_and_says_it_carries_no_checksums():
    """A dump an older zkv wrote (format 1: no "n", no "h", no chain) loads as it did."""
    lines = _file(GOOD, {"k": "Yg==", "v": ["eQ==", "eg=="], "x": T0}, end=2)
    head, records = dump.read(lines, "f")
    assert dump.unchecked(head)
    target = FakeClient()
    assert dump.load(target, records, "default", now_ms=lambda: T0 - 1).loaded == 2
    assert target.written == [(b"a", b"x"), (b"b", b"y"), (b"b", b"z")]
    assert not dump.unchecked(dump.read(_dumped(), "f")[0])


def test_a_prefix_dump_is_checked_as_a_whole_one():
    """`zkv dump --prefix`: its records are numbered and chained from 1 as any dump's."""
    source = FakeClient({b"a:1": [b"x"], b"b:1": [b"y"], b"a:2": [b"z"]})
    out = io.StringIO()
    assert dump.dump(source, out, "ns1", prefix=b"a:") == 2
    _, records = dump.read(io.StringIO(out.getvalue()), "f")
    assert [(no, key) for no, key, _, _ in records] == [(2, b"a:1"), (3, b"a:2")]


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
        {"zkv_dump": dump.FORMAT, "namespace": "empty"},
        {"zkv_dump_end": 0, "chain": dump._chain_start("empty").hex()}]
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
    # one base64 character of a value changed (loaded "ok" before, the damaged bytes stored:
    # an operator's run): the load stops at its line, nothing of that key written; the file
    # fixed, the load goes on with --resume
    rec = json.loads(lines[20])
    rec["v"][0] = ("B" if rec["v"][0][0] != "B" else "C") + rec["v"][0][1:]
    bad.write_text("\n".join(lines[:20] + [json.dumps(rec)] + lines[21:]) + "\n")
    with Client(b.endpoints, timeout=5) as cb:
        cb.namespace_create("fresh", n=3)
    got = zkv("load", str(bad), "--namespace", "fresh", "--node", b.endpoints[0], "--w", "3")
    line = one_line_error(got)
    assert "bad.jsonl:21: damaged record: its digest h=" in line, line
    assert "does not match its place, key, values and expiry" in line, line
    assert got.stdout.startswith("partly: 19 key(s) loaded into namespace 'fresh'"), got
    resume = got.stdout.split("--resume ", 1)[1].split(",")[0].split()[0]
    with Client(b.endpoints, timeout=5) as cb:
        assert not cb.get(dump._unb64(rec["k"]), r=3, namespace="fresh").found
    got = zkv("load", str(out), "--namespace", "fresh", "--resume", resume, "--node",
              b.endpoints[1])
    assert got.returncode == 0 and "ok: 702 key(s) loaded into namespace 'fresh'" in got.stdout
    assert got.stderr == "", got
    with Client(a.endpoints, timeout=5) as ca, Client(b.endpoints, timeout=5) as cb:
        for ra, rb in zip(ca.get_many(keys, r=3), cb.get_many(keys, r=3, namespace="fresh"),
                          strict=True):
            assert sorted(ra.values) == sorted(rb.values)
    # --prefix: a dump of some keys is checked as a whole one
    got = zkv("dump", "--prefix", "k:1", "--out", str(tmp_path / "p.jsonl"), "--node",
              a.endpoints[0])
    assert got.returncode == 0 and "dumped 111 key(s)" in got.stderr, got  # k:1, k:1N, k:1NN
    got = zkv("load", str(tmp_path / "p.jsonl"), "--namespace", "copy", "--node",
              b.endpoints[0])
    assert got.returncode == 0 and "ok: 111 key(s) loaded" in got.stdout, got
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
    assert got.returncode == 1 and len(said) == 2, got
    # (written by hand in format 1, an older zkv's: loaded as before, and said so)
    assert said[0] == ("zkv: " + str(many) + ": dump format 1 (an older zkv's) carries no "
                       "checksums: a value or key damaged in it is loaded as it reads")
    assert "many.jsonl:2 (crowd): 2 of its values refused, the first: TooManySiblings" in said[1]
    assert "raise its limit (zkv config --set max_siblings=N --all)" in said[1]
    assert got.stdout.startswith("partly: ") and \
        "2 write(s) of 1 key(s) failed" in got.stdout, got


# ---- damaged stores: zkv dump --store, zkv compact ----------------------------------------------
def _store_with_rotten_records(path: str, rotten: tuple[bytes, ...], hints: bool) -> None:
    """Keys k00..k19 of the default namespace (one version each); a bit of the value of each
    `rotten` key's record flipped on disk. `hints`: the open trusts the segment's hints file
    and a read finds the damage ("corrupt record" lines, the auditor's run); else the open's
    scan does."""
    from zkv._core import dvv, record
    from zkv.storage import LogStore

    with LogStore(path) as s:
        for i in range(20):
            s.put(b"k%02d" % i, dvv.update(None, b"", b"v%02d" % i, "n1").encode())
    for name in os.listdir(path):
        if name.endswith(".data"):
            seg = os.path.join(path, name)
            image = open(seg, "rb").read()
            with open(seg, "r+b") as fh:
                for off, size, _flags, key, _ok in record.scan(image):
                    if key in rotten:
                        fh.seek(off + size - 1)
                        fh.write(bytes([image[off + size - 1] ^ 0x10]))
            if not hints and os.path.exists(seg[:-5] + ".hint"):
                os.unlink(seg[:-5] + ".hint")


@pytest.mark.parametrize("hints", [True, False])
def test_a_dump_of_a_damaged_store_names_the_keys_it_left_out_and_exits_4(tmp_path, hints):
    """`zkv dump --store` printed "corrupt record" lines, exited 0, and its summary did not
    say it had left keys out (an outside data-integrity run)."""
    from zkv._core import dvv
    from zkv.storage import LogStore

    data = str(tmp_path / "data")
    _store_with_rotten_records(data, (b"k03", b"k07"), hints)
    hurt: list[dump.StoreDamage] = []
    out = io.StringIO()
    got = dump.dump_stores([data], out, "default", damage=hurt.append)
    assert got.keys == 18 and len(hurt) == 1
    assert hurt[0].left_out == [b"k03", b"k07"] and hurt[0].from_other_copies == 0
    assert hurt[0].regions == (0 if hints else 2)
    # another replica's store holds a good copy of k03: dumped from it, and said so
    copy = str(tmp_path / "copy")
    with LogStore(copy) as s:
        s.put(b"k03", dvv.update(None, b"", b"v03", "n1").encode())
    hurt.clear()
    got = dump.dump_stores([data, copy], io.StringIO(), "default", damage=hurt.append)
    assert got.keys == 19 and hurt[0].left_out == [b"k07"] and hurt[0].from_other_copies == 1
    # the command: the dump is written without them, each is named, the summary says so
    ran = zkv("dump", "--store", data, "--out", str(tmp_path / "d.jsonl"))
    assert ran.returncode == 4, ran
    assert "left out (corrupt record, no good copy): k03" in ran.stderr, ran.stderr
    assert "left out (corrupt record, no good copy): k07" in ran.stderr, ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("zkv: STORE DAMAGED: 2 key(s) LEFT OUT of the dump"), ran.stderr
    assert "dumped 18 key(s) of namespace 'default'" in ran.stderr
    _, records = dump.read(open(tmp_path / "d.jsonl").read().splitlines(), "d")
    assert sorted(k for _, k, _, _ in records) == [b"k%02d" % i for i in range(20)
                                                   if i not in (3, 7)]
    # a sound store: 0, as before
    ran = zkv("dump", "--store", copy, "--out", str(tmp_path / "c.jsonl"))
    assert ran.returncode == 0 and "DAMAGED" not in ran.stderr, ran


@pytest.mark.parametrize("hints", [True, False])
def test_a_compaction_of_a_damaged_store_names_the_keys_it_dropped_and_exits_4(tmp_path,
                                                                               hints):
    """`zkv compact` dropped corrupt records and exited 0: after it nothing named the keys
    that needed repair (the next open finds them merely absent)."""
    from zkv.storage import LogStore

    data = str(tmp_path / "data")
    _store_with_rotten_records(data, (b"k03", b"k07"), hints)
    ran = zkv("compact", "--data-dir", data, "--json")
    assert ran.returncode == 4, ran
    stats = json.loads(ran.stdout)
    assert stats["corrupt_keys"] == 2 and stats["damaged_regions"] == (0 if hints else 2)
    for key in ("k03", "k07"):
        assert f"zkv compact: dropped a corrupt record, needs repair: {key}" in ran.stderr
    assert "STORE DAMAGED: 2 key(s) whose record failed its CRC dropped" in ran.stderr
    with LogStore(data) as s:  # gone from the disk, and from corrupt_keys: only that list
        assert s.corrupt_keys() == [] and s.get(b"k03") is None and len(s) == 18
    ran = zkv("compact", "--data-dir", data)
    assert ran.returncode == 0 and "DAMAGED" not in ran.stderr, ran
    assert "exit status" in zkv("compact", "--help").stdout
