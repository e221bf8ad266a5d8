"""A node's snapshots: both stores hard-linked, as they are at one moment, under
DATA_DIR/snapshots/NAME (what `zkv snapshot` asks for; Cassandra's `nodetool snapshot`).

A snapshot costs no copy of the data (LogStore.snapshot links the sealed segments; only the
new directory entries are written) and stays as it was whatever the node writes or compacts
after, so it can be copied off the machine at leisure. It holds disk space once compaction has
replaced the segments it links: remove it (`rm -r`) once it is copied. Layout:

    DATA_DIR/snapshots/NAME/data/       the data store's segments (and their hints files)
    DATA_DIR/snapshots/NAME/handoff/    the handoff store's (hints kept for absent owners)
    DATA_DIR/snapshots/NAME/{data,handoff}/SNAPSHOT   when it was taken (MARK, below)
    DATA_DIR/snapshots/NAME/snapshot.json   this module's manifest (below)

Both the manifest and the marks record the namespace registry of the snapshot's moment
("namespaces", Registry.to_builtins: every name's version, its generation included). The
stored keys name their generation, and a registry that ended it since (a truncate, a drop)
makes them dead, so a restore must know which generations were live when it was taken
(`ended_since`).

Restoring one is the operator's (README, "Backups"): with the node stopped, its data/ and
handoff/ replaced by the snapshot's; on start it rejoins and hint delivery and anti-entropy
bring it the writes taken since. A snapshot older than the replicas' reap memory is refused
at start (`check_restored`): the deletes made since it was taken would come back. The node's membership files are not part of it: the
cluster's current ones are newer than any snapshot.
"""

from __future__ import annotations

import json
import os
import shutil

from zkv.errors import InvalidRequest, ZkvError
from zkv.node.namespaces import Registry, generation, valid_name

SNAPSHOTS = "snapshots"  # under the data dir
MANIFEST = "snapshot.json"
# in each store directory of a snapshot (data/, handoff/), so that it comes back with a
# restore: {"snapshot": NAME, "node": ID, "created_ms": wall ms, "namespaces": [...]}; the node
# removes it once it started on the restored stores (check_restored)
MARK = "SNAPSHOT"


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise InvalidRequest(f"snapshot name {name!r}: 1 to 64 characters of A-Z a-z 0-9 _ . - "
                             f"(not . or ..)")


def take(data_dir: str, name: str, node_id: str, stores: dict, wall_ms: int,
         namespaces: list[dict] | None = None) -> dict:
    """Snapshot `stores` ({subdirectory: LogStore}) as `name`; returns the manifest:
    {"node", "name", "path", "created_ms", "stores": {sub: {"files", "bytes"}}, "bytes",
    "namespaces"} ("namespaces": the node's registry now, Registry.to_builtins, in the marks
    too).
    InvalidRequest for a bad or taken name or a store that cannot be snapshotted; StorageFull
    or OSError from the engine (nothing of the snapshot is left then)."""
    _check_name(name)
    for sub, store in stores.items():
        if not hasattr(store, "snapshot"):
            raise InvalidRequest(f"{node_id}'s {sub} store cannot be snapshotted "
                                 f"({type(store).__name__})")
    root = os.path.join(data_dir, SNAPSHOTS)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, name)
    try:
        os.mkdir(path)
    except FileExistsError:
        raise InvalidRequest(f"snapshot {name!r} exists on {node_id} ({path}): pick another "
                             f"name, or remove it") from None
    try:
        info: dict = {"node": node_id, "name": name, "path": os.path.abspath(path),
                      "created_ms": wall_ms, "stores": {}}
        for sub, store in stores.items():
            info["stores"][sub] = store.snapshot(os.path.join(path, sub))
            with open(os.path.join(path, sub, MARK), "w") as f:
                json.dump({"snapshot": name, "node": node_id, "created_ms": wall_ms,
                           "namespaces": namespaces or []}, f)
        info["bytes"] = sum(s["bytes"] for s in info["stores"].values())
        info["namespaces"] = namespaces or []
        tmp = os.path.join(path, MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(path, MANIFEST))  # (its presence: the snapshot is whole)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # (no partial snapshot left to be trusted)
        raise
    return info


def listing(data_dir: str) -> list[dict]:
    """Every snapshot under the data dir, oldest first: its manifest plus "held", the bytes
    only it still links (what removing it frees: files compaction has replaced since), or
    {"name", "path", "incomplete": True} for a directory without a manifest (a snapshot cut
    short by a crash: remove it)."""
    root = os.path.join(data_dir, SNAPSHOTS)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(root, name)
        if not valid_name(name) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, MANIFEST)) as f:
                info = json.load(f)
        except (OSError, ValueError):
            out.append({"name": name, "path": os.path.abspath(path), "incomplete": True,
                        "created_ms": 0, "held": _held(path)})
            continue
        info["held"] = _held(path)
        out.append(info)
    return sorted(out, key=lambda i: (i.get("created_ms", 0), i["name"]))


def remove(data_dir: str, name: str, node_id: str) -> dict:
    """Delete snapshot `name`; returns {"removed": name, "freed": bytes only it linked}.
    InvalidRequest if there is none of that name."""
    _check_name(name)
    path = os.path.join(data_dir, SNAPSHOTS, name)
    if not os.path.isdir(path):
        raise InvalidRequest(f"no snapshot {name!r} on {node_id}")
    freed = _held(path)
    shutil.rmtree(path)
    return {"removed": name, "freed": freed}


def _held(path: str) -> int:
    """Bytes of the files under `path` that no other directory entry links any more."""
    held = 0
    for where, _, files in os.walk(path):
        for fn in files:
            try:
                st = os.lstat(os.path.join(where, fn))
            except FileNotFoundError:
                continue
            if st.st_nlink == 1:
                held += st.st_size
    return held


def ended_since(data_dir: str, current: object) -> tuple[str, list[tuple[str, int, int]]]:
    """The namespace generations whose keys a node's restored store holds (its MARK in
    DATA_DIR/data) that were live when the snapshot was taken and that `current` (the
    registry cluster.json holds: Registry.to_builtins) has ended since, by a truncate or a
    drop: (the snapshot's name, [(namespace, generation, live keys)]); ("", []) when the
    store is no restored snapshot or holds none. A node started on it would purge them
    (Registry.is_dead): the purge sweep takes them for leftovers of the truncate. A snapshot
    whose mark has no registry (taken by an older version) counts every key the current
    registry calls dead."""
    mark = os.path.join(data_dir, "data", MARK)
    try:
        with open(mark) as f:
            info = json.load(f)
        then_raw = info.get("namespaces") or None
        name = str(info.get("snapshot", "?"))
        cur = Registry.from_builtins(current) if current else None
    except (OSError, ValueError, AttributeError):
        return "", []  # (no mark; a bad one: check_restored says so; a bad registry: ignored)
    if cur is None or not cur.dead_gens:
        return name, []
    try:
        then = Registry.from_builtins(then_raw) if then_raw else None
    except ValueError:
        then = None
    from zkv._core import dvv
    from zkv.storage import LogStore

    counts: dict[tuple[str, int], int] = {}
    with LogStore(os.path.join(data_dir, "data"), readonly=True) as store:
        for key in store.keys():
            if key[:1] != b"\x00" or not cur.is_dead(key) or (then and then.is_dead(key)):
                continue
            found = generation(key)
            value = store.get(key)
            try:
                live = value is not None and dvv.has_value_encoded(value)
            except ValueError:
                live = True  # (a value that cannot be read still counts: it is not purged)
            if found is None or not live:
                continue
            where = (found[0].decode("ascii", "replace"), found[1])
            counts[where] = counts.get(where, 0) + 1
    return name, [(ns, gen, n) for (ns, gen), n in sorted(counts.items())]


def check_ended(data_dir: str, current: object, purge: bool) -> list[str]:
    """`ended_since` as a start sees it: nothing ended, []; else the WARNING lines to log,
    one per namespace, if `purge` (--purge-ended-namespaces: the node starts and purges
    them, as the truncate or drop asked), or ZkvError naming each and what to do (every mark
    kept: nothing changed)."""
    name, ended = ended_since(data_dir, current)
    if not ended:
        return []
    store = os.path.join(os.path.abspath(data_dir), "data")
    lines = []
    for ns, gen, keys in ended:
        get_back = (f"`zkv dump --store {store} --namespace {ns} --generation {gen} --out "
                    f"{ns}.{gen}.jsonl` (before the start, or from the snapshot's own data/ "
                    f"copy), then `zkv load {ns}.{gen}.jsonl --namespace {ns}` into the live "
                    f"namespace")
        if purge:
            lines.append(
                f"restored snapshot {name!r} holds {keys} key(s) of namespace {ns!r} "
                f"generation {gen}, which a truncate or drop ended after the snapshot: "
                f"purged now (--purge-ended-namespaces); the snapshot's copy of data/ still "
                f"holds them: to get them back, {get_back}")
        else:
            lines.append(f"namespace {ns!r} generation {gen}: {keys} key(s): {get_back}")
    if purge:
        return lines
    raise ZkvError(
        f"{data_dir} holds snapshot {name!r}, taken before namespace(s) were truncated or "
        f"dropped, and the cluster's registry (cluster.json) says their generation ended: "
        f"started on it, this node would purge their keys (README, \"Backups\"). "
        + "; ".join(lines) + ". To let the truncate or drop stand (the keys purged), start "
        "with --purge-ended-namespaces")


FUTURE_SLACK_MS = 5_000  # a snapshot's mark this far ahead of the clock: a clock is wrong


def check_restored(data_dir: str, now_ms: int, horizon_s: float, allow_old: bool) -> str | None:
    """Whether the node's stores were restored from a snapshot (its MARK in DATA_DIR/data):
    None if not; a line to log if so and the snapshot is at most `horizon_s` old, or
    `allow_old` (the marks are removed: the node serves the stores from now on). A restore
    older than that raises ZkvError and changes nothing: the other replicas have reaped,
    and forgotten, the tombstones of deletes made since it was taken, so its values of those
    keys would spread back to every replica (an operator's run: 592 of 1,000 deleted keys
    back on every replica, from a snapshot 4.5 minutes old)."""
    marks = [os.path.join(data_dir, sub, MARK) for sub in ("data", "handoff")]
    mark = next((m for m in marks if os.path.exists(m)), None)
    if mark is None:
        return None
    try:
        with open(mark) as f:
            info = json.load(f)
        created = int(info["created_ms"])
        name = str(info.get("snapshot", "?"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZkvError(f"{mark}: a snapshot's mark that cannot be read ({exc}): remove it if "
                       f"this store is not a restored snapshot") from None
    if created - now_ms > FUTURE_SLACK_MS and not allow_old:
        # (its age was read as 0: a snapshot taken on a clock 10 min fast passed as new, and
        # restored 2 min later, past the horizon, its 50 deleted keys came back everywhere)
        raise ZkvError(
            f"{data_dir} holds snapshot {name!r}, taken {span((created - now_ms) / 1000)} "
            "in the future by this machine's clock: the clock it was taken with, or this "
            "one, is wrong, so how old it is cannot be told, and one older than "
            f"{span(horizon_s)} would bring deletes back. Fix the clock (NTP); if the "
            "snapshot is known to be recent, or every node is being rolled back to snapshots "
            "of one moment, start with --restore-old-snapshot")
    age = max(0.0, (now_ms - created) / 1000)
    if age > horizon_s and not allow_old:
        raise ZkvError(
            f"{data_dir} holds snapshot {name!r}, taken {span(age)} ago: older than "
            f"{span(horizon_s)} (2 x --tombstone-grace + 60 s), the other replicas have "
            "forgotten the deletes made since, and its copies of those keys would come back "
            "on every replica. Start this node on an empty data dir instead, with --seed "
            "LISTEN of a running member (it rejoins under its id and refills from the other "
            "replicas: README, \"Replacing a dead machine\"; without --seed a node on an "
            "empty data dir founds a cluster of its own), or, if every node is "
            "being rolled back to snapshots of one moment, start each with "
            "--restore-old-snapshot")
    # the replica's memory of overwritten writes (latefile.py) is not part of a snapshot: it
    # remembers writes overwritten after the snapshot's moment, whose overwrites a rollback of
    # every node undid, and would strip the restored values as late copies. Forgotten first
    # (before the marks go: a crash between the two runs this again).
    try:
        os.unlink(os.path.join(data_dir, "retired"))  # (latefile.NAME)
    except FileNotFoundError:
        pass
    for m in marks:
        if os.path.exists(m):
            os.unlink(m)
    return (f"started on snapshot {name!r}, taken {span(age)} ago"
            + (" (--restore-old-snapshot)" if age > horizon_s else "")
            + ": hints and anti-entropy bring it what was written since")


def span(seconds: float) -> str:
    """A length of time for a message: "100 s", "4 min", "2.0 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
