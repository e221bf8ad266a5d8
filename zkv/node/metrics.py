"""Prometheus metrics and health endpoints of one node, served on --metrics-host:--metrics-port.

Each node owns its registry, so several nodes in one process (tests) do not collide. The HTTP
server (a daemon thread) answers:
- /metrics  the Prometheus text format;
- /healthz  200 while the process serves: its loop began a turn within LOOP_STALLED seconds
            (a loop blocked for good, e.g. writing logs to a pipe nobody reads, answered 200
            while every request timed out), else 503;
- /readyz   200 when the node has joined, agrees with its peers on the ring and has no
            partition pending transfer to it, and its loop is not stalled, else 503; both with
            a JSON reason (DESIGN.md 2.7).

What the node calls (all on its reactor thread, all cheap):
- ops.observe(op, quorum, ok, s)   per operation it coordinated (counts, latency: OpStats);
- observe_key(key)                 per client request it coordinates (hot-key sketch);
- observe_gossip(sender, fp)       per gossip message received (peer ring fingerprints);
- observe_cluster(membership, ring, now[, transfers]) once per gossip tick: readiness, ring
                                   rebalancing events, gossip convergence time, hot-key export;
- summary()                        for the status document (`zkv top` reads it);
- turns.began / turns.end(now)     around each loop turn's busy part (the transport: stalls.py).
"""

from __future__ import annotations

import bisect
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import blake3
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from zkv.node.health import Health, clock_behind, clock_skew
from zkv.node.hotkeys import TopK
from zkv.node.membership import MAX_SKEW_MS
from zkv.node.stalls import TurnWatch

log = logging.getLogger("zkv.metrics")

# The HTTP port's own bounds (an outside security review: 1,500 half-sent requests held 1,507
# threads and stood the loop still 22 s; idle ones took every file descriptor; each scraper
# that closed early logged a 20-line traceback):
HTTP_TIMEOUT = 5.0  # s a connection may take in all: sending its request, reading the answer
HTTP_MAX_CONNECTIONS = 32  # served at once; one more is closed at once, and counted
# served at once for one source address: one address holding every slot (64 connections
# sending a byte a second, redialled when cut) failed 37 of 40 /healthz probes, 7 liveness
# probes in a row at the k8s manifest's 10 s period (an outside review)
HTTP_MAX_PER_ADDRESS = 8
SCRAPE_CACHE = 0.5  # s one rendering of /metrics is served for


def _cut(request: socket.socket) -> None:
    """A connection past HTTP_TIMEOUT: shut it down (its thread's read or write then fails)."""
    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most HTTP_MAX_CONNECTIONS at once; a client gone before
    its answer is not an error worth a traceback."""

    daemon_threads = True
    request_queue_size = 128  # (the listen backlog: socketserver's 5 left a burst's connects
    # waiting on SYN retries, a second or more each, before the cap could even see them)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.slots = threading.BoundedSemaphore(HTTP_MAX_CONNECTIONS)
        self.per_address: dict[str, int] = {}
        self.per_address_lock = threading.Lock()
        self.refused = 0
        self.on_refused: Callable[[], object] | None = None  # (the metric counting them)

    def _take_address(self, address: Any) -> bool:
        host = str(address[0]) if isinstance(address, tuple) and address else str(address)
        with self.per_address_lock:
            n = self.per_address.get(host, 0)
            if n >= HTTP_MAX_PER_ADDRESS:
                return False
            self.per_address[host] = n + 1
            return True

    def _give_address(self, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) and address else str(address)
        with self.per_address_lock:
            n = self.per_address.get(host, 0) - 1
            if n > 0:
                self.per_address[host] = n
            else:
                self.per_address.pop(host, None)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take_address(client_address):
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            self.shutdown_request(request)
            return
        if not self.slots.acquire(blocking=False):
            self._give_address(client_address)
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("metrics port: %d connection(s) refused at the cap of %d served at "
                            "once", self.refused, HTTP_MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            self._give_address(client_address)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # HTTP_TIMEOUT bounds the whole connection, not each read (32 clients sending a byte
        # every 3 s held every slot for as long as they liked, /healthz refused throughout)
        cut = threading.Timer(HTTP_TIMEOUT, _cut, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self.slots.release()
            self._give_address(client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics port: a request from %s failed", client_address, exc_info=True)

# seconds without a loop turn after which /healthz and /readyz answer 503: far above the
# longest turn seen under load (a turn is bounded by its budgets; the loop wakes at least
# once per gossip interval), so only a loop that stopped for good is reported
LOOP_STALLED = 20.0

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SIBLING_BUCKETS = (1, 2, 3, 5, 10, 25, 50, 100)
CONVERGENCE_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120)
HOT_KEYS_TRACKED = 64  # Misra-Gries counters: any key above 1/65 of the traffic is caught
HOT_KEYS_EXPORTED = 10  # keys of the top exported as zkv_hot_key_ops (if surely hot)
LABEL_CONTEXT = "zkv 2026-12-07 hot-key metric labels"  # BLAKE3 derive_key context
HOT_KEYS_HALF_LIFE = 60.0  # seconds: counts halve this often, so the list follows the present
HOT_KEY_LABEL_MAX = 80  # characters of a key shown in a label

Readiness = Callable[[], tuple[bool, dict]]


def key_digest(key: bytes, secret: bytes) -> str:
    """A key as zkv_hot_key_ops labels it on a node with --keys: the first 16 hex digits of
    its BLAKE3 keyed hash (`secret`: 32 bytes the cluster key derives, `label_secret`), not its
    bytes. The metrics port has no authentication: it showed the hottest key names, which
    the keys keep off the network, to anyone who could reach it; and a plain hash of a
    guessable key (cart:42) is as good as its name (a review). `zkv top` (an authenticated
    status request) shows the keys themselves."""
    return "blake3:" + blake3.blake3(key, key=secret).hexdigest()[:16]


def label_secret(cluster_secret: bytes) -> bytes:
    """The key of `key_digest`, derived from the cluster's secret (the same on every node)."""
    return blake3.blake3(cluster_secret, derive_key_context=LABEL_CONTEXT).digest()


def key_label(key: bytes) -> str:
    """A key as a short printable label (non-UTF-8 bytes escaped, long keys cut)."""
    text = key.decode("utf-8", "backslashreplace")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= HOT_KEY_LABEL_MAX else text[:HOT_KEY_LABEL_MAX - 3] + "..."


class OpStats:
    """Per-operation counts and latency histograms: zkv_requests, zkv_request_seconds,
    zkv_request_quorum_seconds, zkv_quorum. zkv_requests also counts, as op "read", the gets
    a client coordinated itself that this node answered from its own copy (`reads`: the
    owner-read counts, NodeMetrics.owner_reads): one local lookup, so no latency is kept for
    them (the client's round trip is theirs); a Read answered "not an owner" is not counted
    (the client asks a coordinator, whose get is). Counted in plain lists on the reactor thread and
    turned into metric families when Prometheus scrapes (a prometheus_client Counter or
    Histogram takes a lock per update; the four updates of every coordinated operation were
    ~7% of a simulated node's CPU). A scrape reads while the reactor writes: each list is
    copied in one step, so a histogram's buckets, count and sum agree within a request."""

    def __init__(self) -> None:
        # op -> [requests]; (op,) / (op, quorum) -> [count per bucket (last: +Inf), sum]
        self.requests: dict[str, list] = {}
        self.hist: dict[tuple[str, ...], list] = {}
        self.quorum: dict[tuple[str, str, str], list] = {}
        self._keys: dict[tuple, tuple] = {}  # (op, required, ok) -> what it updates
        self.reads: dict[bool, int] = {True: 0, False: 0}  # owner reads (NodeMetrics sets it)

    def observe(self, op: str, required: int, ok: bool, elapsed: float) -> None:
        keys = self._keys.get((op, required, ok))
        if keys is None:
            keys = self._slots(op, required, ok)
        requests, hists, quorum = keys
        requests[0] += 1
        i = bisect.bisect_left(LATENCY_BUCKETS, elapsed)  # le: a value on a bound is in it
        for h in hists:
            h[i] += 1
            h[-1] += elapsed
        if quorum is not None:
            quorum[0] += 1

    def _slots(self, op: str, required: int, ok: bool) -> tuple:
        nb = len(LATENCY_BUCKETS) + 1

        def hist(key: tuple[str, ...]) -> list:
            return self.hist.setdefault(key, [0] * nb + [0.0])

        q = str(required)
        keys = (self.requests.setdefault(op, [0]),
                (hist((op,)), hist((op, q))) if required else (hist((op,)),),
                self.quorum.setdefault((op, q, "ok" if ok else "fail"), [0]) if required
                else None)
        self._keys[(op, required, ok)] = keys
        return keys

    def cumulative(self, key: tuple[str, ...]) -> tuple[list[int], float]:
        """Cumulative counts per bound (then +Inf), and the sum, of one histogram."""
        h = list(self.hist.get(key, ()))
        if not h:
            return [0] * (len(LATENCY_BUCKETS) + 1), 0.0
        out, total = [], 0
        for c in h[:-1]:
            total += c
            out.append(total)
        return out, h[-1]

    def describe(self):
        return self._families()

    def collect(self):
        fams = self._families()
        req, lat, latq, quorum = fams
        for op, n in list(self.requests.items()):
            req.add_metric([op], n[0])
        if self.reads[True]:
            req.add_metric(["read"], self.reads[True])
        for key in list(self.hist):
            counts, total = self.cumulative(key)
            buckets = [(_le(b), c) for b, c in zip((*LATENCY_BUCKETS, float("inf")), counts,
                                                    strict=True)]
            (lat if len(key) == 1 else latq).add_metric(list(key), buckets, total)
        for labels, n in list(self.quorum.items()):
            quorum.add_metric(list(labels), n[0])
        return fams

    @staticmethod
    def _families() -> list:
        return [CounterMetricFamily("zkv_requests", "Client requests handled: the operations "
                                    "coordinated here by op, and op=read: gets the client "
                                    "coordinated itself that this node answered from its own "
                                    "copy (no latency kept for them)", labels=["op"]),
                HistogramMetricFamily("zkv_request_seconds", "Coordinator latency per operation",
                                      labels=["op"]),
                HistogramMetricFamily("zkv_request_quorum_seconds",
                                      "Coordinator latency per operation and (R or W)",
                                      labels=["op", "quorum"]),
                CounterMetricFamily("zkv_quorum", "Quorum outcomes per operation and (R or W)",
                                    labels=["op", "quorum", "result"])]


class _OwnerReads:
    """zkv_owner_reads{answer}: the counts NodeMetrics.owner_reads holds."""

    def __init__(self, counts: dict[bool, int]) -> None:
        self.counts = counts

    def describe(self):
        return [self._family()]

    def collect(self):
        fam = self._family()
        fam.add_metric(["owner"], self.counts[True])
        fam.add_metric(["not_owner"], self.counts[False])
        return [fam]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("zkv_owner_reads", "Reads of this node's own copy for a "
                                   "client-coordinated get (Read), by answer", labels=["answer"])


class _HotKeys:
    """zkv_hot_key_ops{key}: the rows of the last gauge refresh (observe_cluster), replaced
    whole by the reactor thread (a scrape reads one list or the next). As a Gauge it was
    cleared and relabelled at every refresh: ten labels() calls, each checking its values and
    taking the gauge's lock, and ten new children."""

    def __init__(self) -> None:
        # (key label, estimated requests), hottest first. No rank label: equally hot keys
        # swapped ranks at every refresh, a new series each time (the review)
        self.rows: list[tuple[str, float]] = []

    def describe(self):
        return [self._family()]

    def collect(self):
        fam = self._family()
        for key, count in self.rows:
            fam.add_metric([key], count)
        return [fam]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "zkv_hot_key_ops", "Estimated recent requests on this node's hottest keys (Misra-Gries"
            f" top-k over {HOT_KEYS_TRACKED} counters, halved every {HOT_KEYS_HALF_LIFE:.0f} s; "
            "an underestimate by at most zkv_hot_key_error; only keys whose estimate is above "
            "it, so surely hot)", labels=["key"])


class _AgreementLag:
    """zkv_antientropy_seconds_since_agreement{partition}, computed when scraped from what
    `source` returns (set by the node's export: each partition this node replicates and the
    seconds since it last agreed with every other owner, None if never). As a Gauge the
    reactor refreshed every 5 s, one labelled set per partition (256 at the default Q) made
    loop turns of 1.5-2.5 ms in a loaded node, a tail-latency spike (`benchmarks/turn_profile/
    run.py --inflight`); scraped, it costs a node nothing between scrapes and is current at
    each. The source only reads (dict lookups, the ring), which is
    safe from the scrape thread while the reactor runs."""

    def __init__(self) -> None:
        self.source: Callable[[], list[tuple[int, float | None]]] | None = None

    def describe(self):
        return [self._family()]

    def collect(self):
        fam = self._family()
        if self.source is not None:
            for p, age in self.source():
                fam.add_metric([str(p)], -1.0 if age is None else age)
        return [fam]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "zkv_antientropy_seconds_since_agreement", "Seconds since each partition was last "
            "in full agreement with every other owner (-1: never)", labels=["partition"])


class _Siblings:
    """zkv_siblings (a histogram of sibling counts), zkv_sibling_writes, zkv_sibling_warnings
    and zkv_sibling_refusals: plain counts the reactor thread keeps (`NodeMetrics.note_siblings`,
    `note_sibling_refusal`), exported when scraped. (A prometheus Histogram observe and a Counter inc take a lock each:
    ~2 us per write that left siblings, which under concurrent writers is most of them.)"""

    def __init__(self) -> None:
        self.counts = [0] * (len(SIBLING_BUCKETS) + 1)  # per bucket, then above the last
        self.total = 0  # sum of the counts observed
        self.writes = 0
        self.warnings = 0
        self.refusals = 0

    def describe(self):
        return self._families()

    def collect(self):
        hist, writes, warnings, refusals = fams = self._families()
        cumulative, running = [], 0
        for bound, c in zip((*SIBLING_BUCKETS, float("inf")), self.counts, strict=True):
            running += c
            cumulative.append((_le(bound), running))
        hist.add_metric([], cumulative, self.total)
        writes.add_metric([], self.writes)
        warnings.add_metric([], self.warnings)
        refusals.add_metric([], self.refusals)
        return fams

    @staticmethod
    def _families() -> list:
        return [HistogramMetricFamily("zkv_siblings", "Sibling count seen by reads and writes "
                                      "that had more than one"),
                CounterMetricFamily("zkv_sibling_writes", "Writes that left their key with "
                                    "siblings (concurrent writes); rate() of it is the "
                                    "sibling-creation rate"),
                CounterMetricFamily("zkv_sibling_warnings", "Reads/writes of keys above the "
                                    "sibling warning threshold"),
                CounterMetricFamily("zkv_sibling_refusals", "Client writes refused because "
                                    "they would leave their key above --max-siblings")]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # the process's own (open and maximum fds, memory, CPU: process_*) and python_info,
        # read from /proc when scraped; and which zkv this node runs
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        from zkv import __version__
        Info("zkv_build", "The zkv version this node runs", registry=r).info(
            {"version": __version__})
        self.ops = OpStats()
        r.register(self.ops)
        self.forwards = Counter("zkv_forwards", "Requests forwarded to a preflist node", registry=r)
        self.slow_turns = Counter("zkv_slow_turns", "Loop turns busy for 0.1 s or more (every "
                                  "request queued meanwhile waited as long; stalls.py)",
                                  registry=r)
        self.turns = TurnWatch(logging.getLogger("zkv.node"), self.slow_turns.inc)
        self.stood_still = Counter("zkv_stood_still", "Times the node's process stood still "
                                   "over a second past when its loop asked to wake (stopped, "
                                   "a frozen VM, a machine starved of CPU, its log output "
                                   "blocked; NodeCore._resumed)",
                                   registry=r)
        # Reads of this node's copy, by answer (owner / not_owner): plain ints counted on the
        # reactor thread, exported when scraped (a Counter child's lock per Read was ~1 us)
        self.owner_reads = self.ops.reads  # (also zkv_requests{op="read"}: OpStats)
        r.register(_OwnerReads(self.owner_reads))
        self.siblings = _Siblings()
        r.register(self.siblings)
        self.peers = Gauge("zkv_peers", "Members by detected state", ["state"], registry=r)
        self.malformed = Counter(
            "zkv_malformed_messages", "Frames dropped as malformed", ["source"], registry=r
        )
        self.unauthorised = Counter(
            "zkv_unauthorised_requests", "Requests refused for authorisation, by reason: "
            "key_removed (the connection's key was removed from the keys dir since it "
            "connected), admin_only (an admin request from a key that is not an admin key), "
            "peer_only (a peer message from a connection without the cluster key)", ["reason"],
            registry=r)
        self.read_repairs = Counter("zkv_read_repairs", "Versions pushed by read repair", registry=r)
        self.keys = Gauge("zkv_keys", "Keys in the local store", registry=r)
        # the engines' own figures (store: data or handoff), so an operator sees what a
        # compaction would free: a node refusing writes for space with two thirds of its disk
        # dead records showed nothing of it (an outside run)
        self.store_bytes = Gauge("zkv_store_bytes", "Bytes of a store's segments: total, live "
                                 "(what compaction keeps), dead (what it frees)",
                                 ["store", "kind"], registry=r)
        self.store_segments = Gauge("zkv_store_segments", "Segment files of a store",
                                    ["store"], registry=r)
        self.store_free = Gauge("zkv_store_free_bytes", "Bytes free on the file system of a "
                                "store", ["store"], registry=r)
        self.store_compactions = Counter("zkv_store_compactions", "Compactions of a store",
                                         ["store"], registry=r)
        self.store_compacting = Gauge("zkv_store_compaction_progress", "Fraction done of the "
                                      "compaction running on a store (no series when none)",
                                      ["store"], registry=r)
        # damage the engines found (DESIGN.md 4: a corrupt record is detected, never returned,
        # reported and repaired from a replica): records whose CRC failed when read (a get, a
        # compaction), and the keys they leave awaiting repair (back to 0 once repaired)
        self.corrupt_records = Counter("zkv_corrupt_records", "Records of a store that failed "
                                       "their CRC when read (a get or a compaction)",
                                       ["store"], registry=r)
        self.corrupt_keys = Gauge("zkv_corrupt_keys", "Keys of a store whose record was found "
                                  "corrupt, awaiting repair from a replica", ["store"],
                                  registry=r)
        self.expired = Counter("zkv_expired_versions", "Versions of namespaces with a ttl "
                               "that expired and were dropped from the local store (by the "
                               "expiry sweep, or when read)", registry=r)
        self.purged = Counter("zkv_purged_versions", "Versions of keys of dropped or "
                              "truncated namespaces dropped from the local store (by the "
                              "sweep, or when read)", registry=r)
        self.late_retired = Counter("zkv_late_copies_retired", "Late copies of writes "
                                    "overwritten here retired on arrival by this node's memory "
                                    "of them (dvv.RetiredWids), and late retries of them "
                                    "that made no new dot", registry=r)
        self.handoffs = Counter("zkv_hints_delivered", "Hints delivered to their owner",
                                registry=r)
        self.hint_count = Gauge("zkv_hint_backlog", "Hints held per intended owner", ["owner"],
                                registry=r)
        self.hint_bytes = Gauge("zkv_hint_backlog_bytes", "Hint bytes held per intended owner",
                                ["owner"], registry=r)
        self.hint_age = Gauge("zkv_hint_oldest_age_seconds", "Age of the oldest hint per owner "
                              "(the hinted-handoff queue age)", ["owner"], registry=r)
        self.aae = Gauge("zkv_antientropy", "Anti-entropy now: refill_partitions_left "
                         "(partitions a node back with an empty disk has yet to verify), "
                         "fresh_partitions_left, exchanges_queued, exchanges_running, "
                         "roots_checking ((partition, owner) pairs of a repair or refill whose "
                         "roots are being compared)", ["what"], registry=r)
        self.aae_work = Counter("zkv_antientropy_work", "Anti-entropy work done: exchanges, "
                                "keys_repaired, bytes_sent, agreements, reaped, root_checks",
                                ["what"], registry=r)
        self.aae_lag = _AgreementLag()  # zkv_antientropy_seconds_since_agreement, when scraped
        r.register(self.aae_lag)
        self.member_state = Gauge("zkv_member_up", "1 if the member is up, 0.5 suspect, 0 down",
                                  ["member"], registry=r)
        self.internal_errors = Counter("zkv_internal_errors", "Unexpected errors survived",
                                       registry=r)
        self.busy = Counter("zkv_busy_refusals", "Requests answered 'busy, retry': the "
                            "identity's in-flight cap or this turn's reply-byte budget was "
                            "reached", registry=r)
        self.write_stop = Gauge("zkv_writes_stopped", "1 while this node takes no writes: an "
                                "engine's disk is full, under --min-free-mb, or failed a "
                                "write (reads are still served)", registry=r)
        self.writes_refused = Counter("zkv_writes_refused", "Writes (client, replica) this node "
                                      "refused or passed on because its disk took no writes",
                                      registry=r)
        self.primary_refused = Counter(
            "zkv_primary_quorum_refusals", "Requests refused at once because fewer of their "
            "key's owners were reachable than their pr/pw asked for (stand-ins do not count)",
            registry=r)
        self.lww_refused = Counter(
            "zkv_lww_writes_refused", "lww writes refused because this node's clock runs ahead "
            "(of its peers', or its hybrid clock of its wall clock): they are retried elsewhere",
            registry=r)
        self.hlc_lead = Gauge(
            "zkv_hlc_lead_seconds", "How far this node's hybrid clock runs ahead of its wall "
            "clock (up to the 60 s skew bound by the stamps it observes; beyond, its own clock "
            "ran ahead and was set back, and it stamps no lww write)", registry=r)
        self.contexts_refused = Counter(
            "zkv_contexts_refused", "Client writes refused because their context was not "
            "sealed by this cluster for their key (with --keys: forged, altered, another key's, "
            "or issued before seals were required)", registry=r)
        self.member_records_refused = Counter(
            "zkv_member_records_refused", "Member records (gossip, joins) refused: a clock over "
            "60 s ahead, fields that fail validation, or the trust rules (the log says which)",
            registry=r)
        self.connections = Gauge("zkv_connections", "Open connections to --listen (clients "
                                 "and peers; capped by max_connections)", registry=r)
        self.connections_refused = Counter("zkv_connections_refused", "Connections shut down "
                                           "at once: max_connections was reached", registry=r)
        self.metrics_port_refused = Counter(
            "zkv_metrics_port_refused", "Connections to the metrics port closed at once: "
            "HTTP_MAX_CONNECTIONS were being served", registry=r)
        self.handshakes_failed = Counter(
            "zkv_handshakes_failed", "Connections to the request port whose handshake failed: "
            "reason auth (the key was refused), protocol (plain text to a keyed node, the wrong "
            "server key, not ZMTP), other (such as a TCP probe that connects and closes)",
            ["reason"], registry=r)
        self.replies_dropped = Counter("zkv_replies_dropped", "Replies dropped: too many bytes "
                                       "queued for a connection that does not read", registry=r)
        self.peer_frames_dropped = Counter(
            "zkv_peer_frames_dropped", "Frames to a peer dropped: too many bytes still queued "
            "for it (a paused or slow peer; hinted handoff and anti-entropy repair)", registry=r)
        # ---- ring, readiness, gossip convergence, transfers, hot keys -------------------------
        self.ready_gauge = Gauge("zkv_ready", "1 when /readyz answers 200 (joined, ring agreed "
                                 "with every up peer, nothing pending transfer to this node)",
                                 registry=r)
        self.ring_agreed = Gauge("zkv_ring_agreed", "1 when every up peer gossips the same ring "
                                 "fingerprint as this node", registry=r)
        self.unsettled = Gauge("zkv_ring_unsettled_changes", "Ownership changes taken here and "
                               "not settled yet: gets and puts of moved partitions also use the "
                               "previous owners until every member has had the state for "
                               "`settle` seconds", registry=r)
        self.ring_rebalances = Counter(
            "zkv_ring_rebalances", "Ring rebalancing events: changes of the member set (join, "
            "leave, move) that changed this node's ring", registry=r)
        self.gossip_convergence = Histogram(
            "zkv_gossip_convergence_seconds", "How long a ring change seen here took to reach "
            "every up peer (until all gossip the same ring fingerprint)",
            buckets=CONVERGENCE_BUCKETS, registry=r)
        self.partitions = Gauge("zkv_ring_partitions", "Partitions this node holds, as primary "
                                "(first in the preference list) or as any replica", ["role"],
                                registry=r)
        self.transfers = Gauge("zkv_transfers", "Partition transfers involving this node by "
                               "direction (in, out) and state (pending, running)",
                               ["direction", "state"], registry=r)
        self.transfer_bytes = Gauge("zkv_transfer_bytes", "Bytes of the current partition "
                                    "transfers by direction (in, out): done and total",
                                    ["direction", "what"], registry=r)
        self.hot_keys = _HotKeys()  # zkv_hot_key_ops, from the last refresh's rows
        self.key_secret: bytes | None = None  # ... labelled by key_digest with it, or by name
        r.register(self.hot_keys)
        self.hot_key_error = Gauge("zkv_hot_key_error", "Largest possible underestimate of "
                                   "zkv_hot_key_ops (decayed requests / (counters + 1))",
                                   registry=r)
        for direction in ("in", "out"):
            for state in ("pending", "running"):
                self.transfers.labels(direction, state).set(0)
            for what in ("done", "total"):
                self.transfer_bytes.labels(direction, what).set(0)
        self.health = Health()
        self._clock_behind = False  # (its change is logged, observe_cluster)
        # how this node's wall clock stands against its peers' (health.clock_skew; None: it
        # agrees), as of the last gossip round: logged at a change, and NodeCore._unstampable
        self.clock_skew: str | None = None
        self.hot = TopK(HOT_KEYS_TRACKED)
        self._hot_decayed_at: float | None = None
        self._transfers: dict = {"in": {}, "out": {}}
        self._server: ThreadingHTTPServer | None = None
        self._children: dict[tuple, Any] = {}  # (gauge, label values) -> its child (child())
        self._counted: dict[tuple, int] = {}  # (counter, label values) -> total (count_to())

    def child(self, gauge: Gauge, *values: str) -> Any:
        """`gauge.labels(*values)`, kept: labels() checks and converts its values and takes the
        gauge's lock on every call, and a gauge refresh makes ~40 of them (a simulated seed,
        mostly the nodes' background: 488.8M -> 479.4M instructions). Bounded as the gauge
        is: one child per label set it ever had."""
        key = (gauge, values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = gauge.labels(*values)
        return c

    def keep_only(self, gauge: Gauge, keep: set[tuple[str, ...]]) -> None:
        """Remove the series of `gauge` (set through child()) whose label values are not in
        `keep`: a series nobody sets again would otherwise report its last value for ever (a
        member that left as still up, a hint backlog delivered since as still held)."""
        for key in [k for k in self._children if k[0] is gauge and k[1] not in keep]:
            del self._children[key]
            gauge.remove(*key[1])

    def count_to(self, counter: Counter, total: int, *values: str) -> None:
        """Advance `counter` (its child of label `values`) to `total`, a count the node keeps
        itself since it started. A count that went down (its owner was replaced: a store
        reopened, the exchange state remade) is taken as a new start: the counter then
        counts on from there, never backwards."""
        key = (counter, values)
        last = self._counted.get(key, 0)
        if total > last:
            (counter.labels(*values) if values else counter).inc(total - last)
        self._counted[key] = total

    # ---- called by the node (reactor thread) ----------------------------------------------------
    def observe_key(self, key: bytes) -> None:
        """One client request on key, coordinated here."""
        self.hot.add(key)

    def note_siblings(self, count: int, write: bool, warn: bool) -> None:
        """A read or write saw `count` (> 1) siblings (`warn`: above the warning threshold)."""
        sib = self.siblings
        sib.counts[bisect.bisect_left(SIBLING_BUCKETS, count)] += 1  # le: on a bound is in it
        sib.total += count
        if write:
            sib.writes += 1
        if warn:
            sib.warnings += 1

    def note_sibling_refusal(self, key: bytes, count: int) -> None:
        """A client write was refused: it would have left `key` with `count` siblings."""
        self.siblings.refusals += 1

    def observe_gossip(self, sender: str, fingerprint: bytes) -> None:
        """A peer's gossip arrived carrying its ring fingerprint."""
        self.health.on_gossip(sender, fingerprint)

    def observe_cluster(self, membership, ring, now: float, transfers: dict | None = None,
                        joined: bool = True, gauges: bool = True,
                        up: list[str] | None = None, offsets: list[int] | None = None,
                        unreached: str | None = None) -> None:
        """Once per gossip tick: readiness, rebalancing, convergence, partitions, hot keys
        (`gauges` False: the observations only, no gauge is set).

        membership: has .me.id, .peers and .is_up(id); ring: .fingerprint(), .owned(id),
        .replicas_of(id). transfers (until transfers exist: none): {"in": {"pending": n,
        "running": n, "bytes_done": b, "bytes_total": b}, "out": {...}}."""
        me = membership.me.id
        if up is None:  # (the caller may know them already: the node asks once per round)
            up = [nid for nid in membership.peers if membership.is_up(nid)]
        transfers = transfers or {}
        pending_in = sum(transfers.get("in", {}).get(s, 0) for s in ("pending", "running"))
        refused = membership.clock_refused()
        # the peers heard from: up, or refused for their clocks (a crashed one says nothing
        # of whose clock is wrong: 2 live peers of 4 both refused is this node's clock)
        heard = len(up) + sum(1 for nid in refused if nid not in up)
        behind = clock_behind(refused, heard)
        if behind != self._clock_behind:
            self._clock_behind = behind
            if behind:
                log.error("this node's wall clock looks behind: the records of %d of the %d "
                          "peers it hears are refused as more than %d s ahead of it (%s); "
                          "/readyz answers 503 until they are taken again (check NTP here)",
                          len(refused), heard, MAX_SKEW_MS // 1000, ", ".join(refused[:8]))
            else:
                log.warning("peers' records are taken again: this node's clock agrees with "
                            "theirs")
        skew = clock_skew(offsets or ())  # (offsets: each peer's clock minus ours, ms)
        if skew != self.clock_skew:
            if skew:
                log.error("this node's wall clock is %s (by the clocks their gossip carries): "
                          "ttl expiry, lww order and tombstone ages follow wall clocks; "
                          "/readyz answers 503 until it agrees again (check NTP here)", skew)
            elif self.clock_skew:
                log.warning("this node's wall clock agrees with its peers' again")
            self.clock_skew = skew
        rebalanced, converged = self.health.update(
            fingerprint=ring.fingerprint(), up_peers=up, now=now, joined=joined,
            pending_in=pending_in, clock_refused=refused, peers=heard, skew=skew,
            unreached=unreached)
        if rebalanced:
            self.ring_rebalances.inc()
        if converged is not None:
            self.gossip_convergence.observe(converged)
        self._transfers = {d: dict(transfers.get(d, {})) for d in ("in", "out")}
        if self._hot_decayed_at is None:
            self._hot_decayed_at = now
        elif now - self._hot_decayed_at >= HOT_KEYS_HALF_LIFE:
            self._hot_decayed_at = now
            self.hot.decay(0.5)
        if not gauges:
            return
        ready, reason = self.health.ready()
        self.ready_gauge.set(1 if ready else 0)
        self.ring_agreed.set(1 if reason.get("ring_agreed") else 0)
        child = self.child
        child(self.partitions, "primary").set(len(ring.owned(me)))
        child(self.partitions, "replica").set(len(ring.replicas_of(me)))
        for direction in ("in", "out"):
            t = transfers.get(direction, {})
            for state in ("pending", "running"):
                child(self.transfers, direction, state).set(t.get(state, 0))
            child(self.transfer_bytes, direction, "done").set(t.get("bytes_done", 0))
            child(self.transfer_bytes, direction, "total").set(t.get("bytes_total", 0))
        secret = self.key_secret
        # only keys surely hot: an estimate above the summary's error bound (1/65 of the recent
        # traffic) is a true count above it. Under an even load the top ten were noise that
        # changed at every refresh, each a new series for Prometheus (an outside run: 454
        # series in 70 s); `zkv top` still shows the whole top ten
        floor = self.hot.error_bound()
        top = [(key, count) for key, count in self.hot.top(HOT_KEYS_EXPORTED) if count > floor]
        self.hot_keys.rows = [(key_label(cast(bytes, key)) if secret is None
                               else key_digest(cast(bytes, key), secret), count)
                              for key, count in top]
        self.hot_key_error.set(self.hot.error_bound())

    def summary(self) -> dict:
        """Counters `zkv top` turns into rates and percentiles (cumulative since start)."""
        ops = {op: n[0] for op, n in list(self.ops.requests.items())}
        if self.owner_reads[True]:  # (client-coordinated gets answered here: no latency)
            ops["read"] = self.owner_reads[True]
        buckets = {key[0]: self.ops.cumulative(key)[0] for key in list(self.ops.hist)
                   if len(key) == 1}
        ready, reason = self.health.ready()
        return {
            "ops": ops,
            "latency_bounds": list(LATENCY_BUCKETS),
            "latency_buckets": buckets,  # cumulative counts per bound, then +Inf
            "sibling_writes": self.siblings.writes,
            "hot_keys": [[key_label(cast(bytes, k)), c] for k, c in self.hot.top(HOT_KEYS_EXPORTED)],
            "hot_key_error": round(self.hot.error_bound(), 1),
            "ready": ready,
            "ready_reason": reason,
            "transfers": self._transfers,
        }

    # ---- introspection (tests, the dashboard check) ---------------------------------------------
    def exported_names(self) -> set[str]:
        """Every sample name this registry can expose, children or not (name_total, _bucket...)."""
        suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                    "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
        names = set()
        for collector in list(self.registry._collector_to_names):
            describe = getattr(collector, "describe", None)
            for fam in (describe() if describe else None) or collector.collect():
                for suf in suffixes.get(fam.type, ("",)):
                    names.add(fam.name + suf)
        return names

    # ---- HTTP -------------------------------------------------------------------------------
    def serve(self, port: int, host: str = "127.0.0.1", ready: Readiness | None = None,
              clock: Callable[[], float] | None = None) -> None:
        """Serve /metrics, /healthz, /readyz on host:port in a daemon thread.

        ready() -> (bool, reason dict) decides /readyz; default: this registry's Health, which
        observe_cluster keeps current. `clock`: the loop's (turns.began is on it); with it, a
        loop that began no turn for LOOP_STALLED seconds makes both answer 503. Raises OSError
        when the port cannot be bound."""
        ready_fn: Readiness = ready or self.health.ready
        registry = self.registry
        turns = self.turns

        def stalled() -> float:
            """Seconds the loop has begun no turn, past LOOP_STALLED (else 0)."""
            if clock is None or not turns.began:
                return 0.0
            idle = clock() - turns.began
            return idle if idle > LOOP_STALLED else 0.0

        cached: list = [-1.0, b""]  # (when, the exposition): one rendering per SCRAPE_CACHE
        cache_lock = threading.Lock()

        def scrape() -> bytes:
            """The exposition, rendered at most once per SCRAPE_CACHE seconds (rendering holds
            the GIL from the node's loop: a thousand scrapes at once stood it still 22 s)."""
            with cache_lock:
                now = time.monotonic()
                if now - cached[0] >= SCRAPE_CACHE:
                    cached[:] = [now, generate_latest(registry)]
                return cached[1]

        class Handler(BaseHTTPRequestHandler):
            head = False

            def do_HEAD(self) -> None:  # noqa: N802 (a probe's HEAD read 501: an outside run)
                self.head = True
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, scrape(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    idle = stalled()
                    if idle:
                        self._json(503, {"status": "stalled",
                                         "loop_idle_seconds": round(idle, 1)})
                    else:
                        self._json(200, {"status": "ok"})
                elif path == "/readyz":
                    try:
                        ok, reason = ready_fn()
                    except Exception as exc:  # a broken callback is "not ready", not a crash
                        ok, reason = False, {"error": f"{type(exc).__name__}: {exc}"}
                    idle = stalled()
                    if idle:  # (its state is as of before the loop stopped)
                        ok, reason = False, {**reason, "loop_idle_seconds": round(idle, 1)}
                    self._json(200 if ok else 503, {"ready": bool(ok), **reason})
                else:
                    self._json(404, {"error": f"no such path {path}; try /metrics, /healthz, "
                                     "/readyz"})

            def _json(self, code: int, doc: dict) -> None:
                self._send(code, (json.dumps(doc, sort_keys=True) + "\n").encode(),
                           "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not self.head:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds: not logged
                pass

        Handler.timeout = HTTP_TIMEOUT  # (socket timeout: a request half sent is dropped)
        server_cls: type[_HTTPServer] = _HTTPServer
        if ":" in host:  # an IPv6 address
            server_cls = cast(type[_HTTPServer], type("V6Server", (_HTTPServer,),
                                                      {"address_family": socket.AF_INET6}))
        try:
            self._server = server = server_cls((host.strip("[]"), port), Handler)
        except OSError as exc:  # (it said "[Errno 98] Address already in use", no address:
            # the listen/gossip binds' errors name theirs)
            raise OSError(exc.errno, f"{exc.strerror or exc} (addr='http://{host}:{port}', "
                          f"--metrics-host {host} --metrics-port {port})") from None
        server.on_refused = self.metrics_port_refused.inc
        threading.Thread(target=server.serve_forever, name="zkv-metrics", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
