"""What the client puts on the wire and its sockets: the write id field across versions, and the
shared socket options (zkv.sockopts)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import zmq

from zkv import sockopts, wire
from zkv.client import AsyncClient, Client
from zkv.errors import InvalidRequest


class OldPut(msgspec.Struct, array_like=True, tag_field="t", tag=2):
    """wire.Put as it was before the write id."""

    rid: int
    key: bytes
    value: bytes
    context: bytes = b""
    w: int = 0


def test_a_put_from_an_old_client_decodes_with_no_write_id():
    data = msgspec.msgpack.encode([wire.WIRE_VERSION, [OldPut(5, b"k", b"v", b"c", 2)]])
    (msg,) = wire.decode(data, 1 << 20)
    assert msg == wire.Put(5, b"k", b"v", b"c", 2) and msg.wid == b""
    data = msgspec.msgpack.encode([wire.WIRE_VERSION, [[3, 6, b"k", b"c", 1]]])  # an old Delete
    assert wire.decode(data, 1 << 20)[0].wid == b""


def test_an_old_node_reads_a_new_put_and_ignores_the_write_id():
    new = wire.encode_one(wire.Put(5, b"k", b"v", b"c", 2, b"w" * 16))
    old_frame = msgspec.msgpack.Decoder(tuple[int, list[OldPut]]).decode(new)
    assert old_frame[1] == [OldPut(5, b"k", b"v", b"c", 2)]


def test_the_write_id_survives_a_forward_hop():
    fwd = wire.Forward(1, wire.Delete(2, b"k", b"", 0, b"i" * 16))
    (out,) = wire.decode(wire.encode_one(fwd), 1 << 20)
    assert out.inner.wid == b"i" * 16


@pytest.mark.parametrize("bad", ["str", b"x" * (wire.MAX_WID + 1), None])
def test_bad_write_ids_rejected(bad):
    with pytest.raises(InvalidRequest):
        wire.check_wid(bad)


def _expected():
    return {
        zmq.HEARTBEAT_IVL: 0,  # (sockopts.py: why none)
        zmq.TCP_MAXRT: sockopts.TCP_MAXRT_MS,
        zmq.TCP_KEEPALIVE: 1,
        zmq.TCP_KEEPALIVE_IDLE: sockopts.KEEPALIVE_IDLE_S,
        zmq.TCP_KEEPALIVE_INTVL: sockopts.KEEPALIVE_INTVL_S,
        zmq.TCP_KEEPALIVE_CNT: sockopts.KEEPALIVE_CNT,
        zmq.RECONNECT_IVL: sockopts.RECONNECT_IVL_MS,
        zmq.RECONNECT_IVL_MAX: sockopts.RECONNECT_IVL_MAX_MS,
        zmq.IMMEDIATE: 1,
    }


def _check(sock) -> None:
    for opt, value in _expected().items():
        assert sock.getsockopt(opt) == value, opt


@pytest.mark.parametrize("role", sockopts.ROLES)
def test_tune_socket_sets_every_option(role):
    ctx = zmq.Context()
    try:
        s = sockopts.tune_socket(ctx.socket(zmq.DEALER), role)
        s.setsockopt(zmq.IMMEDIATE, 1)
        _check(s)
        with pytest.raises(ValueError):
            sockopts.tune_socket(s, "listener")
        s.close(0)
    finally:
        ctx.term()


def test_every_client_socket_is_tuned():
    eps = ["tcp://127.0.0.1:9", "tcp://127.0.0.1:10"]
    with Client(eps, timeout=0.2) as c:
        for ep in eps:
            c._sock(ep)
        assert c._socks and all(_check(s) is None for s in c._socks.values())

    async def run():
        c = AsyncClient(eps, timeout=0.2)
        try:
            for ep in eps:
                c._sock(ep)
            assert c._socks and all(_check(s) is None for s in c._socks.values())
        finally:
            await c.close()

    asyncio.run(run())
