"""Ratio reporting for every pytest-benchmark in this folder.

Convention: benchmarks are grouped (``@pytest.mark.benchmark(group="ring-lookup")``); the test
whose name contains ``baseline`` is the group's same-run baseline; a test may state its goal as
``benchmark.extra_info["goal"] = 1.5`` (ratio of its median time to the baseline's, at most).
At the end of the run a table prints each test's median, its ratio to the baseline and whether
it met its goal. Machines are shared and noisy: only ratios within one run mean anything.
"""

from __future__ import annotations

import pytest


def _stat(bench, name):
    stats = getattr(bench, "stats", None)
    stats = getattr(stats, "stats", stats)
    return getattr(stats, name, None) if stats is not None else None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "default", []).append(bench)
    tr = terminalreporter
    tr.write_sep("=", "zkv benchmark ratios (median time / same-run baseline median)")
    for group, benches in sorted(groups.items()):
        base = next((b for b in benches if "baseline" in b.name), None)
        base_med = _stat(base, "median") if base else None
        tr.write_line(f"[{group}]")
        for b in benches:
            med = _stat(b, "median")
            if med is None:
                continue
            line = f"  {b.name:<58} median {med * 1e6:12.3f} us"
            if base_med and b is not base:
                ratio = med / base_med
                line += f"  ratio {ratio:7.2f}x"
                goal = (b.extra_info or {}).get("goal")
                if goal is not None:
                    line += f"  goal <= {goal}x: {'MET' if ratio <= goal else 'SHORT'}"
            elif b is base:
                line += "  (baseline)"
            for k, v in sorted((b.extra_info or {}).items()):
                if k != "goal":
                    line += f"  {k}={v}"
            tr.write_line(line)


@pytest.fixture
def ratio_note(benchmark):
    """Attach a goal to the running benchmark: ``ratio_note(1.5)``."""

    def note(goal: float, **info):
        benchmark.extra_info["goal"] = goal
        benchmark.extra_info.update(info)

    return note
