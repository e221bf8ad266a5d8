"""`zkv dump` and `zkv load`: a namespace's keys and values, siblings included, as a file of
JSON lines, and that file written back into a cluster (an export, a migration between
clusters, a copy for a test environment). The format, defined here only:

    line 1:  {"zkv_dump": 1, "namespace": NAME}                   (the header)
    then:    {"k": BASE64(key), "v": [BASE64(value), ...]}         (one per live key; "v" its
                                                                   siblings, at least one)
             ... "x": MS}                                          (a value that expires: the
                                                                   wall time, ms since the
                                                                   Unix epoch, it stops being
                                                                   served; absent: never)
    last:    {"zkv_dump_end": COUNT}                               (a dump cut short has none)

Base64 (RFC 4648, standard alphabet) keeps keys and values binary-safe; the end line lets
`load` refuse a truncated file only once it gets there (what came before is written).

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
owners that vouch, Client.items) has no "x". (Older versions of zkv load ignore the field.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, NamedTuple

from zkv.errors import InvalidRequest
from zkv.hlc import wall_ms
from zkv.wire import WID_SIZE

FORMAT = 1
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
    out.write(json.dumps({"zkv_dump": FORMAT, "namespace": namespace}) + "\n")
    count = 0
    for key, values, ends in itertools.chain([first] if first is not None else [], pages):
        rec: dict = {"k": _b64(key), "v": [_b64(v) for v in values]}
        if ends:
            rec["x"] = ends
        out.write(json.dumps(rec) + "\n")
        count += 1
    out.write(json.dumps({"zkv_dump_end": count}) + "\n")
    return count


def read(lines: Iterable[str], name: str
         ) -> tuple[dict, Iterator[tuple[int, bytes, list[bytes], int]]]:
    """A dump's header, and its records as (line number, key, values, the wall time in ms it
    stops being served, 0: never). InvalidRequest naming
    the line for anything that is not the format, and for a file without its end line (cut
    short) once the records run out."""
    it = iter(enumerate(lines, 1))
    first = next(it, None)
    try:
        head = json.loads(first[1]) if first is not None else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or "zkv_dump" not in head:
        raise InvalidRequest(f"{name}: not a zkv dump (no header line)")
    if head["zkv_dump"] != FORMAT:
        raise InvalidRequest(f"{name}: dump format {head['zkv_dump']!r}, this version reads "
                             f"{FORMAT}")
    return head, _records(it, name)


def _records(it: Iterator[tuple[int, str]], name: str
             ) -> Iterator[tuple[int, bytes, list[bytes], int]]:
    count = 0
    for no, line in it:
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and "zkv_dump_end" in rec:
                if rec["zkv_dump_end"] != count:
                    raise InvalidRequest(f"{name}:{no}: the end line counts "
                                         f"{rec['zkv_dump_end']} keys, the file has {count}")
                return
            key = _unb64(rec["k"])
            values = [_unb64(v) for v in rec["v"]]
            if not key or not values:
                raise ValueError("an empty key or no value")
            ends = rec.get("x", 0)
            if type(ends) is not int or not 0 <= ends < 1 << 48:
                raise ValueError(f"x={ends!r}: not a time in ms")
        except InvalidRequest:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidRequest(f"{name}:{no}: not a dump record ({exc})") from None
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
