"""Issue 13's identity / connection flood against a real node process: many connections with
distinct identities that never read their replies. The node keeps its fds within its
--max-connections cap, serves a normal client during and after the flood, and gives the
memory back once the flood closes (memory is behaviour here; speed is not asserted).

The flood and the measurements are tools/flood_node.py's (also used for RESULTS.md)."""

from __future__ import annotations

import importlib
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAP = 200
CONNECTIONS = 3 * CAP


def _tool(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # flooders are spawned: importable by name
    return importlib.import_module("flood_node")


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_identity_flood_is_capped_served_through_and_freed(tmp_path, monkeypatch):
    flood = _tool(monkeypatch)
    lines: list[str] = []
    r = flood.run(CONNECTIONS, CAP, procs=1, requests=4, hold=4.0, value_size=64 * 1024,
                  directory=str(tmp_path), log=lines.append)
    report = "\n".join(lines)
    assert r["alive"], report
    # fds: at most the cap of connections plus what the node holds anyway, once the node has
    # refused the flood's first burst (libzmq accepts before the node's loop can refuse: on a
    # busy machine a sample inside the first 0.3 s read up to 353), and through the redials
    assert r["held_samples"] >= 5 and r["held_fds"] <= CAP + flood.FD_MARGIN, report
    assert r["peak_fds"] > r["rest_fds"] + CAP // 2, report  # the flood did reach the node
    # a client connected before the flood was served throughout, and after it
    assert r["served_failed"] == 0 and r["served_ok"] >= 25, report
    # every connection's fd is closed once the flood is, and its memory handed back
    assert r["after_fds"] <= r["rest_fds"] + 8, report
    assert r["after_rss_kb"] <= max(1.25 * r["rest_rss_kb"], r["rest_rss_kb"] + 16 * 1024), report
    assert not list(tmp_path.iterdir()), os.listdir(tmp_path)  # the tool cleaned up
