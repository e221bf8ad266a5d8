"""What the two client drivers share around the core: its construction from the public
arguments, the read-only views, and how a DEALER to a node is prepared (options, CurveZMQ
key, the handshake watch that turns a refused key into AuthenticationError)."""

from __future__ import annotations

import random

import zmq

from zkv import security, wire
from zkv.client.core import ClientCore
from zkv.sockopts import tune_socket


class Facade:
    def __init__(self, nodes, timeout: float, max_value_size: int, routing: str,
                 rng: random.Random | None, keys, owner_reads: bool = True) -> None:
        self.core = ClientCore(nodes, timeout, max_value_size=max_value_size, routing=routing,
                               rng=rng, owner_reads=owner_reads)
        self._keys = security.client_keys(keys)  # DIR/clients/NAME of `zkv keygen`, or None
        self._watch: dict[str, security.HandshakeWatch] = {}

    @property
    def timeout(self) -> float:
        return self.core.timeout

    @property
    def endpoints(self) -> dict[str, str]:
        """Member id -> listen endpoint, as of the last ring learned ({} before the first call)."""
        return dict(self.core.endpoints)

    @property
    def members(self) -> list[wire.Member]:
        """The members of the last ring learned ([] before the first call)."""
        return self.core.members

    def _prepare(self, s: zmq.Socket, ep: str) -> None:
        """Options of a new DEALER to `ep`, before it connects."""
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a node we are not connected to
        tune_socket(s, "client")
        if self._keys is not None:
            security.client_socket(s, self._keys)
        self._watch[ep] = security.HandshakeWatch(s, ep)

    def _check_refused(self, ep: str) -> None:
        """A connection that never came up: AuthenticationError if the node refused our key,
        else why it is not up, for the error should no node answer (ClientCore._failure)."""
        watch = self._watch[ep]
        refused = watch.error()
        if refused is not None:
            raise refused
        self.core.unreachable_why[ep] = watch.unconnected_why()

    def _close_watches(self) -> None:
        for w in self._watch.values():
            w.close()
        self._watch.clear()
