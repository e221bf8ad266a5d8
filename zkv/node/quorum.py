"""Quorum arithmetic of one get or one write, as pure objects: no I/O, no clock, no node.

Modelled on riak_kv's `riak_kv_get_core` / `riak_kv_put_core`: the coordinator feeds each
replica's answer to `add_result`, asks `enough()` whether the client can be answered,
builds the answer with `response()`, and, once every replica answered or the deadline
passed, asks `final_action()` for the read repairs to send (as data: (node, version) pairs).

In an `lww` namespace (issue 15) the merged version is collapsed to its greatest sibling
(`dvv.lww`) after every answer, so the client gets at most one value, read repair spreads
the winner, and the head the coordinator put in front of each value (the 8-byte HLC stamp,
then a write_ttl namespace's own ttl: namespaces.py, "Stored values") is removed from the
values the client sees, as is a value whose own ttl is over (expiry.served: judged after the
merge, so an expired write still wins over the older copies). `lww` is that head's length
(0: siblings).

Answers are counted per *distinct node id*: a node answering twice (a duplicated or
retried message, or a node that turns out to be reached over two addresses) counts once.
An *unsure* answer (from a replica refilling after it lost its data) is merged and read-
repaired like any other but not counted toward R: it may lack a write the replica lost.

While an ownership change has not settled, a get is a read quorum of the old owners as well
as of the new ones (`also`: at least k answers from each set of previous owners, the ones
that are no longer owners asked as *substitutes*: merged, never counted toward R, never
read-repaired). A write coordinated under the previous ring was counted on the old owners
and reaches a new owner only as an uncounted copy, which may still be on its way (or
dropped) when a read routed by the new ring asks it. A previous owner silent past its soft
timeout is *excused* (`joint_enough`), as a silent owner is stood in for: the joint quorum
never makes a slow or frozen node fail an operation it would not fail otherwise.

Primary quorums (riak_kv's PR/PW, `pr`/`pw`): of the answers counted, at least that many
must be *primaries'*, the key's owners answering for themselves (the coordinator says which
answer is one: `add_result(..., primary=True)`); a stand-in's answer counts toward R or W
only. With pr + pw > N a read meets every acknowledged write on an owner, whatever node
stood in meanwhile (a sloppy quorum's reads and writes may meet on no node at all).
"""

from __future__ import annotations

import mmh3

from zkv._core import dvv
from zkv.node.expiry import expires_at, served
from zkv.node.namespaces import STAMP_BYTES
from zkv.wire import ASKED_ALL, E_QUORUM, Error, GetOk, PutOk

_NONE: frozenset[str] = frozenset()

# A replica's answer of this many bytes or more is kept by its digest (murmur3-128), not
# whole: once merged, an answer is only compared with the merged version (`final_action`),
# so a get holds one large version after the answers came in (the merged one) instead of
# one per replica (two 16 MiB siblings read at r=2 held 64 MiB until the last replica
# answered or the replica timeout: an outside run). (= coordinator.CHARGED_COPIES)
KEPT_WHOLE = 1 << 16


def _kept(encoded: bytes) -> bytes:
    return encoded if len(encoded) < KEPT_WHOLE else mmh3.hash_bytes(encoded)



class GetQuorum:
    """R of the asked replicas must answer; the answer is the sync of every answer so far."""

    __slots__ = ("required", "results", "merged", "bad", "lww", "unsure", "subs", "also",
                 "excused", "ttl_ms", "pr", "primaries")

    def __init__(self, r: int, lww: int = 0,
                 also: list[tuple[frozenset[str], int]] | None = None, ttl_ms: int = 0,
                 pr: int = 0) -> None:
        self.required = r
        self.pr = pr  # counted answers that must be primaries' (0: none)
        self.primaries = 0  # counted answers that are
        self.ttl_ms = ttl_ms  # the namespace's ttl (ms; 0: none), for GetOk.expires
        self.also = also  # [(previous owners, answers needed from them)] (None: settled)
        # previous owners silent past their soft timeout, and substitutes in `results` (not
        # counted toward R): sets only while a change is unsettled (no allocation per get)
        self.excused: set[str] | frozenset[str] = _NONE if also is None else set()
        self.subs: set[str] | frozenset[str] = _NONE if also is None else set()
        self.lww = lww
        # node -> encoded version it holds (b"": none), by its digest if large (_kept)
        self.results: dict[str, bytes] = {}
        self.merged: bytes | None = None  # sync of every valid answer (encoded DVV set)
        self.bad: set[str] = set()  # nodes whose answer did not decode (count as silent)
        self.unsure: set[str] = set()  # nodes in `results` whose answer is not counted

    def add_result(self, node: str, encoded: bytes, unsure: bool = False,
                   sub: bool = False, primary: bool = False) -> bool:
        """Fold one replica's answer in; False (and not counted) if it is not a valid set, or
        if it is `unsure` (merged and read-repaired, not counted toward R) or a substitute's
        (`sub`: merged, counted only toward `also`). `primary`: a key's owner answering for
        itself (counted toward pr as well)."""
        if node in self.results or node in self.bad:
            return False
        if encoded and encoded != self.merged:  # (replicas that agree: the common case,
            # nothing to check or merge; a byte compare instead of two decodes)
            try:  # a bad or implausible (forged) version counts as no answer
                self.merged = dvv.sync_plausible(self.merged, encoded, lww=self.lww > 0)
            except ValueError:
                self.bad.add(node)
                return False
        self.results[node] = encoded if len(encoded) < KEPT_WHOLE else _kept(encoded)  # (inline)
        if unsure:
            self.unsure.add(node)
            return False
        if sub:
            self.subs.add(node)  # type: ignore[union-attr]  # (a set whenever `also` is)
            return False
        if primary:
            self.primaries += 1
        return True

    def counted(self) -> int:
        return len(self.results) - len(self.unsure) - len(self.subs)

    def enough(self) -> bool:
        return (self.counted() >= self.required and self.primaries >= self.pr
                and (self.also is None or self._old_enough()))

    def _old_enough(self) -> bool:
        unsure = self.unsure
        return joint_enough(self.also or (), {x for x in self.results if x not in unsure},
                            self.excused)

    def response(self, now_ms: int = 0) -> tuple[GetOk, int]:
        """The client's answer and the number of siblings the merged version holds
        (`now_ms`: the wall clock, which says whether a write's own ttl is over)."""
        return read_answer(self.merged, self.lww, self.counted(), now_ms, self.ttl_ms)

    def failure(self, silent: list[str], waited: float | None) -> Error:
        unsure = (f"; not counted, the answers of replicas refilling after a lost disk: "
                  f"{', '.join(sorted(self.unsure))}" if self.unsure else "")
        if self.also is not None and not self._old_enough():
            unsure += ("; the ownership change has not settled and too few of the previous "
                       "owners answered: " + "; ".join(
                           f"{k} of {', '.join(sorted(nodes))}" for nodes, k in self.also))
        if self.primaries < self.pr and self.counted() >= self.required:
            return Error(0, E_QUORUM, f"get: {self.primaries} of the required pr={self.pr} "
                         f"answers came from the key's owners{_within(waited)} "
                         f"({self.counted()} replicas answered; stand-ins count toward r only)"
                         f"{_silent(silent)}{unsure}", self.pr, self.primaries)
        return Error(0, E_QUORUM,
                     f"get: {self.counted()} of the required {self.required} replicas answered"
                     f"{_within(waited)}{_silent(silent)}{unsure}", self.required,
                     self.counted())

    def release(self) -> None:
        """The op is done: let go of the versions read (they may be large)."""
        self.results.clear()
        self.unsure.clear()
        self.merged = None

    def final_action(self) -> list[tuple[str, bytes]]:
        """Read repair: (node, merged version) for every replica that answered with less."""
        enc = self.merged
        if not enc:
            return []
        subs, kept = self.subs, _kept(enc)
        return [(node, enc) for node, held in self.results.items()
                if held != kept and node not in subs]


def joint_enough(also, answered, excused) -> bool:
    """Has each (previous owners, k) of `also` min(k, those not `excused`) nodes in
    `answered`? (An excused node that answered still counts.)"""
    for nodes, k in also:
        have = sum(1 for x in nodes if x in answered)
        if have < min(k, sum(1 for x in nodes if x not in excused or x in answered)):
            return False
    return True


def identical_answers(encoded: bytes, lww: int, counted: int, now_ms: int = 0,
                      ttl_ms: int = 0) -> tuple[GetOk, int]:
    """What a GetQuorum fed `counted` byte-identical answers `encoded` responds, without
    feeding it: ValueError if `encoded` is not a valid version (GetQuorum would count none of
    them). For the client's owner reads, whose counted copies are all identical."""
    if not encoded:
        return read_answer(None, lww, counted)
    s = dvv.DVVSet.decode(encoded)  # (ValueError) decoded once: checked, then answered
    dvv.check_plausible(s, base=None)
    return read_answer(dvv.lww(s) if lww else s, lww, counted, now_ms, ttl_ms)


def answer_context(encoded: bytes, lww: int) -> bytes:
    """The context `identical_answers(encoded, lww, ...)` answers with (an owner seals it
    for a client-coordinated read); ValueError if `encoded` is not a valid version."""
    if not encoded:
        return dvv.EMPTY.context()
    s = dvv.DVVSet.decode(encoded)
    return (dvv.lww(s) if lww else s).context()


def read_answer(merged: bytes | dvv.DVVSet | None, lww: int, counted: int, now_ms: int = 0,
                ttl_ms: int = 0) -> tuple[GetOk, int]:
    """The client's answer to a read whose answers merged into `merged` (encoded or decoded;
    None: no copy), and the number of siblings it holds. `lww`: the head's length (0:
    siblings); `now_ms`: the wall clock a write's own ttl is judged by (0: not judged);
    `ttl_ms`: the namespace's ttl, which with the write's own says when the value stops being
    served (GetOk.expires)."""
    if isinstance(merged, dvv.DVVSet):
        s = merged
    else:
        s = dvv.DVVSet.decode(merged) if merged else dvv.EMPTY
    values = s.live_values()
    stamp = ends = 0
    if lww:  # strip the head (and tell the client the greatest stamp, served or not)
        stamp = max((int.from_bytes(v[:STAMP_BYTES], "big") for v in values), default=0)
        if lww > STAMP_BYTES and now_ms:
            values = served(values, lww, now_ms)
        if values and (ttl_ms or lww > STAMP_BYTES):  # (collapsed: one value)
            ends = expires_at(values[0], lww, ttl_ms)
        values = [v[lww:] for v in values]
    return GetOk(0, values, s.context(), counted, stamp, ends), s.size()


class PutQuorum:
    """W distinct replicas (the coordinator included) must acknowledge the version."""

    __slots__ = ("required", "acked", "kind", "pw", "primaries")

    def __init__(self, w: int, kind: str = "put", pw: int = 0) -> None:
        self.required = w
        self.kind = kind
        self.acked: set[str] = set()
        self.pw = pw  # acknowledgements that must be primaries' (0: none)
        self.primaries = 0  # acknowledgements that are

    def add_result(self, node: str, ok: bool, primary: bool = False) -> bool:
        """Count one acknowledgement (`primary`: of a key's owner storing it for itself)."""
        if not ok or node in self.acked:
            return False
        self.acked.add(node)
        if primary:
            self.primaries += 1
        return True

    def enough(self) -> bool:
        return len(self.acked) >= self.required and self.primaries >= self.pw

    def response(self, version: bytes, stamp: int = 0, decoded: dvv.DVVSet | None = None,
                 context: bytes | None = None, wid: bytes = b"") -> tuple[PutOk, int]:
        """The client's answer and the number of siblings the written version holds
        (`stamp`: an lww write's HLC stamp, passed on to the client; `decoded`: the version
        decoded, when the caller has it). Its context is the write's own causal past: the
        client's `context` and the write's dot (`wid` finds it), never a concurrent sibling
        the client did not read (dvv.put_context; the version's whole context covered
        those, and a put chained on it retired acknowledged writes: an outside run)."""
        s = dvv.DVVSet.decode(version) if decoded is None else decoded
        return PutOk(0, dvv.put_context(s, context or b"", wid), len(self.acked),
                     stamp), s.size()

    def failure(self, silent: list[str], waited: float | None) -> Error:
        if self.primaries < self.pw and len(self.acked) >= self.required:
            return Error(0, E_QUORUM,
                         f"{self.kind}: {self.primaries} of the required pw={self.pw} "
                         f"acknowledgements came from the key's owners{_within(waited)} "
                         f"({len(self.acked)} replicas acknowledged; stand-ins count toward w "
                         f"only){_silent(silent)} (the write may still have been stored)",
                         self.pw, self.primaries)
        return Error(0, E_QUORUM,
                     f"{self.kind}: {len(self.acked)} of the required {self.required} replicas "
                     f"acknowledged{_within(waited)}{_silent(silent)} (the write may still "
                     "have been stored)", self.required, len(self.acked))


def _within(waited: float | None) -> str:
    """How long the op waited (None: it ends early, every replica it could ask having
    answered: "within 0.00s" read as a timeout when the other owners were known down)."""
    if waited is None:
        return f", and {ASKED_ALL}"
    return f" within {waited:.2f}s"


def _silent(nodes: list[str]) -> str:
    return f"; no answer from {', '.join(sorted(nodes))}" if nodes else ""
