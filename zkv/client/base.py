"""What the two client drivers share around the core: its construction from the public
arguments, the read-only views, how a DEALER to a node is prepared (options, CurveZMQ
key, the handshake watch that turns a refused key into AuthenticationError), and the mark a
forked child's inherited clients get (their sockets are the parent's)."""

from __future__ import annotations

import os
import random
import weakref

import zmq

from zkv import security, wire
from zkv.client.core import ClientCore
from zkv.errors import InvalidRequest
from zkv.sockopts import tune_socket

_CLIENTS: weakref.WeakSet[Facade] = weakref.WeakSet()  # every client of this process


def _after_fork_in_child() -> None:
    """A forked child inherits the parent's clients, whose ZeroMQ sockets and context belong
    to the parent (libzmq's threads are not forked): a call would wait on them for ever, past
    its timeout. Each is marked, and refuses calls with an error saying so."""
    for client in list(_CLIENTS):
        client._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class Facade:
    _forked = False  # made in a parent process before a fork (_after_fork_in_child)

    def __init__(self, nodes, timeout: float, max_value_size: int, routing: str,
                 rng: random.Random | None, keys, owner_reads: bool = True) -> None:
        self.core = ClientCore(nodes, timeout, max_value_size=max_value_size, routing=routing,
                               rng=rng, owner_reads=owner_reads)
        # the timeout as given: a call that waited for another thread's runs with what is left
        # of it (core.timeout, for that call only), and every call starts again from this
        self._timeout = self.core.timeout
        self._keys = security.client_keys(keys)  # DIR/clients/NAME of `zkv keygen`, or None
        self._watch: dict[str, security.HandshakeWatch] = {}
        self._pid = os.getpid()
        _CLIENTS.add(self)

    def _forked_error(self) -> InvalidRequest:
        kind = type(self).__name__
        return InvalidRequest(f"this {kind} was made in process {self._pid}, before a fork: its "
                              f"connections belong to that process; make a new {kind} in this "
                              f"one (process {os.getpid()})")

    @property
    def timeout(self) -> float:
        return self._timeout

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
        # TCP up and the ZeroMQ handshake under way, or TCP's own handshake under way (a
        # lost SYN failed a client of one node at 0.76 s, whatever its timeout: an outside
        # run), or a connection up whose queue is full (a node that stood still: one of 6,000
        # gathered requests failed "no TCP connection" in a CI rehearsal): waited for
        if watch.connected or watch.dialing:
            self.core.handshaking.add(ep)
        else:
            self.core.handshaking.discard(ep)

    def _close_watches(self) -> None:
        for w in self._watch.values():
            w.close()
        self._watch.clear()
