"""Ownership transfer (issue 11): a pending owner pulls each partition it gains, resumably,
within an I/O budget; old owners drop what they no longer own once the cluster has settled.

Receiver side (`Transfers`, driven by the core's tick):
- The partitions to receive are a pure function of the cluster state
  (`ownership.Rings.incoming`), once per N in use: the cluster's N and every namespace's N
  (issue 15; a namespace's keys have their own preference lists, so a partition can move for
  one N and not for another). A transfer is a (N, partition) pair and fetches only the keys
  of that N (`Fetch.n`). Up to `transfer_concurrency` run at once.
- Stream: `Fetch(p, cursor, batch)` to a source; the source answers the partition's versions
  in key-hash order from `cursor` (`answer_fetch`), at most about `batch` bytes; the receiver
  *merges* each with DVV sync (`Replica.merge`), so a concurrent write is never overwritten,
  and tombstones travel like any version. The cursor (the next key hash) is saved in
  DATA_DIR/transfers.json at the next batch request, after the engine has the merged batch
  (every turn flushes it before anything is sent), so a crash of the receiver re-fetches at
  most the batch in flight; a crash or silence of the source re-asks the same cursor of the
  next source after `replica_timeout` (a stall is reported with its reason).
- Verify: one Merkle exchange of p with the source (the anti-entropy `ExchangeOp`); it pulls
  what the stream passed before it was written (writes during a transfer also reach the
  pending owner directly, this closes the window of a lost message). Done when an exchange
  finishes with everything it found fetched.
- Throttle: `IOBudget`, a token bucket of `transfer_rate` bytes per second shared with hint
  delivery and anti-entropy pushes (they charge it; transfers wait on it), so transfers get
  the bandwidth the others leave and never more than the budget.

Source side: `answer_fetch` (any peer may ask; peers only, see core.PEER_ONLY).

After the change (`drop_pass`): a node drops, in batches, the keys of partitions it neither
replicates nor is receiving, once every member reported the same cluster epoch for
`settle` seconds (so no coordinator still routes to it); until then, writes it receives for
such partitions are passed on as hints to the owners (core._on_rput).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from functools import partial

from zkv.node.antientropy import Exchange, leaf_keys
from zkv.node.listing import hash_groups
from zkv.node.membership import discard_tmp
from zkv.node.op import Op
from zkv.node.ownership import REMOVED
from zkv.wire import Fetch, FetchOk, RPut, RPutOk

log = logging.getLogger("zkv.transfer")

STREAM, VERIFY, DONE = 0, 1, 2
PHASES = ("streaming", "verifying", "done")
BATCH_BYTES = 256 * 1024  # versions per Fetch answer (about)
DROP_BATCH = 2000  # keys dropped per background step
SAVE_EVERY = 1.0  # seconds between writes of the transfers' progress file, at most
PROGRESS_EVERY = 10.0  # seconds between INFO lines of a set of transfers' progress, at most


MAX_DEBT_S = 2.0  # the bucket never owes more than this many seconds of its rate
# a verify waits for every member's view of the change at most this many `settle`s (and at
# least VIEW_WAIT_MIN seconds): Transfers._behind
VIEW_WAIT_SETTLES, VIEW_WAIT_MIN = 6, 30.0
VIEW_WAITING = "waiting until every member knows cluster epoch"  # a stall reason's start


class IOBudget:
    """Token bucket: `rate` bytes per second, bursts up to one second of it. One per node,
    shared by everything that moves bulk data: transfers (wait until the bucket is positive,
    then charge a batch), hint delivery and anti-entropy (charge what they send and pull;
    they have their own bounds and never wait here) and compaction of the node's engines
    (`reserve` per MiB rewritten, then sleep until that is paid for, in its own thread).
    Thread-safe: compaction reserves from its thread. The debt is capped at MAX_DEBT_S
    seconds of the rate, so whatever the others spend, a reservation waits at most about
    that long: compaction is slowed, never starved."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.tokens = self.rate
        self.at = clock()
        self.spent = 0  # bytes charged in total (metrics)
        self.reserved = 0  # of which compaction's reservations
        self._lock = threading.Lock()

    def set_rate(self, rate: float) -> None:
        """A new rate from now on (`zkv config --set transfer_rate=...`)."""
        with self._lock:
            self._refill()
            self.rate = float(rate)
            self.tokens = min(self.tokens, self.rate)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)

    def charge(self, n: int) -> None:
        with self._lock:
            self._refill()
            self.tokens = max(self.tokens - n, -MAX_DEBT_S * self.rate)
            self.spent += n

    def reserve(self, n: int) -> float:
        """Charge `n` bytes now; the seconds to wait before using them (the debt ahead of
        them, this reservation included, paid at the rate)."""
        with self._lock:
            self._refill()
            self.tokens = max(self.tokens - n, -MAX_DEBT_S * self.rate - n)
            self.spent += n
            self.reserved += n
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def wait(self) -> float:
        """Seconds until the bucket is positive again (0: go now)."""
        with self._lock:
            self._refill()
            return 0.0 if self.tokens > 0 else -self.tokens / self.rate


def answer_fetch(store, ring, msg: Fetch, max_bytes: int,
                 accept: Callable[[bytes], bool] | None = None,
                 read: Callable[[bytes], bytes | None] | None = None) -> FetchOk:
    """The partition's versions from `msg.cursor` in key-hash order, about min(asked, cap)
    bytes (whole groups of equal hashes, so a cursor never splits one); `accept`: only keys
    of the asked N-group (core.in_group(msg.n)); `read`: how a version is read (the node's
    Replica.read: an expired one is dropped then, not sent); the store's get by default."""
    if not 0 <= msg.partition < ring.q:
        return FetchOk(msg.rid, [], [], msg.cursor, True, 0)
    lo, hi = ring.partition_range(msg.partition)
    listing = sorted((h, k) for k, h in store.key_hashes(max(lo, msg.cursor), hi)
                     if accept is None or accept(k))
    total = 0
    if msg.cursor <= lo:
        total = sum(store.record_size(k) for _, k in listing)
    budget = min(msg.max_bytes, max_bytes)
    keys: list[bytes] = []
    dvvs: list[bytes] = []
    size = 0
    nxt = hi + 1
    get = store.get if read is None else read
    for h, group in hash_groups(listing):
        if size >= budget and keys:
            nxt = h
            break
        for k in group:
            v = get(k)
            if v:
                keys.append(k)
                dvvs.append(v)
                size += len(k) + len(v)
    done = nxt > hi
    return FetchOk(msg.rid, keys, dvvs, min(nxt, (1 << 64) - 1), done, total)


class _Part:
    __slots__ = ("p", "n", "wire_n", "cursor", "done_bytes", "total", "phase", "sources", "src",
                 "stalled", "running", "started", "keys")

    def __init__(self, p: int, lo: int, sources: list[str], n: int = 0, wire_n: int = 0) -> None:
        self.p = p
        self.n = n  # the N of the keys moved (a namespace's, or the cluster's)
        self.wire_n = wire_n  # n as the wire says it: 0 for the cluster's N
        self.cursor = lo
        self.done_bytes = 0
        self.total = 0
        self.phase = STREAM
        self.sources = sources
        self.src = 0  # index into sources of the one asked now
        self.stalled = ""
        self.running = False
        self.started = 0.0
        self.keys = 0


class FetchOp(Op):
    """Stream one partition from a source, batch after batch, within the budget."""

    kind = "transfer"

    def __init__(self, ctx, mgr: Transfers, part: _Part, source: str, step: float) -> None:
        super().__init__(ctx, None, b"", ctx.now() + step)
        self.mgr = mgr
        self.part = part
        self.source = source
        self.step = step
        self.waiting = False

    def start(self) -> None:
        self._ask()

    def _ask(self) -> None:
        wait = self.mgr.budget.wait()
        if wait > 0:
            self.waiting = True
            self.deadline = self.ctx.now() + wait + self.step
            self.ctx.wake(self, self.ctx.now() + wait)
            return
        self.waiting = False
        self.pending = {self.source}
        self.deadline = self.ctx.now() + self.step
        self.ctx.wake(self, self.deadline)
        self.ctx.ask(self.source, Fetch(0, self.part.p, self.part.cursor, BATCH_BYTES,
                                        self.part.wire_n), self)

    def on_timer(self) -> None:
        if self.waiting:
            self._ask()

    def on_reply(self, node_id: str, msg) -> None:
        part = self.part
        if not isinstance(msg, FetchOk) or len(msg.keys) != len(msg.dvvs) or (
                msg.next < part.cursor):
            part.stalled = f"{node_id} answered {type(msg).__name__} to a transfer fetch"
            self.mgr.next_source(part)
            self.finish()
            return
        if msg.total and part.total == 0:
            part.total = msg.total
        size = 0
        replica = self.ctx.replica
        for key, version in zip(msg.keys, msg.dvvs, strict=True):
            try:
                replica.merge(key, version)
            except ValueError as exc:
                log.warning("transfer of partition %d: refused a version from %s: %s",
                            part.p, node_id, exc)
                continue
            size += len(key) + len(version)
        part.keys += len(msg.keys)
        part.done_bytes += size
        self.mgr.bytes_received += size
        self.mgr.budget.charge(size)
        part.cursor = msg.next
        part.stalled = ""
        self.mgr.dirty = True
        if msg.done:
            part.phase = VERIFY
            part.total = max(part.total, part.done_bytes)
            self.finish()
            return
        self._ask()

    def on_timeout(self) -> None:
        self.part.stalled = (f"source {self.source} did not answer a fetch within "
                             f"{self.step:.1f}s; trying the next source")
        self.ctx.suspect(self.source, "transfer fetch timed out")
        self.mgr.next_source(self.part)
        self.finish()

    def on_done(self) -> None:
        self.part.running = False
        super().on_done()


class Transfers:
    """The receiving side's transfers: which partitions, their progress, starting the ops."""

    def __init__(self, core, path: str | None) -> None:
        self.core = core
        self.path = path
        self.parts: dict[tuple[int, int], _Part] = {}  # (N, partition) -> its transfer
        self.epoch = -1  # the cluster epoch `parts` was planned for
        self.budget = IOBudget(core.cfg.transfer_rate, core.now)
        # (N or None, partition) -> [cursor, done, total, phase] from the last life (None: a
        # file written before transfers had an N: the cluster's N)
        self._saved: dict[tuple[int | None, int], list] = self._load()
        self.bytes_received = 0  # streamed in, this process's life (keys + versions merged)
        self.bytes_sent = 0  # streamed out in Fetch answers, this process's life
        # progress not yet in the file: written by `checkpoint`, at most every SAVE_EVERY s
        self.dirty = False
        self.next_save = 0.0
        # (epoch, since when, said in the log) a verify has waited for members that do not
        # know that epoch
        self.view_wait: tuple[int, float, bool] | None = None
        # the log: a partition received is a DEBUG line (a join moves hundreds); INFO says
        # progress at most every PROGRESS_EVERY s and once when the change's set is complete
        self.planned_at = 0.0  # when `parts` was planned
        self.progress_at = 0.0  # when progress was last logged
        self.summarised = True  # the set's INFO summary logged (nothing planned: nothing to say)

    # ---- persistence ------------------------------------------------------------------------
    def _load(self) -> dict[tuple[int | None, int], list]:
        if not self.path:
            return {}
        try:
            with open(self.path) as fh:
                doc = json.load(fh)
            out: dict[tuple[int | None, int], list] = {}
            for name, v in doc.get("partitions", {}).items():
                if not (isinstance(v, list) and len(v) == 4 and all(type(x) is int for x in v)):
                    continue
                n, _, p = name.rpartition(":")  # "N:partition", or "partition" (older files)
                out[(int(n) if n else None, int(p))] = v
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return {}

    def checkpoint(self, now: float) -> None:
        """End of a turn, after the turn's merges reached the engine: write the progress
        file if it changed, at most every SAVE_EVERY seconds. Every partition's
        cursor is in one file, so writing it per batch cost O(partitions) each time: 9 CPU
        seconds across the three nodes of a fresh local cluster (1,547 writes of a file with an
        entry per incoming partition), still running when its first clients came. A restart resumes from a cursor at
        most SAVE_EVERY behind, and fetches that much again (merging is idempotent)."""
        if self.dirty and now >= self.next_save:
            self.next_save = now + SAVE_EVERY
            self.save()

    def save(self) -> None:
        """Write the progress file (OSError if the disk does not take it: still dirty)."""
        self.dirty = False
        if not self.path:
            return
        doc = {"partitions": {f"{n}:{p}": [x.cursor, x.done_bytes, x.total, x.phase]
                              for (n, p), x in self.parts.items()}}
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            self.dirty = True  # (written by a later turn's checkpoint)
            discard_tmp(tmp)
            raise

    # ---- planning -----------------------------------------------------------------------------
    def replan(self, groups: dict, default_n: int) -> None:
        """The cluster state (or the set of N in use) changed: keep the progress of transfers
        still incoming (resume), forget the others. `groups`: N -> ownership.Rings."""
        parts = {}
        epoch = -1
        for n, rings in sorted(groups.items()):
            epoch = rings.state.epoch
            incoming = rings.incoming(self.core.me) if rings.moving else {}
            for p, sources in incoming.items():
                part = self.parts.get((n, p))
                if part is None:
                    lo = rings.current.partition_range(p)[0]
                    part = _Part(p, lo, sources, n, 0 if n == default_n else n)
                    saved = self._saved.get((n, p)) or (
                        self._saved.get((None, p)) if n == default_n else None)
                    if saved:  # resume after a restart of this node
                        part.cursor, part.done_bytes, part.total, part.phase = saved
                        part.cursor = max(part.cursor, lo)
                        if part.phase not in (STREAM, VERIFY, DONE):
                            part.phase = STREAM
                        log.info("resuming the transfer of partition %d (N=%d) at %d bytes", p,
                                 n, part.done_bytes)
                elif part.sources != sources:  # e.g. a source force-removed meanwhile
                    # (the index into the old list, kept, failed the status document and with it
                    # every gossip round of this node: simulate.py --scenario replace-dead)
                    part.sources, part.src = sources, 0
                parts[(n, p)] = part
        if set(parts) - set(self.parts) or (parts and epoch != self.epoch):
            now = self.core.now()  # a new set (or more of it) to receive: summarised at its end
            self.planned_at = self.progress_at = now
            self.summarised = self.complete_set(parts)
        self.parts = parts
        self._saved = {}
        self.epoch = epoch
        try:
            self.save()
        except OSError as exc:  # (a full disk: raised out of the cluster state's adoption)
            log.error("could not save %s: %s (written at a later turn once the disk takes it)",
                      self.path, exc)

    def served(self, ok: FetchOk) -> None:
        """A Fetch answer this node sends: charge the budget, count the bytes."""
        self.budget.charge(sum(len(v) for v in ok.dvvs))
        self.bytes_sent += sum(len(k) + len(v) for k, v in zip(ok.keys, ok.dvvs, strict=True))

    def next_source(self, part: _Part) -> None:
        part.src = (part.src + 1) % max(1, len(part.sources))

    def complete(self) -> bool:
        return all(x.phase == DONE for x in self.parts.values())

    @staticmethod
    def complete_set(parts: dict) -> bool:
        return all(x.phase == DONE for x in parts.values())

    def pending_here(self) -> int:
        return sum(1 for x in self.parts.values() if x.phase != DONE)

    # ---- driving --------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        core = self.core
        running = sum(1 for x in self.parts.values() if x.running)
        limit = core.cfg.transfer_concurrency
        # Verify only once every member that is not down reported this plan's epoch: from then
        # on every coordinator also sends this node each write of the partition (an uncounted
        # copy), so the exchange leaves nothing for the writes to miss. Verified earlier, a
        # write coordinated by a member that had not heard of the change yet reached the old
        # owners only, and after the switch an R=1 read of this new owner missed it
        # (tests/sim: membership, a stale view).
        behind: list[str] = []
        waiting = [x for x in self.parts.values() if x.phase == VERIFY and not x.running]
        if waiting:
            behind = self._behind(now)
            for part in waiting:
                if behind:
                    part.stalled = (f"{VIEW_WAITING} {self.epoch} before verifying "
                                    f"({', '.join(behind)} not yet)")
                elif part.stalled.startswith(VIEW_WAITING):
                    part.stalled = ""  # (waited: verifying as soon as a slot is free)
        for part in self.parts.values():
            if running >= limit:
                break
            if part.running or part.phase == DONE or (part.phase == VERIFY and behind):
                continue
            source = self._pick_source(part)
            if source is None:
                if self._lost(part):
                    # every replica it had was force-removed and none is up: nothing left to
                    # fetch (`zkv cluster plan` warned). Waiting kept the change from ever
                    # completing (simulate.py --scenario remove: an N=1 namespace's partitions
                    # of the removed node); hints for the removed node reach the new owners
                    # (NodeCore._hints_of_removed), and copies other nodes had not dropped
                    # yet reach them by their handover.
                    log.warning("partition %d (N=%d): every replica was force-removed; "
                                "received empty", part.p, part.n)
                    part.phase = DONE
                    self._finished(part)
                    continue
                part.stalled = ("no source is up (" + ", ".join(part.sources) + ")")
                continue
            part.running = True
            part.started = part.started or now
            running += 1
            step = 2 * core.cfg.replica_timeout + 1.0
            if part.phase == STREAM:
                core.start_op(FetchOp(core, self, part, source, step), now)
            else:
                self._verify(part, source, step, now)

    def _behind(self, now: float) -> list[str]:
        """The members a verify still waits for (see `tick`); none once it has waited
        VIEW_WAIT_SETTLES x settle (at least VIEW_WAIT_MIN s) for this epoch: a member up but
        never taking the state (a bug, an older version during an upgrade) must not hold a
        change forever. Then the verify goes ahead, said once in the log: until anti-entropy,
        an R=1 read of this node may miss a write such a member coordinated."""
        behind = self.core.members_behind(self.epoch)
        if not behind:
            self.view_wait = None
            return behind
        if self.view_wait is None or self.view_wait[0] != self.epoch:
            self.view_wait = (self.epoch, now, False)
        epoch, since, said = self.view_wait
        limit = max(VIEW_WAIT_MIN, VIEW_WAIT_SETTLES * self.core.cfg.settle)
        if now - since < limit:
            return behind
        if not said:
            log.warning("verifying incoming partitions without every member knowing cluster "
                        "epoch %d: %s did not report it in %.0fs; until anti-entropy, an R=1 "
                        "read here may miss a write they coordinated", epoch,
                        ", ".join(behind), limit)
            self.view_wait = (epoch, since, True)
        return []

    def _lost(self, part: _Part) -> bool:
        """Every source of `part` is force-removed (and, as the caller found, none is up)."""
        st = self.core.membership.cluster
        return st is not None and all(st.status(x) == REMOVED for x in part.sources)

    def _pick_source(self, part: _Part) -> str | None:
        ms = self.core.membership
        n = len(part.sources)
        for i in range(n):
            cand = part.sources[(part.src + i) % n]
            if cand != self.core.me and ms.is_up(cand):
                part.src = (part.src + i) % n
                return cand
        return None

    def _verify(self, part: _Part, source: str, step: float, now: float) -> None:
        core = self.core
        ae = core.ae_for(part.n)
        if ae is None:  # anti-entropy off: the stream (plus direct writes) is all
            part.phase = DONE
            part.running = False
            self._finished(part)
            return
        from zkv.node.background import ExchangeOp  # background imports this module

        lo, hi = core.membership.ring().partition_range(part.p)
        tree = ae.tree(part.p)
        ex = Exchange(tree, part.p, source, now, partial(leaf_keys, core.store, tree, lo, hi,
                                                         accept=core.in_group(part.n)),
                      n=part.wire_n)
        op = ExchangeOp(core, ae, ex, step, core.cfg.aae_max_keys)

        def verified(op: Op, part: _Part = part, ex: Exchange = ex) -> None:
            part.running = False
            if ex.finished and len(ex.pull) <= core.cfg.aae_max_keys:
                part.phase = DONE
                self._finished(part)
            else:
                part.stalled = f"verifying against {source}: exchange incomplete, retrying"
                self.next_source(part)

        op.on_finish = verified
        core.start_op(op, now)

    def _finished(self, part: _Part) -> None:
        part.stalled = ""
        self.dirty = True
        log.debug("partition %d (N=%d) received (%d keys, %d bytes)", part.p, part.n, part.keys,
                  part.done_bytes)
        parts = self.parts.values()
        done = [x for x in parts if x.phase == DONE]
        now = self.core.now()
        keys, size = sum(x.keys for x in done), sum(x.done_bytes for x in done)
        if len(done) == len(parts) and not self.summarised:
            self.summarised = True
            log.info("received every partition of this change: %d partition(s) (epoch %d), "
                     "%d keys, %d bytes in %.1f s", len(done), self.epoch, keys, size,
                     now - self.planned_at)
        elif len(done) < len(parts) and now - self.progress_at >= PROGRESS_EVERY:
            self.progress_at = now
            log.info("receiving partitions: %d of %d received so far, %d keys, %d bytes "
                     "(%.0f s since the change)", len(done), len(parts), keys, size,
                     now - self.planned_at)

    # ---- reporting -------------------------------------------------------------------------------
    def report(self) -> list[tuple[int, int, int, int, int]]:
        """(N, partition, bytes done, bytes total, phase) of every incoming transfer."""
        return [(n, p, x.done_bytes, x.total, x.phase) for (n, p), x in sorted(self.parts.items())]

    def status(self, now: float) -> list[dict]:
        out = []
        for (n, p), x in sorted(self.parts.items()):
            elapsed = now - x.started if x.started else 0.0
            rate = x.done_bytes / elapsed if elapsed > 0 else 0.0
            left = max(0, x.total - x.done_bytes)
            started = bool(x.started or x.done_bytes or x.phase != STREAM)
            out.append({"partition": p, "n": n, "from": x.sources[x.src] if x.sources else "",
                        "to": self.core.me, "bytes_done": x.done_bytes,
                        "bytes_total": reported_total(x.done_bytes, x.total, x.phase),
                        "phase": PHASES[x.phase] if started else "queued",
                        "rate": round(rate),
                        "eta_s": round(left / rate, 1) if rate and x.phase != DONE else None,
                        "stalled": x.stalled,
                        # False: queued (transfer_concurrency at once), nothing fetched yet
                        "started": started})
        return out


def reported_total(done: int, total: int, phase: int) -> int:
    """A transfer's bytes in all, as reported: the estimate made when it began (`total`)
    until it is done, then what it moved (the estimate ran 3% over, and a finished
    transfer read 97% done: an outside membership run)."""
    return done if phase == DONE else max(done, total)


def drop_pass(core, keep: set[int], limit: int = DROP_BATCH) -> int:
    """Drop up to `limit` keys of partitions not in `keep` (this node neither replicates nor
    receives them); returns how many were dropped. Their Merkle trees are emptied."""
    from zkv.node.namespaces import MAX_N, key_settings

    ms = core.membership
    ring = ms.ring()
    keeps: dict[int, set[int]] = {}  # a namespace's N -> the partitions kept for it
    dropped = 0
    touched = set()
    gone: list[bytes] = []
    # Only a partition that some N-group does not keep here can hold a key to drop: walk the
    # hash ranges of those, not every key of the store (a walk of every key in one loop turn
    # froze a node of 4M keys for 3-12 s after each start and membership change: an outside
    # run). The N of every stored key has its anti-entropy group (the trees' rebuild at start
    # makes one per N found, and every write after one for its key's N); without anti-entropy
    # no such list is kept, so every N a key can name counts.
    ns_used = set(range(1, MAX_N + 1)) if core.ae is None else (
        {n for n, _ in core.ae_groups_all()} | set(core.groups()))
    for n in sorted(ns_used - {ring.n}):
        keeps[n] = set(ms.ring(n).replicas_of(core.me))
    candidates = [p for p in range(ring.q)
                  if p not in keep or any(p not in kept for kept in keeps.values())]

    def candidate_keys():
        for cp in candidates:
            lo, hi = ring.partition_range(cp)
            for k, _h in core.store.key_hashes(lo, hi):
                yield k

    for key in candidate_keys():
        p = ring.partition(key)
        ks = key_settings(key)  # a namespaced key: its preference lists follow its own N
        if ks is not None and ks[0] != ring.n:
            kept = keeps.get(ks[0])
            if kept is None:
                kept = keeps[ks[0]] = set(ms.ring(ks[0]).replicas_of(core.me))
            if p in kept:
                continue
        elif p in keep:
            continue
        core.store.delete(key)
        gone.append(key)
        touched.add(p)
        dropped += 1
        if dropped >= limit:
            break
    # their tombstones are this node's alone (no replica needs them: it no longer holds the
    # keys): compaction may drop them at once, as a restart's release of every tombstone
    # does. Kept, a join left ~470k per node of 2M (23-29% of each compaction's records,
    # ~34 MB of keydir) until its next restart (an outside capacity run).
    core.store.release_tombstones(gone)
    for p in touched:  # each N-group's tree of p holds only that group's keys
        lo, hi = ring.partition_range(p)
        for n, ae in core.ae_groups_all():
            accept = core.in_group(n)
            ae.rebuild_partition(p, ((k, v) for k, _ in core.store.key_hashes(lo, hi)
                                     if accept(k) and (v := core.store.get(k))))
    return dropped


class PushOp(Op):
    """Send versions to a peer and wait for every acknowledgement (a handover's pushes)."""

    kind = "handover"

    def __init__(self, ctx, peer: str, items: list[tuple[bytes, bytes]], deadline: float) -> None:
        super().__init__(ctx, None, b"", deadline)
        self.peer = peer
        self.items = items
        self.waiting: set[int] = set()
        self.acked = 0

    def start(self) -> None:
        for key, version in self.items:
            msg = RPut(0, key, version)
            self.ctx.ask(self.peer, msg, self)
            self.waiting.add(msg.rid)
        self.ctx.spend_io(sum(len(k) + len(v) for k, v in self.items))
        self.pending = {self.peer} if self.waiting else set()
        if not self.waiting:
            self.finish()

    def on_reply(self, node_id: str, msg) -> None:
        if msg.rid in self.waiting:
            self.waiting.discard(msg.rid)
            if isinstance(msg, RPutOk) and msg.ok:
                self.acked += 1
        if not self.waiting:
            self.finish()

    def on_timeout(self) -> None:
        self.finish()

    @property
    def complete(self) -> bool:
        return self.acked == len(self.items)


class Handover:
    """Before a node drops partitions it no longer owns, or exits after leaving: one Merkle
    exchange per (N, partition, current owner) of what it holds there, and every key the
    owner lacks or holds differently pushed to it with acknowledgements. Closes what the
    stream, its verify exchange and the uncounted copies can miss: a version that reached the
    old owner only after the pending owner's verify (a hint delivered to it, a read repair, a
    copy lost on the way). With N >= 2 anti-entropy among the remaining owners would repair
    it; with N=1 the old owner held the only copy (the simulator lost such writes).
    Pushing a version older than the owner's is harmless: it merges away. An owner that is
    down is skipped once another owner of the same (N, partition) has it all (anti-entropy
    among them refills it); a partition whose every owner is down waits."""

    def __init__(self, core) -> None:
        self.core = core
        self.todo: set[tuple[int, int, str]] | None = None  # (N, partition, owner)
        self.running: set[tuple[int, int, str]] = set()
        self.handed: set[tuple[int, int]] = set()  # (N, partition) some owner has in full

    def reset(self) -> None:
        self.todo = None
        self.handed = set()

    def _plan(self, member: bool) -> set[tuple[int, int, str]]:
        core = self.core
        ms = core.membership
        default = ms.settings["n"]
        ring = ms.ring()
        held: set[tuple[int, int]] = set()
        # a partition this node replicates under every N in use (the N of each stored key has
        # its anti-entropy group, see drop_pass; done() plans only with anti-entropy on) has
        # nothing to hand over while it is a member: walk the others' hash ranges only, not
        # every key (see drop_pass)
        groups = {n for n, _ in core.ae_groups_all()} | set(core.groups()) | {default}
        walk = [p for p in range(ring.q)
                if not (member and all(core.me in ms.ring(n).preflist(p) for n in groups))]
        by_partition = getattr(core.store, "partition_bytes", None)
        if by_partition is not None and len(walk) > ring.q // 16:
            # (one pass in C over every key: the default N's partitions held, a namespace's
            # keys apart; a walk of a third of 4M keys in Python stood the loop still)
            totals, apart = by_partition(ring.q_bits)
            wanted = set(walk)
            held.update((default, p) for p in walk if totals[p])
            for key, _size in apart:
                p = ring.partition(key)
                if p in wanted:
                    held.add((core._n_of(key) or default, p))
        else:
            for p in walk:
                lo, hi = ring.partition_range(p)
                for key, _h in core.store.key_hashes(lo, hi):
                    held.add((core._n_of(key) or default, p))
        out: set[tuple[int, int, str]] = set()
        for n, p in held:
            owners = ms.ring(n).preflist(p)
            if member and core.me in owners:
                continue
            out.update((n, p, o) for o in owners if o != core.me)
        return out

    def done(self, now: float, member: bool = True) -> bool:
        """Drive the handover; True once everything is handed over (`member`: this node is
        still an owner of some partitions; False: it left, everything goes)."""
        core = self.core
        if core.ae is None:
            return True  # no trees to compare: anti-entropy off, nothing to hand over by
        if self.todo is None:
            self.todo = self._plan(member)
            if self.todo:
                log.info("handing over %d (N, partition, owner) before dropping them",
                         len(self.todo))
        if not self.todo:
            return True
        from zkv.node.background import ExchangeOp  # background imports this module

        ms = core.membership
        default = ms.settings["n"]
        step = 2 * core.cfg.replica_timeout + 1.0
        for item in sorted(self.todo - self.running):
            if len(self.running) >= core.cfg.aae_concurrency:
                break
            n, p, owner = item
            ae = core.ae_for(n)
            if not ms.is_up(owner) and (n, p) in self.handed:
                self.todo.discard(item)  # another owner has it: anti-entropy refills this one
                continue
            if ae is None or not ms.is_up(owner):
                continue
            lo, hi = ms.ring().partition_range(p)
            tree = ae.tree(p)
            ex = Exchange(tree, p, owner, now, partial(leaf_keys, core.store, tree, lo, hi,
                                                       accept=core.in_group(n)),
                          n=0 if n == default else n)
            op = ExchangeOp(core, ae, ex, step, 0)  # max_keys 0: no pull, no unacked push
            self.running.add(item)
            op.on_finish = partial(self._exchanged, item, ex)
            core.start_op(op, now)
        return False

    def _exchanged(self, item, ex: Exchange, op: Op) -> None:
        core = self.core
        if not ex.finished:
            self.running.discard(item)
            return
        items = [(k, v) for k in ex.push if (v := core.store.get(k))]
        push = PushOp(core, item[2], items, core.now() + 2 * core.cfg.replica_timeout + 1.0)
        push.on_finish = partial(self._pushed, item)
        core.start_op(push, core.now())

    def _pushed(self, item, op: Op) -> None:
        self.running.discard(item)
        assert isinstance(op, PushOp)
        if op.complete and self.todo is not None:
            self.todo.discard(item)
            self.handed.add(item[:2])
