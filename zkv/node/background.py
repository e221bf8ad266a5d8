"""Background operations, driven by the reactor in small steps off the hot path: hint delivery,
Merkle exchanges, and repair of records the engine reported corrupt.

Like the coordinator's operations they are objects with `start`, `on_reply`, `on_timeout`, and
talk to the node only through its Context (see coordinator.Context) plus the anti-entropy state.
"""

from __future__ import annotations

import struct

from zkv.node.antientropy import AntiEntropy, Exchange, unpack_hashes, unpack_listing
from zkv.node.coordinator import Op
from zkv.wire import (
    LeafKeys,
    LeafKeysOk,
    RGet,
    RGetHashes,
    RGetHashesOk,
    RGetOk,
    RPut,
    RPutOk,
    TreeLevel,
    TreeLevelOk,
)


class HandoffOp(Op):
    """Deliver one throttled batch of hints to their owner; drop each hint once acknowledged."""

    kind = "handoff"

    def __init__(self, ctx, owner: str, batch: list[tuple[bytes, bytes]], deadline: float) -> None:
        super().__init__(ctx, None, b"", deadline)
        self.owner = owner
        self.batch = batch
        self.sent: dict[int, tuple[bytes, bytes]] = {}
        self.delivered = 0

    def start(self) -> None:
        for key, version in self.batch:
            msg = RPut(0, key, version)
            self.ctx.ask(self.owner, msg, self)
            self.sent[msg.rid] = (key, version)
        self.pending = {self.owner} if self.sent else set()
        if not self.sent:
            self.finish()

    def on_reply(self, node_id: str, msg) -> None:
        entry = self.sent.pop(msg.rid, None)
        if entry is not None and isinstance(msg, RPutOk) and msg.ok:
            if self.ctx.replica.hints.delivered(self.owner, *entry):
                self.delivered += 1
        if not self.sent:
            self.finish()

    def on_timeout(self) -> None:
        self.finish()  # undelivered hints stay; the next tick retries


class ExchangeOp(Op):
    """One Merkle exchange of a partition with one peer: roots, differing subtrees, keys, sync."""

    kind = "exchange"

    def __init__(self, ctx, ae: AntiEntropy, ex: Exchange, step_timeout: float,
                 max_keys: int) -> None:
        super().__init__(ctx, None, b"", ctx.now() + step_timeout)
        self.ae = ae
        self.ex = ex
        self.step_timeout = step_timeout
        self.max_keys = max_keys
        self.pushes = 0
        self.syncing = False

    def start(self) -> None:
        self.ae.stats["exchanges"] += 1
        self._step()

    def _step(self) -> None:
        req = self.ex.next_request()
        if req is None:
            if self.ex.agreed:
                self.ae.record_agreement(self.ex.p, self.ex.peer, self.ex.started)
            self._sync()
            return
        self.deadline = self.ctx.now() + self.step_timeout
        self.ctx.reschedule(self)
        self.pending = {self.ex.peer}
        if req[0] == "level":
            self.ctx.ask(self.ex.peer, TreeLevel(0, self.ex.p, req[1], list(req[2])), self)
        else:
            self.ctx.ask(self.ex.peer, LeafKeys(0, self.ex.p, list(req[1])), self)

    def _sync(self) -> None:
        self.syncing = True
        replica = self.ctx.replica
        # the pull goes first in the frame, so the peer answers with its own versions before
        # merging ours (otherwise each concurrent key would travel back with our sibling too)
        pull = self.ex.pull[: self.max_keys]
        if pull:
            self.ctx.ask(self.ex.peer,
                         RGetHashes(0, self.ex.p, struct.pack(f"<{len(pull)}Q", *pull)), self)
        for key in self.ex.push[: self.max_keys]:
            version = replica.read(key)
            if version:
                self.ctx.ask(self.ex.peer, RPut(0, key, version), None)
                self.ae.stats["bytes_sent"] += len(key) + len(version)
                self.pushes += 1
        self.ae.stats["keys_repaired"] += self.pushes
        if not pull:
            self.finish()
            return
        self.deadline = self.ctx.now() + self.step_timeout
        self.ctx.reschedule(self)

    def on_reply(self, node_id: str, msg) -> None:
        try:
            if self.syncing:
                if isinstance(msg, RGetHashesOk) and len(msg.keys) == len(msg.dvvs):
                    for key, version in zip(msg.keys, msg.dvvs, strict=True):
                        if version:
                            self.ctx.replica.merge(key, version)
                            self.ae.stats["keys_repaired"] += 1
                self.finish()
            elif isinstance(msg, TreeLevelOk):
                self.ex.on_level(unpack_hashes(msg.hashes, len(self.ex.indices)))
                self._step()
            elif isinstance(msg, LeafKeysOk):
                self.ex.on_keys(unpack_listing(msg.hashes, msg.digests))
                self._step()
            else:
                self.finish()
        except ValueError:  # a peer with another tree shape or a bad answer: give up this one
            self.finish()

    def on_timeout(self) -> None:
        self.finish()


class FetchRepairOp(Op):
    """Re-fetch keys the engine found corrupt from the other owners and merge what they hold."""

    kind = "repair"

    def __init__(self, ctx, key: bytes, owners: list[str], deadline: float) -> None:
        super().__init__(ctx, None, key, deadline)
        self.owners = owners
        self.got = 0

    def start(self) -> None:
        self.pending = set(self.owners)
        for node_id in self.owners:
            self.ctx.ask(node_id, RGet(0, self.key), self)
        if not self.pending:
            self.finish()

    def on_reply(self, node_id: str, msg) -> None:
        self.pending.discard(node_id)
        if isinstance(msg, RGetOk) and msg.dvv:
            self.ctx.replica.merge(self.key, msg.dvv)
            self.got += 1
        if not self.pending:
            self.finish()

    def on_timeout(self) -> None:
        self.finish()
