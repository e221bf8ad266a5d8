"""What a node tells the outside about itself: the `zkv status` document, the periodic
export of gauges to Prometheus (the counters and histograms are updated where things happen)
and the log lines of its failure detector's verdicts on its peers (PeerLog: down, up again,
restarted). Reads the core's state; changes nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zkv.errors import ZkvError
from zkv.node import settings
from zkv.node.transfer import PHASES, reported_total

if TYPE_CHECKING:
    from zkv.node.core import NodeCore

GAUGES_EVERY = 1.0  # seconds between gauge refreshes (Prometheus scrapes every 10-60 s)
PEER_LOG_EVERY = 10.0  # seconds: at most one line per peer this often (PeerLog)
# seconds a ring change may wait on a member that is down before this node's log says so (a
# joiner killed mid-join stalled the change silently: one INFO line, "peer n6 is down here")
STUCK_WARN_AFTER = 60.0

log = logging.getLogger("zkv.node")


def member_status(core: NodeCore, node_id: str) -> str:
    """joining | valid | leaving | left (DESIGN.md 2.4; a force-removed node is "leaving"
    until its partitions are refilled, then "left")."""
    st = core.membership.cluster
    if st is None:
        return "joining"
    s = st.status(node_id)
    if s is None:
        return "left" if node_id in st.gone else "joining"
    return "leaving" if s == "removed" else s


def transfers(core: NodeCore) -> list[dict]:
    """Every transfer of the running change, with the receivers' reported progress: one per
    (partition, receiver) for the cluster's N and one per namespace N whose keys move too
    (entries carry "n")."""
    rings = core.membership.rings()
    if rings is None or not rings.moving:
        return []
    mine = {(t["n"], t["partition"]): t for t in core.transfers.status(core.now())}
    out = []
    reports: dict[str, dict[tuple[int, int], tuple]] = {}
    for n in core.groups():
        grings = core.membership.rings(n)
        assert grings is not None
        for p, r, sources in grings.transfers():
            if r == core.me and (n, p) in mine:
                out.append(mine[(n, p)])
                continue
            if r not in reports:
                rep = core.progress.get(r)
                reports[r] = ({(gn, q): (d, t, ph) for gn, q, d, t, ph in rep[1]}
                              if rep and rep[0] == rings.state.epoch else {})
            done, total, phase = reports[r].get((n, p), (0, 0, 0))
            phase = phase if 0 <= phase <= 2 else 0
            started = bool(done or phase)  # (by the receiver's report: nothing fetched yet)
            out.append({"partition": p, "n": n, "from": sources[0], "to": r,
                        "bytes_done": done, "bytes_total": reported_total(done, total, phase),
                        "phase": PHASES[phase] if started else "queued", "started": started})
    return out


def joined(core: NodeCore) -> bool:
    """For /readyz: this node answered by a seed and in the cluster state (not a join
    staged or not yet committed: it answered 200, "joined", before it was a member, and
    until an operator's commit with auto-commit off: an outside run)."""
    return not core.joining and member_status(core, core.me) != "joining"


def transfer_totals(core: NodeCore) -> dict:
    """For metrics: {"in": {...}, "out": {...}} counts and bytes of this node's transfers."""
    out: dict = {"in": {"pending": 0, "running": 0, "bytes_done": 0, "bytes_total": 0},
                 "out": {"pending": 0, "running": 0, "bytes_done": 0, "bytes_total": 0}}
    for t in transfers(core):
        for direction, who in (("in", t["to"]), ("out", t["from"])):
            if who != core.me:
                continue
            d = out[direction]
            if t["phase"] != "done":  # (running as `zkv status` says "streaming": begun)
                d["running" if t["started"] else "pending"] += 1
            d["bytes_done"] += t["bytes_done"]
            d["bytes_total"] += t["bytes_total"]
    return out


def status(core: NodeCore) -> dict:
    ms = core.membership
    ring = ms.ring()
    members = []
    for m in sorted(ms.table(), key=lambda m: m.id):
        state, reason = ms.state(m.id)
        members.append({
            "id": m.id, "listen": m.listen, "gossip": m.gossip, "rack": m.rack,
            "state": "up" if state != "down" else "down", "detail": state, "reason": reason,
            "status": member_status(core, m.id),
            "partitions": len(ring.owned(m.id)), "replicas": len(ring.replicas_of(m.id)),
            "incarnation": m.incarnation, "heartbeat": m.heartbeat,
            # why its version cannot serve this cluster, by its own gossip (a downgrade)
            "version_unfit": core.unfit[m.id][1] if m.id in core.unfit else None,
            # it takes no writes now (its disk), by its gossip (this node: its own state)
            "no_writes": (core.write_stop is not None if m.id == core.me
                          else m.id in core.no_writes),
            **_latency(core, m.id),
        })
    s = ms.settings
    st = core.store.stats()
    return {
        "node": core.me,
        "members": members,
        "ring": {"q": s["q"], "n": s["n"], "r": s["r"], "w": s["w"],
                 "fingerprint": ring.fingerprint().hex(),
                 "rack_violations": len(ring.rack_violations)},
        "keys": st.get("keys", len(core.store)),
        # why this node takes no writes now (its disk: full, under --min-free-mb, failing)
        "writes_refused": core.write_stop,
        # cluster.json could not be written (a full disk): retried each gossip round
        "cluster_json_unsaved": core.cluster_unsaved,
        # why the peers cannot reach this node (its advertised addresses: reach.py), or None
        "unreached_by_peers": core.reach.problem,
        "joining": _join_status(core),
        "hints": _hint_status(core),
        "storage": storage(core),
        "antientropy": _ae_status(core, ring),
        "transfers": transfers(core),
        "expiry": _expiry_status(core),
        "purge": _purge_status(core),
        "cluster": _cluster_status(core),
        "uptime": round(core.now() - core.started, 3),
        # runtime settings that differ from what the node started with (zkv config --set,
        # SIGHUP): name -> [at start, now]
        "settings_changed": settings.since_start(core),
        # times this node's process stood still (stopped, a frozen VM, starved of CPU) since
        # start, and the longest (s): NodeCore._resumed
        "stood_still": {"count": core.stalls[0], "longest": round(core.stalls[1], 1)},
        "metrics": core.metrics.summary(),
    }


STORAGE_FIELDS = ("keys", "segments", "total_bytes", "live_bytes", "dead_bytes", "dead_ratio",
                  "compactions", "compacting", "free_bytes", "corrupt", "corrupt_records",
                  "damaged_regions")


def storage(core: NodeCore) -> dict[str, dict]:
    """Each engine's figures (data: the replicas; handoff: hints for absent owners): bytes
    total/live/dead, segments, compactions, the running one's [done, total] bytes, free
    space, damage (`corrupt`: keys awaiting repair; `corrupt_records`: records whose CRC
    failed when read since the start; `damaged_regions`: skipped by the open). An engine
    without them (the simulator's in-memory one) gives what it has."""
    out = {}
    for name, engine in (("data", core.store), ("handoff", core.handoff.store)):
        if engine is None:
            continue
        try:
            st = engine.stats()
        except ZkvError:  # (closed while the status was asked: nothing to say)
            continue
        out[name] = {k: st[k] for k in STORAGE_FIELDS if k in st}
    return out


def _expiry_status(core: NodeCore) -> dict | None:
    """Expiry (expiry.py), while some namespace's values expire (None otherwise): those
    namespaces' ttls (s; 0: an alter removed it, the values it had expired stay so), the
    expired versions dropped here since start (by the sweep or on access) and the sweep's
    full passes."""
    ttls = {ns.name: ns.ttl for ns in core.namespaces if ns.expires}
    if not ttls:
        return None
    return {"namespaces": ttls, "dropped": core.replica.expired_drops,
            "passes": core.background.expiry.passes}


def _purge_status(core: NodeCore) -> dict | None:
    """Once a namespace was dropped or truncated (None before): the names whose keys of some
    generation are dead, the dead keys' versions purged here since start (by the sweep or on
    access) and whether the sweep is still looking for them."""
    names = sorted(k.decode("ascii") for k in core.namespaces.dead_gens)
    if not names:
        return None
    return {"namespaces": names, "purged": core.replica.purged,
            "sweeping": core.background.purging}


def _join_status(core: NodeCore) -> dict | None:
    """While this node joins through its seeds (None otherwise): the seeds, what each seed's
    connection saw, how long it has asked and when it gives up."""
    if not core.joining:
        return None
    return {"seeds": [{"endpoint": x, "seen": core.seed_seen(x)} for x in core.seeds],
            "asking_seconds": round(core.now() - core.join_started, 3),
            "gives_up_after_seconds": core.join_deadline - core.join_started}


def _latency(core: NodeCore, node_id: str) -> dict:
    """A peer's recent high-percentile round trip and the soft timeout a coordinator here gives
    it before asking a stand-in (zkv/node/latency.py; before the request's time caps it)."""
    high = core.latency.high.get(node_id)
    if node_id == core.me:
        return {}
    return {"rtt_p99_ms": None if high is None else round(1e3 * high, 3),
            "soft_timeout_ms": round(1e3 * core.latency.budget(node_id, float("inf")), 3)}


def _cluster_status(core: NodeCore) -> dict:
    st = core.membership.cluster
    if st is None:
        return {}
    rings = core.membership.rings()
    return {"epoch": st.epoch, "author": st.author, "auto_commit": st.auto_commit,
            "staged": [list(x) for x in st.staged], "moving": bool(rings and rings.moving),
            "receiving_here": core.transfers.pending_here(),
            # changes adopted here and not settled: gets and puts of moved partitions also use
            # the previous owners (joint quorums) until every member has had the state for
            # `settle` seconds (agreed_seconds: how long all have so far; None: not yet)
            "unsettled_changes": len(core.unsettled),
            "agreed_seconds": (None if core.agreed_since is None or not core.unsettled
                               else round(core.now() - core.agreed_since, 3)),
            "settle_seconds": core.cfg.settle,
            "transfer_rate_limit": core.cfg.transfer_rate,
            "bytes_received": core.transfers.bytes_received,
            "bytes_sent": core.transfers.bytes_sent,
            # leave/replace/force-remove made here and watched until done (made again if a
            # concurrent state loses them: NodeCore._intents_tick)
            "watching": [repr(x) for x in core.intents]}


def _hint_status(core: NodeCore) -> dict:
    by_owner = core.handoff.backlog()
    return {"backlog": sum(v["count"] for v in by_owner.values()),
            "bytes": sum(v["bytes"] for v in by_owner.values()), "by_owner": by_owner}


def _agreement_ages(core: NodeCore, ring, ae=None) -> list[float | None]:
    ae, now = ae or core.ae, core.now()
    assert ae is not None
    ages = []
    for p in ring.replicas_of(core.me):
        t = ae.last_full_agreement(p, [x for x in ring.preflist(p) if x != core.me])
        ages.append(None if t is None else now - t)
    return ages


def _agreement(core: NodeCore, ring, ae) -> dict:
    """A partition counts as agreed from its last full agreement on, so one whose other owner
    went down since still counts: `partitions_owner_down` says how many of them have an owner
    down now (their agreement is as old as that owner's absence, and no exchange can renew it
    until the owner is back)."""
    ages = _agreement_ages(core, ring, ae)
    known = [a for a in ages if a is not None]
    down = core.membership.down()
    owner_down = sum(1 for p in ring.replicas_of(core.me)
                     if not down.isdisjoint(ring.preflist(p))) if down else 0
    return {"tombstones": len(ae.tombstones), "partitions": len(ages),
            "partitions_agreed": len(known), "partitions_owner_down": owner_down,
            "max_seconds_since_agreement": round(max(known), 3) if known else None}


def _ae_status(core: NodeCore, ring) -> dict:
    """The default N's trees at the top level; every N in use (namespaces) under "by_n"."""
    if core.ae is None:
        return {}
    groups = core.ae_groups_all()
    by_n = {str(n): {**ae.stats, **_agreement(core, ring if ae is core.ae
                                              else core.membership.ring(n), ae)}
            for n, ae in groups}
    return {**core.ae.stats, **core.background.status(), **_agreement(core, ring, core.ae),
            "refill_partitions_left": core.refill_left(),
            "fresh_partitions_left": core.fresh_left(), "by_n": by_n}


class _Seen:
    """What PeerLog knows of one peer."""

    __slots__ = ("state", "incarnation", "down_at", "up_at", "lines", "changes", "restarts",
                 "from_incarnation")

    def __init__(self, state: str, incarnation: int, now: float) -> None:
        self.state = state  # "up" | "down" as of the last round
        self.incarnation = self.from_incarnation = incarnation
        self.down_at = self.up_at = now  # when it was last found down, up
        self.lines = (-1e18, -1e18)  # when the last two lines about it were logged
        self.changes = 0  # changes of state not logged yet
        self.restarts = 0  # new incarnations not logged yet


class PeerLog:
    """One INFO line when this node's failure detector finds a peer down, finds it up again,
    or hears a new life of it (a restart: a new incarnation, as after a lost disk, a crash or
    a replace at the same id); never per heartbeat. "suspect" is not a change (it is routed
    around, not down). A peer that flaps gets at most two lines per PEER_LOG_EVERY seconds
    (a down and its up again are logged as they happen): the changes past those are counted
    in the next line, which says the state it is in then (so the last change is always
    logged). It only reads the round's verdicts: nothing the node
    decides depends on it (the simulation replays the same)."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.peers: dict[str, _Seen] = {}

    def observe(self, now: float, states: dict[str, str]) -> None:
        ms = self.core.membership
        seen = self.peers
        for nid in [x for x in seen if x not in states]:  # gone from the table: forgotten
            del seen[nid]
        for nid, verdict in states.items():
            m = ms.get(nid)
            if m is None:
                continue
            state = "down" if verdict == "down" else "up"
            r = seen.get(nid)
            if r is None:  # first seen (the start, a join): the baseline, no line
                seen[nid] = _Seen(state, m.incarnation, now)
                continue
            if m.incarnation != r.incarnation:  # (gossip only takes a later one)
                if not r.incarnation:  # 0: none known yet (this node's own start, from its
                    # cluster.json): its first record heard is no restart of the peer's (an
                    # outside run read "it restarted" for every peer of a restarted node)
                    r.incarnation = r.from_incarnation = m.incarnation
                    continue
                r.incarnation = m.incarnation
                r.restarts += 1
            if state != r.state:
                r.changes += 1
                r.state = state
                if state == "down":
                    r.down_at = now
                else:
                    r.up_at = now
            if not (r.changes or r.restarts) or now - r.lines[0] < PEER_LOG_EVERY:
                continue  # (two lines in PEER_LOG_EVERY: a down and its up again at once)
            if state == "down":
                why = ms.state(nid)[1]
                text = f"peer {nid} is down here" + (f": {why}" if why else "")
            elif r.changes == 1:
                text = f"peer {nid} is up again after {r.up_at - r.down_at:.1f} s down"
            else:
                text = f"peer {nid} is up" + (" again" if r.changes else "")
            if r.restarts:
                text += (f"; it restarted (incarnation {r.from_incarnation} -> "
                         f"{r.incarnation})")
            if r.changes > 1 or r.restarts > 1:
                counts = [f"{r.changes} change(s) of its state"] if r.changes else []
                counts += [f"{r.restarts} restart(s)"] if r.restarts else []
                text += f" ({' and '.join(counts)} since the last line about it: flapping?)"
            log.info("%s", text)
            r.lines, r.changes, r.restarts = (r.lines[1], now), 0, 0
            r.from_incarnation = r.incarnation


class MetricsExport:
    """Copies gauges (member states, hint backlog, anti-entropy) into the node's registry."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.next_gauges = -1e9
        self.refused_reported = 0  # membership.refused already counted in the metric
        self.up: list[str] = []  # the peers up as of the last tick (for `state_changed`)
        self.peer_log = PeerLog(core)
        # member -> since when this node's transfers to it have waited with it down, and the
        # members already named in a warning for that
        self.waiting_since: dict[str, float] = {}
        self.warned: set[str] = set()
        core.metrics.aae_lag.source = self.agreement_lag

    def agreement_lag(self) -> list[tuple[int, float | None]]:
        """(partition, seconds since its last full agreement or None) for each partition this
        node replicates under the cluster's N; read when Prometheus scrapes (another thread:
        this only reads)."""
        core = self.core
        if core.ae is None or core.joining:
            return []
        try:
            ring = core.membership.ring()
            return list(zip(ring.replicas_of(core.me), _agreement_ages(core, ring), strict=True))
        except RuntimeError:  # the member table changed under a ring rebuilt at this moment
            return []  # (iterated while the reactor wrote it): the next scrape has it

    def _waiting_on_down(self, now: float, states: dict[str, str]) -> None:
        """Warn once when partitions this node hands over in a ring change have waited
        STUCK_WARN_AFTER on a receiver that is down (it stays so until the receiver is back
        or removed), and say when they move again."""
        core = self.core
        waiting: dict[str, int] = {}
        if self.waiting_since or any(s == "down" for s in states.values()):
            for t in transfers(core):
                if (t["from"] == core.me and t["phase"] != "done"
                        and states.get(t["to"]) == "down"):
                    waiting[t["to"]] = waiting.get(t["to"], 0) + 1
        for node in [x for x in self.waiting_since if x not in waiting]:
            del self.waiting_since[node]
            if node in self.warned:
                self.warned.discard(node)
                log.info("the ring change no longer waits on %s (it is up, or left the "
                         "ring)", node)
        for node, n in waiting.items():
            since = self.waiting_since.setdefault(node, now)
            if now - since >= STUCK_WARN_AFTER and node not in self.warned:
                self.warned.add(node)
                log.warning("the ring change has waited %.0f s on %s, which is down: %d "
                            "partition(s) this node hands over to it stay here until it is "
                            "back. If it is not coming back, remove it: zkv cluster "
                            "force-remove %s", now - since, node, n, node)

    def state_changed(self, now: float) -> None:
        """The node took a new cluster state between ticks: readiness is recomputed at once
        (against the peers' rings as last gossiped, which disagree until their gossip carries
        the new one; and the transfers it now waits for), so /readyz never answers from the
        state before. (It did until the next tick: `zkv local add` saw every node ready on
        the old ring right after all had taken the new one.)"""
        peers = self.core.membership.peers
        self._observe(now, [nid for nid in self.up if nid in peers], gauges=False)

    def _observe(self, now: float, up: list[str], gauges: bool) -> None:
        """The health observations (readiness, convergence timing; `gauges`: the ring's too)."""
        core = self.core
        ms = core.membership
        core.metrics.observe_cluster(ms, ms.ring(), now, transfer_totals(core),
                                     joined=joined(core), gauges=gauges, up=up,
                                     offsets=core.clock_offsets(now),
                                     unreached=core.reach.problem)
        core.metrics.hlc_lead.set(max(0, core.hlc.lead_ms()) / 1000)

    def export(self, now: float, states: dict[str, str]) -> None:
        """Per gossip tick: the health observations (readiness, convergence timing) every
        time, the gauges at most every GAUGES_EVERY: a refresh is ~40 labelled sets, and at
        every 0.2 s tick it was 16% of a lightly loaded simulated node's CPU. `states`: each
        peer's "up" | "suspect" | "down" this round (members forgotten since are skipped)."""
        core = self.core
        m = core.metrics
        ms = core.membership
        peers = ms.peers
        self.peer_log.observe(now, states)
        up = self.up = [nid for nid, state in states.items()
                        if state != "down" and nid in peers]
        if now < self.next_gauges:
            self._observe(now, up, gauges=False)
            return
        self.next_gauges = now + GAUGES_EVERY
        self._waiting_on_down(now, states)
        child = m.child
        if ms.refused > self.refused_reported:  # (a counter the membership keeps)
            m.member_records_refused.inc(ms.refused - self.refused_reported)
            self.refused_reported = ms.refused
        counts = {"up": 0, "suspect": 0, "down": 0}
        members: set[tuple[str, ...]] = set()
        for nid, state in states.items():
            if nid in peers:
                counts[state] += 1
                members.add((nid,))
                child(m.member_state, nid).set({"up": 1.0, "suspect": 0.5}.get(state, 0.0))
        m.keep_only(m.member_state, members)  # a member gone from the table: no series
        for k, v in counts.items():
            child(m.peers, k).set(v)
        # one series per owner hints are held for, none once there are none (README: the
        # rolling restart's `sum(zkv_hint_backlog) or vector(0)`); the hint sweep forgets an
        # owner whose hints were all delivered, so the owners to drop are those exported before
        backlog = core.handoff.backlog()
        for owner, b in backlog.items():
            child(m.hint_count, owner).set(b["count"])
            child(m.hint_bytes, owner).set(b["bytes"])
            child(m.hint_age, owner).set(b["oldest_age_s"])
        owners: set[tuple[str, ...]] = {(owner,) for owner in backlog}
        for gauge in (m.hint_count, m.hint_bytes, m.hint_age):
            m.keep_only(gauge, owners)
        if core.ae is not None:
            for k, v in core.ae.stats.items():
                m.count_to(m.aae_work, v, k)
            child(m.aae, "refill_partitions_left").set(core.refill_left())
            child(m.aae, "fresh_partitions_left").set(core.fresh_left())
            bg = core.background.status()
            child(m.aae, "exchanges_queued").set(bg["queued"])
            child(m.aae, "exchanges_running").set(bg["running"])
            child(m.aae, "roots_checking").set(bg["checking"])
        m.keys.set(len(core.store))
        running: set[tuple[str, ...]] = set()
        for name, st in storage(core).items():
            for kind in ("total", "live", "dead"):
                child(m.store_bytes, name, kind).set(st.get(f"{kind}_bytes", 0))
            child(m.store_segments, name).set(st.get("segments", 0))
            m.count_to(m.store_compactions, st.get("compactions", 0), name)
            m.corrupt_records.labels(name)  # (a series at 0 from the start: alerts see 0 -> 1)
            m.count_to(m.corrupt_records, st.get("corrupt_records", 0), name)
            child(m.corrupt_keys, name).set(st.get("corrupt", 0))
            if st.get("free_bytes") is not None:
                child(m.store_free, name).set(st["free_bytes"])
            done = st.get("compacting")
            if done is not None:
                child(m.store_compacting, name).set(done[0] / done[1] if done[1] else 0.0)
                running.add((name,))
        m.keep_only(m.store_compacting, running)
        m.count_to(m.expired, core.replica.expired_drops)
        m.count_to(m.purged, core.replica.purged)
        m.count_to(m.late_retired, core.replica.late_retired)
        m.unsettled.set(len(core.unsettled))
        self._observe(now, up, gauges=True)
