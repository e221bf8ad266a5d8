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
import json
import math
from collections.abc import Iterable, Iterator
from typing import IO, NamedTuple

from zkv.errors import InvalidRequest
from zkv.hlc import wall_ms

FORMAT = 1
BATCH = 500  # values per put_many of a load


class Loaded(NamedTuple):
    """What a load did: keys written, [(line, key, exception)] of the writes that failed,
    keys left out because their time had passed, and keys written without the time left of
    them (the target's ttl applies from the load, or none: module docstring), and keys whose
    siblings an lww target kept one of."""

    loaded: int
    failed: list
    expired: int = 0
    longer: int = 0
    collapsed: int = 0


def dump(client, out: IO[str], namespace: str = "default", prefix: bytes = b"",
         r: int | None = None) -> int:
    """Write the dump of `namespace`'s live keys beginning with `prefix` to `out`; returns how
    many keys. One pass over the owners (Client.items): each partition's copies on `r` of its
    owners (None: the namespace's R) merged as a get at R merges them. A partition that cannot
    be listed raises (the file then has no end line)."""
    out.write(json.dumps({"zkv_dump": FORMAT, "namespace": namespace}) + "\n")
    count = 0
    for key, values, ends in client.items(namespace, prefix, r=r, expiry=True):
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
    raise InvalidRequest(f"{name}: cut short after {count} keys (no end line); every key "
                         f"before that was written")


def load(client, records: Iterable[tuple[int, bytes, list[bytes], int]], namespace: str,
         w: int | None = None, target: dict | None = None, now_ms: int | None = None
         ) -> Loaded:
    """Blind-write every value of a dump's `records` (`read`) into `namespace`, whose settings
    `target` gives (Client.namespaces(); None: as if its values had no room for a write's
    ttl); a value that expires is written with the time left of it at `now_ms` (None: the
    wall clock) as its own ttl, or left out if none is (module docstring). A malformed line
    stops the load there (InvalidRequest), every key before it written."""
    now = wall_ms() if now_ms is None else now_ms
    ns_ttl = target.get("ttl", 0) if target else 0
    room = bool(target and target.get("write_ttl"))
    lww = bool(target and target.get("conflicts") == "lww")
    loaded = expired = longer = collapsed = 0
    failed: list = []
    batches: dict[int | None, list[tuple[int, bytes, bytes]]] = {}  # own ttl -> the values

    def flush(ttl: int | None) -> None:
        items = batches.pop(ttl)
        got = client.put_many([(k, v) for _, k, v in items], w=w, namespace=namespace,
                              return_exceptions=True, ttl=ttl)
        for (no, key, _), res in zip(items, got, strict=True):
            if isinstance(res, Exception):
                failed.append((no, key, res))

    try:
        for no, key, values, ends in records:
            ttl = None
            if ends:
                left = ends - now
                if left <= 0:
                    expired += 1
                    continue
                ttl = math.ceil(left / 1000)
                if not room or ttl > ns_ttl:  # the target's ttl applies from now
                    ttl = None
                    if not ns_ttl or ns_ttl * 1000 > left:
                        longer += 1
            batch = batches.setdefault(ttl, [])
            batch += [(no, key, v) for v in values]  # (one key's siblings: concurrent writes)
            loaded += 1
            if lww and len(values) > 1:
                collapsed += 1
            if len(batch) >= BATCH:
                flush(ttl)
    except InvalidRequest:
        for ttl in list(batches):
            flush(ttl)
        raise
    for ttl in list(batches):
        flush(ttl)
    return Loaded(loaded, failed, expired, longer, collapsed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)
