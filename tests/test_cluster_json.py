"""cluster.json's checksum: a changed byte that still parses makes the file damaged (an outside
run's `"n": 3` -> `"n": 2` ran a node on an N=2 ring of its own, in split brain), a node
started without --seed on it refuses to start, naming the file and what to do; a file an older
version wrote (no checksum) loads as before, and an older version reads this one's."""

from __future__ import annotations

import json
import subprocess

from ops_helpers import ZKV

from zkv.node.membership import (
    CHECKSUM,
    MISMATCH,
    check_founding,
    load_cluster,
    read_cluster,
    save_cluster,
)

MEMBERS = [["n2", "tcp://127.0.0.1:57602", "tcp://127.0.0.1:57603", "r1"],
           ["n3", "tcp://127.0.0.1:57604", "tcp://127.0.0.1:57605", "r1"]]


def _doc() -> dict:
    return {"settings": {"q": 64, "n": 3, "r": 2, "w": 2, "auto_commit": True},
            "cluster": "00" * 40, "members": MEMBERS, "features": {"n2": 3},
            "dots": ["n1", 1700000000000], "namespaces": [{"name": "default", "r": 2}]}


def test_a_saved_file_carries_a_checksum_and_loads_without_it(tmp_path):
    path = str(tmp_path / "cluster.json")
    save_cluster(path, _doc(), durable=True)
    raw = json.load(open(path))
    assert raw[CHECKSUM].startswith("blake3:") and len(raw[CHECKSUM]) == 7 + 64
    assert read_cluster(path) == (_doc(), "")
    # what an older version's load_cluster (which passes fields it does not know) reads: the
    # same document, one field more, which nothing there looks at
    del raw[CHECKSUM]
    assert raw == _doc()


def test_a_file_without_a_checksum_loads_as_before(tmp_path):
    """The file of the previous version (no checksum) is not checked, and founds nothing."""
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(_doc()))
    assert read_cluster(str(path)) == (_doc(), "")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "seg-00000001.data").write_bytes(b"x" * 100)
    assert check_founding(str(tmp_path), [], False) is None


def _flipped(path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (old, text)
    path.write_text(text.replace(old, new))
    json.loads(path.read_text())  # (still parses)


def test_a_changed_byte_that_still_parses_is_damaged(tmp_path):
    path = tmp_path / "cluster.json"
    for old, new in [('"n": 3', '"n": 2'),          # the outside run's bit
                     ('"n2", "tcp', '"n3", "tcp'),  # a member's id
                     ('"checksum"', '"chacksum"'),  # the field's own name: unchecked, passes
                     ('"auto_commit": true', '"auto_commit": 1')]:
        save_cluster(str(path), _doc())
        _flipped(path, old, new)
        assert read_cluster(str(path)) == ({}, MISMATCH), old
        assert load_cluster(str(path)) == {}
    # the checksum's own digits
    save_cluster(str(path), _doc())
    digest = json.load(open(path))[CHECKSUM]
    _flipped(path, digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))
    assert read_cluster(str(path)) == ({}, MISMATCH)


def test_a_damaged_file_refuses_a_start_without_seed_naming_it_and_what_to_do(tmp_path):
    """Even on a data dir without data (a member that had received nothing yet): only a
    member, or a node joining one, writes the file. With --seed of a running member the node
    rejoins (the file is ignored, as an unreadable one is), --new-cluster founds anyway."""
    path = tmp_path / "cluster.json"
    save_cluster(str(path), _doc())
    _flipped(path, '"n": 3', '"n": 2')
    why = check_founding(str(tmp_path), [], False)
    assert why is not None and str(path) in why and "checksum does not match" in why, why
    assert "--seed LISTEN of a running member" in why and "restore cluster.json from a " \
        "backup" in why and "--new-cluster" in why, why
    assert check_founding(str(tmp_path), ["tcp://127.0.0.1:57600"], False) is None
    assert check_founding(str(tmp_path), [], True) is None
    # zkv-node itself: exit 1, one line naming the file, before it binds anything
    out = subprocess.run([ZKV + "-node", "--id", "n1", "--listen", "tcp://127.0.0.1:57600",
                          "--gossip", "tcp://127.0.0.1:57601", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out
    assert f"zkv-node: {path} is damaged: its checksum does not match" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
