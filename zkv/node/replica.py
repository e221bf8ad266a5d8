"""Replica: applies versions to the local storage engine and serves reads. No sockets here.

A replica stores, per key, the encoded DVV set (`zkv._core.dvv`) as the engine's value.
Writes arriving from a coordinator are merged with `sync` (never overwritten), so a replica
can receive the same or an older version any number of times, in any order, and converge.
When the node stands in for an unreachable owner (sloppy quorum), the same operations take
`owner=<that owner's id>` and go to the handoff store (`handoff.HandoffStore`) instead of the
main store.

Dots never repeat, even after a key was reaped. A DVV counter continues from what the
stored set names; once a tombstone is reaped the key is absent, and restarting at 1 would
reissue dots that other replicas' clocks (a tombstone not yet reaped there, a late hint)
still name, so the new write would look already seen and vanish on sync (the simulator
found acknowledged re-adds lost that way, seed 3). So a write to a key reaped recently
coordinates with the reaped tombstone's causal past added to its context (`reaped_past`):
its new dot is above every dot the old key had, and stale copies of deleted versions are
covered by it.

Dots never repeat, also where the node forgot its own (the riak_kv design: a vnode id that
changes after an unclean shutdown, plus per-key epochs). A new dot continues the counter of
an id in the version the node holds for the key, which is safe only if that version holds
the last dot the node issued under that id. It may not:
- the node holds nothing for the key: it reaped the tombstone and lost the reap memory (it
  expired, or its journal went with a power loss), handed the partition away, or it is a
  new key (it cannot tell which);
- its unsynced tail was lost (a power loss; an unclean shutdown is all a start can see);
- it stood in for an owner and its hint was delivered and deleted.
Restarting a counter repeats a dot that copies elsewhere still name, and the replicas drop
the new write as already seen (the simulator lost acknowledged writes each way: an N=1 write
whose stand-in had delivered its hint, membership with spaces under faults, seed 22; a re-add
after a reap, a crash and a power loss, `simulate.py --seed 289 --client core --loss 0.05
--dup 0.02 --partitions 4 --pauses 2 --crashes 2 --power-losses 1`). So:
- the node's *base* id (`base`) is "<node id>~<incarnation>", taken when a data dir is new
  (a new node cannot tell itself from one whose disk was lost and that came back under its
  old id: `Sim.wipe` lost an acknowledged write) and at each start after an unclean
  shutdown; saved in cluster.json and kept across clean restarts; a write continues it
  when the held version names it;
- a write whose held version names neither the base id nor an id minted for a key since the
  base was taken ("<node id>~<incarnation>.<n>") gets a new such id: one more clock entry
  per key per such start, nothing per ordinary write;
- a stand-in write (the hint store) takes its own ids ("<node id>~<incarnation>h<n>") and
  continues one only while the owner's hint holds the last dot this process issued under it
  (`_issued`).
All in base 36. "~" is not allowed in node ids, so no member's id is ever one of these.
Known limit: a key reaped and then written again in one process lifetime, the reap memory
expired, may still meet a stale copy naming the minted id; the grace period bounds it.

Late copies of deleted writes. A put retried through another coordinator exists as two
copies (one write id, two dots); the tombstone that deleted one copy lists the write id as
retired, and dvv's rule R retires the other copy wherever the two meet. Once the tombstone
is reaped that memory would be gone, yet a copy can still be created afterwards (a forward
that kept trying candidates, a paused node's backlog). So while the reap is remembered
(`reaped_version`, the same window as the echo check) an incoming version is judged against
the reaped tombstone, whether the key is absent here or was written again since (a late hint
arriving after a re-add): it loses its siblings whose write id the tombstone lists as
retired (dropped if none is left); and a write to an absent key that the tombstone's rule R
makes a no-op creates no dot.

Late copies of overwritten writes. Rule R only sees the 4 ids a version lists as retired, so a
copy made by a slow coordinator after 5 or more overwrites of its key (a hedged or retried
put, 70 puts a second to one key: 70 ms) came back beside the newest value for good. The
replica remembers the last dvv.RETIRED_MEMORY (65,536) (key, id) pairs the versions it
stores list (`retired`, a `dvv.RetiredWids`): a version of that key it merges loses its
siblings carrying one of them (when one of its siblings stays: what overwrote them has
reached this node), and a client write to that key carrying one is a late retry of an
overwritten write: no new dot, the held version is its answer. Safe as rule R is: an id is
listed only by a write whose context covered a copy of that write; the retired copy's dot
stays in the causal past, so its death spreads by sync. (Node-local, so one gathering
exchange no longer makes replicas byte-identical at once: a replica that strips what the
gatherer kept differs until the next exchange, which only retires. The memory is kept across
a restart in DATA_DIR/retired: latefile.py.)

Sibling limits. A client write that would leave its key with more than `max_siblings`
siblings (and more than it had) is refused before anything is stored (InvalidRequest, the
client's E_INVALID): blind writes to one key otherwise pile up siblings that every later
read, write and replica message of the key carries whole (4,096 blind 100-byte writes made
each put of the key 10 ms). A write with a context that resolves siblings is always taken,
and nothing a replica merges (fan-out, read repair, hints, anti-entropy) is ever refused,
so replicas still converge. A version over the engine's per-key size limit is refused with
the same advice. Keys above `sibling_warn` are logged once, then each time their count
doubles (counted in zkv_sibling_warnings every time): a hot key's every read is not a line.

Last writer wins (issue 15). A stored key of an `lww` namespace (`namespaces.key_settings`)
is collapsed with `dvv.lww` after every local write and merge, so the main store holds at
most one sibling for it: the one with the greatest (HLC stamp, node id, counter), the stamp
being the first 8 bytes of the value (put there by the coordinator). Hints are collapsed when
they are delivered (lww(sync(a, b)) == lww(sync(lww(a), lww(b))), so that is the same). A
write this node coordinates is collapsed with the version it was made on (`dvv.lww`'s
`before`; a stand-in's too): kept, it lists the write ids of what it replaced as retired, as
a write whose context covered them would, so a late retry of one (stamped anew, it won over
the blind write that replaced it: an outside run, 6 of 6) makes no dot here or on a replica
holding the write, and a late copy of one loses by rule R. A merge does not apply this
node's memory (`retired.strip`) to lww keys: it retires a copy here that the collapse keeps
elsewhere over the value held here, and the two versions' sync then kept neither (an
acknowledged write lost, the key left with no value: lww_model.py seed 45). Merges (and a
stand-in's hints) join lww versions with `dvv.lww_sync`, which never leaves a key that held
a value with none when rule R and the stamps made two replicas retire each other's value
(the later stamp is kept then).

Expiry (namespaces with a ttl, zkv/node/expiry.py). With the `expired` hook set, a version
of a namespaced key that has expired is never served (`read` answers b"" and drops it, as
Redis expires a key on access) nor stored (`merge` takes an expired copy as a no-op); the
sweep drops the others (`drop_expired`). The hook also says so of a dead key (its namespace
dropped or truncated, zkv/node/namespaces.py): never served, never stored, and dropped by
the same sweep while one is under way (counted in `purged`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from zkv._core import dvv
from zkv.errors import InvalidRequest, TooManySiblings
from zkv.node.handoff import HandoffStore, join_versions
from zkv.node.namespaces import is_lww
from zkv.storage import LogStore

log = logging.getLogger("zkv.replica")
MAX_STANDIN_IDS = 100_000  # stand-in ids whose last counter is remembered (~10 MB at most)
MAX_WARNED = 10_000  # keys whose last logged sibling count is remembered
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(n: int) -> str:
    """n >= 0 in base 36 (0-9a-z): the short ids of replica.py's dots."""
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if not n:
            return out


class Replica:
    def __init__(self, node_id: str, store: LogStore, handoff: HandoffStore | None = None,
                 sibling_warn: int = 25, incarnation: int = 0,
                 base: tuple[str, int] | None = None, max_siblings: int = 0) -> None:
        self.node_id = node_id
        # (the base id, the incarnation it was taken at: key ids minted since are continued)
        self.base_id, self.base_since = base or (node_id, 0)
        self._mint = f"{node_id}~"
        life = b36(incarnation)
        self._key_ids = (f"{node_id}~{life}.{b36(n)}" for n in itertools.count(1))
        self._hint_ids = (f"{node_id}~{life}h{b36(n)}" for n in itertools.count(1))
        self._issued: dict[str, int] = {}  # stand-in id -> the last counter issued under it
        # key -> the context (causal past) of its tombstone, if it was reaped recently
        self.reaped_past: Callable[[bytes], bytes | None] | None = None
        # key -> the encoded tombstone, if it was reaped recently
        self.reaped_version: Callable[[bytes], bytes | None] | None = None
        self.store = store
        self.handoff = handoff
        self.sibling_warn = sibling_warn
        self.max_siblings = max_siblings  # a client write may not leave more (0: no limit)
        self._warned: dict[bytes, int] = {}  # key -> the sibling count last logged for it
        self.dirty = False  # written since the last flush (group commit per loop turn)
        # write ids the versions stored here listed as retired (rule R past the 4 ids a set
        # carries: "Late copies of overwritten writes" in the module docstring)
        self.retired = dvv.RetiredWids(dvv.RETIRED_MEMORY)
        self.late_retired = 0  # late copies stripped, late retries that made no dot (counted)
        # observers called after every local change: (key, old_encoded|None, new_encoded|None)
        self.on_change: list[Callable[[bytes, bytes | None, bytes | None], None]] = []
        self.on_siblings: Callable[[bytes, int, bool], None] | None = None
        self.on_refused: Callable[[bytes, int], None] | None = None  # (key, siblings it'd have)
        # incoming versions to ignore (a tombstone this replica just reaped echoing back)
        self.ignore: Callable[[bytes, bytes], bool] | None = None
        # called with each ignored echo: the sender still holds a tombstone we reaped
        self.on_echo: Callable[[bytes, bytes], None] | None = None
        # called with (key, reaped tombstone) when a reap retired (some of) an incoming copy
        self.on_retired: Callable[[bytes, bytes], None] | None = None
        # (stored key, encoded version) -> has it expired? (namespaces with a ttl; None: no
        # namespace has one). Asked for namespaced keys only (the first byte 0x00).
        self.expired: Callable[[bytes, bytes], bool] | None = None
        self.expired_drops = 0  # expired versions dropped (by the sweep or on access)
        # (stored key) -> is it dead (its namespace dropped or truncated)? Those it drops
        # are counted apart (None: no namespaces)
        self.dead: Callable[[bytes], bool] | None = None
        self.purged = 0  # dead keys' versions dropped (by the sweep or on access)

    def handoff_store(self) -> HandoffStore:
        if self.handoff is None:
            raise ValueError(f"node {self.node_id} keeps no handoff store")
        return self.handoff

    def read(self, key: bytes, owner: str | None = None) -> bytes:
        """The encoded DVV set held for `key` (or held for absent `owner`); b"" when none.

        Standing in for `owner`, this node answers with its hint merged with any copy it
        holds itself (an owner under the previous ring, about to drop it, holds the key while
        its hint store does not: the hint alone read empty at R=1, sim membership seed 0)."""
        if owner:
            hint = self.handoff_store().get(owner, key)
            own = self.store.get(key)
            found = join_versions(key, hint, own) if own and hint else hint or own or b""
        else:
            found = self.store.get(key) or b""
        if found and key[:1] == b"\x00" and self.expired is not None \
                and self.expired(key, found):
            if not owner:  # dropped on access, as the sweep would (expiry.py): an exchange
                self.drop_expired(key)  # pushing it reads it here, so the trees agree then
            return b""
        return found

    def drop_expired(self, key: bytes) -> None:
        """Drop a version that expired, or a dead key's (the sweep's, or on access;
        counted)."""
        if self.reap(key) is not None:
            if self.dead is not None and self.dead(key):
                self.purged += 1
            else:
                self.expired_drops += 1

    def coordinate(self, key: bytes, context: bytes, value: bytes | None,
                   owner: str | None = None, wid: bytes = b"") -> bytes:
        """Apply a client write as the coordinator: new dot, retire what the context covers."""
        return self.coordinate_set(key, context, value, owner, wid)[0]

    def coordinate_set(self, key: bytes, context: bytes, value: bytes | None,
                       owner: str | None = None, wid: bytes = b""
                       ) -> tuple[bytes, dvv.DVVSet | None]:
        """`coordinate`, and the version written decoded when this node built it (None when
        not at hand): the coordinator's answer is made from it without decoding it again."""
        if owner:
            # base the new dot on every version this node holds for the key (main store and
            # handoff for any owner), so this node never issues the same dot twice
            handoff = self.handoff_store()
            self.dirty = True
            base = self.store.get(key)
            for other in handoff.owners_of(key):
                base = join_versions(key, base, handoff.get(other, key) or None)
            dead = self._dead_write(key, base, context, value, wid)
            if dead is not None:
                return dead, None
            actor = self._standin_actor(handoff.get(owner, key))
            new = dvv.update_encoded(base, self._fresh(key, base, context), value, actor, wid)
            if base and key[:1] == b"\x00" and is_lww(key):  # what it replaced, listed (lww)
                new = dvv.lww_encoded(new, base)
            if self.max_siblings:
                self._check_siblings(key, _size(base), _size(new))
            self._note_issued(actor, new)
            try:
                return handoff.merge(owner, key, new), None
            except InvalidRequest as exc:  # over the engine's size limit per key
                raise _too_big(exc, _size(new)) from None
        old = self.store.get(key)
        if not old:  # (_dead_write and _fresh change nothing for a key held here)
            dead = self._dead_write(key, old, context, value, wid)
            if dead is not None:
                return dead, None
            context = self._fresh(key, old, context)
        elif self.retired.holds(key, wid):  # a late retry of a write overwritten here: no dot
            self.late_retired += 1
            return old, None
        held = dvv.DVVSet.decode(old) if old is not None else None  # once, for both uses
        actor = self._actor(held)
        before = held.size() if held is not None else 0
        written = dvv.update(held, context, value, actor, wid)
        if key[:1] == b"\x00" and is_lww(key):  # (only a namespaced key can be lww)
            # held: the write, if kept, lists the ids of what it replaced (Last writer wins)
            written = dvv.lww(written, held)
        after = written.size()
        if after > 1 and self.max_siblings:
            self._check_siblings(key, before, after)
        new = written.encode()
        try:
            self.store.put(key, new)  # (_store inline: once per put)
        except InvalidRequest as exc:  # over the engine's size limit per key
            raise _too_big(exc, after) from None
        self.dirty = True
        self.retired.note(key, new)
        for fn in self.on_change:
            fn(key, old, new)
        return new, written

    def _check_siblings(self, key: bytes, before: int, after: int) -> None:
        """InvalidRequest if a client write would leave `key` with more siblings than the limit
        and more than it had (a write that resolves some is taken even above the limit)."""
        if after > self.max_siblings and after > before:
            if self.on_refused is not None:
                self.on_refused(key, after)
            raise TooManySiblings(
                f"the key has {before} siblings and this write would make {after}, over the "
                f"limit of {self.max_siblings} (zkv-node --max-siblings): read the key and "
                "write back with its context (Client.update merges them) to resolve them",
                self.max_siblings, after)

    def _actor(self, held: dvv.DVVSet | None) -> str:
        """The id an owner's write issues its dot under (module docstring): the base id if
        `held` names it, else a key id minted since the base was taken, else a new one."""
        if held is None:
            return next(self._key_ids)
        vector = held.vector()
        if self.base_id in vector:
            return self.base_id
        best, best_at = "", (-1, -1)
        mint = self._mint
        cut = len(mint)
        for actor in vector:
            if actor.startswith(mint):
                # (incarnation, n) of a key id this node minted ("<id>~<inc>.<n>"), parsed
                # here, per put of a key this node wrote under a key id
                life, dot, n = actor[cut:].partition(".")
                if not dot:
                    continue
                try:
                    at = (int(life, 36), int(n, 36))
                except ValueError:
                    continue
                if at[0] >= self.base_since and at > best_at:
                    best, best_at = actor, at
        return best or next(self._key_ids)

    def _standin_actor(self, hint: bytes) -> str:
        """The id a stand-in write's dot is issued under: the one whose last dot the hint for
        that owner holds (so the new counter follows it), else a new one."""
        if hint and self._issued:
            for actor, counter in dvv.DVVSet.decode(hint).vector().items():
                if self._issued.get(actor) == counter:
                    return actor
        return next(self._hint_ids)

    def _note_issued(self, actor: str, new: bytes) -> None:
        if len(self._issued) >= MAX_STANDIN_IDS:  # forgetting them only costs new ids
            self._issued.clear()
        counter = dvv.DVVSet.decode(new).vector().get(actor)
        if counter is not None:  # (none: a retry the base already holds made no new dot)
            self._issued[actor] = counter

    def _reaped(self, key: bytes, base: bytes | None) -> bytes | None:
        if base or self.reaped_version is None:
            return None
        return self.reaped_version(key)

    def _dead_write(self, key: bytes, base: bytes | None, context: bytes,
                    value: bytes | None, wid: bytes) -> bytes | None:
        """The reaped tombstone when this write is a late retry of a write it deleted (or of
        the delete itself): nothing to store, the answer is the tombstone. Else None."""
        past = self._reaped(key, base) if wid else None
        if past is None:
            return None
        probe = dvv.DVVSet.decode(dvv.update_encoded(past, context, value, self.node_id, wid))
        if any(w == wid and v == value for _, _, v, w in probe.siblings()):
            return None  # a new dot: a write like any other
        return past

    def _fresh(self, key: bytes, base: bytes | None, context: bytes) -> bytes:
        """The context to coordinate with: the client's, plus the causal past of the key's
        reaped tombstone when the key is absent here (see the module docstring)."""
        if base or self.reaped_past is None:
            return context
        past = self.reaped_past(key)
        return dvv.merge_contexts(context, past) if past else context

    def merge(self, key: bytes, incoming: bytes, owner: str | None = None) -> bytes:
        """Sync a version from another replica (write fan-out, read repair, handoff, AAE).

        ValueError (nothing stored) for a version whose counters run far ahead of what this
        replica holds for the key: forged, or corrupt, it would make the key unwritable.
        An expired copy (a namespace with a ttl) is not stored: a no-op."""
        if key[:1] == b"\x00" and self.expired is not None and self.expired(key, incoming):
            return incoming  # (a malformed one raised ValueError decoding, as below)
        if owner:
            handoff = self.handoff_store()
            dvv.check_plausible(incoming, base=handoff.get(owner, key) or None)
            self.dirty = True
            return handoff.merge(owner, key, incoming)
        old = self.store.get(key)
        dvv.check_plausible(incoming, base=old)
        if old is None and self.ignore is not None and self.ignore(key, incoming):
            if self.on_echo is not None:
                self.on_echo(key, incoming)
            return incoming
        # judged against a recently reaped tombstone also when the key was written again
        # since: a late hint of a deleted write arrived after the re-add and came back beside
        # it (simulate.py --seed 516 --loss 0.05 --dup 0.02 --partitions 4 --pauses 2
        # --crashes 2 --power-losses 1)
        past = self.reaped_version(key) if self.reaped_version is not None else None
        if past is not None:
            kept = self._after_reap(past, incoming)
            if kept is not incoming and self.on_retired is not None:
                self.on_retired(key, past)  # its sender still holds what the reap retired
            if kept is None:
                return incoming  # only what the reaped tombstone retires
        else:
            kept = incoming
        if is_lww(key):  # (never leaves the key with no value: see dvv.lww_sync)
            new = dvv.lww_sync_encoded(old, kept)
        elif (new := dvv.sync_encoded(old, kept)) != old:
            kept = self.retired.strip(key, new)
            if kept is not new:
                self.late_retired += 1
                new = kept
        if new != old:
            self._store(key, old, new)
        return new

    @staticmethod
    def _after_reap(past: bytes, incoming: bytes) -> bytes | None:
        """incoming judged against a reaped tombstone by rule R alone: its siblings whose
        write id the tombstone lists as retired are retired. None when that leaves none.
        (Not the tombstone's causal past: a node that lost its reap memory reissues dots.)"""
        dead = {w for ws in dvv.DVVSet.decode(past).retired_wids() for w in ws}
        if not dead:
            return incoming
        s = dvv.DVVSet.decode(incoming)
        kept = dvv.retain(s, lambda sib: sib[3] not in dead)
        if kept.size() == 0 and s.size() > 0:
            return None
        return incoming if kept is s else kept.encode()

    def _store(self, key: bytes, old: bytes | None, new: bytes) -> None:
        self.store.put(key, new)
        self.dirty = True
        self.retired.note(key, new)
        for fn in self.on_change:
            fn(key, old, new)

    def note_siblings(self, key: bytes, count: int, write: bool = False) -> None:
        if count > self.sibling_warn and count >= 2 * self._warned.get(key, 0):
            if len(self._warned) >= MAX_WARNED:
                self._warned.clear()
            self._warned[key] = count
            log.warning("key %r has %d siblings (warn above %d; logged again if that doubles)",
                        key[:64], count, self.sibling_warn)
        if self.on_siblings is not None:
            self.on_siblings(key, count, write)

    def reap(self, key: bytes) -> bytes | None:
        """Drop a key for good: a tombstone every owner holds (the reaper established it),
        or a version that expired (expiry.py). Returns the version dropped (None: none)."""
        old = self.store.get(key)
        if old is None:
            return None
        self.store.delete(key)
        self.store.release_tombstones([key])
        self.dirty = True
        for fn in self.on_change:
            fn(key, old, None)
        return old

    def flush(self, durable: bool = True) -> None:
        """End of a loop turn: hand the turn's writes to the OS (a process crash loses
        nothing), and with `durable` fsync them (one fsync for the whole turn)."""
        if self.dirty:  # the engine, then the hint store (unrolled: once per turn)
            if durable:
                self.store.flush()
            else:
                self.store.write_out()
            hints = self.handoff.store if self.handoff else None
            if hints is not None:
                if durable:
                    hints.flush()
                else:
                    hints.write_out()
            self.dirty = False


def _size(version: bytes | None) -> int:
    """Siblings in an encoded version (0 for none)."""
    return dvv.DVVSet.decode(version).size() if version else 0


def _too_big(exc: InvalidRequest, siblings: int) -> InvalidRequest:
    """The engine's refusal of a version over its size limit, with what to do about it (with
    siblings, a TooManySiblings: one fewer would have to fit, at the least)."""
    if siblings <= 1:
        return exc
    return TooManySiblings(f"this write would make the key's stored version too large ({exc}; "
                           f"{siblings} siblings): read the key and write back with its "
                           "context to resolve them", siblings - 1, siblings)
