"""Prometheus metrics of one node (prometheus-client), served on --metrics-port.

Each node owns its registry, so several nodes in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SIBLING_BUCKETS = (1, 2, 3, 5, 10, 25, 50, 100)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("zkv_requests", "Client requests coordinated", ["op"], registry=r)
        self.latency = Histogram(
            "zkv_request_seconds", "Coordinator latency per operation", ["op"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.latency_quorum = Histogram(
            "zkv_request_quorum_seconds", "Coordinator latency per operation and (R or W)",
            ["op", "quorum"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.quorum = Counter(
            "zkv_quorum", "Quorum outcomes per operation and (R or W)", ["op", "quorum", "result"],
            registry=r,
        )
        self.forwards = Counter("zkv_forwards", "Requests forwarded to a preflist node", registry=r)
        self.siblings = Histogram(
            "zkv_siblings", "Sibling count seen by reads and writes that had more than one",
            buckets=SIBLING_BUCKETS, registry=r,
        )
        self.sibling_writes = Counter(
            "zkv_sibling_writes", "Writes that left their key with siblings (concurrent writes);"
            " rate() of it is the sibling-creation rate", registry=r,
        )
        self.sibling_warnings = Counter(
            "zkv_sibling_warnings", "Reads/writes of keys above the sibling warning threshold",
            registry=r,
        )
        self.peers = Gauge("zkv_peers", "Members by detected state", ["state"], registry=r)
        self.malformed = Counter(
            "zkv_malformed_messages", "Frames dropped as malformed", ["source"], registry=r
        )
        self.read_repairs = Counter("zkv_read_repairs", "Versions pushed by read repair", registry=r)
        self.keys = Gauge("zkv_keys", "Keys in the local store", registry=r)
        self.handoffs = Counter("zkv_hints_delivered", "Hints delivered to their owner",
                                registry=r)
        self.hint_count = Gauge("zkv_hint_backlog", "Hints held per intended owner", ["owner"],
                                registry=r)
        self.hint_bytes = Gauge("zkv_hint_backlog_bytes", "Hint bytes held per intended owner",
                                ["owner"], registry=r)
        self.hint_age = Gauge("zkv_hint_oldest_age_seconds", "Age of the oldest hint per owner",
                              ["owner"], registry=r)
        self.aae = Gauge("zkv_antientropy", "Anti-entropy totals since start (exchanges, "
                         "keys_repaired, bytes_sent, agreements, reaped)", ["what"], registry=r)
        self.aae_lag = Gauge("zkv_antientropy_seconds_since_agreement",
                             "Seconds since each partition was last in full agreement with every "
                             "other owner (-1: never)", ["partition"], registry=r)
        self.member_state = Gauge("zkv_member_up", "1 if the member is up, 0.5 suspect, 0 down",
                                  ["member"], registry=r)
        self.internal_errors = Counter("zkv_internal_errors", "Unexpected errors survived",
                                       registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
