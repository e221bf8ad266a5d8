"""The codec at the trust boundary: any bytes decode to a list of valid messages or raise
WireError, never anything else (pure, no sockets)."""

from __future__ import annotations

import random
import typing

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkv import wire

LIMIT = wire.frame_limit(wire.DEFAULT_MAX_KEY, 1 << 20)
MESSAGE_TYPES = typing.get_args(wire.Message)


def _member(i: int = 1) -> wire.Member:
    return wire.Member(f"node{i}", f"tcp://127.0.0.1:{7000 + i}", f"tcp://127.0.0.1:{8000 + i}",
                       "rack-a", 1_700_000_000_000 + i, 42)


def samples() -> list:
    """One realistic instance of every message type (peer types included)."""
    ms = [_member(1), _member(2), _member(3)]
    return [
        wire.Get(1, b"key", 2), wire.Put(2, b"key", b"value" * 10, b"\x01ctx", 2),
        wire.Delete(3, b"key", b"\x01ctx", 1), wire.RingInfo(4), wire.Status(5),
        wire.GetOk(6, [b"a", b"b"], b"ctx", 3), wire.PutOk(7, b"ctx", 2),
        wire.Error(8, wire.E_QUORUM, "quorum not reached", 2, 1),
        wire.RingOk(9, 256, 3, 2, 2, ms, ["node3"]),
        wire.StatusOk(10, {"id": "node1", "members": [{"id": "node2", "up": True}]}),
        wire.RGet(11, b"key", "node2"), wire.RPut(12, b"key", b"\x00dvv", "node3"),
        wire.RGetOk(13, b"\x00dvv"), wire.RPutOk(14, True),
        wire.Forward(15, wire.Put(0, b"key", b"v", b"", 2)),
        wire.Join(16, _member(4)), wire.JoinOk(17, 256, 3, 2, 2, ms),
        wire.TreeLevel(18, 5, 2, [0, 3]), wire.TreeLevelOk(19, b"\x01" * 24),
        wire.LeafKeys(20, 5, [1, 2, 3]), wire.LeafKeysOk(21, b"\x02" * 16, b"\x03" * 16),
        wire.RGetHashes(22, 5, b"\x04" * 16), wire.RGetHashesOk(23, [b"k"], [b"\x00dvv"]),
        wire.Reap(24, [b"k1", b"k2"], [b"d" * 16, b"e" * 16]), wire.Repair(25, -1),
        wire.RepairOk(26, {"queued": 4}), wire.Snapshot(27, "nightly", "remove"),
        wire.SnapshotOk(28, {"node": "n1", "bytes": 4096}), wire.Keys(29, 3, "ns", 77, b"p", 10),
        wire.KeysOk(30, [b"a", b"b"], 99, False, True), wire.Keys(31, 3, "", 0, b"", 5, True),
        wire.KeysOk(32, [b"a"], 9, True, True, [b"\x01\x02"]),
        wire.Config(33, {"max_siblings": "50"}, True), wire.ConfigOk(34, {"changed": {}}),
        wire.Gossip(27, "node1", 256, 3, 2, 2, ms, b"fp", b"\x96\x01", 3, [(1, 10, 20, 0)]),
        wire.Cluster(28, "leave", "node2"), wire.ClusterOk(29, {"epoch": 3}),
        wire.Fetch(30, 5, 1 << 60, 262144), wire.FetchOk(31, [b"k"], [b"\x00dvv"], 7, False, 9),
                wire.NsCreate(32, "sessions", 3, 2, 2, "lww"), wire.NsList(33),
                wire.NsAlter(34, "sessions", 1, -1, 600), wire.NsDrop(34, "sessions", True, 3),
                wire.Read(34, b"k", "sessions"), wire.ReadOk(35, b"\x00dvv", True),
        wire.NsOk(34, b"\x92\x01\x90", "sessions"),
    ]


def test_samples_cover_every_message_type():
    assert {type(m) for m in samples()} == set(MESSAGE_TYPES)


def _check(data: bytes) -> None:
    try:
        msgs = wire.decode(data, LIMIT)
    except wire.WireError as exc:
        assert len(str(exc)) < 400  # bounded: it ends up in a log line
        return
    assert isinstance(msgs, list) and len(msgs) <= wire.MAX_BATCH
    for m in msgs:
        assert isinstance(m, MESSAGE_TYPES)
        # whatever decoded re-encodes to a frame that decodes to the same messages
        assert wire.decode(wire.encode_one(m), LIMIT) == [m]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_messages_or_wire_error(data):
    _check(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(samples()))), st.data())
def test_mutated_real_messages_decode_or_wire_error(index, data):
    frame = bytearray(wire.encode_one(samples()[index]))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        pos = data.draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[pos] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xCF, 0xD3, 0xDC,
                                                    0xDD, 0xDF, 0xFF]))
        elif op == "insert":
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and frame:
            del frame[pos:pos + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del frame[pos:]
        elif op == "dup":
            frame[pos:pos] = frame[pos:pos + data.draw(st.integers(1, 16))]
    _check(bytes(frame))


def test_every_type_survives_10k_seeded_mutations():
    rng = random.Random(13)
    frames = [wire.encode_one(m) for m in samples()] + [wire.encode(samples())]
    for i in range(10_000):
        frame = bytearray(frames[i % len(frames)])
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(frame)) if frame else 0
            if rng.random() < 0.5 and frame:
                frame[pos] = rng.getrandbits(8)
            else:
                frame[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 5)))
        _check(bytes(frame))


def _nested(depth: int) -> bytes:
    # StatusOk.info is an untyped dict: nest arrays inside it past msgspec's depth limit
    inner = b"\x91" * depth + b"\x00"
    body = b"\x81\xa1x" + inner  # {"x": [[[...]]]}
    return b"\x92\x01\x91\x93\x0e\x01" + body  # [1, [[14, 1, {...}]]]


def test_nesting_past_the_recursion_limit_is_a_wire_error():
    with pytest.raises(wire.WireError, match="nested too deeply|undecodable"):
        wire.decode(_nested(100_000), LIMIT)
    assert wire.decode(_nested(3), LIMIT)[0].info == {"x": [[[0]]]}


@pytest.mark.parametrize("field,value", [
    ("sender", "x" * (wire.MAX_ID + 1)),
    ("members", [_member(i) for i in range(wire.MAX_MEMBERS + 1)]),
])
def test_oversized_gossip_fields_refused_while_decoding(field, value):
    g = wire.Gossip(0, "node1", 256, 3, 2, 2, [_member(1)])
    setattr(g, field, value)
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode_one(g), LIMIT)


@pytest.mark.parametrize("counter", [-1, 1 << 63, (1 << 64) - 1])
def test_member_counters_must_fit_int64(counter):
    raw = msgspec.msgpack.encode([wire.WIRE_VERSION, [[25, 1, ["n", "tcp://a:1", "tcp://a:2",
                                                                 "r", counter, 0]]]])
    with pytest.raises(wire.WireError):
        wire.decode(raw, LIMIT)


def test_clip_bounds_log_fields():
    assert wire.clip("x" * 10_000).startswith("x" * 80)
    assert len(wire.clip("x" * 10_000)) < 120
    assert "\n" not in wire.clip("a\nb\x00c")
