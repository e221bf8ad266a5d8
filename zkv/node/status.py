"""What a node tells the outside about itself: the `zkv status` document and the periodic
export of gauges to Prometheus (the counters and histograms are updated where things happen).
Reads the core's state; changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zkv.node.core import NodeCore


def status(core: NodeCore) -> dict:
    ms = core.membership
    ring = ms.ring()
    members = []
    for m in sorted(ms.table(), key=lambda m: m.id):
        state, reason = ms.state(m.id)
        members.append({
            "id": m.id, "listen": m.listen, "gossip": m.gossip, "rack": m.rack,
            "state": "up" if state != "down" else "down", "detail": state, "reason": reason,
            "partitions": len(ring.owned(m.id)), "replicas": len(ring.replicas_of(m.id)),
            "incarnation": m.incarnation, "heartbeat": m.heartbeat,
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
        "hints": _hint_status(core),
        "antientropy": _ae_status(core, ring),
        "transfers": [],
        "uptime": round(core.now() - core.started, 3),
        "metrics": core.metrics.summary(),
    }


def _hint_status(core: NodeCore) -> dict:
    by_owner = core.handoff.backlog()
    return {"backlog": sum(v["count"] for v in by_owner.values()),
            "bytes": sum(v["bytes"] for v in by_owner.values()), "by_owner": by_owner}


def _agreement_ages(core: NodeCore, ring) -> list[float | None]:
    ae, now = core.ae, core.now()
    assert ae is not None
    ages = []
    for p in ring.replicas_of(core.me):
        t = ae.last_full_agreement(p, [x for x in ring.preflist(p) if x != core.me])
        ages.append(None if t is None else now - t)
    return ages


def _ae_status(core: NodeCore, ring) -> dict:
    if core.ae is None:
        return {}
    ages = _agreement_ages(core, ring)
    known = [a for a in ages if a is not None]
    return {**core.ae.stats, **core.background.status(), "tombstones": len(core.ae.tombstones),
            "partitions": len(ages), "partitions_agreed": len(known),
            "max_seconds_since_agreement": round(max(known), 3) if known else None}


class MetricsExport:
    """Copies gauges (member states, hint backlog, anti-entropy) into the node's registry."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.lag_exported = -1e9

    def export(self, now: float) -> None:
        core = self.core
        m = core.metrics
        ms = core.membership
        states = {"up": 0, "suspect": 0, "down": 0}
        for nid in ms.peers:
            state = ms.state(nid)[0]
            states[state] += 1
            m.member_state.labels(nid).set({"up": 1.0, "suspect": 0.5}.get(state, 0.0))
        for k, v in states.items():
            m.peers.labels(k).set(v)
        backlog = core.handoff.backlog()
        for owner in set(backlog) | set(core.handoff.index):
            b = backlog.get(owner, {"count": 0, "bytes": 0, "oldest_age_s": 0})
            m.hint_count.labels(owner).set(b["count"])
            m.hint_bytes.labels(owner).set(b["bytes"])
            m.hint_age.labels(owner).set(b["oldest_age_s"])
        if core.ae is not None:
            for k, v in core.ae.stats.items():
                m.aae.labels(k).set(v)
            if now - self.lag_exported > 5:
                self.lag_exported = now
                ring = ms.ring()
                for p, age in zip(ring.replicas_of(core.me), _agreement_ages(core, ring),
                                  strict=True):
                    m.aae_lag.labels(str(p)).set(-1 if age is None else age)
        m.keys.set(len(core.store))
        m.observe_cluster(ms, ms.ring(), now)
