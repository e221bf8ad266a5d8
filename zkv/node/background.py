"""Background work, with one owner: `Background` decides when hint delivery, Merkle exchanges,
tombstone reaping, the expiry sweep (expiry.py) and the purge of dropped namespaces' keys that
it carries, and the repair of records the engine reported
corrupt run, and keeps each bounded (one handoff batch per owner, `aae_concurrency` exchanges,
a deduplicated and capped exchange queue, a window of the expiry sweep per round). The work
itself runs as small `Op`s (see `op.py`) off the hot path.

Namespaces (issue 15): exchanges, reaping and corrupt-record repair run per N-group
(NodeCore.ae_groups_all): the queue holds (partition, peer, N) and each uses the ring of its
N (`membership.ring(n)`), so a namespaced key is exchanged and reaped with exactly its owners.
"""

from __future__ import annotations

import logging
import math
import struct
from collections import deque
from functools import partial

from zkv._core.ring import partition_of
from zkv.errors import ZkvError
from zkv.node.antientropy import (
    AntiEntropy,
    Exchange,
    check_roots,
    leaf_keys,
    reap_pass,
    unpack_hashes,
    unpack_listing,
)
from zkv.node.expiry import MAX_PERIOD, Sweep
from zkv.node.op import Op
from zkv.wire import (
    MAX_ROOTS,
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

log = logging.getLogger("zkv.background")
MAX_EXCHANGE_QUEUE = 65536  # (partition, peer) pairs waiting; beyond it repair requests are cut


class HandoffOp(Op):
    """Deliver one throttled batch of hints to their owner; drop each hint once acknowledged.

    `via`: hand them instead to that node as hints naming the owner (a node that left the
    cluster while the owner was down: the stand-in delivers them when the owner is back)."""

    kind = "handoff"

    def __init__(self, ctx, owner: str, batch: list[tuple[bytes, bytes]], deadline: float,
                 via: str | None = None) -> None:
        super().__init__(ctx, None, b"", deadline)
        self.owner = owner
        self.via = via
        self.batch = batch
        self.sent: dict[int, tuple[bytes, bytes]] = {}
        self.delivered = 0

    def start(self) -> None:
        # hint delivery spends the node's I/O budget (transfers wait for what it leaves)
        self.ctx.spend_io(sum(len(k) + len(v) for k, v in self.batch))
        to = self.via or self.owner
        for key, version in self.batch:
            msg = RPut(0, key, version, self.owner if self.via else "")
            self.ctx.ask(to, msg, self)
            self.sent[msg.rid] = (key, version)
        self.pending = {to} if self.sent else set()
        if not self.sent:
            self.finish()

    def on_reply(self, node_id: str, msg) -> None:
        entry = self.sent.pop(msg.rid, None)
        if entry is not None and isinstance(msg, RPutOk) and msg.ok:
            if self.ctx.replica.handoff_store().delivered(self.owner, *entry):
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
        self.complete = False  # every differing key of the peer's pulled (not capped)

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
        self.ctx.wake(self, self.deadline)
        self.pending = {self.ex.peer}
        if req[0] == "level":
            self.ctx.ask(self.ex.peer, TreeLevel(0, self.ex.p, req[1], list(req[2]), self.ex.n),
                         self)
        else:
            self.ctx.ask(self.ex.peer, LeafKeys(0, self.ex.p, list(req[1]), self.ex.n), self)

    def _sync(self) -> None:
        self.syncing = True
        replica = self.ctx.replica
        # the pull goes first in the frame, so the peer answers with its own versions before
        # merging ours (otherwise each concurrent key would travel back with our sibling too)
        pull = self.ex.pull[: self.max_keys]
        self.complete = len(self.ex.pull) <= self.max_keys  # else the next exchange goes on
        if pull:
            self.ctx.ask(self.ex.peer,
                         RGetHashes(0, self.ex.p, struct.pack(f"<{len(pull)}Q", *pull),
                                    self.ex.n), self)
        for key in self.ex.push[: self.max_keys]:
            version = replica.read(key)
            if version:
                self.ctx.ask(self.ex.peer, RPut(0, key, version), None)
                self.ae.stats["bytes_sent"] += len(key) + len(version)
                self.ctx.spend_io(len(key) + len(version))  # the I/O budget
                self.pushes += 1
        self.ae.stats["keys_repaired"] += self.pushes
        if not pull:
            self._synced()
            self.finish()
            return
        self.deadline = self.ctx.now() + self.step_timeout
        self.ctx.wake(self, self.deadline)

    def on_reply(self, node_id: str, msg) -> None:
        try:
            if self.syncing:
                if isinstance(msg, RGetHashesOk) and len(msg.keys) == len(msg.dvvs):
                    pulled = 0
                    for key, version in zip(msg.keys, msg.dvvs, strict=True):
                        if version:
                            self.ctx.replica.merge(key, version)
                            self.ae.stats["keys_repaired"] += 1
                            pulled += len(key) + len(version)
                    self.ctx.spend_io(pulled)
                    self._synced()
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

    def _synced(self) -> None:
        if self.complete:
            self.ae.record_sync(self.ex.p, self.ex.peer, self.ex.started)


class RootsOp(Op):
    """The roots of a planning round's partitions held with one peer, in one round trip: the
    partitions whose roots agree count as exchanged in agreement (reaping and refills need
    that), the others are queued for a full exchange (`Background._roots_done`)."""

    kind = "roots"

    def __init__(self, ctx, ae: AntiEntropy, peer: str, n: int, wire_n: int,
                 parts: list[int], deadline: float) -> None:
        super().__init__(ctx, None, b"", deadline)
        self.ae = ae
        self.peer = peer
        self.n = n  # the N-group, as the exchange queue names it
        self.wire_n = wire_n  # as TreeLevel.n (0: the cluster's N)
        self.parts = parts
        self.differ: list[int] = []
        self.answered = False

    def start(self) -> None:
        self.pending = {self.peer}
        self.ctx.ask(self.peer, TreeLevel(0, self.parts[0], 0, [], self.wire_n, self.parts[1:]),
                     self)

    def on_reply(self, node_id: str, msg) -> None:
        answer = msg.hashes if isinstance(msg, TreeLevelOk) else b""
        agreed, self.differ = check_roots(self.ae, self.parts, answer)
        self.answered = True
        self.ae.stats["root_checks"] += len(self.parts)
        for p in agreed:
            self.ae.record_agreement(p, self.peer, self.started)
        self.finish()

    def on_timeout(self) -> None:
        self.finish()  # a silent peer: these partitions wait for their next turn


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
            try:
                self.ctx.replica.merge(self.key, msg.dvv)
                self.got += 1
            except ValueError:
                pass  # malformed or forged: this owner's copy cannot repair ours
        if not self.pending:
            self.finish()

    def on_timeout(self) -> None:
        self.finish()


class Background:
    """When and how much background work runs; the core calls `tick(now)` every turn."""

    @property
    def cfg(self):
        return self.core.cfg  # (the settings as they are now: `zkv config --set` changes some)

    def __init__(self, core) -> None:
        self.core = core
        self.next_run = 0.0
        self.next_reap = 0.0
        # when the last routine exchange round was planned: the next is due aae_interval after
        # it, as the interval is now (a date fixed at planning kept a lowered interval from
        # applying: 3600 then 0.2 at runtime left anti-entropy off for an hour, an outside run)
        self.aae_planned = -math.inf
        # (partition, peer, N of the keys exchanged)
        self.exchange_queue: deque[tuple[int, str, int]] = deque()
        self.queued: set[tuple[int, str, int]] = set()  # what exchange_queue holds (no duplicates)
        self.exchange_cursor = 0
        self.cursors: dict[int, int] = {}  # per N other than the cluster's
        self.exchanges_running = 0
        self.roots_running: set[tuple[str, int]] = set()  # (peer, N) with a RootsOp in flight
        self.checking = 0  # (partition, peer) pairs in check_roots' RootsOps still in flight
        self.handoff_running: set[str] = set()
        self.repair_running: set[bytes] = set()
        self.corrupt_seen: set[bytes] = set()  # corrupt keys whose partition tree was rebuilt
        self.expiry = Sweep()  # the expiry sweep's cursor (namespaces with a ttl)
        # the sweep also purges dead keys (dropped or truncated namespaces) until its pass
        # count reaches this: two more passes after the dead generations last changed (the
        # one under way, then a whole one), or after start when the registry holds some
        self.purge_until = 2 if core.namespaces.dead_gens else 0

    def purge_again(self) -> None:
        """Dead generations changed: purge their keys with the sweep's next two passes."""
        self.purge_until = self.expiry.passes + 2

    @property
    def purging(self) -> bool:
        return self.expiry.passes < self.purge_until

    def next_due(self) -> float:
        return self.next_run

    def tick(self, now: float) -> None:
        if now < self.next_run:
            return
        core, cfg = self.core, self.cfg
        self.next_run = now + cfg.background_interval
        ring = core.membership.ring()
        self._deliver_hints(now)
        if now >= self.next_reap:
            self.next_reap = now + 1.0
            if core.refill_since is not None:
                core.refill_left()  # ends the refill once every partition is verified
            if core.fresh:
                core.fresh_left()  # forgets the fresh partitions verified since
            self._repair_corrupt(ring, now)
            core.late_file.tick(now)  # the memory of overwritten writes, to its file
            for n, ae in core.ae_groups_all():
                for peer, msg in reap_pass(ae, core.replica, core.membership.ring(n),
                                           core.me).items():
                    core.ask(peer, msg, None)
            rules = core.namespaces.expiry_ms
            purging = self.purging
            if rules or purging:  # values expire, or dead keys to purge: this round's share
                shortest = min((ttl for ttl, _ in rules.values() if ttl),
                               default=int(MAX_PERIOD * 1000))
                if purging:  # (a pass at the fastest pace, ROUND_KEYS a round at most)
                    shortest = 0
                self.expiry.step(core.store, core.namespaces.expiry_of, core.handoff.wall_ms(),
                                 core.replica.drop_expired, 1.0, shortest,
                                 core.namespaces.is_dead if purging else None)
        if core.ae is None:
            return  # anti-entropy off: no exchanges
        if not self.exchange_queue and now >= self.aae_planned + cfg.aae_interval:
            self.aae_planned = now
            self._plan_exchanges(ring, now)
        default = core.membership.settings["n"]
        while self.exchange_queue and self.exchanges_running < cfg.aae_concurrency:
            p, peer, n = self.exchange_queue.popleft()
            self.queued.discard((p, peer, n))
            gring = core.membership.ring(n)
            ae = core.ae_for(n)
            owners = gring.preflist(p)  # (as of now: a pair queued before a ring change)
            if ae is None or not core.membership.is_up(peer) or peer not in owners \
                    or core.me not in owners:
                continue
            lo, hi = gring.partition_range(p)
            tree = ae.tree(p)
            ex = Exchange(tree, p, peer, now, partial(leaf_keys, core.store, tree, lo, hi,
                                                      accept=core.in_group(n)),
                          n=0 if n == default else n)
            self.exchanges_running += 1
            op = ExchangeOp(core, ae, ex, 2 * cfg.replica_timeout, cfg.aae_max_keys)
            op.on_finish = self._exchange_done
            core.start_op(op, now)

    def _exchange_done(self, op: Op) -> None:
        self.exchanges_running -= 1

    def _deliver_hints(self, now: float) -> None:
        """One throttled batch per owner that gossip shows up."""
        core = self.core
        for owner in core.handoff.owners():
            if (owner in self.handoff_running or core.membership.state(owner)[0] != "up"
                    or owner in core.no_writes):  # (its disk takes none now: later)
                continue
            batch = core.handoff.batch(owner, self.cfg.handoff_batch)
            if batch:
                self.handoff_running.add(owner)
                op = HandoffOp(core, owner, batch, now + 2 * self.cfg.replica_timeout)
                op.on_finish = self._handoff_done
                core.start_op(op, now)

    def _handoff_done(self, op: Op) -> None:
        assert isinstance(op, HandoffOp)
        self.handoff_running.discard(op.owner)
        self.core.metrics.handoffs.inc(op.delivered)

    def _queue(self, pairs) -> int:
        n = 0
        for pair in pairs:
            if pair not in self.queued and len(self.queued) < MAX_EXCHANGE_QUEUE:
                self.queued.add(pair)
                self.exchange_queue.append(pair)
                n += 1
        return n

    def _plan_exchanges(self, ring, now: float) -> None:
        """Check the roots of the next few partitions, round robin over what this node holds,
        for the cluster's N (`ring`) and every other N in use: one RootsOp per (peer, N);
        the partitions whose roots differ are queued for a full exchange."""
        core = self.core
        me = core.me
        default = core.membership.settings["n"]
        pairs = []
        for n, _ in core.ae_groups_all():
            gring = ring if n == default else core.membership.ring(n)
            mine = gring.replicas_of(me)
            if not mine:
                continue
            cursor = self.exchange_cursor if n == default else self.cursors.get(n, 0)
            for _ in range(min(len(mine), 8)):
                p = mine[cursor % len(mine)]
                cursor += 1
                pairs += [(p, peer, n) for peer in gring.preflist(p) if peer != me]
            if n == default:
                self.exchange_cursor = cursor
            else:
                self.cursors[n] = cursor
        self._check_roots(pairs, now, routine=True)

    def check_roots(self, pairs: list[tuple[int, str, int]], now: float) -> None:
        """Compare the roots of these (partition, peer, N) with each peer now, one RootsOp per
        (peer, N) and MAX_ROOTS partitions: those that agree count as exchanged in agreement
        from `now` on, the others are queued for a full exchange. For many partitions at once
        (a change's gained partitions, to verify): one round trip per peer where a full
        exchange each took `aae_concurrency` slots and a background tick (512 of a new
        3-node cluster's took 3 s)."""
        self._check_roots(pairs, now, routine=False)

    def _check_roots(self, pairs, now: float, routine: bool) -> None:
        core = self.core
        default = core.membership.settings["n"]
        groups: dict[tuple[str, int], list[int]] = {}
        for p, peer, n in pairs:
            groups.setdefault((peer, n), []).append(p)
        for (peer, n), parts in groups.items():
            ae = core.ae_for(n)
            if ae is None or not core.membership.is_up(peer) or (
                    routine and (peer, n) in self.roots_running):
                continue
            for i in range(0, len(parts), MAX_ROOTS + 1):  # (partition + MAX_ROOTS more)
                chunk = parts[i:i + MAX_ROOTS + 1]
                if routine:
                    self.roots_running.add((peer, n))
                else:
                    self.checking += len(chunk)
                op = RootsOp(core, ae, peer, n, 0 if n == default else n, chunk,
                             now + 2 * self.cfg.replica_timeout)
                op.on_finish = self._roots_done if routine else self._roots_checked
                core.start_op(op, now)

    def _roots_done(self, op: Op) -> None:
        assert isinstance(op, RootsOp)
        self.roots_running.discard((op.peer, op.n))
        self._queue((p, op.peer, op.n) for p in op.differ)

    def _roots_checked(self, op: Op) -> None:
        """check_roots' RootsOp: the partitions that differ (or all, if the peer was silent)
        are exchanged in full, ahead of the routine rounds."""
        assert isinstance(op, RootsOp)
        self.checking -= len(op.parts)
        self.queue_exchanges([(p, op.peer, op.n) for p in (op.differ if op.answered
                                                            else op.parts)])

    def queue_repair(self, partition: int) -> dict:
        """`zkv repair` (and a refill after a lost disk): one or every partition with every
        other owner that is up, ahead of the routine rounds: their roots compared first
        (`check_roots`: one round trip per owner), the partitions that differ (or all of a
        silent owner's) exchanged in full. A full exchange of partitions that agree is that
        same root comparison, one round trip and one of `aae_concurrency` slots each: a whole
        node's 512 made `zkv repair` take 3.5 s at a new 3-node cluster, tens of ms by roots
        (benchmarks/repair_time.py)."""
        core = self.core
        if core.ae is None:
            raise ZkvError(f"anti-entropy is off on {core.me} (aae_interval 0)")
        ring = core.membership.ring()
        if partition >= ring.q or partition < -1:
            raise ZkvError(f"partition {partition} out of range (ring has {ring.q})")
        parts = ring.replicas_of(core.me) if partition < 0 else [partition]
        pairs = []
        for n, _ in core.ae_groups_all():
            gring = core.membership.ring(n)
            gparts = gring.replicas_of(core.me) if partition < 0 else [partition]
            # (only what this node replicates: an exchange pulls the peer's keys here)
            pairs += [(p, peer, n) for p in gparts if core.me in gring.preflist(p)
                      for peer in gring.preflist(p) if peer != core.me]
        if partition >= 0 and not pairs:
            raise ZkvError(f"partition {partition} is not replicated by {core.me} (its owners: "
                           f"{', '.join(ring.preflist(partition))}): repair it on one of them")
        up = core.membership.is_up
        down = sorted({peer for _, peer, _ in pairs if not up(peer)})
        pairs = [pair for pair in pairs if up(pair[1])]  # (hints and routine rounds cover those)
        self.check_roots(pairs, core.t)
        return {"queued": len(pairs), "partitions": len(parts), "down": down}

    def queue_exchanges(self, pairs: list[tuple[int, str, int]]) -> None:
        """Exchange each (partition, peer, N) ahead of the routine rounds (not queued twice;
        at most MAX_EXCHANGE_QUEUE waiting)."""
        fresh = [pair for pair in pairs if pair not in self.queued]
        fresh = fresh[:max(0, MAX_EXCHANGE_QUEUE - len(self.queued))]
        self.queued.update(fresh)
        self.exchange_queue.extendleft(reversed(fresh))

    def _repair_corrupt(self, ring, now: float) -> None:
        core = self.core
        corrupt = core.store.corrupt_keys()
        fresh = [k for k in corrupt if k not in self.corrupt_seen]
        if fresh and core.ae is not None:
            # the trees still count the digests of the lost versions: rebuild those partitions
            # from what is readable, so the repairs below (and AAE) land on a consistent tree
            self.corrupt_seen.update(fresh)
            for p in {partition_of(k, core.ae.q_bits) for k in fresh}:
                lo, hi = ring.partition_range(p)
                for n, ae in core.ae_groups_all():
                    accept = core.in_group(n)
                    items = ((k, v) for k, _ in core.store.key_hashes(lo, hi)
                             if accept(k) and (v := core.store.get(k)))
                    ae.rebuild_partition(p, items)
                log.warning("rebuilt the Merkle tree of partition %d after corrupt records", p)
        self.corrupt_seen.intersection_update(corrupt)
        for key in corrupt[:100]:
            if key in self.repair_running:
                continue
            owners = [x for x in core.membership.ring(core._n_of(key)).preflist_for_key(key)
                      if x != core.me and core.membership.is_up(x)]
            if owners:
                self.repair_running.add(key)
                op = FetchRepairOp(core, key, owners, now + 2 * self.cfg.replica_timeout)
                op.on_finish = self._repair_done
                core.start_op(op, now)

    def _repair_done(self, op: Op) -> None:
        self.repair_running.discard(op.key)

    def status(self) -> dict:
        return {"queued": len(self.exchange_queue), "running": self.exchanges_running,
                "checking": self.checking}
