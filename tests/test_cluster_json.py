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
    member, or a node joining one, writes the file. With --seed or --new-cluster too (it
    rejoined through --seed as a node its cluster did not know): the operator restores the
    file, or removes it first."""
    path = tmp_path / "cluster.json"
    save_cluster(str(path), _doc())
    _flipped(path, '"n": 3', '"n": 2')
    why = check_founding(str(tmp_path), [], False)
    assert why is not None and str(path) in why and "checksum does not match" in why, why
    assert "--seed LISTEN of a running member" in why and "restore cluster.json from a " \
        "backup" in why and "--new-cluster" in why, why
    assert "is damaged" in check_founding(str(tmp_path), ["tcp://127.0.0.1:57600"], False)
    assert "is damaged" in check_founding(str(tmp_path), [], True)
    # zkv-node itself: exit 1, one line naming the file, before it binds anything
    out = subprocess.run([ZKV + "-node", "--id", "n1", "--listen", "tcp://127.0.0.1:57600",
                          "--gossip", "tcp://127.0.0.1:57601", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out
    assert f"zkv-node: {path} is damaged: its checksum does not match" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


UNPARSEABLE = [b"", b"\0" * 300, b'{"settings": {"q": 64, "n"', b"\xff\xfe garbage", b"[1, 2]"]


def test_an_unparseable_file_refuses_every_start_naming_it_and_what_to_do(tmp_path):
    """A cluster.json that does not parse (zero-filled, truncated, garbage, not an object) with
    no good earlier copy refused nothing on a data dir without data: the node founded a new
    cluster of its own, or joined through --seed as a node the cluster never saw. Now it
    refuses every start, --seed and --new-cluster too, until the operator restores the file
    or removes it."""
    path = tmp_path / "cluster.json"
    for junk in UNPARSEABLE:
        path.write_bytes(junk)
        for seeds, new in (([], False), (["tcp://127.0.0.1:57990"], False), ([], True)):
            why = check_founding(str(tmp_path), seeds, new)
            assert why is not None and f"{path} is damaged" in why, (junk, seeds, why)
            assert "restore cluster.json from a backup" in why, why
            assert f"rm {path}" in why and "--seed LISTEN of a running member" in why, why
    # zkv-node itself, with --seed: exit 1, naming the file, before it binds anything
    path.write_bytes(b"\0" * 300)
    out = subprocess.run([ZKV + "-node", "--id", "n1", "--listen", "tcp://127.0.0.1:57990",
                          "--gossip", "tcp://127.0.0.1:57991", "--data-dir", str(tmp_path),
                          "--seed", "tcp://127.0.0.1:57992"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out
    assert f"zkv-node: {path} is damaged: unreadable" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    # removed explicitly, as the refusal says: a start with --seed goes on
    path.unlink()
    assert check_founding(str(tmp_path), ["tcp://127.0.0.1:57990"], False) is None


def test_a_file_half_written_by_a_crash_falls_back_to_the_previous_copy(tmp_path, caplog):
    """Saves are atomic (temp file + rename), but only the start's is synced: a power loss can
    leave the last one renamed and empty or zero-filled. Each save keeps the file it replaces
    as cluster.json.prev, which a load takes (with a warning) when cluster.json is damaged,
    and puts back in its place; with both damaged, the start is refused."""
    path = tmp_path / "cluster.json"
    first, second = _doc(), dict(_doc(), features={"n2": 7})
    save_cluster(str(path), first, durable=True)
    save_cluster(str(path), second)
    assert read_cluster(str(path)) == (second, "")
    assert read_cluster(str(path) + ".prev") == (first, "")
    for junk in UNPARSEABLE:
        path.write_bytes(junk)
        caplog.clear()
        assert read_cluster(str(path)) == (first, ""), junk
        assert "starting from the copy saved before" in caplog.text, caplog.text
        assert read_cluster(str(path)) == (first, "")  # put back in its place
        assert check_founding(str(tmp_path), [], False) is None
    # the next save keeps the good copy it replaces
    save_cluster(str(path), second)
    assert read_cluster(str(path) + ".prev") == (first, "")
    # both damaged (or the earlier copy gone): refused, naming cluster.json
    path.write_bytes(b"\0" * 300)
    (tmp_path / "cluster.json.prev").write_bytes(b"\0" * 300)
    assert read_cluster(str(path))[1].startswith("unreadable")
    assert "is damaged" in check_founding(str(tmp_path), ["tcp://127.0.0.1:57990"], False)
    (tmp_path / "cluster.json.prev").unlink()
    assert "is damaged" in check_founding(str(tmp_path), [], False)
    # a changed byte (checksum mismatch) falls back likewise: the earlier copy is good
    save_cluster(str(path), first)
    save_cluster(str(path), second)
    _flipped(path, '"n": 3', '"n": 2')
    assert read_cluster(str(path)) == (first, "")


def test_a_node_restarts_from_the_earlier_copy_and_refuses_with_none(tmp_path):
    """Real processes: a founder stopped, its cluster.json zero-filled (a power loss after an
    unsynced save), starts again from the earlier copy, in the same cluster; with that copy
    damaged too it refuses to start, --seed or not, and starts once the file is removed."""
    from ops_helpers import Nodes, free_port, wait_for

    import zkv

    nodes = Nodes(tmp_path)
    ports = [free_port() for _ in range(3)]
    ep = f"tcp://127.0.0.1:{ports[0]}"
    data = tmp_path / "d1"
    path, prev = data / "cluster.json", data / "cluster.json.prev"

    def start(*extra):
        return nodes.start("--id", "n1", "--listen", ep, "--gossip",
                           f"tcp://127.0.0.1:{ports[1]}", "--data-dir", str(data), *extra)

    def cluster_id() -> str:
        with zkv.Client([ep], timeout=2.0) as c:
            c.put(b"k", b"v", w=1)
            return read_cluster(str(path))[0]["cluster"]

    try:
        p = start()
        wait_for(cluster_id, 30, "the node serving")
        with zkv.Client([ep], timeout=5.0) as c:
            c.namespace_create("carts", n=1)  # (a second save: the first is kept)
        wait_for(prev.exists, 30, "cluster.json saved twice")
        founded = cluster_id()
        assert nodes.stop(p) == 0
        path.write_bytes(b"\0" * path.stat().st_size)
        p = start()
        assert wait_for(cluster_id, 30, "the node serving again") == founded
        assert "starting from the copy saved before its last write" in nodes.log(p)
        assert nodes.stop(p) == 0
        for f in (path, prev):
            f.write_bytes(b"\0" * 100)
        for extra in ([], ["--seed", f"tcp://127.0.0.1:{ports[2]}"]):
            p = start(*extra)
            assert p.wait(30) == 1
            assert f"zkv-node: {path} is damaged: unreadable" in nodes.log(p), nodes.log(p)
        path.unlink()  # as the refusal says (then --seed of a member; here a new cluster)
        p = start("--new-cluster")
        wait_for(cluster_id, 30, "the node serving")
    finally:
        nodes.close()
