"""The quorum benchmark suite's own logic (zkv.bench): workload mix, zipfian generator,
percentile math, staleness bookkeeping, report writing; and one --quick run on a real cluster."""

from __future__ import annotations

import json
import math
import os
import random
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.bench import baselines, main, stats, workloads
from zkv.bench.report import PLOTS, render_markdown, write_all
from zkv.bench.runner import (
    QuorumConfig,
    aggregate,
    availability_phases,
    first_write,
    goal,
    parse_configs,
)
from zkv.bench.staleness import StalenessTracker

# ---- workload mix -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "B", "C", "F"])
def test_workload_mix_matches_proportions(name):
    wl = workloads.WORKLOADS[name]
    rng = random.Random(1)
    n = 20_000
    got = Counter(wl.choose(rng) for _ in range(n))
    for op, want in ((workloads.READ, wl.read), (workloads.UPDATE, wl.update),
                     (workloads.RMW, wl.rmw)):
        assert abs(got[op] / n - want) < 0.015, (op, got)
    assert set(got) <= {workloads.READ, workloads.UPDATE, workloads.RMW}


def test_ycsb_proportions():
    w = workloads.WORKLOADS
    assert (w["A"].read, w["A"].update) == (0.5, 0.5)
    assert (w["B"].read, w["B"].update) == (0.95, 0.05)
    assert w["C"].read == 1.0
    assert (w["F"].read, w["F"].rmw) == (0.5, 0.5)
    for wl in w.values():
        assert math.isclose(wl.read + wl.update + wl.rmw, 1.0)


def test_parse_workloads():
    assert [w.name for w in workloads.parse_workloads("a, F,C")] == ["A", "F", "C"]
    with pytest.raises(ValueError):
        workloads.parse_workloads("A,Z")
    with pytest.raises(ValueError):
        workloads.parse_workloads(",")


def test_op_stream_is_deterministic_from_seed():
    def ops(seed):
        s = workloads.OpStream(workloads.WORKLOADS["A"], 1000, random.Random(seed))
        return [s.next() for _ in range(500)]

    assert ops(7) == ops(7)
    assert ops(7) != ops(8)


# ---- zipfian ------------------------------------------------------------------------------------


def test_zipfian_constant_is_ycsb():
    assert workloads.ZIPFIAN_CONSTANT == 0.99
    z = workloads.ZipfianGenerator(100, random.Random(0))
    assert z.theta == 0.99


@given(items=st.integers(1, 5000), seed=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None)
def test_zipfian_range(items, seed):
    z = workloads.ZipfianGenerator(items, random.Random(seed))
    s = workloads.ScrambledZipfian(items, random.Random(seed))
    for _ in range(200):
        assert 0 <= z.next_rank() < items
        assert 0 <= s.next_index() < items


def test_zipfian_skew():
    n, draws = 1000, 100_000
    z = workloads.ZipfianGenerator(n, random.Random(3))
    c = Counter(z.next_rank() for _ in range(draws))
    # rank 0 has probability 1/zeta(n): about 13% for n=1000, theta=0.99
    p0 = 1 / workloads.zeta(n, 0.99)
    assert abs(c[0] / draws - p0) < 0.01
    assert c[0] > c[1] > c[5] > c[50]
    top10 = sum(c[k] for k in range(n // 10))
    assert top10 / draws > 0.6  # the hottest 10% of records take most requests
    assert len(c) > n // 2  # yet the tail is reached


def test_zipfian_ratio_follows_power_law():
    n, draws = 200, 200_000
    z = workloads.ZipfianGenerator(n, random.Random(11))
    c = Counter(z.next_rank() for _ in range(draws))
    # P(rank 0) / P(rank 3) = 4**0.99 ~ 3.96
    assert 3.3 < c[0] / c[3] < 4.7


def test_zipfian_deterministic_and_scrambled_spread():
    a = workloads.ScrambledZipfian(10_000, random.Random(5))
    b = workloads.ScrambledZipfian(10_000, random.Random(5))
    xa = [a.next_index() for _ in range(1000)]
    assert xa == [b.next_index() for _ in range(1000)]
    hottest = Counter(xa).most_common(1)[0][0]
    assert hottest == workloads.fnv1a64(0) % 10_000  # rank 0, scattered by FNV


def test_zipfian_rejects_bad_arguments():
    with pytest.raises(ValueError):
        workloads.ZipfianGenerator(0, random.Random(0))
    with pytest.raises(ValueError):
        workloads.ZipfianGenerator(10, random.Random(0), theta=1.0)


def test_value_header_round_trip():
    rng = random.Random(0)
    wid = workloads.write_id(3, 7, 123456)
    v = workloads.make_value(wid, 1024, rng)
    assert len(v) == 1024
    assert workloads.value_write_id(v) == wid
    assert workloads.value_write_id(b"something else entirely") is None
    assert workloads.value_write_id(b"short") is None
    with pytest.raises(ValueError):
        workloads.make_value(wid, 8, rng)
    with pytest.raises(ValueError):
        workloads.write_id(1 << 16, 0, 0)
    assert workloads.key_name(42) == b"user000000000042"
    assert workloads.key_name(42, b"p:") == b"p:user000000000042"


# ---- percentiles and histograms -------------------------------------------------------------


def test_percentile_known_values():
    xs = list(range(1, 101))
    assert stats.percentile(xs, 50) == 50
    assert stats.percentile(xs, 95) == 95
    assert stats.percentile(xs, 99) == 99
    assert stats.percentile(xs, 99.9) == 100
    assert stats.percentile(xs, 100) == 100
    assert stats.percentile(xs, 0) == 1
    assert stats.percentile([7.0], 99.9) == 7.0
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile(xs, 101)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([1.0, 25.0, 50.0, 95.0, 99.0, 99.9, 100.0]))
@settings(max_examples=150, deadline=None)
def test_percentile_is_nearest_rank(xs, p):
    xs = sorted(xs)
    v = stats.percentile(xs, p)
    assert v in xs
    n = len(xs)
    assert sum(x <= v for x in xs) >= p / 100 * n - 1e-9
    assert sum(x < v for x in xs) < p / 100 * n + 1e-9


def test_summarize_reports_ms_and_labels():
    s = stats.summarize([0.001 * k for k in range(1, 1001)])  # 1..1000 ms
    assert s["count"] == 1000
    assert s["p50"] == pytest.approx(500)
    assert s["p95"] == pytest.approx(950)
    assert s["p99"] == pytest.approx(990)
    assert s["p99.9"] == pytest.approx(999)
    assert s["max"] == pytest.approx(1000) and s["min"] == pytest.approx(1)
    assert stats.summarize([])["p99"] is None


def test_cdf_points_monotone_and_complete():
    rng = random.Random(2)
    xs = [rng.expovariate(1000) for _ in range(5000)]
    pts = stats.cdf_points(xs, points=100)
    assert pts[-1][1] == 1.0 and pts[-1][0] == pytest.approx(max(xs) * 1e3)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(pts, pts[1:], strict=False))
    assert 90 <= len(pts) <= 102
    assert stats.cdf_points([]) == []


def test_histogram_percentiles_and_merge():
    rng = random.Random(4)
    xs = [rng.lognormvariate(-7, 1) for _ in range(20_000)]
    a, b = stats.Histogram(), stats.Histogram()
    for i, x in enumerate(xs):
        (a if i % 2 else b).record(x)
    a.merge(b)
    assert a.total == len(xs)
    srt = sorted(xs)
    for p in (50, 99, 99.9):
        exact = stats.percentile(srt, p)
        assert exact <= a.percentile(p) <= exact * 2 ** (1 / 16) * 1.0001
    with pytest.raises(ValueError):
        a.merge(stats.Histogram(growth=2.0))
    d = a.to_dict()
    assert sum(c for _, c in d["buckets"]) == len(xs)


def test_rate_buckets():
    assert stats.rate_buckets([0.1, 0.2, 1.5, 2.9, 3.5], 0.0, 3.0, 1.0) == [2, 1, 1]


# ---- staleness -----------------------------------------------------------------------------------


def test_staleness_fresh_and_stale_reads():
    t = StalenessTracker()
    t.add_write("k", 1, start=0.0, ack=1.0)
    t.add_write("k", 2, start=2.0, ack=3.0)
    t.add_read("k", 3.5, [2])  # saw the latest: fresh
    t.add_read("k", 3.5, [1])  # missed write 2 (1 acked before 2 began): stale
    t.add_read("k", 4.1, [])  # found nothing: stale
    t.add_read("k", 0.5, [1])  # before any ack: not counted
    t.add_read("other", 9.0, [1])  # no write of that key: not counted
    r = t.analyze()
    assert (r["reads"], r["stale"], r["uncounted"]) == (3, 2, 2)
    assert r["fraction"] == pytest.approx(2 / 3)
    assert t.classify("k", 3.5, [1]) == (True, pytest.approx(0.5))


def test_staleness_newer_overlapping_and_unacked_writes_count_as_fresh():
    t = StalenessTracker()
    t.add_write("k", 1, 0.0, 1.0)
    t.add_write("k", 2, 2.0, 3.0)  # latest acknowledged before the reads
    t.add_write("k", 3, 2.5, 5.0)  # acknowledged later: newer
    t.add_write("k", 4, 1.5, 2.5)  # overlaps write 2: may follow it causally
    t.add_write("k", 5, 1.2, None)  # never acknowledged: may have been stored
    for wid in (3, 4, 5):
        assert t.classify("k", 4.0, [wid])[0] is False
    assert t.classify("k", 4.0, [1, 3])[0] is False  # siblings: one is new enough
    assert t.classify("k", 4.0, [1, 999])[0] is True  # unknown ids are older
    assert t.classify("k", 2.9, [1])[0] is True  # write 4 is latest at 2.9 and 1 preceded it


def test_staleness_buckets_by_time_since_write_and_tags():
    t = StalenessTracker()
    t.add_write("k", 1, 0.0, 0.5)
    t.add_write("k", 2, 1.0, 1.0)
    t.add_read("k", 1.0005, [1], tag="x")  # 0.5 ms after write 2: stale, bucket 0-1 ms
    t.add_read("k", 1.003, [2], tag="x")  # 3 ms: fresh, bucket 2-5 ms
    t.add_read("k", 1.003, [1], tag="y")
    r = t.analyze("x", edges_ms=(1, 2, 5))
    assert [(b["reads"], b["stale"]) for b in r["buckets"]] == [(1, 1), (0, 0), (1, 0), (0, 0)]
    assert r["buckets"][0]["fraction"] == 1.0 and r["buckets"][1]["fraction"] is None
    assert r["buckets"][-1]["hi_ms"] is None and r["buckets"][-1]["lo_ms"] == 5
    assert t.analyze("y")["stale"] == 1
    assert t.analyze("z")["reads"] == 0 and t.analyze("z")["fraction"] is None


def test_staleness_bulk_events_and_out_of_order_acks():
    t = StalenessTracker()
    t.add_events([("k", 2, 2.0, 3.0), ("k", 1, 0.0, 1.0)], [("k", 3.1, [1])], tag="t")
    assert t.analyze("t")["stale"] == 1


# ---- configs, settings, baselines parsing ------------------------------------------------------


def test_parse_configs():
    cs = parse_configs("3,2,2; 3,1,1;3,1,3;3,3,1")
    assert cs == [QuorumConfig(3, 2, 2), QuorumConfig(3, 1, 1), QuorumConfig(3, 1, 3),
                  QuorumConfig(3, 3, 1)]
    assert [c.strict for c in cs] == [True, False, True, True]
    assert cs[0].label == "N3 R2 W2"
    strict = parse_configs("3,2,2,2,2;5,1,1,1,3")  # N,R,W,PR,PW: primary quorums
    assert strict == [QuorumConfig(3, 2, 2, 2, 2), QuorumConfig(5, 1, 1, 1, 3)]
    assert strict[0].label == "N3 R2 W2 PR2 PW2"
    for bad in ("3,2", "3,4,1", "a,b,c", "3,0,1", "", "3,2,2,2", "3,2,2,0,2", "3,2,2,2,4"):
        with pytest.raises(ValueError):
            parse_configs(bad)


def test_main_rejects_bad_arguments(capsys, tmp_path):
    assert main(["--configs", "3,4,4", "--out", str(tmp_path)]) == 2
    assert main(["--configs", "5,2,2", "--nodes", "3", "--out", str(tmp_path)]) == 2
    assert main(["--workloads", "Q", "--out", str(tmp_path)]) == 2
    assert "zkv bench" in capsys.readouterr().err
    # refused before anything runs (each was taken, and failed after the run or mid-way)
    a_file = tmp_path / "file"
    a_file.write_text("")
    for argv, said in ((["--out", str(a_file)], "a file, not a directory"),
                       (["--timeout", "0"], "--timeout must be positive"),
                       (["--availability-duration", "-1"], "must not be negative"),
                       (["--security", "--throughput"], "each run alone"),
                       (["--configs", "5,3,3"], "at least N nodes: --nodes 5 (now 3)"),
                       (["--configs", "3,2,2;3,2,2"], "given twice"),
                       (["--configs", ""], "no configuration given"),
                       (["--cluster", "garbage"], "--cluster 'garbage': expected"),
                       (["--value-size", "17000000"], "above a node's value limit")):
        assert main([*argv, "--out", str(tmp_path)] if "--out" not in argv else argv) == 2
        assert said in capsys.readouterr().err, argv


def test_quick_settings():
    from zkv.bench import build_parser, settings_from_args

    s = settings_from_args(build_parser().parse_args(["--quick", "--records", "77"]))
    assert s.quick and s.records == 77 and s.duration <= 2
    assert [c.label for c in s.configs] == ["N3 R2 W2", "N3 R1 W1", "N3 R1 W3", "N3 R3 W1"]
    s = settings_from_args(build_parser().parse_args(["--cluster", "tcp://a:1, tcp://b:2"]))
    assert s.cluster == ["tcp://a:1", "tcp://b:2"]


def test_parse_redis_csv_and_mix():
    text = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms"\n'
            '"SET","50000.00","0.201","0.080","0.191"\n'
            '"GET","40000.00","0.197","0.064","0.190"\n')
    t = baselines.parse_redis_csv(text)
    assert t["SET"]["rps"] == 50000 and t["GET"]["p50_latency_ms"] == 0.19
    assert baselines.parse_redis_csv('"SET: rps","1000"\n"GET","2000"\n')["GET"]["rps"] == 2000
    assert baselines.mixed_rps(40000, 40000, 0.5) == pytest.approx(40000)
    assert baselines.mixed_rps(100, 50, 0.5) == pytest.approx(1 / (0.005 + 0.01))


def test_missing_redis_is_reported(monkeypatch):
    monkeypatch.setattr(baselines.shutil, "which", lambda name: None)
    r = baselines.redis_baseline(1024, 4)
    assert r["available"] is False and "redis-server" in r["reason"]


# ---- aggregation and reports -------------------------------------------------------------------


def _part(client, start, lat, reads, sib, timeline=None):
    return {"client": client, "started": start, "finished": start + 1.0,
            "lat_all": array("d", lat), "lat_read": array("d", lat[: len(lat) // 2]),
            "lat_write": array("d", lat[len(lat) // 2:]),
            "errors": {"quorum": 1, "timeout": 2, "unavailable": 0, "other": 0},
            "reads": reads, "sibling_reads": sib, "writes": [], "read_events": [],
            "timeline": timeline}


def test_aggregate_merges_workers():
    agg = aggregate([_part(0, 10.0, [0.001] * 100, 50, 5), _part(1, 10.2, [0.002] * 100, 50, 0)])
    assert agg["ops"] == 200
    assert agg["seconds"] == pytest.approx(1.2)
    assert agg["throughput"] == pytest.approx(200 / 1.2)
    assert agg["latency_ms"]["p50"] == pytest.approx(1.0)
    assert agg["latency_ms"]["p99"] == pytest.approx(2.0)
    assert agg["failed"] == 6 and agg["timeouts"] == 4
    assert agg["error_rate"] == pytest.approx(6 / 206)
    assert agg["sibling_rate"] == pytest.approx(0.05)


def test_availability_phases_split_by_start_time():
    tl = (array("d", [0.5, 1.5, 1.6, 2.5]), array("d", [0.001, 0.5, 0.6, 0.002]),
          array("b", [1, 0, 1, 1]))
    ph = availability_phases([_part(0, 0.0, [], 0, 0, tl)], 0.0, 1.0, 2.0, 3.0)
    assert ph["before"]["success_rate"] == 1.0 and ph["before"]["ops"] == 1
    assert ph["down"]["success_rate"] == 0.5 and ph["down"]["failed"] == 1
    assert ph["down"]["latency_ms"]["p50"] == pytest.approx(600)
    assert ph["after"]["ok"] == 1


def test_fault_phases_count_refused_writes_and_the_first_write_after_the_fault():
    #           before  down: write ok, write refused, read failed  after
    tl = (array("d", [0.5, 1.2, 1.1, 1.5, 2.5]), array("d", [0.001, 0.3, 0.9, 0.2, 0.002]),
          array("b", [1, 1, 0, 0, 1]), array("b", [1, 1, 1, 0, 1]), array("b", [0, 0, 1, 2, 0]))
    ph = availability_phases([_part(0, 0.0, [], 0, 0, tl)], 0.0, 1.0, 2.0, 3.0)
    assert (ph["before"]["writes"], ph["before"]["writes_refused"]) == (1, 0)
    assert (ph["down"]["writes"], ph["down"]["writes_refused"]) == (2, 1)
    assert ph["down"]["failed"] == 2 and ph["down"]["errors"] == {"quorum": 1, "timeout": 1}
    fw = first_write([_part(0, 0.0, [], 0, 0, tl)], 1.0)
    assert fw["outcome"] == "quorum" and not fw["ok"]  # started at 1.1, before the one at 1.2
    assert fw["started_after_ms"] == pytest.approx(100) and fw["latency_ms"] == pytest.approx(900)
    assert first_write([_part(0, 0.0, [], 0, 0, tl)], 3.0) is None


def test_fault_flags():
    from zkv.bench import build_parser, settings_from_args

    s = settings_from_args(build_parser().parse_args([]))
    assert s.faults == ["pause", "kill", "partition"] and s.fault_seconds >= 6.0
    s = settings_from_args(build_parser().parse_args(["--faults", "kill, pause",
                                                      "--fault-seconds", "2"]))
    assert s.faults == ["kill", "pause"] and s.fault_seconds == 2.0
    for bad in (["--faults", "flood"], ["--faults", ""], ["--fault-seconds", "0"]):
        with pytest.raises(ValueError):
            settings_from_args(build_parser().parse_args(bad))


def fake_results(redis=True) -> dict:
    rng = random.Random(9)
    runs = []
    tracker = StalenessTracker()
    tracker.add_write(1, 1, 0.0, 0.001)
    tracker.add_read(1, 0.002, [1], tag="t")
    tracker.add_read(1, 0.5, [], tag="t")
    for cfg in (QuorumConfig(3, 2, 2), QuorumConfig(3, 1, 1)):
        for wl in ("A", "C", "F"):
            lat = [rng.expovariate(500) for _ in range(300)]
            agg = aggregate([_part(0, 0.0, lat, 100, 3)])
            runs.append({"config": cfg.label, "n": 3, "r": cfg.r, "w": cfg.w,
                         "strict": cfg.strict, "workload": wl, **agg,
                         "staleness": tracker.analyze("t")})
    red = {"available": False, "reason": "not on PATH: redis-server"}
    if redis:
        red = {"available": True, "value_bytes": 1024, "connections": 8, "requests": 1000,
               "version": "Redis server v=7", "tests": {"GET": {"rps": 50000.0},
                                                        "SET": {"rps": 40000.0}},
               "mix_rps": {"A": 44444.0, "B": 49000.0, "C": 50000.0}}
    tl = (array("d", [0.1, 1.1, 2.1]), array("d", [0.001, 0.4, 0.002]), array("b", [1, 0, 1]))
    res = {"version": 1, "settings": {"nodes": 3, "records": 10, "value_size": 1024,
                                      "duration": 1.0, "clients": 1, "inflight": 2,
                                      "sync": "interval", "seed": 1, "quick": True,
                                      "cluster": None},
           "machine": {"cpus": 2, "python": "3.11"},
           "baselines": {"zmq_echo": {"available": True, "payload_bytes": 1088,
                                      "latency_ms": stats.summarize([0.0001] * 10),
                                      "pipelined_depth": 8, "pipelined_rps": 30000.0},
                         "redis": red},
           "load": [{"n": 3, "records": 10, "seconds": 0.1, "rate": 100.0}],
           "runs": runs,
           "availability": [{"config": "N3 R2 W2", "n": 3, "r": 2, "w": 2, "workload": "A",
                             "paused_node": "node3", "paused_seconds": 1.0,
                             "phases": availability_phases([_part(0, 0, [], 0, 0, tl)],
                                                           0.0, 1.0, 2.0, 3.0)}],
           "notes": []}
    res["goal"] = goal(res)
    return res


def test_goal_ratios():
    g = fake_results()["goal"]
    run = fake_results()["runs"][0]
    assert g["throughput_ratio"] == pytest.approx(run["throughput"] / 44444.0)
    assert g["p99_ratio"] == pytest.approx(run["latency_ms"]["p99"] / 0.1)
    assert g["throughput_met"] is False and g["p99_met"] is False
    g = fake_results(redis=False)["goal"]
    assert g["throughput_ratio"] is None and "redis" in g["throughput_missing"]


def test_write_all_outputs(tmp_path):
    pytest.importorskip("matplotlib")
    res = fake_results()
    paths = write_all(res, str(tmp_path))
    doc = json.loads((tmp_path / "results.json").read_text())
    for key in ("settings", "machine", "baselines", "runs", "availability", "goal", "load"):
        assert key in doc
    run = doc["runs"][0]
    for key in ("throughput", "latency_ms", "errors", "timeouts", "sibling_rate", "staleness",
                "cdf"):
        assert key in run
    assert set(run["latency_ms"]) >= {"p50", "p95", "p99", "p99.9"}
    md = (tmp_path / "report.md").read_text()
    for text in ("## Goal", "## Baselines", "| N3 R2 W2 | A |", "## Measured staleness",
                 "## Availability", "latency_cdf.png", "x redis"):
        assert text in md
    for name in PLOTS.values():
        p = tmp_path / name
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.basename(paths["markdown"]) == "report.md"


def test_missing_baselines_and_plots_are_reported():
    res = fake_results(redis=False)
    res["baselines"]["zmq_echo"] = {"available": False, "reason": "boom"}
    md = render_markdown(res, None, "matplotlib is not installed")
    assert "redis-benchmark: **missing** (not on PATH: redis-server)" in md
    assert "raw pyzmq echo: **missing** (boom)" in md
    assert "Plots **missing**: matplotlib is not installed" in md


# ---- a real run -----------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_quick_run_on_a_real_cluster(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    rc = main(["--quick", "--out", str(out), "--configs", "3,2,2;3,1,1;3,2,2,2,2",
               "--workloads", "A,F", "--records", "200", "--faults", "pause,kill",
               "--fault-seconds", "1.5"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert [(r["config"], r["workload"]) for r in doc["runs"]] == [
        ("N3 R2 W2", "A"), ("N3 R2 W2", "F"), ("N3 R1 W1", "A"), ("N3 R1 W1", "F"),
        ("N3 R2 W2 PR2 PW2", "A"), ("N3 R2 W2 PR2 PW2", "F")]
    assert [(r["pr"], r["pw"]) for r in doc["runs"]][-1] == (2, 2)
    for r in doc["runs"]:
        assert r["ops"] > 0 and r["latency_ms"]["p99"] > 0
        assert r["staleness"]["reads"] > 0
        if r["strict"]:
            assert r["staleness"]["stale"] == 0  # R + W > N never misses an acknowledged write
    # --quick: the faults hit the first configuration only
    assert [(a["config"], a["fault"]) for a in doc["availability"]] == [
        ("N3 R2 W2", "pause"), ("N3 R2 W2", "kill")]
    for a in doc["availability"]:
        assert a["paused_seconds"] > 1.4 and a["node"] == "node3"
        assert {"before", "down", "after"} == set(a["phases"])
        assert a["phases"]["before"]["ok"] > 0 and a["phases"]["after"]["ok"] > 0
        assert all("writes_refused" in p for p in a["phases"].values())
        assert a["first_write_after_fault"] is not None
    assert doc["baselines"]["zmq_echo"]["available"] is True
    assert "available" in doc["baselines"]["redis"]
    assert doc["goal"]["p99_ratio"] is not None
    assert (out / "report.md").read_text().startswith("# zkv quorum benchmark")
    for name in PLOTS.values():
        assert (out / name).stat().st_size > 1000


@pytest.mark.cluster
def test_configs_whose_n_is_not_the_clusters_are_refused(make_cluster, tmp_path, capsys):
    """--configs "2,2,1" against an N=3 cluster ran at N3 R2 W1 and was reported as "N2 R2
    W1", a strict quorum with stale reads (an outside benchmarking run): refused now."""
    cl = make_cluster(3)
    rc = main(["--cluster", ",".join(cl.endpoints), "--configs", "3,2,2;2,2,1", "--out",
               str(tmp_path / "out"), "--availability-duration", "0"])
    assert rc == 2
    assert "--configs N2 R2 W1: the cluster's N is 3" in capsys.readouterr().err


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_partition_fault_run_in_network_namespaces(tmp_path):
    """The availability run's partition fault: its own cluster, each node on a namespace
    "machine", the last node's link cut and restored mid-workload (root; else a note)."""
    from zkv import netns

    out = tmp_path / "out"
    rc = main(["--quick", "--out", str(out), "--configs", "3,2,2", "--workloads", "A",
               "--records", "100", "--faults", "partition", "--fault-seconds", "1.5"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    if netns.unavailable():
        assert doc["availability"] == [] and any("partition" in n for n in doc["notes"])
        return
    (a,) = doc["availability"]
    assert a["fault"] == "partition" and a["node"] == "node3" and a["paused_seconds"] > 1.4
    assert a["phases"]["before"]["ok"] > 0 and a["phases"]["after"]["ok"] > 0
    assert a["first_write_after_fault"] is not None
    assert "cut" not in " ".join(doc["notes"])  # converged again after the heal
    assert "| partition node3" in (out / "report.md").read_text()


def test_conflict_modes_workload_counts_lost_acknowledged_writes(tmp_path):
    """`zkv bench --conflict-modes` (issue 15): the same concurrent writers against an lww
    and a siblings namespace; siblings + merge never loses an acknowledged add."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "zkv.cli", "bench", "--conflict-modes",
                          "--duration", "1", "--clients", "2", "--inflight", "4", "--keys", "4",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "lww" in out.stdout and "siblings+merge" in out.stdout
    res = json.loads((tmp_path / "conflicts.json").read_text())
    runs = {r["mode"]: r for r in res["runs"]}
    assert runs["siblings+merge"]["acked"] > 0 and runs["siblings+merge"]["lost"] == 0
    assert runs["lww"]["acked"] > 0 and 0 <= runs["lww"]["lost"] <= runs["lww"]["acked"]


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_membership_benchmark_smoke(capsys, monkeypatch):
    """benchmarks/bench_membership.py --smoke: 3 -> 4 -> 3 under workload A (about 20 s)."""
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_membership.py"
    spec = importlib.util.spec_from_file_location("bench_membership", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_membership", mod)  # dataclasses look it up
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["change"] for c in doc["changes"]] == ["join node4", "leave node4"]
    assert doc["final_check"]["lost"] == 0 and doc["final_check"]["checked"] > 0
    assert sum(doc["misses"].values()) == 0
    assert doc["changes"][0]["bytes_moved"] > 0 and doc["changes"][0]["unneeded_transfers"] == 0
    assert doc["changes"][1]["exit_code"] == 0
    assert {g["measure"].split(",")[0] for g in doc["goals"]} >= {
        "bytes moved / minimum", "transfer rate / budget", "client p99 during transfers / before"}


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_availability_benchmark_smoke(capsys, monkeypatch):
    """benchmarks/bench_availability.py --smoke: detection on 5 frozen/killed-node runs and
    duplicate siblings across network cuts (namespaces, root; else reported as skipped)."""
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_availability.py"
    spec = importlib.util.spec_from_file_location("bench_availability", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_availability", mod)
    monkeypatch.syspath_prepend(str(path.parent))  # its namespace run is a spawned process
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--json", "--only", "detect,dups"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for kind in ("pause", "kill"):
        (t,) = doc["detect"][kind]
        assert t["suspected_by_all_s"] is not None and t["up_at_all_again_s"] is not None
    if "skipped" not in doc["netns"]:
        d = doc["netns"]["dups"]
        assert d["cuts"] >= 1 and d["acked"] > 0
        assert d["keys_with_duplicate_siblings"] == 0 and d["acked_missing"] == 0
    assert {g["measure"] for g in doc["goals"]} >= {
        "time until every peer suspects a frozen node"}


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_security_mode_measures_plain_and_curvezmq_in_one_run(tmp_path):
    """`zkv bench --security` (issue 13): workload A against a plain and a CurveZMQ cluster
    in the same run, throughput and p99 of each and their ratios."""
    import subprocess
    import sys

    from zkv.security import has_curve

    if not has_curve():
        pytest.skip("no libsodium-backed CurveZMQ in this pyzmq")
    out = subprocess.run([sys.executable, "-m", "zkv.cli", "bench", "--security", "--duration",
                          "1", "--rounds", "1", "--clients", "1", "--inflight", "4",
                          "--records", "50", "--sync", "none", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr
    assert "curvezmq / plain: throughput" in out.stdout and "p99" in out.stdout
    res = json.loads((tmp_path / "security.json").read_text())
    for mode in ("plain", "curvezmq"):
        m = res["modes"][mode]
        assert m["ops"] > 0 and m["ops_per_second"] > 0 and m["p99_ms"] > 0
    assert res["throughput_ratio"] > 0 and res["p99_ratio"] > 0  # a ratio, not a speed goal


# ---- `zkv bench --throughput` (issue 12) ------------------------------------------------------------
def test_parse_matrix():
    from zkv.bench import parse_matrix

    assert parse_matrix("1,4,16:1,4,16,64") == ([1, 4, 16], [1, 4, 16, 64])
    assert parse_matrix(" 2 : 8 ") == ([2], [8])
    for bad in ("1,4", "a:1", "1:", "0:1", "1:300", "1:2:3"):
        with pytest.raises(ValueError):
            parse_matrix(bad)


def test_throughput_mode_rejects_bad_arguments(capsys, tmp_path):
    assert main(["--throughput", "--matrix", "1:0", "--out", str(tmp_path)]) == 2
    assert main(["--throughput", "--cluster", "tcp://127.0.0.1:1", "--out", str(tmp_path)]) == 2
    assert main(["--throughput", "--batch", "x", "--out", str(tmp_path)]) == 2
    assert main(["--throughput", "--batch", "5000", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "results.json").exists()


def test_cpu_seconds_from_proc():
    from zkv.bench import cpu

    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc")
    t0 = cpu.process_seconds(os.getpid())
    s0 = cpu.self_seconds()
    x = 0
    while cpu.self_seconds() - s0 < 0.05:  # burn a little CPU
        x += 1
    assert cpu.process_seconds(os.getpid()) >= t0
    assert cpu.total_seconds([os.getpid(), os.getpid()]) == pytest.approx(
        2 * cpu.process_seconds(os.getpid()), abs=0.05)
    assert cpu.process_seconds(2 ** 22 + 12345) is None  # no such process
    assert cpu.total_seconds([os.getpid(), 2 ** 22 + 12345]) is None
    assert cpu.per_op_us(0.5, 1000) == pytest.approx(500.0)
    assert cpu.per_op_us(None, 1000) is None and cpu.per_op_us(1.0, 0) is None


def test_batched_echo_client_counts_whole_frames():
    import time

    with baselines.EchoServer() as srv:
        t = time.monotonic() + 0.2
        out = baselines.batched_echo_client(srv.endpoint, 300, batch=4, inflight=10,
                                            start_at=t, end_at=t + 0.3)
    assert out["messages"] > 0 and out["messages"] % 4 == 0  # 3 frames of 4 in flight
    assert len(out["rtt"]) == out["messages"] // 4 and out["cpu_seconds"] >= 0


def test_the_echo_server_exits_when_its_context_term_blocks_and_says_why(monkeypatch, caplog):
    """libzmq 4.3.5 can leave term() blocked for ever after a ROUTER closes right after sending
    to a peer that has just gone (sockcalls.term_within); a socket left open on the echo
    server's context stands in for that ROUTER: term() blocks for certain."""
    import logging
    import threading

    import zmq

    endpoint = f"tcp://127.0.0.1:{baselines.free_port()}"
    ctx = zmq.Context()  # the stopper's (made before zmq.Context is replaced below)
    held: list[zmq.Socket] = []

    class Holding(zmq.Context):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            held.append(self.socket(zmq.DEALER))

    monkeypatch.setattr(zmq, "Context", Holding)
    monkeypatch.setattr(baselines, "quiet_interrupt", lambda: None)  # (not pytest's SIGINT)
    monkeypatch.setattr(baselines, "ECHO_TERM_WAIT", 0.2, raising=False)
    ready = threading.Event()
    server = threading.Thread(target=baselines._echo_server, args=(endpoint, ready),
                              daemon=True)
    stopper = ctx.socket(zmq.DEALER)
    try:
        with caplog.at_level(logging.WARNING):
            server.start()
            assert ready.wait(30) and len(held) == 1
            stopper.connect(endpoint)
            stopper.send(b"__stop__")
            server.join(30)
            assert not server.is_alive(), "the echo server is still in its context's term()"
        assert "term() still blocked" in caplog.text and "bench echo server" in caplog.text
    finally:
        stopper.close(0)
        for s in held:
            s.close(0)  # (the term() left behind returns now)
        ctx.term()


def _fake_cell(clients, inflight, tput, node_us=100.0, client_us=50.0, p99=5.0, get_p50=0.4):
    lat = {"count": 10, "p50": 1.0, "p99": p99, "min": 0.1, "mean": 1.0, "max": p99}
    return {"clients": clients, "inflight": inflight, "driver": "Client", "seconds": 1.0,
            "ops": int(tput), "failed": 0, "throughput": tput, "latency_ms": lat,
            "get_latency_ms": dict(lat, p50=get_p50), "put_latency_ms": lat,
            "service_latency_ms": None, "node_cpu_seconds": 1.0, "node_cpu_us_per_op": node_us,
            "client_cpu_seconds": 1.0, "client_cpu_us_per_op": client_us, "frames": 10,
            "messages_per_frame": 1.5, "bytes_per_frame": 600.0}


def test_throughput_goals_and_report():
    from zkv.bench import throughput as tp
    from zkv.bench.report import render_throughput

    res = {"settings": {}, "machine": {}, "cells": [
        _fake_cell(1, 1, 1000.0, get_p50=0.5), _fake_cell(4, 16, 8000.0, node_us=30.0,
                                                          client_us=20.0)],
        "half_peak": dict(_fake_cell(4, 16, 4000.0, p99=0.9), target_rate=4000.0),
        "batched_echo": [], "notes": [],
        "baselines": {"zmq_echo": {"available": True, "latency_ms": {"p50": 0.1, "p99": 0.2},
                                   "payload_bytes": 1088, "round_trips": 10,
                                   "pipelined_depth": 1, "pipelined_rps": 1.0},
                      "redis": {"1": {"available": True, "mix_rps": 10000.0, "connections": 1,
                                      "tests": {"GET": {"rps": 1.0}, "SET": {"rps": 1.0}}},
                                "64": {"available": True, "mix_rps": 16000.0, "connections": 64,
                                       "tests": {"GET": {"rps": 1.0}, "SET": {"rps": 1.0}}}}}}
    g = tp.goals(res)
    assert g["throughput_vs_redis"]["value"] == pytest.approx(0.5)  # 8000 / 16000
    assert g["throughput_vs_redis"]["met"] is True
    assert g["node_cpu_us_per_op"]["value"] == 30.0 and g["node_cpu_us_per_op"]["met"] is True
    assert g["client_cpu_us_per_op"]["met"] is False  # 20 > 15
    assert g["p99_half_peak_vs_echo_p50"]["value"] == pytest.approx(9.0)
    assert g["seq_get_p50_vs_echo_p50"]["value"] == pytest.approx(5.0)
    assert g["p99_nearest_half_vs_echo_p50"]["value"] == pytest.approx(50.0)  # the 1 x 1 cell
    assert g["seq_get_p50_vs_echo_p50"]["met"] is False
    assert "through a coordinator" not in g["seq_get_p50_vs_echo_p50"]["how"]  # not measured
    res["coordinated_gets"] = dict(_fake_cell(1, 1, 800.0, get_p50=0.9),
                                   driver="Client(owner_reads=False)")
    g = tp.goals(res)
    assert g["seq_get_p50_vs_echo_p50"]["value"] == pytest.approx(5.0)  # still the 1 x 1 cell's
    assert ("through a coordinator (owner_reads=False, same run): get p50 0.900 ms, 9.00x"
            in g["seq_get_p50_vs_echo_p50"]["how"])
    res["seq_get_interleaved"] = {
        "blocks": 2, "per_block": 3, "payload_bytes": 1088,
        "get_latency_ms": {"p50": 0.3, "p99": 0.6}, "echo_latency_ms": {"p50": 0.1, "p99": 0.2}}
    g = tp.goals(res)  # sampled side by side: the measure, the 1 x 1 cell's ratio beside it
    assert g["seq_get_p50_vs_echo_p50"]["value"] == pytest.approx(3.0)
    assert g["seq_get_p50_vs_echo_p50"]["met"] is False
    assert "(sampled minutes apart): 5.00x" in g["seq_get_p50_vs_echo_p50"]["how"]
    res["goal"] = g
    md = render_throughput(res)
    assert "| get | 0.300 | 0.600 |" in md and "| raw echo | 0.100 | 0.200 |" in md
    assert "## The 1 x 1 cell with every get through a coordinator" in md
    assert "| 1 | 1 | Client(owner_reads=False) | 800 |" in md
    for text in ("## Goals", "| peak throughput / redis-benchmark peak (50/50) | 0.50x | >= 0.4x "
                 "| MET |", "## Cells", "## Half of peak", "## Batched raw pyzmq echo",
                 "## redis-benchmark", "| 64 | 1 | 1 | 16000 |"):
        assert text in md
    # without baselines the ratios are missing, never invented
    res["baselines"] = {}
    g = tp.goals(res)
    assert g["throughput_vs_redis"]["value"] is None and g["throughput_vs_redis"]["met"] is None
    assert g["node_cpu_us_per_op"]["value"] == 30.0


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_throughput_mode_runs_tiny_and_writes_its_files(tmp_path, capsys):
    """`zkv bench --throughput`: a 1 x {1, 2} matrix of short cells writes results.json and
    report.md with every figure of a cell and the goal lines (no speed is asserted)."""
    rc = main(["--throughput", "--quick", "--matrix", "1:1,2", "--duration", "0.5",
               "--records", "50", "--sync", "none", "--batch", "16", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| measure | value | goal | met | how |" in printed
    res = json.loads((tmp_path / "results.json").read_text())
    assert [(c["clients"], c["inflight"]) for c in res["cells"]] == [(1, 1), (1, 2)]
    for c in res["cells"] + [res["half_peak"]]:
        assert c["ops"] > 0 and c["failed"] == 0
        assert c["node_cpu_us_per_op"] > 0 and c["client_cpu_us_per_op"] > 0
        by = c["node_cpu_us_per_op_by_thread"]  # the nodes' loops did the work
        assert set(by) == {"main", "zmq", "other"} and by["main"] > 0
        # (/proc counts clock ticks of 10 ms: per node and kind of thread, a tick either
        # way, over a short cell's few operations; a loaded CI rehearsal missed by 59 us/op)
        ticks_us = 3 * 3 * 10_000 / c["ops"]
        assert sum(by.values()) <= c["node_cpu_us_per_op"] * 1.05 + 100 + ticks_us
        assert c["latency_ms"]["p99"] > 0 and c["messages_per_frame"] >= 1
    assert [c["driver"] for c in res["cells"]] == ["Client", "AsyncClient"]
    coord = res["coordinated_gets"]  # the 1 x 1 cell again, gets through a coordinator
    assert coord["driver"] == "Client(owner_reads=False)" and coord["failed"] == 0
    assert coord["get_latency_ms"]["count"] > 0
    assert "through a coordinator" in res["goal"]["seq_get_p50_vs_echo_p50"]["how"]
    it = res["seq_get_interleaved"]  # the goal's measure: gets and echoes side by side
    assert it["get_latency_ms"]["count"] == it["echo_latency_ms"]["count"] == 10 * 200
    assert res["goal"]["seq_get_p50_vs_echo_p50"]["value"] == pytest.approx(
        it["get_latency_ms"]["p50"] / it["echo_latency_ms"]["p50"])
    assert "interleaved (10 blocks of 200 each" in res["goal"]["seq_get_p50_vs_echo_p50"]["how"]
    assert res["half_peak"]["target_rate"] > 0 and res["half_peak"]["service_latency_ms"]
    assert len(res["batched_echo"]) == 2
    assert all(e["messages_per_second"] > 0 for e in res["batched_echo"])
    assert all(e["zkv_vs_echo"]["throughput"] > 0 for e in res["batched_echo"])
    assert res["baselines"]["zmq_echo"]["available"]
    assert set(res["baselines"]["redis"]) <= {"1", "2"}
    assert set(res["goal"]) == {"throughput_vs_redis", "node_cpu_us_per_op",
                                "client_cpu_us_per_op", "p99_half_peak_vs_echo_p50",
                                "p99_nearest_half_vs_echo_p50", "seq_get_p50_vs_echo_p50"}
    assert res["goal"]["seq_get_p50_vs_echo_p50"]["value"] > 0
    (b,) = res["batched_cells"]
    assert (b["driver"], b["batch"], b["clients"], b["failed"]) == (
        "Client.get_many/put_many", 16, 1, 0)
    assert b["ops"] > 0 and b["messages_per_frame"] > 1  # a call's keys share frames
    assert res["batched"]["peak"]["batch"] == 16
    md = (tmp_path / "report.md").read_text()
    assert "## Goals" in md and "## Cells" in md and "| 1 | 2 | AsyncClient |" in md
    assert "loop / libzmq I/O" in md and "(loop " in printed
    assert "| 1 | 1 | Client(owner_reads=False) |" in md
    assert "## Batched calls" in md and "Client.get_many/put_many" in md
    assert "## Sequential gets and raw echo round trips, interleaved" in md


def test_a_cells_failures_are_counted_by_kind_and_printed():
    """`failed` alone says nothing of why; the cell keeps the exception classes, summed over
    its client processes, and its line names them."""
    from zkv.bench import throughput as tp

    def part(errors):
        return {"started": 0.0, "finished": 1.0, "lat_get": [0.001], "lat_put": [0.002],
                "frames": 2, "messages": 2, "bytes": 100, "cpu_seconds": 0.1, "service": [],
                "failed": sum(errors.values()), "errors": errors}

    cell = tp._summarize_cell([part({"RequestTimeout": 2}),
                               part({"RequestTimeout": 1, "Unavailable": 1})], 1.0, 2, 4)
    assert cell["failed"] == 4 and cell["errors"] == {"RequestTimeout": 3, "Unavailable": 1}
    assert tp._cell_line(cell).endswith("failed 4 (RequestTimeout 3, Unavailable 1)")
    clean = tp._summarize_cell([part({}), part({})], 1.0, 2, 4)
    assert clean["errors"] == {} and tp._cell_line(clean).endswith("failed 0")


def test_node_paths_benchmark_smoke(capsys, monkeypatch):
    """benchmarks/node_paths.py on a few keys: every replica write is acknowledged, every
    coordinated put answered after its two acks (its context kept for the next), every owner
    read answered as an owner (the script checks each), one line per frame size."""

    mod = _benchmark_module("node_paths")
    assert mod.main(["--rounds", "2", "--keys", "40", "--batch", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["frames of  1", "frames of  4"]
    assert all("replica write" in line and "owner read" in line and "40 keys" in line
               for line in lines)


def test_sim_instructions_reports_the_difference_per_operation(capsys, monkeypatch, tmp_path):
    """benchmarks/sim_instructions.py: start-up is removed by subtracting the short load from
    the long one, per operation in between, for each checkout named (valgrind itself is not
    run here: CI has none; `instructions` is replaced by a fake that counts the same way)."""

    mod = _benchmark_module("sim_instructions")
    calls = []

    def fake(src, client, ops):  # 5 M of start-up, then 300 k (or 200 k) per operation
        calls.append((src, client, ops))
        per = 300_000 if src.endswith("a") else 200_000
        return 5_000_000 + per * ops * 8, ops * 8

    monkeypatch.setattr(mod, "instructions", fake)
    monkeypatch.setattr(mod.shutil, "which", lambda name: "/usr/bin/" + name)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert mod.main(["--client", "core", "--src", a, "--src", b, "--short", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{a}: core client, 300,000 instructions per client operation (9520 "
                   "operations between a load of 80 and one of 9600)",
                   f"{b}: core client, 200,000 instructions per client operation (9520 "
                   "operations between a load of 80 and one of 9600)"]
    assert calls == [(a, "core", 10), (a, "core", 1200), (b, "core", 10), (b, "core", 1200)]

    # --sweep: one seed's count subtracted from 1 + --seeds seeds', per seed and per operation
    calls.clear()

    def fake_sweep(src, client, seeds):  # 9 M of start-up, then 400 M and 200 operations a seed
        calls.append((src, client, seeds))
        return 9_000_000 + 400_000_000 * seeds, 200 * seeds

    monkeypatch.setattr(mod, "instructions", fake_sweep)
    assert mod.main(["--sweep", "--src", a, "--seeds", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{a}: sweep, 400,000,000 instructions per seed, 2,000,000 per client operation (seeds "
        "40001-40003: 600 operations, background work included)"]
    assert calls == [(a, "sweep", 1), (a, "sweep", 4)]


def test_sim_bytecodes_charges_every_bytecode_to_a_function(capsys):
    """benchmarks/sim_bytecodes.py: `count` charges each bytecode to the function whose frame
    ran it (a loop's count grows by the same amount per 10 more iterations, its caller's does
    not grow, and what the call returned comes back); `main` on a short load prints the
    per-operation total, module shares and functions, the node's handler among them."""
    import re

    mod = _benchmark_module("sim_bytecodes")

    def loop(n):
        t = 0
        for i in range(n):
            t += i
        return t

    def caller(n):
        return loop(n)

    got = {}
    for n in (10, 20, 30):
        counts, result = mod.count(lambda n=n: caller(n))
        assert result == n * (n - 1) // 2
        got[n] = ({c for (_, _, name), c in counts.items() if name == "loop"},
                  {c for (_, _, name), c in counts.items() if name == "caller"})
    (l10,), (l20,), (l30,) = (got[n][0] for n in (10, 20, 30))
    assert 0 < l20 - l10 == l30 - l20
    assert got[10][1] == got[20][1] == got[30][1]

    import logging
    import sys

    path_before, disabled_before = sys.path[:], logging.root.manager.disable
    assert mod.main(["--load", "many", "--ops", "40", "--top", "40"]) == 0
    # the warnings it silenced and the paths it added are back as they were (a later test's
    # log capture saw nothing once: five storage tests failed after this one in CI)
    assert sys.path == path_before and logging.root.manager.disable == disabled_before
    out = capsys.readouterr().out.splitlines()
    m = re.fullmatch(r"([\d,]+) bytecodes per client operation \((\d+) client operations\)", out[0])
    assert m and int(m.group(1).replace(",", "")) > 0 and int(m.group(2)) == 320
    blank = out.index("")
    shares = [float(line.split("%")[0]) for line in out[1:blank]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.1
    functions = out[blank + 1:]
    assert len(functions) == 40
    assert all(re.fullmatch(r" *\d+\.\d%  \S+:\d+ \S+", line) for line in functions)
    assert any(re.search(r"zkv/node/core\.py:\d+ handle$", line) for line in functions)


def test_client_threads_benchmark_smoke(capsys):
    """benchmarks/client_threads.py on a real local cluster, 40 operations a row: one line per
    driver and load, each with a positive rate and the client's CPU split by thread (40
    operations are below /proc's 10 ms resolution, so the split's values are not checked)."""
    import re

    mod = _benchmark_module("client_threads")
    assert mod.main(["--ops", "40", "--keys", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[:22].strip() for line in lines] == ["sync get", "sync put", "async 50/50 x 16",
                                                     "async 50/50 x 64"]
    for line in lines:
        m = re.search(r"(\d+) ops/s  client CPU +([\d.]+) us/op \(main ([\d.]+), libzmq I/O "
                      r"([\d.]+), other ([\d.]+)\)", line)
        assert m is not None, line
        assert float(m.group(1)) > 0


def test_thread_seconds_splits_a_process_cpu_by_kind_of_thread():
    """zkv.bench.cpu.thread_seconds: a thread that burns CPU counts as "other", the main
    thread as "main"; the kinds add up to the process's total; a gone pid reads None."""
    import os
    import threading
    import time

    from zkv.bench import cpu

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    burnt, release = threading.Event(), threading.Event()

    def burner() -> None:
        burn(0.3)
        burnt.set()
        release.wait(10)  # still alive when the split is read

    before = cpu.thread_seconds([os.getpid()])
    t = threading.Thread(target=burner, name="burner")
    t.start()
    burn(0.1)
    assert burnt.wait(10)
    split = cpu.thread_seconds([os.getpid()])
    release.set()
    t.join()
    assert before is not None and split is not None and set(split) == {"main", "zmq", "other"}
    assert split["other"] - before["other"] >= 0.2  # (clock ticks of 10 ms)
    assert split["main"] - before["main"] >= 0.05
    total = cpu.process_seconds(os.getpid())
    assert total is not None and sum(split.values()) <= total + 0.05
    assert cpu.thread_seconds([2 ** 22 + 12345]) is None


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_turn_profile_reports_every_part_of_each_nodes_turn():
    """benchmarks/turn_profile/run.py on 200 operations: each of the 3 real nodes wrote its
    figures at exit and every part it wraps was called (a renamed method would show as
    missing here, not as a silently empty profile)."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "turn_profile" / "run.py"
    out = subprocess.run([sys.executable, str(script), "--ops", "200"], capture_output=True,
                         text=True, timeout=100, check=True).stdout
    assert out.count("node pid ") == 3
    for part in ("turn", "poll", "drain_ROUTER", "handle", "core.tick", "flush",
                 "send_frames", "persist"):
        assert out.count(f"  {part} ") == 3, part
    _check_turn_times(out)


def _check_turn_times(out: str) -> None:
    """Each node's busy-time histogram counts every turn it made, and its longest turns
    (at most 10, longest first) each took at least the CPU the turn's thread used, less the
    two clocks' resolution and their drift: the thread's CPU clock (the scheduler's) and
    perf_counter (the clocksource) are different clocks in a VM, and one full run saw a
    turn's CPU read past its wall time by more than 0.1 ms; 1% of the turn is allowed."""
    import re

    nodes = out.split("node pid ")[1:]
    assert len(nodes) == 3
    for text in nodes:
        turns = int(re.match(r"\d+: (\d+) turns", text).group(1))
        busy = re.search(r"  busy \(wall\) (.*)", text).group(1)
        assert sum(int(n) for n in re.findall(r"<?\S+ (\d+)", busy)) == turns
        longest = [(float(w), float(c)) for w, c in
                   re.findall(r"    +([\d.]+) \(CPU ([\d.]+):", text)]
        assert 0 < len(longest) <= 10
        assert [w for w, _ in longest] == sorted((w for w, _ in longest), reverse=True)
        assert all(c <= w * 1.01 + 0.1 for w, c in longest), longest


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_turn_profile_paced_async_load_reports_latency_and_turn_times():
    """run.py --inflight/--rate: an AsyncClient on a schedule; every operation completes
    (the line counts them against the schedule's total) and each node reports its turns."""
    import pathlib
    import re
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "turn_profile" / "run.py"
    out = subprocess.run([sys.executable, str(script), "--inflight", "8", "--rate", "200",
                          "--seconds", "1.5"], capture_output=True, text=True, timeout=100,
                         check=True).stdout
    m = re.match(r"(\d+) operations paced at 200/s \((\d+)/s done\), 8 in flight", out)
    assert m and int(m.group(1)) == 300, out
    assert 100 <= int(m.group(2)) <= 300
    p50, p99 = map(float, re.search(r"from the send p50 ([\d.]+) p99 ([\d.]+)", out).groups())
    assert 0 < p50 <= p99
    assert "client CPU " in out
    _check_turn_times(out)


def test_store_remap_counts_the_reads_past_the_active_mapping():
    """benchmarks/store_remap.py: every read after a write gave the value written (it exits
    otherwise), the active segment was remapped as it grew, each remap with more mapped than
    the one before (the file grows, then is mapped to its allocated end), fewer times than once
    per MiB (the file grows by a quarter of its size at least)."""
    import pathlib
    import re
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "store_remap.py"
    out = subprocess.run([sys.executable, str(script), "--mib", "12"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    mapped = [float(x) for x in re.findall(r"remap with +([\d.]+) MiB mapped", out)]
    n = int(re.search(r"12 MiB written: (\d+) reads past the mapping", out).group(1))
    assert n == len(mapped) and 2 <= n < 12
    assert mapped == sorted(mapped) and len(set(mapped)) == n


def test_keys_listing_benchmark_smoke(capsys):
    """benchmarks/keys_listing.py on 3000 keys: a line per listing mode, each having listed
    every key (the script asserts the count) against the same run's LMDB scan."""
    import re

    mod = _benchmark_module("keys_listing")
    assert mod.main(["--keys", "3000", "--runs", "1", "--page", "200"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [
        "zkv             keys", "zkv        keys(r=2)", "zkv       items(r=1)",
        "zkv    items() (r=2)", "zkv  keys + get_many"]
    for line in lines:
        assert re.search(r": 3000 keys in [\d.]+ s = +[\d,]+ keys/s  \|  LMDB cursor scan: "
                         r"[\d,]+ keys/s  \|  ratio [\d.]+x$", line), line


def test_expiry_sweep_benchmark_smoke(capsys):
    """benchmarks/expiry_sweep.py on 4000 keys: a pass drops exactly the expired quarter (the
    script asserts it) and both lines report their figures."""
    import re

    mod = _benchmark_module("expiry_sweep")
    assert mod.main(["--keys", "4000", "--runs", "1"]) == 0
    sweep, read = capsys.readouterr().out.strip().splitlines()
    assert re.search(r"^run 1: sweep pass over 4,000 keys \(1,000 dropped\) in [\d.]+ s: "
                     r"[\d,]+ keys/s examined, [\d,]+ drops/s  \|  LMDB cursor [\d,]+ keys/s"
                     r"  \|  ratio [\d.]+x$", sweep), sweep
    assert re.search(r"Replica.read: [\d.]+ us in the ttl namespace, [\d.]+ us in an lww one "
                     r"without ttl \(\+-?[\d.]+ us for the verdict\)$", read), read


def test_purge_sweep_benchmark_smoke(capsys):
    """benchmarks/purge_sweep.py on 4000 keys: a pass purges exactly the truncated generation's
    quarter (the script asserts it) and both lines report their figures."""
    import re

    mod = _benchmark_module("purge_sweep")
    assert mod.main(["--keys", "4000", "--runs", "1"]) == 0
    sweep, read = capsys.readouterr().out.strip().splitlines()
    assert re.search(r"^run 1: purge pass over 4,000 keys \(1,000 dead purged\) in [\d.]+ s: "
                     r"[\d,]+ keys/s examined, [\d,]+ purges/s  \|  LMDB cursor [\d,]+ keys/s"
                     r"  \|  ratio [\d.]+x$", sweep), sweep
    assert re.search(r"Replica.read of a live key: [\d.]+ us in a cluster that never dropped, "
                     r"[\d.]+ us in the truncated namespace \(\+-?[\d.]+ us for the dead-key "
                     r"check\)$", read), read


def _benchmark_module(name: str):
    """benchmarks/NAME.py imported as a module (the directory is no package)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sigterm_and_sighup_clean_up_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """SIGTERM or SIGHUP to `zkv bench` during its pause fault left the paused node stopped
    for good (Ctrl-C cleaned up): they now unwind the run as Ctrl-C does."""
    import signal
    import threading

    from zkv.bench import runner

    unwound, sent = [], []

    def run(self):
        try:
            os.kill(os.getpid(), sent[-1])
            threading.Event().wait(5)  # (the signal arrives before this ends)
        finally:
            unwound.append(sent[-1])  # (the suite's own cleanup runs here: the fault undone)
        return {}

    monkeypatch.setattr(runner.Suite, "run", run)
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            sent.append(sig)
            assert main(["--out", str(tmp_path), "--availability-duration", "0"]) == 130
            assert "interrupted" in capsys.readouterr().err
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert unwound == [signal.SIGTERM, signal.SIGHUP]
