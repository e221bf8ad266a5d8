"""`zkv top`: a live view of the whole cluster, one row per node, refreshed in place.

Each refresh asks one node (--node) for the member table, then every member for its status
document (in parallel, each bounded by --timeout). Rates and percentiles come from the
cumulative counters in each status document's "metrics" part (NodeMetrics.summary): the
difference between two refreshes, so they describe the last interval, not the node's life.
What the numbers mean: ops/s is every client request the node handled (the operations it
coordinated, and the gets a client coordinated itself that it answered from its own copy:
op "read", zkv_requests_total{op="read"}); reads/s is the part of it that were such reads;
p99 get / p99 put are the node's coordinator latency (owner reads are one local lookup: no
latency is kept for them, the client's round trip is theirs).
In a pipe (or with --once) it prints one snapshot, taken over one interval, and exits;
--json prints that snapshot as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from zkv.errors import ZkvError


@dataclass
class Sample:
    """Cumulative counters of one node at one moment (its own uptime clock)."""
    uptime: float
    ops: dict[str, int]
    buckets: dict[str, list[int]]
    bounds: list[float]
    sibling_writes: int


@dataclass
class Row:
    id: str
    listen: str
    state: str  # up | suspect | down | unreachable (as the asked node sees it, or no answer)
    ready: str = "-"
    ops_per_s: float | None = None  # every request handled, owner reads included
    reads_per_s: float | None = None  # of them, gets the client coordinated (op "read")
    p99_ms: dict[str, float | None] = field(default_factory=dict)
    sibling_rate: float | None = None  # siblings created per write
    keys: int | None = None
    hints: int | None = None
    hint_age_s: float | None = None
    aae_lag_s: float | None = None
    transfers: str = "-"
    hot_keys: list = field(default_factory=list)
    error: str = ""  # it could not be asked: the client's error
    why: str = ""  # and why, as its client saw the connection (the table's cell)


def _sample(doc: dict) -> Sample | None:
    m = doc.get("metrics")
    if not m:
        return None
    return Sample(float(doc.get("uptime", 0.0)), dict(m.get("ops", {})),
                  {k: list(v) for k, v in m.get("latency_buckets", {}).items()},
                  list(m.get("latency_bounds", [])), int(m.get("sibling_writes", 0)))


def percentile(bounds: list[float], cumulative: list[int], q: float = 0.99) -> float | None:
    """Upper bound (seconds) of the histogram bucket holding the q-quantile; inf past the last
    bound; None without observations. cumulative: counts per bound, then +Inf."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    want = q * cumulative[-1]
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= want:
            return bound
    return float("inf")


def rates(prev: Sample | None,
          cur: Sample) -> tuple[float | None, dict, float | None, float | None]:
    """(ops/s, {op: p99 seconds}, siblings per write, owner reads/s) between two samples of
    one node; since the node started when there is no earlier sample (or the node restarted
    meanwhile). ops/s counts owner reads (op "read") too; they have no latency (no p99)."""
    base = prev
    if (base is None or cur.uptime <= base.uptime
            or any(cur.ops.get(k, 0) < v for k, v in base.ops.items())):
        base = Sample(0.0, {}, {}, cur.bounds, 0)
    dt = cur.uptime - base.uptime
    d_ops = {k: v - base.ops.get(k, 0) for k, v in cur.ops.items()}
    total = sum(d_ops.values())
    ops_s = total / dt if dt > 0 else None
    p99 = {}
    for op, cum in cur.buckets.items():
        old = base.buckets.get(op) or [0] * len(cum)
        p99[op] = percentile(cur.bounds, [a - b for a, b in zip(cum, old, strict=False)])
    writes = d_ops.get("put", 0) + d_ops.get("delete", 0)
    sib = (cur.sibling_writes - base.sibling_writes) / writes if writes else None
    reads_s = d_ops.get("read", 0) / dt if dt > 0 else None
    return ops_s, p99, sib, reads_s


class Top:
    def __init__(self, node: str, timeout: float, keys: str | None = None) -> None:
        self.node = node
        self.timeout = timeout
        self.keys = keys
        self.prev: dict[str, Sample] = {}
        self.header = ""

    def _status(self, endpoint: str) -> dict:
        from zkv.client import Client

        with Client([endpoint], timeout=self.timeout, keys=self.keys) as c:
            return c.status(endpoint)

    def refresh(self) -> list[Row]:
        """One round: every member's row (raises ZkvError when --node does not answer)."""
        seed = self._status(self.node)
        members = seed["members"]
        ring = seed.get("ring", {})
        self.header = (f"zkv top  {time.strftime('%H:%M:%S')}  {len(members)} member(s) seen by "
                       f"{seed.get('node')}  Q={ring.get('q')} N={ring.get('n')} R={ring.get('r')}"
                       f" W={ring.get('w')}  ring {str(ring.get('fingerprint', ''))[:12]}")
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(members)))) as pool:
            futures = {m["id"]: pool.submit(self._safe_status, m) for m in members}
            return [self._row(m, futures[m["id"]].result()) for m in members]

    def _safe_status(self, member: dict) -> dict | tuple[str, str]:
        """The member's status, or (the error, why: the client's reason for the endpoint, e.g.
        "no TCP connection: ...", else the error's own text)."""
        from zkv.client import Client

        ep = member["listen"]
        with Client([ep], timeout=self.timeout, keys=self.keys) as c:
            try:
                return c.status(ep)
            except ZkvError as exc:
                return (f"{type(exc).__name__}: {exc}",
                        c.core.unreachable_why.get(ep) or str(exc))

    def _row(self, member: dict, doc: dict | tuple[str, str]) -> Row:
        row = Row(member["id"], member["listen"], member.get("detail", member.get("state", "?")))
        if not isinstance(doc, dict):
            row.state = "unreachable" if row.state != "down" else "down"
            row.error, row.why = doc
            return row
        cur = _sample(doc)
        if cur is not None:
            row.ops_per_s, row.p99_ms, row.sibling_rate, row.reads_per_s = rates(
                self.prev.get(row.id), cur)
            row.p99_ms = {k: (None if v is None else v * 1000) for k, v in row.p99_ms.items()}
            self.prev[row.id] = cur
            m = doc["metrics"]
            row.ready = "ready" if m.get("ready") else _why_not(m.get("ready_reason", {}))
            if doc.get("writes_refused"):  # (its disk: full, or failing)
                row.ready = "NO WRITES" if row.ready == "ready" else f"{row.ready}, NO WRITES"
            if (doc.get("cluster") or {}).get("unsettled_changes"):  # (joint quorums still)
                row.ready = f"{row.ready}, settling"
            row.hot_keys = m.get("hot_keys", [])
            t = m.get("transfers", {})
            tin = sum(t.get("in", {}).get(s, 0) for s in ("pending", "running"))
            tout = sum(t.get("out", {}).get(s, 0) for s in ("pending", "running"))
            row.transfers = f"{tin} in / {tout} out"
        hints = doc.get("hints", {})
        row.keys = doc.get("keys")
        row.hints = hints.get("backlog", 0)
        ages = [v.get("oldest_age_s", 0) for v in hints.get("by_owner", {}).values()]
        row.hint_age_s = max(ages) if ages else 0.0
        row.aae_lag_s = doc.get("antientropy", {}).get("max_seconds_since_agreement")
        return row


def _why_not(reason: dict) -> str:
    if not reason.get("joined", False):
        return "joining"
    if not reason.get("ring_agreed", True):
        return "ring differs"
    if reason.get("pending_transfers_in"):
        return "receiving"
    return "not ready"


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}s" if v >= 10 else f"{v:.1f}s"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return ">2.5s"
    return f"{v:g}ms"


def table(rows: list[Row], header: str | None):
    from rich.table import Table

    t = Table(title=header, title_justify="left", expand=False)
    # on a narrow terminal the identifying columns keep their width; the others shrink
    keep = {"node": max([4, *(len(r.id) for r in rows)]), "state": 11,
            "ready": max([5, *(len(r.ready) for r in rows)])}
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("node", "left"), ("state", "left"), ("ready", "left"), ("ops/s", "right"),
        ("reads/s", "right"), ("p99 get", "right"), ("p99 put", "right"), ("siblings/write", "right"),
        ("keys", "right"), ("hints", "right"), ("hint age", "right"), ("AAE lag", "right"),
        ("transfers", "left"), ("hottest keys", "left"))
    for name, justify in columns:  # (why a node did not answer wraps in "ready")
        t.add_column(name, justify=justify, no_wrap=name not in ("hottest keys", "ready"),
                     min_width=keep.get(name), max_width=50 if name == "ready" else None)
    for r in rows:
        style = {"down": "red", "unreachable": "red", "suspect": "yellow"}.get(r.state)
        hot = ", ".join(f"{k} ({c})" for k, c in r.hot_keys[:3]) or "-"
        t.add_row(
            r.id, r.state, r.why or r.ready,
            "-" if r.ops_per_s is None else f"{r.ops_per_s:.0f}",
            "-" if r.reads_per_s is None else f"{r.reads_per_s:.0f}",
            _fmt_ms(r.p99_ms.get("get")), _fmt_ms(r.p99_ms.get("put")),
            "-" if r.sibling_rate is None else f"{r.sibling_rate:.1%}",
            "-" if r.keys is None else str(r.keys),
            "-" if r.hints is None else str(r.hints), _fmt_s(r.hint_age_s),
            _fmt_s(r.aae_lag_s), r.transfers, hot, style=style,
        )
    return t


def as_json(rows: list[Row], header: str) -> str:
    return json.dumps({"header": header, "nodes": [r.__dict__ for r in rows]}, default=str,
                      indent=1)


def run(node: str, interval: float, timeout: float, once: bool, as_json_out: bool,
        keys: str | None = None) -> int:
    """The command. Live in a terminal until Ctrl-C; one snapshot in a pipe, --once or --json."""
    from rich.console import Console

    top = Top(node, timeout, keys)
    live_mode = sys.stdout.isatty() and not once and not as_json_out
    if not live_mode:
        top.refresh()  # the first sample; the snapshot covers the interval after it
        time.sleep(interval)
        rows = top.refresh()
        if as_json_out:
            print(as_json(rows, top.header))
        else:
            print(top.header)
            Console(width=200, highlight=False).print(table(rows, None))
        return 0
    from rich.live import Live

    console = Console(highlight=False)
    rows = top.refresh()
    with Live(table(rows, top.header), console=console, auto_refresh=False,
              transient=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    rows = top.refresh()
                    live.update(table(rows, top.header), refresh=True)
                except ZkvError as exc:  # the asked node went away: say so, keep trying
                    from rich.text import Text

                    live.update(Text(f"zkv top: {node}: {exc} (retrying; Ctrl-C quits)"),
                                refresh=True)
        except KeyboardInterrupt:
            pass
    return 0
