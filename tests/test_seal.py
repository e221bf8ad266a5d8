"""Sealed client contexts (zkv/node/seal.py): the format, the modes, and that no change to a
sealed context (another key, a changed byte, a cut, another cluster's key) opens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkv._core import dvv
from zkv.config import NodeConfig
from zkv.errors import InvalidRequest
from zkv.node import seal
from zkv.node.seal import NOTHING, PREFIX, SEALED, Sealer

KEY = bytes(range(32))
CTX = dvv.update(None, b"", b"v", "n1~1.1").context()


def test_a_sealed_context_is_the_marker_a_tag_and_the_context_and_opens_for_its_key_only():
    s = Sealer(KEY)
    sealed = s.seal(b"k", CTX)
    assert sealed[0] == SEALED and len(sealed) == PREFIX + len(CTX) and sealed[PREFIX:] == CTX
    assert s.prefix(b"k", CTX) == sealed[:PREFIX]
    assert s.open(b"k", sealed) == CTX
    with pytest.raises(InvalidRequest, match="not issued by this cluster for this key"):
        s.open(b"k2", sealed)
    with pytest.raises(InvalidRequest, match="not issued by this cluster for this key"):
        Sealer(bytes(32)).open(b"k", sealed)  # another cluster's key
    with pytest.raises(InvalidRequest, match="not sealed by this cluster"):
        s.open(b"k", CTX)


def test_blind_contexts_are_never_sealed_and_always_taken():
    s = Sealer(KEY)
    for ctx in (b"", NOTHING):
        assert s.seal(b"k", ctx) == ctx and s.prefix(b"k", ctx) == b""
        assert s.open(b"k", ctx) == ctx


def test_modes_for_a_rolling_upgrade_and_no_keys():
    sealed = Sealer(KEY).seal(b"k", CTX)
    accept, off, none = Sealer(KEY, "accept"), Sealer(KEY, "off"), Sealer(None)
    assert accept.seal(b"k", CTX) == sealed and accept.open(b"k", CTX) == CTX
    assert off.seal(b"k", CTX) == CTX and off.prefix(b"k", CTX) == b""
    assert off.open(b"k", CTX) == CTX and off.open(b"k", sealed) == CTX
    with pytest.raises(InvalidRequest):  # a node holding the key checks every seal it gets
        off.open(b"k2", sealed)
    # no keys: nothing sealed, a sealed context's tag dropped unchecked
    assert none.seal(b"k", CTX) == CTX and none.open(b"k2", sealed) == CTX
    with pytest.raises(ValueError, match="one of require, accept, off"):
        Sealer(KEY, "maybe")
    with pytest.raises(InvalidRequest, match="context_seals 'maybe'"):
        NodeConfig(id="n1", listen="tcp://127.0.0.1:1", gossip="tcp://127.0.0.1:2",
                   data_dir="/tmp/x", context_seals="maybe").validate()


def test_the_seal_key_is_derived_from_the_cluster_secret():
    assert seal.seal_key(b"a" * 40) == seal.seal_key(b"a" * 40) != seal.seal_key(b"b" * 40)
    assert len(seal.seal_key(b"a" * 40)) == 32


def test_keys_of_every_length_seal_apart():
    """The MAC's input is length-prefixed (4 bytes): a storage key one byte longer and a
    context one byte shorter, the same bytes end to end, seal apart; a key past 64 KiB (a
    namespaced key at the size limit) seals too (a 2-byte length could not hold it)."""
    s = Sealer(KEY)
    assert s.prefix(b"a\x01", b"\x01x") != s.prefix(b"a", b"\x01\x01x")  # same key|context
    big = b"\x00ns" + b"k" * 65536
    assert s.open(big, s.seal(big, CTX)) == CTX
    with pytest.raises(InvalidRequest):
        s.open(big[:-1], s.seal(big, CTX))


@given(st.binary(min_size=1, max_size=40), st.integers(0, 200), st.integers(0, 255),
       st.integers(0, 40))
def test_no_change_to_a_sealed_context_opens(skey, at, byte, cut):
    s = Sealer(KEY)
    sealed = s.seal(skey, CTX)
    changed = bytearray(sealed)
    i = at % len(changed)
    changed[i] ^= byte or 1
    for bad in (bytes(changed), sealed[:len(sealed) - 1 - cut % len(sealed)]):
        if bad in (b"", NOTHING):
            continue  # (a blind context: taken, retires nothing)
        with pytest.raises(InvalidRequest):
            s.open(skey, bad)


def test_an_owner_seals_the_very_context_the_client_derives_from_its_copy():
    """ReadOk.seal is over `answer_context`, which must be the context the client's
    `identical_answers` gives for the same copy, in a siblings and an lww namespace (else every
    client-coordinated read's context would be refused)."""
    from zkv.node.quorum import answer_context, identical_answers

    s = None
    for i, (actor, wid) in enumerate([("n1~1.1", b""), ("n2~1.1", b"w2"), ("n3~1.1", b"w3")]):
        s = dvv.update(s, b"", b"%08d-value" % i, actor, wid)  # three concurrent siblings
    assert s is not None
    for version in (b"", s.encode(), dvv.update(s, s.context(), None, "n1~1.1").encode()):
        for lww in (False, True):
            assert answer_context(version, lww) == identical_answers(version, lww, 2)[0].context
    with pytest.raises(ValueError):
        answer_context(b"\x07garbage", False)
