"""`zkv dump` / `zkv load` (zkv/dump.py): the format round-trips any keys, values and siblings;
a file that is not a dump, is damaged or was cut short is refused naming the line, with every
key before it written; and a real cluster's namespace copies into another cluster whole."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_helpers import one_line_error, zkv

from zkv import dump
from zkv.client import Client
from zkv.errors import InvalidRequest


class FakeClient:
    """What dump and load ask of a client, over a dict of key -> siblings."""

    def __init__(self, data: dict[bytes, list[bytes]] | None = None) -> None:
        self.data = data or {}
        self.written: list[tuple[bytes, bytes]] = []
        self.asked_r: set[int | None] = set()  # r of each items() call

    def items(self, namespace, prefix, r=None):
        self.asked_r.add(r)
        return [(k, list(vs)) for k, vs in self.data.items() if k.startswith(prefix)]

    def put_many(self, items, w=None, namespace="default", return_exceptions=False):
        self.written += items
        return [b"ctx"] * len(items)


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
    got = {key: values for _, key, values in records}
    assert got == data
    target = FakeClient()
    head, records = dump.read(io.StringIO(out.getvalue()), "f")
    assert dump.load(target, records, "ns2") == (len(data), [])
    assert sorted(target.written) == sorted((k, v) for k, vs in data.items() for v in vs)


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
])
def test_a_bad_dump_is_refused_naming_the_line_and_what_came_before_is_written(lines, why,
                                                                               written):
    target = FakeClient()
    with pytest.raises(InvalidRequest, match=why):
        head, records = dump.read(lines, "f")
        dump.load(target, records, "default")
    assert target.written == [(b"a", b"x")] * written  # every good key before it, no more


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
    # a damaged file: one line naming where, and what came before it written
    lines = out.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:11] + ["{garbage"] + lines[12:]) + "\n")
    assert "bad.jsonl:12: not a dump record" in one_line_error(
        zkv("load", str(bad), "--node", b.endpoints[0]))
    assert "No such file" in one_line_error(zkv("load", str(tmp_path / "none.jsonl"),
                                                "--node", b.endpoints[0]))
    line = one_line_error(zkv("load", str(out), "--node", b.endpoints[0], "--namespace", "nope"))
    assert "namespace 'nope' does not exist" in line, line
