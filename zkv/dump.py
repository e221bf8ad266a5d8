"""`zkv dump` and `zkv load`: a namespace's keys and values, siblings included, as a file of
JSON lines, and that file written back into a cluster (an export, a migration between
clusters, a copy for a test environment). The format, defined here only:

    line 1:  {"zkv_dump": 2, "namespace": NAME}                   (the header; 2: the
                                                                   digests below; 1: an older
                                                                   zkv's, without them)
    then:    {"n": N, "k": BASE64(key), "v": [BASE64(value), ...], (one per live key: N its
              "x": MS, "h": HEX(digest)}                           place, 1, 2, ...; "v" its
                                                                   siblings, at least one;
                                                                   "x", a value that expires:
                                                                   the wall time, ms since the
                                                                   Unix epoch, it stops being
                                                                   served, absent: never)
    last:    {"zkv_dump_end": COUNT, "chain": HEX(chain)}          (a dump cut short has none)

Base64 (RFC 4648, standard alphabet) keeps keys and values binary-safe. The digests (BLAKE2b,
hashlib.blake2b, 16-byte digests, lower-case hex: 32 characters) are of the bytes, not of
their base64 or JSON text:

    digest = blake2b(digest_size=16, person=b"zkv-dump-record") of
               N            8 bytes, big-endian
               len(key)     4 bytes, big-endian, then the key
               MS           8 bytes, big-endian (0: never expires)
               siblings     4 bytes, big-endian, then per value: len 4 bytes big-endian, value
    chain  = c(COUNT), c(0) = blake2b(digest_size=16, person=b"zkv-dump-chain") of NAME (UTF-8)
                       c(i) = blake2b(digest_size=16, person=b"zkv-dump-chain") of
                              c(i-1) + digest(i)  (16 + 16 bytes)

`load` checks each record before anything of it is written and stops at the first line that
does not hold: its digest (a changed key, value, expiry or place), its place (a line lost,
duplicated or moved before it), a key it already read (format 1 too); and once it gets to the
end line, the count and the chain (the last line lost, the header's namespace changed: what
came before is written then). A dump of format 1 is loaded as before, without those checks
but the key's, and `zkv load` says the file carries no checksums. (Older versions of zkv
refuse format 2: "dump format 2, this version reads 1".)

A dump is one pass over the owners (Client.items): each partition's copies of its keys on R
of its owners (the namespace's R, or `--r`), merged as a get at R merges them; it is a copy of
each page at the moment it was read, not one cut across the cluster. A load blind-writes
every value (put_many, no context): a key with siblings gets them back as siblings, and a key
that already holds a value in the target gets the loaded ones beside it as siblings (load
into an empty namespace for a copy). In an lww namespace, which keeps one value per key, each
loaded value is a new write: it replaces what the key holds (a newer value too), and of a
key's siblings in the dump only one is kept (`Loaded.collapsed` counts those keys).

Expiry ("x": the namespace's ttl or the write's own, whichever ends first): a load leaves out
a value whose time has passed, and writes the others with what is left of it as their own
ttl, so that a copy serves nothing longer than the source would have. That needs a target
namespace whose values have room for a write's ttl and whose own ttl is at least as long
(namespaces.py); elsewhere the value lives the target's ttl from the load (or forever, in a
namespace without one), and the load counts it. A value read key by key (a partition below R
owners that vouch, Client.items) has no "x", nor does one dumped offline (`dump_stores`) from
stores whose snapshot marks do not record the namespace's settings. (Versions of zkv before
expiry ignore the field.)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

from zkv.errors import InvalidRequest
from zkv.hlc import wall_ms
from zkv.wire import WID_SIZE

if TYPE_CHECKING:
    from zkv.node.namespaces import Namespace

FORMAT = 2  # the format written; read: 1 (no digests) and 2
BATCH = 500  # values per put_many of a load


class Loaded(NamedTuple):
    """What a load did: keys written (every value of theirs), [(line, key, exception)] of the
    writes that failed, keys left out because their time had passed, keys written without
    the time left of them (the target's ttl applies from the load, or none: module
    docstring), keys whose siblings an lww target kept one of, and why the load stopped
    before the file's end ("": it did not)."""

    loaded: int
    failed: list
    expired: int = 0
    longer: int = 0
    collapsed: int = 0
    stopped: str = ""


def dump(client, out: IO[str], namespace: str = "default", prefix: bytes = b"",
         r: int | None = None) -> int:
    """Write the dump of `namespace`'s live keys beginning with `prefix` to `out`; returns how
    many keys. One pass over the owners (Client.items): each partition's copies on `r` of its
    owners (None: the namespace's R) merged as a get at R merges them. A partition that cannot
    be listed raises (the file then has no end line). Nothing is written before the first
    page is in: a namespace that does not exist, or a cluster that does not answer, leaves
    `out` empty (`zkv dump > f` left a header line alone in f, and on a terminal)."""
    pages = iter(client.items(namespace, prefix, r=r, expiry=True))
    first = next(pages, None)
    return write(out, namespace, itertools.chain([first] if first is not None else [], pages))


def record_digest(n: int, key: bytes, values: list[bytes], ends: int) -> bytes:
    """A record's digest (module docstring): of its place `n`, key, expiry and values."""
    h = hashlib.blake2b(digest_size=16, person=b"zkv-dump-record")
    h.update(n.to_bytes(8, "big") + len(key).to_bytes(4, "big") + key
             + ends.to_bytes(8, "big") + len(values).to_bytes(4, "big"))
    for v in values:
        h.update(len(v).to_bytes(4, "big"))
        h.update(v)
    return h.digest()


def _chain_start(namespace: str) -> bytes:
    return hashlib.blake2b(namespace.encode(), digest_size=16, person=b"zkv-dump-chain").digest()


def _chain_next(chain: bytes, digest: bytes) -> bytes:
    return hashlib.blake2b(chain + digest, digest_size=16, person=b"zkv-dump-chain").digest()


def unchecked(head: dict) -> bool:
    """Whether a dump (its header, `read`) carries no digests: format 1, an older zkv's."""
    return head["zkv_dump"] == 1


def write(out: IO[str], namespace: str,
          records: Iterable[tuple[bytes, list[bytes], int | None]]) -> int:
    """Write a dump of `namespace` holding `records` (key, values, expiry ms or 0/None) to
    `out`, in the format above; returns how many records."""
    out.write(json.dumps({"zkv_dump": FORMAT, "namespace": namespace}) + "\n")
    chain = _chain_start(namespace)
    count = 0
    for key, values, ends in records:
        count += 1
        rec: dict = {"n": count, "k": _b64(key), "v": [_b64(v) for v in values]}
        if ends:
            rec["x"] = ends
        digest = record_digest(count, key, values, ends or 0)
        rec["h"] = digest.hex()
        chain = _chain_next(chain, digest)
        out.write(json.dumps(rec) + "\n")
    out.write(json.dumps({"zkv_dump_end": count, "chain": chain.hex()}) + "\n")
    return count


class Dumped(NamedTuple):
    """What an offline dump (`dump_stores`) wrote: keys, of which generation, and the keys it
    left out because their time had passed (the namespace's ttl or their write's own)."""

    keys: int
    generation: int
    expired: int = 0


class StoreDamage(NamedTuple):
    """What corrupt records cost an offline dump (`dump_stores`): the keys (of the namespace,
    without its prefix) it left out, a store's record of each failing its CRC with no good
    copy in another store; how many keys it dumped from another store's copy while one
    store's failed (that one may have been newer); damaged regions the stores' opens skipped
    (whose keys cannot be told)."""

    left_out: list[bytes]
    from_other_copies: int
    regions: int


WINDOW_KEYS = 20_000  # keys (of every namespace) a store holds in one window of a dump_stores
# pass over its hash space, at most (keys spread evenly): the keys it holds at once


def _windows(held: int) -> Iterator[tuple[int, int]]:
    """[lo, hi] windows cutting the hash space (zkv_hash64) in order, each holding about
    WINDOW_KEYS of `held` keys."""
    space = 1 << 64
    step = max(1, space * WINDOW_KEYS // max(1, held))
    for lo in range(0, space, step):
        yield lo, min(space - 1, lo + step - 1)


def dump_stores(paths: Iterable[str], out: IO[str], namespace: str,
                generation: int | None = None, now_ms: Callable[[], int] = wall_ms,
                warn: Callable[[str], object] | None = None,
                damage: Callable[[StoreDamage], object] | None = None) -> Dumped:
    """Write the dump of `namespace`'s live keys of one generation from node stores read
    offline (a snapshot's data/ directory, or a stopped node's DATA_DIR/data), not from a
    cluster: the way back to the keys of a generation that a truncate or drop has ended
    since the snapshot, which no node serves (README, "Backups"). `generation` None: the only
    one of the name the stores hold. InvalidRequest when the stores hold none of the name,
    several generations and none was named, or a store a process (a node) holds.

    Read as a coordinator reads (quorum.GetQuorum over the stores' copies of each key, or
    identical_answers when they are byte-identical, as an owner read: DVV sync, lww
    collapsed, heads removed, tombstones and values whose own ttl is over left out; each
    copy expired by the namespace's ttl reads as none, as Replica.read answers),
    with the settings of that generation the stores' snapshot marks record (`_settings`),
    so each value carries its expiry ("x") and one whose time has passed at `now_ms` is left
    out. Without them (`warn` says so) the namespace's ttl is not applied. Streamed: a pass
    over the keys finds the generations, then each window of the hash space (`_windows`) is
    read from every store and its keys written in (hash, key) order; it holds one window's
    keys and one key's copies at a time, never the namespace's values. A store's record
    that fails its CRC reads as no copy (and is logged); `damage` is then called once, at the
    end, with what that cost (StoreDamage: `zkv dump --store` exits 4)."""
    from zkv.errors import StoreLocked
    from zkv.node.expiry import expired as expired_copy
    from zkv.node.namespaces import DEFAULT, head_of_key, key_settings, split_key
    from zkv.node.namespaces import generation as generation_of
    from zkv.node.quorum import GetQuorum, identical_answers
    from zkv.storage import LogStore

    want = namespace.encode("ascii", "replace")
    paths = list(paths)
    # a stored key's prefix (up to its NUL) -> (its generation, its values' head) if it is
    # the name's: decided once per prefix, not per key
    memo: dict[bytes, tuple[int, int] | None] = {}

    def gen_of(key: bytes) -> tuple[int, int] | None:
        if key_settings(key) is None:  # the default namespace's
            return (0, 0) if namespace == DEFAULT else None  # (one generation, no value head)
        pre = key[:key.find(b"\x00", 3) + 1]
        if pre not in memo:
            found = generation_of(key)
            memo[pre] = ((found[1], head_of_key(key)) if found is not None and found[0] == want
                         else None)
        return memo[pre]

    with contextlib.ExitStack() as stack:
        stores = []
        for path in paths:
            if not os.path.isdir(path):
                raise InvalidRequest(f"--store {path}: no such directory")
            try:
                stores.append(stack.enter_context(LogStore(path, readonly=True)))
            except StoreLocked:
                raise InvalidRequest(
                    f"--store {path}: a node is running on this store (it holds its lock, "
                    f"{os.path.join(path, 'LOCK')}): dump a snapshot's data/ instead (`zkv "
                    f"snapshot`, then --store DATA_DIR/snapshots/NAME/data), or stop the node "
                    f"first") from None
        heads: dict[int, int] = {}  # the generations the stores hold -> their values' head
        for store in stores:
            for lo, hi in _windows(len(store)):
                for key, _h in store.key_hashes(lo, hi):
                    gen = gen_of(key)
                    if gen is not None:
                        heads[gen[0]] = gen[1]
        if generation is None:
            if len(heads) > 1:
                raise InvalidRequest(f"the stores hold generations {sorted(heads)} of "
                                     f"namespace {namespace!r}: name one with --generation")
            generation = next(iter(heads), 0)
        if generation not in heads:
            raise InvalidRequest(f"no keys of namespace {namespace!r} generation {generation} "
                                 "in " + ", ".join(paths))
        ns, why = _settings(paths, namespace, generation)
        ttl_ms = ns.ttl * 1000 if ns is not None else 0
        before = ns.expired_before if ns is not None else 0
        if ns is None and heads[generation] and warn is not None:  # (lww: a ttl is possible)
            warn(f"namespace {namespace!r} generation {generation}: its settings are unknown "
                 f"({why}), so the namespace's ttl is not applied: its values are dumped "
                 "without the expiry it gives them, and loaded, they live the target's ttl "
                 "from the load (a value's own ttl, which it carries, still applies)")
        now = now_ms()
        left_out = bad = older = 0
        names = [str(i) for i in range(len(stores))]
        met: set[bytes] = set()  # stored keys whose copy in some store is corrupt
        lost: list[bytes] = []  # those of them left out

        def records() -> Iterator[tuple[bytes, list[bytes], int]]:
            nonlocal left_out, bad, older
            for lo, hi in _windows(max(len(s) for s in stores)):
                window = sorted({(h, key) for store in stores
                                 for key, h in store.key_hashes(lo, hi)
                                 if (gen_of(key) or (-1,))[0] == generation})
                for _h, skey in window:
                    head = gen_of(skey)[1]  # type: ignore[index]  # (the name's: above)
                    judged = rotten = False
                    copies = []
                    for store in stores:
                        copy = store.get(skey) or b""
                        if not copy and store.is_corrupt(skey):
                            rotten = True  # (its record failed its CRC: logged, not read)
                        if copy and head and (ttl_ms or before) and expired_copy(
                                copy, ttl_ms, now, before):
                            copy, judged = b"", True  # (as Replica.read answers)
                        copies.append(copy)
                    held = {c for c in copies if c}
                    if len(held) <= 1:  # (one store, or copies in sync: decoded once)
                        try:
                            got, _ = identical_answers(held.pop() if held else b"", head,
                                                       len(stores), now, ttl_ms)
                        except ValueError:  # (GetQuorum would count it as no answer)
                            bad += 1
                            if rotten:
                                met.add(skey)
                                lost.append(skey)
                            continue
                    else:
                        q = GetQuorum(len(stores), lww=head, ttl_ms=ttl_ms)
                        for name, copy in zip(names, copies, strict=True):
                            q.add_result(name, copy)
                        bad += len(q.bad)
                        got, _ = q.response(now)
                    if rotten:
                        met.add(skey)
                        if got.values:
                            older += 1
                        else:
                            lost.append(skey)
                    if got.values:
                        yield split_key(skey)[1], got.values, got.expires
                    elif judged or got.stamp:  # (live values, none served any more)
                        left_out += 1

        count = write(out, namespace, records())
        for store in stores:  # (found by the open: no store lists them, the pass never met them)
            for key in store.corrupt_keys():
                if key not in met and (_gen_or_none(gen_of, key) or (-1,))[0] == generation:
                    met.add(key)
                    lost.append(key)
        regions = sum(store.damaged_regions for store in stores)
    if (lost or older or regions) and damage is not None:
        damage(StoreDamage(sorted(split_key(k)[1] for k in lost), older, regions))
    if bad and warn is not None:
        warn(f"{bad} cop{'y' if bad == 1 else 'ies'} of keys that are not valid versions left "
             "out, as a read leaves them out")
    return Dumped(count, generation, left_out)


def _gen_or_none(gen_of: Callable[[bytes], tuple[int, int] | None],
                 key: bytes) -> tuple[int, int] | None:
    """gen_of(key), None for a key it cannot read (a corrupt record's key may be garbled)."""
    try:
        return gen_of(key)
    except Exception:
        return None


def _settings(paths: list[str], namespace: str, generation: int
              ) -> tuple[Namespace | None, str]:
    """(the settings of `namespace`'s `generation`, a Namespace, or None and why not) that
    the snapshot marks of stores `paths` record (snapshots.MARK in a store, the manifest
    beside a snapshot's data/): their registries of the snapshot's moment. Of several, the
    version a registry would keep (the lowest rank: the last alter)."""
    from zkv.node.namespaces import Registry
    from zkv.node.snapshots import MANIFEST, MARK

    best: Namespace | None = None
    seen: set[int] = set()  # the generations of the name the registries found hold
    for path in paths:
        for file in (os.path.join(path, MARK),
                     os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST)):
            try:
                with open(file) as f:
                    info = json.load(f)
                reg = Registry.from_builtins(info.get("namespaces") or None)
            except (OSError, ValueError, AttributeError):
                continue  # (none, unreadable, or a mark of an older zkv: no registry)
            ns = reg.version_of(namespace)
            if ns is None:
                continue
            seen.add(ns.gen)
            if ns.gen == generation and (best is None or ns.rank() < best.rank()):
                best = ns
    if best is not None:
        return best, ""
    if seen:
        return None, (f"the stores' snapshot marks record generation(s) "
                      f"{', '.join(map(str, sorted(seen)))} of it, not {generation}")
    return None, ("no snapshot mark among the stores records the namespace registry: a "
                  "stopped node's store, or a snapshot taken by an older zkv")


def read(lines: Iterable[str], name: str
         ) -> tuple[dict, Iterator[tuple[int, bytes, list[bytes], int]]]:
    """A dump's header, and its records as (line number, key, values, the wall time in ms it
    stops being served, 0: never), each checked (module docstring) before it is yielded.
    InvalidRequest naming the line for anything that is not the format or does not match
    its digest, place or the end line, for a key read before, and for a file without its
    end line (cut short) once the records run out."""
    it = iter(enumerate(lines, 1))
    first = next(it, None)
    try:
        head = json.loads(first[1]) if first is not None else None
    except ValueError:
        head = None
    if first is None or not first[1].strip():
        raise InvalidRequest(f"{name}: empty, not a zkv dump (nothing to load; `zkv dump` "
                             "writes a header line first)")
    if not isinstance(head, dict) or "zkv_dump" not in head:
        raise InvalidRequest(f"{name}: not a zkv dump (no header line)")
    if head["zkv_dump"] not in (1, FORMAT) or type(head["zkv_dump"]) is not int:
        raise InvalidRequest(f"{name}: dump format {head['zkv_dump']!r}, this version reads "
                             f"1 and {FORMAT}")
    if not unchecked(head) and not isinstance(head.get("namespace"), str):
        raise InvalidRequest(f"{name}:1: not a zkv dump header (no namespace)")
    return head, _records(it, name, head)


def _records(it: Iterator[tuple[int, str]], name: str, head: dict
             ) -> Iterator[tuple[int, bytes, list[bytes], int]]:
    checked = not unchecked(head)
    chain = _chain_start(head["namespace"]) if checked else b""
    seen: set[bytes] = set()  # (a digest of each key read: a key read twice is refused)
    count = 0
    for no, line in it:
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and "zkv_dump_end" in rec:
                if rec["zkv_dump_end"] != count:
                    raise InvalidRequest(f"{name}:{no}: the end line counts "
                                         f"{rec['zkv_dump_end']} keys, the file has {count}")
                if checked and rec.get("chain") != chain.hex():
                    raise InvalidRequest(
                        f"{name}:{no}: the end line's chain of the records' digests "
                        f"({rec.get('chain')}) does not match the records' ({chain.hex()}): "
                        "a line lost, added or moved, or the header changed")
                return
            key = _unb64(rec["k"])
            values = [_unb64(v) for v in rec["v"]]
            if not key or not values:
                raise ValueError("an empty key or no value")
            ends = rec.get("x", 0)
            if type(ends) is not int or not 0 <= ends < 1 << 48:
                raise ValueError(f"x={ends!r}: not a time in ms")
            if not checked and ("h" in rec or "n" in rec):
                # (format 1 never wrote them: a format-2 header damaged into 1 would turn every
                # check off)
                raise ValueError("a record with digests under a format-1 header")
            if checked:
                n, said = rec["n"], rec["h"]
                if type(n) is not int or not 0 < n < 1 << 63:
                    raise ValueError(f"n={n!r}: not a record's place")
                if not isinstance(said, str):
                    raise TypeError(f"h={said!r}: not a digest")
        except InvalidRequest:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidRequest(f"{name}:{no}: not a dump record ({exc})") from None
        if checked:
            digest = record_digest(n, key, values, ends)
            if said != digest.hex():
                raise InvalidRequest(
                    f"{name}:{no}: damaged record: its digest h={said} does not match its "
                    f"place, key, values and expiry ({digest.hex()}); nothing of it written")
            if n != count + 1:
                raise InvalidRequest(
                    f"{name}:{no}: record {n} where record {count + 1} was expected: a line "
                    f"{'lost or moved' if n > count + 1 else 'duplicated or moved'} before it")
            chain = _chain_next(chain, digest)
        if not checked:  # (format 2: the place in each digest already refuses a line twice;
            # a set of every key would hold ~93 MB a million keys for the whole load)
            mark = hashlib.blake2b(key, digest_size=16).digest()
            if mark in seen:
                raise InvalidRequest(f"{name}:{no}: key {key[:60]!r} a second time (a line "
                                     "duplicated, or a key damaged)")
            seen.add(mark)
        count += 1
        yield no, key, values, ends
    raise InvalidRequest(f"{name}: cut short after {count} keys (no end line)")


def load(client, records: Iterable[tuple[int, bytes, list[bytes], int]], namespace: str,
         w: int | None = None, target: dict | None = None, now_ms: Callable[[], int] = wall_ms,
         progress: Callable[[int, int], None] | None = None, load_id: bytes = b"") -> Loaded:
    """Blind-write every value of a dump's `records` (`read`) into `namespace`, whose settings
    `target` gives (Client.namespaces(); None: as if its values had no room for a write's
    ttl). A value that expires is written with the whole seconds left of it when its batch is
    sent (`now_ms`, the wall clock) as its own ttl, or left out if none is (module docstring).
    Each value's write id comes from `load_id`, the key, the value and its place among the
    key's siblings (`_wid`): a load run again with the same id (`zkv load --resume`, after an
    interrupted one) writes nothing twice, while a new id (a restore after the keys were
    deleted) writes every value again; the keys' tombstones would retire the old ids' writes.
    A value the client refuses fails alone, as one a node refuses (a bad `w` or namespace
    stops the load before anything is sent). A malformed line or
    a file cut short stops the load there: every batch before it is sent, and the result
    says why it stopped (`Loaded.stopped`). `progress(keys, line)` is called after each
    batch."""
    ns_ttl = target.get("ttl", 0) if target else 0
    room = bool(target and target.get("write_ttl"))
    lww = bool(target and target.get("conflicts") == "lww")
    keys = expired = longer = collapsed = 0
    failed: list = []
    failed_keys: set[int] = set()  # (the lines of keys one of whose values failed)
    gone: set[int] = set()  # (... whose every value expired before its batch went)
    batch: list[tuple[int, bytes, bytes, bytes, int]] = []  # (line, key, value, wid, ends)
    last_line = 0
    client.put_many([], w=w, namespace=namespace)  # (a bad w or namespace: refused here)

    def flush() -> None:
        nonlocal expired
        now = now_ms()
        items, ttls, wids, sent = [], [], [], []
        for rec in batch:
            no, key, value, wid, ends = rec
            ttl = None
            if ends:
                left = (ends - now) // 1000  # (whole seconds: never served longer)
                if left <= 0:
                    gone.add(no)
                    continue
                ttl = left  # (at most the target's ttl: `ends` is 0 otherwise)
            items.append((key, value))
            ttls.append(ttl)
            wids.append(wid)
            sent.append(rec)
        batch.clear()
        try:
            got = client.put_many(items, w=w, namespace=namespace, return_exceptions=True,
                                  ttl=ttls, write_ids=wids)
        except InvalidRequest as exc:  # an item the client refuses: each alone, the others
            if not str(exc).startswith("item "):  # written (not the call itself: raised)
                raise
            got = []
            for item, ttl, wid in zip(items, ttls, wids, strict=True):
                try:
                    got += client.put_many([item], w=w, namespace=namespace,
                                           return_exceptions=True, ttl=[ttl], write_ids=[wid])
                except InvalidRequest as exc:
                    got.append(exc)
        for (no, key, *_), res in zip(sent, got, strict=True):
            if isinstance(res, Exception):
                failed.append((no, key, res))
                failed_keys.add(no)
        if progress is not None:
            progress(keys, last_line)

    stopped = ""
    try:
        for no, key, values, ends in records:
            last_line = no
            if ends:
                left = ends - now_ms()
                if left <= 0:
                    expired += 1
                    continue
                if not room or ns_ttl * 1000 < left:  # the target's ttl applies from now
                    if not ns_ttl or ns_ttl * 1000 > left:
                        longer += 1  # (... and is longer, or there is none)
                    ends = 0
            batch += [(no, key, v, _wid(load_id, key, v, i), ends)
                      for i, v in enumerate(values)]
            keys += 1
            if lww and len(values) > 1:
                collapsed += 1
            if len(batch) >= BATCH:
                flush()
    except InvalidRequest as exc:
        stopped = str(exc)
    if batch:
        flush()
    expired += len(gone - failed_keys)
    written = keys - len(failed_keys | gone)
    return Loaded(written, failed, expired, longer, collapsed, stopped)


def new_load_id() -> bytes:
    """A load run's id (`load`): 8 random bytes; `zkv load` prints it in hex."""
    return os.urandom(8)


def _wid(load_id: bytes, key: bytes, value: bytes, sibling: int) -> bytes:
    """A loaded value's write id: the same for the same load id, key, value and place among
    the key's siblings (so the run resumed finds its writes already there)."""
    h = hashlib.blake2b(digest_size=WID_SIZE, key=load_id[:64], person=b"zkv-load")
    h.update(len(key).to_bytes(4, "big") + key + sibling.to_bytes(4, "big"))
    h.update(value)
    return h.digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)
