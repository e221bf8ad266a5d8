"""Micro-benchmarks of zkv._core.dvv: sync (goal: <= 3x a 3-entry dict.copy()), update, codecs.

Sets are realistic for N = 3: three coordinators, three siblings. "equal" is the common
read/anti-entropy case (replicas agree; distinct objects decoded from different replies),
"dominated" a stale replica, "concurrent" two replicas that each took a write the
other has not seen (the result is a new object).
"""

from __future__ import annotations

import msgspec
import pytest

from zkv._core.dvv import DVVSet, sync, sync_encoded, update, update_encoded

NODES = ("node-1", "node-2", "node-3")


def three_siblings(tag: bytes = b"") -> DVVSet:
    s = None
    for i, n in enumerate(NODES):
        s = sync(s, update(None, b"", b"value-%d" % i + tag, n))
    return s


BASE = three_siblings()
EQUAL_A = DVVSet.decode(BASE.encode())
EQUAL_B = DVVSet.decode(BASE.encode())
NEWER = update(BASE, b"", b"later", "node-1")  # descends BASE
# each replica took one blind write the other has not seen: 4 siblings each, 5 merged
CONC_A = update(BASE, b"", b"x", "node-1")
CONC_B = update(BASE, b"", b"y", "node-2")
CTX = BASE.context()
SMALL = {"a": 1, "b": 2, "c": 3}


@pytest.mark.benchmark(group="dvv-sync")
def test_dict_copy_baseline(benchmark):
    benchmark(SMALL.copy)


@pytest.mark.benchmark(group="dvv-sync")
def test_sync_equal(benchmark):
    assert EQUAL_A is not EQUAL_B and sync(EQUAL_A, EQUAL_B) is EQUAL_A
    benchmark.extra_info["goal"] = 3
    benchmark(sync, EQUAL_A, EQUAL_B)


@pytest.mark.benchmark(group="dvv-sync")
def test_sync_dominated(benchmark):
    assert sync(BASE, NEWER) is NEWER
    benchmark.extra_info["goal"] = 3
    benchmark(sync, BASE, NEWER)


@pytest.mark.benchmark(group="dvv-sync")
def test_sync_concurrent_new_object(benchmark):
    assert sync(CONC_A, CONC_B).size() == 5
    benchmark.extra_info["goal"] = 3
    benchmark(sync, CONC_A, CONC_B)


@pytest.mark.benchmark(group="dvv-update")
def test_update_dict_copy_baseline(benchmark):
    benchmark(SMALL.copy)


@pytest.mark.benchmark(group="dvv-update")
def test_update_with_context(benchmark):
    assert update(BASE, CTX, b"v", "node-2").size() == 1
    benchmark(update, BASE, CTX, b"v", "node-2")


@pytest.mark.benchmark(group="dvv-update")
def test_update_blind(benchmark):
    benchmark(update, BASE, b"", b"v", "node-2")


@pytest.mark.benchmark(group="dvv-update")
def test_update_encoded(benchmark):
    enc = BASE.encode()
    benchmark(update_encoded, enc, CTX, b"v", "node-2")


# Codec: encode() is cached per object, so each round encodes FRESH objects (built in setup);
# the baseline msgpack-encodes the same content as plain Python lists, also fresh per round.
BATCH = 200


def _fresh_sets():
    return ([update(BASE, b"", b"v%d" % i, "node-1") for i in range(BATCH)],), {}


def _fresh_plain():
    rows = [s.entries() for s in _fresh_sets()[0][0]]
    return (rows,), {}


@pytest.mark.benchmark(group="dvv-codec")
def test_codec_msgpack_encode_baseline(benchmark):
    enc = msgspec.msgpack.Encoder()
    benchmark.pedantic(lambda rows: [enc.encode(r) for r in rows], setup=_fresh_plain, rounds=200)


@pytest.mark.benchmark(group="dvv-codec")
def test_codec_encode(benchmark):
    benchmark.pedantic(lambda sets: [s.encode() for s in sets], setup=_fresh_sets, rounds=200)


@pytest.mark.benchmark(group="dvv-codec")
def test_codec_decode(benchmark):
    encs = [s.encode() for s in _fresh_sets()[0][0]]
    benchmark(lambda: [DVVSet.decode(e) for e in encs])


@pytest.mark.benchmark(group="dvv-codec")
def test_codec_msgpack_decode(benchmark):
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder()
    blobs = [enc.encode(s.entries()) for s in _fresh_sets()[0][0]]
    benchmark(lambda: [dec.decode(b) for b in blobs])


@pytest.mark.benchmark(group="dvv-sync-encoded")
def test_sync_encoded_dict_copy_baseline(benchmark):
    benchmark(SMALL.copy)


@pytest.mark.benchmark(group="dvv-sync-encoded")
def test_sync_encoded_equal(benchmark):
    a, b = BASE.encode(), bytes(bytearray(BASE.encode()))
    assert a is not b
    benchmark(sync_encoded, a, b)


@pytest.mark.benchmark(group="dvv-sync-encoded")
def test_sync_encoded_concurrent(benchmark):
    benchmark(sync_encoded, CONC_A.encode(), CONC_B.encode())
