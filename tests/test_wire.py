"""Wire codec: round trips, limits and malformed input (pure, no sockets)."""

import random

import pytest

from zkv import wire
from zkv.errors import InvalidRequest


def test_round_trip_batch():
    msgs = [wire.Get(1, b"k", 2), wire.Put(2, b"k", b"v" * 100, b"ctx", 3), wire.Delete(3, b"k")]
    out = wire.decode(wire.encode(msgs), 1 << 20)
    assert out == msgs


def test_oversized_frame_rejected_before_decoding():
    payload = wire.encode_one(wire.Put(1, b"k", b"v" * 1000))
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.decode(payload, 100)


def test_wrong_version_named():
    import msgspec

    payload = msgspec.msgpack.encode([99, [[1, 1, b"k", 0]]])
    with pytest.raises(wire.WireError, match="version 99"):
        wire.decode(payload, 1 << 20)


def test_garbage_never_escapes_as_other_errors():
    rng = random.Random(7)
    for _ in range(3000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        try:
            wire.decode(data, 1 << 20)
        except wire.WireError:
            pass


def test_wrong_field_types_rejected():
    import msgspec

    payload = msgspec.msgpack.encode([wire.WIRE_VERSION, [[1, 1, "not-bytes", 0]]])
    with pytest.raises(wire.WireError):
        wire.decode(payload, 1 << 20)


@pytest.mark.parametrize("key", [b"", "str", 5, None, b"x" * (64 * 1024 + 1)])
def test_bad_keys(key):
    with pytest.raises(InvalidRequest):
        wire.check_key(key)


def test_quorum_checks():
    wire.check_quorum("r", None, 3)
    wire.check_quorum("r", 3, 3)
    for bad in (0, 4, -1, "2", 2.0, True):
        with pytest.raises(InvalidRequest):
            wire.check_quorum("r", bad, 3)


def test_namespace_fields_are_trailing_and_optional():
    """Issue 15: old peers' messages (no ns / namespaces / n) still decode, with defaults,
    and a new message's extra trailing fields are ignored by a decoder that lacks them."""
    import msgspec

    from zkv.node.core import ADMIN, CLIENT, PEER, ROLE_MESSAGES

    old_get = msgspec.msgpack.encode([wire.WIRE_VERSION, [[1, 7, b"key", 2]]])
    (g,) = wire.decode(old_get, 1 << 20)
    assert g.ns == "" and g.r == 2
    old_put = msgspec.msgpack.encode([wire.WIRE_VERSION, [[2, 8, b"k", b"v", b"", 0, b""]]])
    (p,) = wire.decode(old_put, 1 << 20)
    assert p.ns == ""
    (t,) = wire.decode(msgspec.msgpack.encode([wire.WIRE_VERSION, [[27, 9, 3, 0, []]]]), 1 << 20)
    assert t.n == 0

    class OldGet(msgspec.Struct, array_like=True, tag_field="t", tag=1):
        rid: int
        key: bytes
        r: int = 0

    new = msgspec.msgpack.encode(wire.Get(5, b"k", 0, "sessions"))
    assert msgspec.msgpack.decode(new, type=OldGet).key == b"k"
    # bounded: a namespace name longer than 64 characters never decodes
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode([wire.Get(1, b"k", 0, "x" * 65)]), 1 << 20)
    assert wire.NsCreate in ROLE_MESSAGES[ADMIN] and wire.NsCreate in ROLE_MESSAGES[PEER]
    assert wire.NsCreate not in ROLE_MESSAGES[CLIENT] and wire.NsList in ROLE_MESSAGES[CLIENT]


def test_listing_values_fields_are_trailing():
    """Keys.values and KeysOk.copies (FEATURE_ITEMS): an older client's Keys decodes as a
    listing of keys alone, an older node's KeysOk with no copies; an older node reads the new
    Keys (its extra field ignored: clients ask only FEATURE_ITEMS nodes for values)."""
    import msgspec

    (k, ok) = wire.decode(msgspec.msgpack.encode([wire.WIRE_VERSION, [
        [41, 1, 3, "", 0, b"", 10], [42, 2, [b"a"], 7, False, True]]]), 1 << 20)
    assert k.values is False and ok.copies == []
    new = wire.decode(wire.encode([wire.Keys(1, 3, "", 0, b"", 10, True),
                                   wire.KeysOk(2, [b"a"], 7, False, True, [b"c"])]), 1 << 20)
    assert new[0].values is True and new[1].copies == [b"c"]

    class OldKeys(msgspec.Struct, array_like=True, tag_field="t", tag=41):
        rid: int
        partition: int
        ns: str = ""
        cursor: int = 0
        prefix: bytes = b""
        limit: int = 1000

    old = msgspec.msgpack.decode(msgspec.msgpack.encode(wire.Keys(1, 3, "", 5, b"p", 10, True)),
                                 type=OldKeys)
    assert (old.partition, old.cursor, old.prefix, old.limit) == (3, 5, b"p", 10)
    assert wire.FEATURES & wire.FEATURE_ITEMS


def test_refill_and_roots_fields_are_trailing_and_bounded():
    """RGetOk.unsure and TreeLevel.more: an older node's messages decode with the defaults
    (a sure answer; one root), a new message decodes with an older decoder, and `more` is
    bounded (MAX_ROOTS partitions) like every list on the wire."""
    import msgspec

    (ok,) = wire.decode(msgspec.msgpack.encode([wire.WIRE_VERSION, [[22, 3, b""]]]), 1 << 20)
    assert ok.dvv == b"" and ok.unsure is False
    (t,) = wire.decode(msgspec.msgpack.encode([wire.WIRE_VERSION, [[27, 9, 3, 0, [], 0]]]),
                       1 << 20)
    assert t.more == []
    both = wire.decode(wire.encode([wire.RGetOk(4, b"", True),
                                    wire.TreeLevel(5, 1, 0, [], 0, [2, 3])]), 1 << 20)
    assert both[0].unsure is True and both[1].more == [2, 3]

    class OldRGetOk(msgspec.Struct, array_like=True, tag_field="t", tag=22):
        rid: int
        dvv: bytes

    assert msgspec.msgpack.decode(msgspec.msgpack.encode(wire.RGetOk(4, b"", True)),
                                  type=OldRGetOk).dvv == b""
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode([wire.TreeLevel(1, 0, 0, [], 0,
                                                list(range(wire.MAX_ROOTS + 1)))]), 1 << 20)


def test_a_request_socket_frame_may_hold_requests_only():
    """A node's ROUTER decodes with the request union: a reply type there used to be decoded
    whole (its untyped `info` dict: a 16 MiB frame of empty arrays took 1.2 GB) and only then
    refused. Now the decoder stops at the tag that names it."""
    import struct
    import typing

    n = 1 << 20
    body = (b"\x92\x01\x91\x93\x0e\x01\x81\xa1a\xdd" + struct.pack(">I", n) + b"\x90" * n)
    assert type(wire.decode(body, 1 << 24)[0]) is wire.StatusOk  # (a client's decoder)
    with pytest.raises(wire.WireError, match="undecodable frame"):
        wire.decode(body, 1 << 24, requests=True)
    replies = set(typing.get_args(wire.Message)) - set(typing.get_args(wire.Request))
    assert all(t.__name__.endswith("Ok") or t in (wire.Error, wire.Gossip) for t in replies)
    msgs = [wire.Get(1, b"k"), wire.RPut(2, b"k", b"v"), wire.Status(3)]
    assert wire.decode(wire.encode(msgs), 1 << 20, requests=True) == msgs
