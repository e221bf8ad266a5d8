"""`zkv dump` and `zkv load`: a namespace's keys and values, siblings included, as a file of
JSON lines, and that file written back into a cluster (an export, a migration between
clusters, a copy for a test environment). The format, defined here only:

    line 1:  {"zkv_dump": 1, "namespace": NAME}                   (the header)
    then:    {"k": BASE64(key), "v": [BASE64(value), ...]}         (one per live key; "v" its
                                                                   siblings, at least one)
    last:    {"zkv_dump_end": COUNT}                               (a dump cut short has none)

Base64 (RFC 4648, standard alphabet) keeps keys and values binary-safe; the end line lets
`load` refuse a truncated file only once it gets there (what came before is written).

A dump is one pass over the owners (Client.items): each partition's copies of its keys on R
of its owners (the namespace's R, or `--r`), merged as a get at R merges them; it is a copy of
each page at the moment it was read, not one cut across the cluster. A load blind-writes
every value (put_many, no context): a key with siblings gets them back as siblings, and a key
that already holds a value in the target gets the loaded ones beside it as siblings (load
into an empty namespace for a copy).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from typing import IO

from zkv.errors import InvalidRequest

FORMAT = 1
BATCH = 500  # values per put_many of a load


def dump(client, out: IO[str], namespace: str = "default", prefix: bytes = b"",
         r: int | None = None) -> int:
    """Write the dump of `namespace`'s live keys beginning with `prefix` to `out`; returns how
    many keys. One pass over the owners (Client.items): each partition's copies on `r` of its
    owners (None: the namespace's R) merged as a get at R merges them. A partition that cannot
    be listed raises (the file then has no end line)."""
    out.write(json.dumps({"zkv_dump": FORMAT, "namespace": namespace}) + "\n")
    count = 0
    for key, values in client.items(namespace, prefix, r=r):
        out.write(json.dumps({"k": _b64(key), "v": [_b64(v) for v in values]}) + "\n")
        count += 1
    out.write(json.dumps({"zkv_dump_end": count}) + "\n")
    return count


def read(lines: Iterable[str], name: str) -> tuple[dict, Iterator[tuple[int, bytes, list[bytes]]]]:
    """A dump's header, and its records as (line number, key, values). InvalidRequest naming
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
             ) -> Iterator[tuple[int, bytes, list[bytes]]]:
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
        except InvalidRequest:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidRequest(f"{name}:{no}: not a dump record ({exc})") from None
        count += 1
        yield no, key, values
    raise InvalidRequest(f"{name}: cut short after {count} keys (no end line); every key "
                         f"before that was written")


def load(client, records: Iterable[tuple[int, bytes, list[bytes]]], namespace: str,
         w: int | None = None) -> tuple[int, list]:
    """Blind-write every value of a dump's `records` (`read`) into `namespace`; returns (keys
    loaded, [(line, key, exception)] of the writes that failed). A malformed line stops the
    load there (InvalidRequest), every key before it written."""
    loaded = 0
    failed: list = []
    items: list[tuple[int, bytes, bytes]] = []

    def flush() -> None:
        got = client.put_many([(k, v) for _, k, v in items], w=w, namespace=namespace,
                              return_exceptions=True)
        for (no, key, _), res in zip(items, got, strict=True):
            if isinstance(res, Exception):
                failed.append((no, key, res))
        items.clear()

    try:
        for no, key, values in records:
            items += [(no, key, v) for v in values]  # (one key's siblings: concurrent writes)
            loaded += 1
            if len(items) >= BATCH:
                flush()
    except InvalidRequest:
        if items:
            flush()
        raise
    if items:
        flush()
    return loaded, failed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)
