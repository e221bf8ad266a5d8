"""Health endpoints and the new metrics on a node's metrics port (DESIGN.md 2.7, issue 14)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_helpers import Nodes, free_port, http, metrics_text, raw_status, ready, wait_for
from ops_helpers import zkv as zkv_cli

import zkv
from zkv.node.metrics import NodeMetrics

NEW = ["zkv_ready", "zkv_ring_agreed", "zkv_ring_rebalances", "zkv_gossip_convergence_seconds",
       "zkv_ring_partitions", "zkv_transfers", "zkv_transfer_bytes", "zkv_hot_key_ops",
       "zkv_hot_key_error", "zkv_hint_oldest_age_seconds"]


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    yield n
    n.close()


def test_a_loop_that_stopped_turning_makes_both_health_endpoints_fail():
    """A node whose loop is blocked for good (writing its log to a pipe nobody reads) still
    answered /healthz 200 and /readyz 200 from the HTTP thread while every request timed
    out: past LOOP_STALLED seconds without a turn both answer 503, saying how long."""
    from zkv.node.metrics import LOOP_STALLED

    m = NodeMetrics()
    clock = {"t": 100.0}
    port = free_port()
    m.serve(port, "127.0.0.1", ready=lambda: (True, {"joined": True}), clock=lambda: clock["t"])
    try:
        base = f"http://127.0.0.1:{port}"
        assert http(base + "/healthz")[0] == 200  # (no turn yet: starting)
        m.turns.began = 100.0
        clock["t"] = 100.0 + LOOP_STALLED - 1  # a long turn, or an idle loop: alive
        assert http(base + "/healthz")[0] == 200 and http(base + "/readyz")[0] == 200
        clock["t"] = 100.0 + LOOP_STALLED + 5
        code, body = http(base + "/healthz")
        assert code == 503 and json.loads(body) == {"status": "stalled",
                                                     "loop_idle_seconds": LOOP_STALLED + 5}
        code, body = http(base + "/readyz")
        assert code == 503 and json.loads(body)["loop_idle_seconds"] == LOOP_STALLED + 5
        m.turns.began = clock["t"]  # it turns again
        assert http(base + "/healthz")[0] == 200 and http(base + "/readyz")[0] == 200
        # a probe's HEAD: the GET's status and headers, no body (it read 501: an outside run)
        import urllib.request

        for path in ("/healthz", "/readyz", "/metrics"):
            req = urllib.request.Request(base + path, method="HEAD")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200 and resp.read() == b"", path
                assert int(resp.headers["Content-Length"]) > 0
    finally:
        m.close()


def test_the_metrics_port_bounds_connections_and_slow_requests_and_logs_no_tracebacks(
        caplog, monkeypatch):
    """An outside security review: 1,500 half-sent requests held 1,507 threads and stood a
    node's loop still 22 s, idle connections took every file descriptor, and each scraper
    that closed before reading logged a 20-line traceback. Now: at most HTTP_MAX_CONNECTIONS
    served at once (one more is closed at once, counted, logged once), a request not sent
    within HTTP_TIMEOUT is dropped, a scraper gone early is a DEBUG line."""
    import socket
    import threading
    import time

    from zkv.node import metrics

    monkeypatch.setattr(metrics, "HTTP_TIMEOUT", 1.0)
    m = NodeMetrics()
    port = free_port()
    m.serve(port, "127.0.0.1", ready=lambda: (True, {}))
    base = f"http://127.0.0.1:{port}"
    held = []

    def conn(i: int) -> socket.socket:  # from HTTP_MAX_PER_ADDRESS addresses at most each
        source = f"127.0.0.{2 + i // metrics.HTTP_MAX_PER_ADDRESS}"
        return socket.create_connection(("127.0.0.1", port), source_address=(source, 0))

    try:
        before = threading.active_count()
        for i in range(metrics.HTTP_MAX_CONNECTIONS + 10):  # half-sent requests, held open
            s = conn(i)
            s.sendall(b"GET /metr")
            held.append(s)
        wait_for(lambda: m._server.refused == 10, timeout=10)
        # (each connection served: its thread and its deadline's timer)
        assert threading.active_count() - before <= 2 * metrics.HTTP_MAX_CONNECTIONS
        over = held[-1]  # one past the cap: closed by the node at once
        over.settimeout(5)
        assert over.recv(100) == b""
        # the half-sent ones are dropped after the timeout, and a scrape is served again
        for s in held[:metrics.HTTP_MAX_CONNECTIONS]:
            s.settimeout(5)
            assert s.recv(100) == b""
        assert http(base + "/metrics")[0] == 200
        assert "zkv_metrics_port_refused_total 10.0" in http(base + "/metrics")[1]
        # a byte now and then does not keep a connection past the timeout (it is a total)
        drip = [conn(i) for i in range(metrics.HTTP_MAX_CONNECTIONS)]
        started = time.monotonic()
        try:
            while time.monotonic() - started < 2.5:
                for s in drip:
                    try:
                        s.sendall(b"G")
                    except OSError:
                        pass
                time.sleep(0.3)
            assert http(base + "/healthz")[0] == 200
        finally:
            for s in drip:
                s.close()
        with caplog.at_level("DEBUG", logger="zkv.metrics"):
            for _ in range(20):  # scrapers that leave before reading the answer
                s = socket.create_connection(("127.0.0.1", port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                s.close()  # (a reset: the node's write fails)
            time.sleep(0.5)
            assert http(base + "/healthz")[0] == 200
        loud = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")
                and "Traceback" in (r.exc_text or "")]
        assert not loud
        refusals = [r for r in caplog.records if "refused at the cap" in r.getMessage()]
        assert len(refusals) <= 1
    finally:
        for s in held:
            s.close()
        m.close()


def test_health_endpoints_follow_the_readiness_callback():
    m = NodeMetrics()
    state = {"v": (False, {"joined": False})}
    port = free_port()
    m.serve(port, "127.0.0.1", ready=lambda: state["v"])
    try:
        base = f"http://127.0.0.1:{port}"
        assert http(base + "/healthz")[0] == 200
        code, body = http(base + "/readyz")
        assert code == 503 and json.loads(body) == {"ready": False, "joined": False}
        state["v"] = (True, {"joined": True, "ring_agreed": True})
        code, body = http(base + "/readyz")
        assert code == 200 and json.loads(body)["ready"] is True

        def broken():
            raise RuntimeError("boom")
        state_fn = broken
        m.close()
        m.serve(port, "127.0.0.1", ready=state_fn)
        code, body = http(base + "/readyz")
        assert code == 503 and "boom" in json.loads(body)["error"]
        assert http(base + "/nope")[0] == 404
        text = http(base + "/metrics")[1]
        for name in NEW:  # every new metric is exported with help text
            assert re.search(rf"^# HELP {name}(_total)? \S", text, re.M), name
    finally:
        m.close()


def test_real_cluster_ready_hot_keys_rebalances_and_convergence(make_cluster):
    cl = make_cluster(3, metrics=True)
    for n in cl.nodes:  # LocalCluster.start() (zkv local up) returns once all are ready
        code, why = ready(n.metrics_port)
        assert code == 200, why
        assert why["joined"] and why["ring_agreed"] and why["pending_transfers_in"] == 0
        assert http(f"http://127.0.0.1:{n.metrics_port}/healthz")[0] == 200
    with zkv.Client(cl.endpoints, timeout=5.0) as c:
        for i in range(60):
            c.put(b"cart:hot", b"v%d" % i)
            c.put(b"cold:%d" % i, b"v")
    # every node coordinating cart:hot ranks it first; the one that took most of it surely does
    def hot_somewhere():
        texts = [metrics_text(n.metrics_port) for n in cl.nodes]
        return any(re.search(r'zkv_hot_key_ops\{key="cart:hot"\} [1-9]', t)
                   for t in texts)
    wait_for(hot_somewhere, what="cart:hot ranked first")
    first = metrics_text(cl.nodes[0].metrics_port)  # node1 saw node2 and node3 join
    assert float(re.search(r"^zkv_ring_rebalances_total (\S+)", first, re.M)[1]) >= 1
    assert float(re.search(r"^zkv_gossip_convergence_seconds_count (\S+)", first, re.M)[1]) >= 1
    assert re.search(r'^zkv_transfers\{direction="in",state="pending"\} 0', first, re.M)
    assert re.search(r'^zkv_ring_partitions\{role="replica"\} 256', first, re.M)
    doc = raw_status(cl.endpoints[0])
    assert doc["metrics"]["ready"] is True and doc["metrics"]["ops"]["put"] >= 1
    # the engines' figures: cart:hot written 60 times leaves dead records on its owners (a
    # node refusing writes for space showed nothing of what compaction would free)
    data = doc["storage"]["data"]
    assert data["dead_bytes"] > 0 and data["segments"] >= 1 and data["free_bytes"] > 0, data
    assert data["total_bytes"] == data["live_bytes"] + data["dead_bytes"]

    def dead_exported():
        m = re.search(r'^zkv_store_bytes\{kind="dead",store="data"\} (\S+)',
                      metrics_text(cl.nodes[0].metrics_port), re.M)
        return m is not None and float(m[1]) > 0
    wait_for(dead_exported, what="zkv_store_bytes of dead records")
    text = zkv_cli("status", "--node", cl.endpoints[0]).stdout
    assert re.search(r"^store data: [\d.]+ MiB in \d+ segment\(s\), \d+% dead records", text,
                     re.M), text


def test_readyz_is_503_until_joined_and_metrics_host_is_settable(nodes, tmp_path):
    dead_seed = f"tcp://127.0.0.1:{free_port()}"  # nobody answers: the node keeps joining
    mport = free_port("127.0.0.2")
    p = nodes.start("--id", "lonely", "--listen", f"tcp://127.0.0.1:{free_port()}",
                    "--gossip", f"tcp://127.0.0.1:{free_port()}", "--data-dir",
                    str(tmp_path / "d"), "--seed", dead_seed, "--metrics-port", str(mport),
                    "--metrics-host", "127.0.0.2")
    code, why = wait_for(lambda: ready(mport, "127.0.0.2"), what="metrics up")
    assert code == 503 and why["joined"] is False and why["ready"] is False
    assert http(f"http://127.0.0.2:{mport}/healthz")[0] == 200
    with pytest.raises(OSError):  # bound to 127.0.0.2 only
        http(f"http://127.0.0.1:{mport}/healthz", timeout=1)
    assert nodes.stop(p) == 0, nodes.log(p)


def test_ipv6_literals_bind_join_and_advertise(nodes, tmp_path):
    try:
        free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    l1, g1, l2, g2, m1 = (free_port("::1") for _ in range(5))
    a = nodes.start("--id", "v6a", "--listen", f"tcp://[::1]:{l1}", "--gossip",
                    f"tcp://[::1]:{g1}", "--data-dir", str(tmp_path / "a"),
                    "--metrics-port", str(m1), "--metrics-host", "::1")
    wait_for(lambda: raw_status(f"tcp://[::1]:{l1}"), what="v6a serving")
    b = nodes.start("--id", "v6b", "--listen", f"tcp://[::]:{l2}", "--advertise",
                    f"tcp://[::1]:{l2}", "--gossip", f"tcp://[::]:{g2}", "--data-dir",
                    str(tmp_path / "b"), "--seed", f"tcp://[::1]:{l1}")

    def both_up():
        doc = raw_status(f"tcp://[::1]:{l1}")
        seen = {m["id"]: m for m in doc["members"]}
        return set(seen) == {"v6a", "v6b"} and all(
            m["state"] == "up" and m["status"] == "valid" for m in seen.values()) and seen
    seen = wait_for(both_up, what="both nodes up over IPv6")
    assert seen["v6b"]["listen"] == f"tcp://[::1]:{l2}"  # the advertised, not the bound, address
    assert seen["v6b"]["gossip"] == f"tcp://[::1]:{g2}"
    assert http(f"http://[::1]:{m1}/healthz")[0] == 200
    import zkv  # the client reaches IPv6 literals too (its ZeroMQ context enables IPv6)

    with zkv.Client([f"tcp://[::1]:{l1}"], timeout=5.0) as c:
        c.put(b"v6-key", b"v6-value", w=2)
        assert c.get(b"v6-key", r=2).values == [b"v6-value"]
    assert nodes.stop(b) == 0 and nodes.stop(a) == 0


def test_operation_counts_and_latency_histograms_in_the_exposition():
    """The per-operation families are counted outside prometheus_client (OpStats) and must read
    exactly as its Counter/Histogram did: a value on a bucket bound is in that bucket, past the
    last bound only in +Inf; the quorum histogram and outcomes only for ops with a quorum."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    m = NodeMetrics()
    for elapsed in (0.0001, 0.0002, 0.003, 5.0):
        m.ops.observe("put", 2, True, elapsed)
    m.ops.observe("put", 2, False, 0.05)
    m.ops.observe("status", 0, True, 0.001)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(m.registry).decode())
               for s in fam.samples}

    def get(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert get("zkv_requests_total", op="put") == 5 and get("zkv_requests_total", op="status") == 1
    assert get("zkv_request_seconds_bucket", op="put", le="0.0002") == 2  # on the bound: in it
    assert get("zkv_request_seconds_bucket", op="put", le="0.005") == 3
    assert get("zkv_request_seconds_bucket", op="put", le="2.5") == 4
    assert get("zkv_request_seconds_bucket", op="put", le="+Inf") == 5
    assert get("zkv_request_seconds_count", op="put") == 5
    assert get("zkv_request_seconds_sum", op="put") == pytest.approx(5.0533)
    assert get("zkv_request_quorum_seconds_count", op="put", quorum="2") == 5
    assert get("zkv_quorum_total", op="put", quorum="2", result="ok") == 4
    assert get("zkv_quorum_total", op="put", quorum="2", result="fail") == 1
    assert not any(k[0].startswith("zkv_request_quorum") and ("op", "status") in k[1]
                   for k in samples)  # no quorum, no quorum families
    s = m.summary()
    assert s["ops"] == {"put": 5, "status": 1}
    assert s["latency_buckets"]["put"] == [2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5]


@given(st.lists(st.tuples(st.integers(2, 400), st.booleans()), max_size=40),
       st.integers(0, 5))
@settings(max_examples=60, deadline=None)
def test_sibling_counts_read_exactly_as_prometheus_clients_own_histogram(seen, refused):
    """zkv_siblings / zkv_sibling_writes / zkv_sibling_warnings / zkv_sibling_refusals are
    counted outside
    prometheus_client (NodeMetrics.note_siblings): they must read as its Histogram and
    Counters, fed the same observations, would (a count on a bound is in that bucket)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from zkv.node.metrics import SIBLING_BUCKETS

    def samples(registry) -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(generate_latest(registry).decode())
                for s in fam.samples if "sibling" in s.name and not s.name.endswith("_created")}

    m, ref = NodeMetrics(), CollectorRegistry()
    hist = Histogram("zkv_siblings", "h", buckets=SIBLING_BUCKETS, registry=ref)
    writes = Counter("zkv_sibling_writes", "w", registry=ref)
    warnings = Counter("zkv_sibling_warnings", "w", registry=ref)
    refusals = Counter("zkv_sibling_refusals", "r", registry=ref)
    for _ in range(refused):
        m.note_sibling_refusal(b"k", 101)
        refusals.inc()
    for count, write in seen:
        warn = count > 50
        m.note_siblings(count, write, warn)
        hist.observe(count)
        if write:
            writes.inc()
        if warn:
            warnings.inc()
    assert samples(m.registry) == samples(ref)
    assert m.summary()["sibling_writes"] == sum(w for _, w in seen)


def test_long_loop_turns_are_counted_and_logged_at_most_every_ten_seconds(caplog):
    """stalls.TurnWatch: a turn busy 0.1 s or more counts in zkv_slow_turns_total; 1 s or more
    is logged too, then at most once per LOG_EVERY seconds, that line counting the ones between
    and the longest of them."""
    from zkv.node import stalls

    m = NodeMetrics()
    watch = m.turns
    turns = [(0.0, 0.05), (1.0, 0.2), (2.0, 1.5), (3.0, 2.5), (4.0, 1.2), (5.0, 0.09),
             (13.0, 1.1), (30.0, 3.0)]  # (began, busy)
    with caplog.at_level("WARNING", logger="zkv.node"):
        for began, busy in turns:
            watch.began = began
            watch.end(began + busy)
    assert m.slow_turns._value.get() == 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("every request queued meanwhile waited" in x for x in lines)
    assert lines[0].startswith("a loop turn took 1.50 s:")
    assert lines[1].startswith("a loop turn took 1.10 s (2 more over 1 s since the last such "
                               "line, the longest 2.50 s):")
    assert lines[2].startswith("a loop turn took 3.00 s:")
    assert stalls.LOG_EVERY == 10.0 and "zkv_slow_turns_total" in m.exported_names()


# ---- gauges exported by a node core (status.MetricsExport), no sockets -----------------------
@pytest.fixture
def core(tmp_path):
    """Node d's core with members a, b, c and e (N=3, 16 partitions); its clock is core.t."""
    from zkv.config import NodeConfig
    from zkv.node import ownership as own
    from zkv.node.core import NodeCore
    from zkv.node.stores import open_stores

    cfg = NodeConfig(id="d", listen="tcp://127.0.0.1:1", gossip="tcp://127.0.0.1:2",
                     data_dir=str(tmp_path / "d"), ring_size=16, n=3, rack="r")
    store, handoff = open_stores(cfg)
    node = NodeCore(cfg, store, handoff, incarnation=1, now=0.0)
    try:
        node.membership.merge([_peer(x) for x in "abce"])
        node._adopt(own.founding("d", "r", [(m.id, m.rack) for m in node.membership.table()
                                            if m.id != "d"]))
        yield node
    finally:
        store.close()
        handoff.close()


def _peer(x: str, incarnation: int = 1, heartbeat: int = 1):
    """Member x's record (endpoints by its name), as its own gossip would carry it."""
    from zkv.wire import Member

    port = 7100 + "abcef".index(x)
    return Member(x, f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 100}", "r",
                  incarnation, heartbeat)


def _series(core, name: str) -> dict[str, float]:
    """{first label value: value} of every sample of `name` in the core's registry."""
    return {tuple(s.labels.values())[0]: s.value for fam in core.metrics.registry.collect()
            for s in fam.samples if s.name == name}


def _export(core, states: dict[str, str]) -> None:
    from zkv.node.status import GAUGES_EVERY

    core.t += GAUGES_EVERY  # a gauge refresh is due
    core.export.export(core.t, states)


def test_hint_gauges_have_no_series_once_the_owners_hints_were_delivered_and_swept(core):
    """The hint sweep forgets an owner with no hints left; a refresh after it used to skip
    that owner, so zkv_hint_backlog{owner} stayed at its last value (1056 while `zkv status`
    said 0) and `sum(zkv_hint_backlog) or vector(0)` never reached 0."""
    from zkv._core import dvv

    h = core.handoff
    v = dvv.update_encoded(None, b"", b"value", "c")
    h.merge("a", b"k1", v)
    h.merge("a", b"k2", v)
    h.merge("b", b"k3", v)
    up = {x: "up" for x in "abce"}
    _export(core, up)
    for name in ("zkv_hint_backlog", "zkv_hint_backlog_bytes", "zkv_hint_oldest_age_seconds"):
        assert set(_series(core, name)) == {"a", "b"}, name
    assert _series(core, "zkv_hint_backlog") == {"a": 2.0, "b": 1.0}
    for key in (b"k1", b"k2"):  # a's hints delivered, then the sweep runs before the refresh
        assert h.delivered("a", key, h.get("a", key))
    core._sweep_hints()
    assert "a" not in h.index
    _export(core, up)
    for name in ("zkv_hint_backlog", "zkv_hint_backlog_bytes", "zkv_hint_oldest_age_seconds"):
        assert set(_series(core, name)) == {"b"}, name
    assert h.delivered("b", b"k3", h.get("b", b"k3"))
    _export(core, up)  # delivered, not swept yet: still no series
    assert _series(core, "zkv_hint_backlog") == {}
    assert _series(core, "zkv_hint_oldest_age_seconds") == {}
    from zkv.node.status import status
    assert status(core)["hints"]["backlog"] == 0


def test_member_up_has_no_series_for_a_member_no_longer_in_the_table(core):
    """A member that left (or was removed) is no longer exported: its zkv_member_up series used
    to keep its last value (1, or 0.5) for as long as the node ran."""
    _export(core, {"a": "up", "b": "suspect", "c": "down", "e": "up"})
    assert _series(core, "zkv_member_up") == {"a": 1.0, "b": 0.5, "c": 0.0, "e": 1.0}
    core.membership.forget("a")
    core.membership.forget("b")
    # (the round's states are computed from the table, so a forgotten member is not in them;
    # one in them that is no longer a peer is skipped too)
    _export(core, {"b": "suspect", "c": "down", "e": "up"})
    assert _series(core, "zkv_member_up") == {"c": 0.0, "e": 1.0}
    assert _series(core, "zkv_peers") == {"up": 1.0, "suspect": 0.0, "down": 1.0}


def test_owner_reads_count_as_requests_in_the_exposition_and_in_zkv_top(core):
    """A get the client coordinates itself reaches a node as a Read of its own copy; it was
    counted only in zkv_owner_reads_total, so the node's zkv_requests_total (the dashboard's
    requests panel) and `zkv top`'s ops/s showed 0 under a read-only load. It counts as op
    "read" (no latency: one local lookup); a Read answered "not an owner" is not counted."""
    from zkv import top
    from zkv.node.status import status
    from zkv.wire import Read

    ring = core.membership.ring()
    mine = [b"k%d" % i for i in range(200) if "d" in ring.preflist_for_key(b"k%d" % i)]
    other = next(b"k%d" % i for i in range(200) if "d" not in ring.preflist_for_key(b"k%d" % i))
    first = top._sample(status(core))
    for key in mine[:5]:
        core._on_read(b"client", Read(1, key))
    core._on_read(b"client", Read(2, other))  # not an owner: the client asks a coordinator
    core.t += 2.0
    doc = status(core)
    assert doc["metrics"]["ops"]["read"] == 5
    assert _series(core, "zkv_requests_total") == {"read": 5.0}
    assert _series(core, "zkv_owner_reads_total") == {"owner": 5.0, "not_owner": 1.0}
    assert "read" not in {s.labels.get("op") for fam in core.metrics.registry.collect()
                          for s in fam.samples if s.name == "zkv_request_seconds_count"}
    ops_s, p99, _, reads_s = top.rates(first, top._sample(doc))
    assert reads_s == pytest.approx(5 / 2.0)
    assert ops_s == pytest.approx(5 / 2.0) and "read" not in p99  # (nothing else was asked)


def test_a_peer_found_down_up_again_or_restarted_is_logged_once_per_change(core, caplog):
    """PeerLog: one INFO line per change of a peer's state in this node's failure detector
    (down, up again) or a new life of it (restart); none per heartbeat or while nothing
    changes; a flapping peer at most two lines per PEER_LOG_EVERY seconds, the next counting
    the changes between and saying the state it is in then."""
    from zkv.node.status import PEER_LOG_EVERY

    ms = core.membership
    hb = {x: 1 for x in "abce"}

    def round_at(t: float, beating: str = "abce", restarted: int = 1) -> list[str]:
        """At t: the members in `beating` beat (a with incarnation `restarted`), then a round."""
        caplog.clear()
        core.t = t
        for x in beating:
            hb[x] += 1
            ms.merge([_peer(x, restarted if x == "a" else 1, hb[x])], via=x)
        core.export.export(t, {nid: ms.state(nid)[0] for nid in ms.peers})
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("peer ")]

    caplog.set_level("INFO", logger="zkv.node")
    t = 0.0
    for _ in range(10):  # all beating: no line
        t += 0.2
        assert round_at(t) == []
    t += 5.0  # only b, c and e beat on: a is down, one line, not one per round
    lines = round_at(t, "bce")
    assert len(lines) == 1 and lines[0].startswith("peer a is down here: no heartbeat for")
    down_at = t
    for _ in range(20):
        t += 0.2
        assert round_at(t, "bce") == []
    t += 0.2
    assert round_at(t) == [f"peer a is up again after {t - down_at:.1f} s down"]
    for _ in range(10):
        t += 0.2
        assert round_at(t) == []
    # flapping: down and up again every ~3 s for a minute -> two lines at most every 10 s
    said, start = [], t
    while t < start + 60:
        t += 3.0
        said += round_at(t, "bce")
        t += 0.2
        said += round_at(t)
    assert 1 <= len(said) <= 2 * (60 / PEER_LOG_EVERY + 1) < 36, said  # (not 36: one a change)
    assert any("change(s) of its state" in x and "flapping?" in x for x in said), said
    for _ in range(60):  # it stays up: the state it ends in is logged once, then nothing
        t += 0.2
        said += round_at(t)
    assert said[-1].startswith("peer a is up"), said
    # a new life of a (a restart: its disk lost or not) within its down_after: one line
    t += 0.2
    assert round_at(t, restarted=2) == ["peer a is up; it restarted (incarnation 1 -> 2)"]
    t += 0.2
    assert round_at(t, restarted=2) == []


def test_peers_heard_first_after_this_nodes_restart_are_not_said_to_have_restarted(core,
                                                                                   caplog):
    """A restarted node knows its peers from its cluster.json, without their incarnations
    (0): the first record it hears of each is no restart of theirs. An outside run read
    "peer n1 is up; it restarted (incarnation 0 -> ...)" for every peer of a restarted node."""
    ms = core.membership
    caplog.set_level("INFO", logger="zkv.node")
    ms.merge([_peer("f", 0, 0)])  # (as loaded from this node's own disk)
    core.export.export(1.0, {nid: ms.state(nid)[0] for nid in ms.peers})
    ms.merge([_peer("f", 1_700_000_000_000, 1)], via="f")  # its own record, first heard
    core.export.export(1.2, {nid: ms.state(nid)[0] for nid in ms.peers})
    ms.merge([_peer("f", 1_700_000_000_000, 2)], via="f")
    core.export.export(1.4, {nid: ms.state(nid)[0] for nid in ms.peers})
    assert not [r.getMessage() for r in caplog.records if "restarted" in r.getMessage()]
    ms.merge([_peer("f", 1_700_000_000_999, 1)], via="f")  # a new life of it: said
    core.export.export(1.6, {nid: ms.state(nid)[0] for nid in ms.peers})
    assert [r.getMessage() for r in caplog.records if "restarted" in r.getMessage()] == [
        "peer f is up; it restarted (incarnation 1700000000000 -> 1700000000999)"]


def test_a_long_start_is_no_stand_still(core, caplog):
    """The Merkle rebuild of a start over 500,000 keys took 10.8 s, then the node logged
    "this node stood still for 10.8 s" and counted it (an outside run): the transport tells
    the core when the start's work ended (`start_ended`)."""
    caplog.set_level("INFO", logger="zkv.node")
    core.t = core.quiet_until = 10.0  # the start began (its rebuild: ~11 s)
    core.start_ended(21.0)
    core.tick(21.1)
    assert core.metrics.stood_still._value.get() == 0
    assert not [r for r in caplog.records if "stood still" in r.getMessage()]
    core.tick(30.0)  # a real stand-still after it is still one
    assert core.metrics.stood_still._value.get() == 1


def test_a_process_that_stood_still_mid_turn_is_not_also_a_slow_turn(core, caplog):
    """A SIGSTOP (or frozen VM) during a loop turn was logged as a slow turn ("a machine short
    of CPU, a disk blocking writes...") and counted in zkv_slow_turns_total as well as in
    zkv_stood_still_total. The stand-still is now taken out of the turn's time; a turn whose
    own work is long is still one."""
    caplog.set_level("INFO", logger="zkv.node")
    turns = core.metrics.turns
    core.t = core.quiet_until = 10.0  # (the core's last call; nothing due before then)
    turns.began = 10.02  # a turn begins, the process is stopped in it for ~5 s
    core.tick(15.02)  # the core's first call after it: it stood still
    turns.end(15.06)
    assert core.metrics.stood_still._value.get() == 1
    assert core.metrics.slow_turns._value.get() == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(x.startswith("this node stood still for 5.0 s") for x in lines), lines
    assert not any("a loop turn took" in x for x in lines), lines
    turns.began = 15.1  # a turn of 1.5 s of work, no stand-still: slow, logged
    core.tick(15.2)
    turns.end(16.6)
    assert core.metrics.slow_turns._value.get() == 1
    assert any(r.getMessage().startswith("a loop turn took 1.50 s") for r in caplog.records)


def test_a_node_with_keys_labels_its_hot_keys_by_hash_on_the_plain_metrics_port(core):
    """The metrics port has no authentication: a node with --keys showed its hottest key
    names there (zkv_hot_key_ops{key="session:...secret-token..."}), which the keys keep off
    the network (an outside security audit). With keys, the label is a BLAKE3 hash keyed by
    a secret the cluster key derives (a plain hash of a guessable key is as good as its
    name: a review); `zkv top`, an authenticated status request, still names the keys."""
    import blake3

    from zkv.node.metrics import key_digest, label_secret

    secret = b"session:\xff\xfe\x00secret-token-4242"
    for _ in range(40):
        core.metrics.hot.add(secret)
    ms = core.membership
    core.metrics.observe_cluster(ms, ms.ring(), core.t)
    assert core.metrics.hot_keys.rows[0][0].startswith("session:")  # no keys: the name
    core.metrics.key_secret = label_secret(b"k" * 32)  # (as NodeCore sets it with --keys)
    core.metrics.observe_cluster(ms, ms.ring(), core.t)
    (label, count) = core.metrics.hot_keys.rows[0]
    assert label == key_digest(secret, label_secret(b"k" * 32))
    assert label != "blake3:" + blake3.blake3(secret).hexdigest()[:16]  # (keyed)
    assert label != key_digest(secret, label_secret(b"j" * 32))  # (another cluster's key)
    assert "secret" not in str(core.metrics.hot_keys.rows)
    assert core.metrics.summary()["hot_keys"][0][0].startswith("session:")  # zkv top's


def test_one_address_cannot_hold_every_slot_of_the_metrics_port(monkeypatch):
    """64 connections from one address, each sending a byte a second, held all 32 slots and
    failed 37 of 40 /healthz probes (the k8s manifest's liveness probe would restart the pod:
    an outside security run). One address holds at most HTTP_MAX_PER_ADDRESS at once; a
    probe from another is served, and the address's slots come back as its connections go."""
    import socket

    from zkv.node import metrics

    monkeypatch.setattr(metrics, "HTTP_TIMEOUT", 2.0)
    m = NodeMetrics()
    port = free_port()
    m.serve(port, "127.0.0.1", ready=lambda: (True, {}))
    held = []
    try:
        for _ in range(metrics.HTTP_MAX_CONNECTIONS + 8):  # all from 127.0.0.9
            s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0))
            s.sendall(b"GET /hea")
            held.append(s)
        wait_for(lambda: m._server.refused == metrics.HTTP_MAX_CONNECTIONS, timeout=10)
        assert http(f"http://127.0.0.1:{port}/healthz")[0] == 200  # (from 127.0.0.1)
        for s in held[metrics.HTTP_MAX_PER_ADDRESS:]:  # refused at once: closed
            s.settimeout(5)
            assert s.recv(100) == b""
        for s in held:
            s.close()
        wait_for(lambda: not m._server.per_address, timeout=10)
    finally:
        for s in held:
            s.close()
        m.close()


def test_a_read_of_a_corrupt_record_is_counted_exported_and_shown_by_zkv_status(
        core, monkeypatch, capsys):
    """A record whose CRC fails when read is never returned (DESIGN.md 4) and was logged
    only: zkv_corrupt_records_total{store} counts it, zkv_corrupt_keys{store} holds its key
    until a write repairs it, and `zkv status` prints a CORRUPT RECORDS line meanwhile."""
    import argparse
    import os

    from zkv import cli
    from zkv._core import record
    from zkv.node.status import status

    store = core.store
    store.put(b"rotten", b"v" * 100)
    store.put(b"sound", b"s" * 100)
    store.flush()
    up = {x: "up" for x in "abce"}
    _export(core, up)
    assert _series(core, "zkv_corrupt_records_total") == {"data": 0.0, "handoff": 0.0}
    damaged = False
    for name in os.listdir(store.path):
        if name.endswith(".data"):
            path = os.path.join(store.path, name)
            image = open(path, "rb").read()
            for off, size, _flags, key, _ok in record.scan(image):
                if key == b"rotten":  # a bit of its value flipped on disk
                    with open(path, "r+b") as fh:
                        fh.seek(off + size - 1)
                        fh.write(bytes([image[off + size - 1] ^ 0x04]))
                    damaged = True
    assert damaged
    assert store.get(b"rotten") is None and store.get(b"sound") == b"s" * 100
    assert store.get(b"rotten") is None  # (counted once: its keydir entry went with it)
    _export(core, up)
    assert _series(core, "zkv_corrupt_records_total") == {"data": 1.0, "handoff": 0.0}
    assert _series(core, "zkv_corrupt_keys") == {"data": 1.0, "handoff": 0.0}
    doc = status(core)
    assert doc["storage"]["data"]["corrupt_records"] == 1
    assert doc["storage"]["data"]["corrupt"] == 1

    class Asked:
        def __init__(self, *a, **kw) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def status(self, node):
            return doc

    monkeypatch.setattr("zkv.client.Client", Asked)
    args = argparse.Namespace(node="tcp://127.0.0.1:57600", timeout=1.0, keys=None, json=False)
    assert cli.status_command(args) == 0
    out = capsys.readouterr().out
    assert ("CORRUPT RECORDS in store data: 1 record(s) failed their CRC when read since the "
            "start, 1 key(s) await repair") in out, out
    assert "store handoff" in out and "CORRUPT RECORDS in store handoff" not in out
    store.put(b"rotten", b"repaired")  # (a replica's copy, as the repair writes it)
    _export(core, up)
    assert _series(core, "zkv_corrupt_keys") == {"data": 0.0, "handoff": 0.0}
    assert _series(core, "zkv_corrupt_records_total") == {"data": 1.0, "handoff": 0.0}
