"""Report: writes a suite's results as results.json, report.md and PNG plots (and, for
`zkv bench --throughput`, its results.json and report.md: `write_throughput`).

Everything is drawn from the results dict alone (the same one results.json holds), so a report
can be regenerated from a saved results.json. matplotlib (Agg backend) is imported only when
plots are written; when it is missing the plots are listed as missing in report.md.
"""

from __future__ import annotations

import json
import os

PLOTS = {
    "latency_cdf": "latency_cdf.png",
    "throughput": "throughput.png",
    "staleness": "staleness.png",
}


def write_json(results: dict, out_dir: str, name: str = "results.json") -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=True, default=str)
    return path


def write_plots(results: dict, out_dir: str) -> dict[str, str]:
    """The PNGs; returns {plot name: path}. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    runs = results.get("runs", [])
    configs = list(dict.fromkeys(r["config"] for r in runs))
    wls = list(dict.fromkeys(r["workload"] for r in runs))
    made = {}

    # latency CDF, one panel per configuration, one line per workload
    cols = max(1, min(2, len(configs)))
    rows = max(1, -(-len(configs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for i, cfg in enumerate(configs or ["(no runs)"]):
        ax = axes[i // cols][i % cols]
        for r in runs:
            if r["config"] == cfg and r["cdf"]:
                xs, ys = zip(*r["cdf"], strict=True)
                ax.plot(xs, ys, label=f"workload {r['workload']}")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of requests <=")
        ax.set_title(f"latency CDF, {cfg}")
        ax.grid(True, which="both", alpha=0.3)
        if runs:
            ax.legend(fontsize=8)
    for j in range(len(configs or [0]), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    made["latency_cdf"] = _save(fig, plt, out_dir, PLOTS["latency_cdf"])

    # throughput per configuration and workload (grouped bars) with redis lines
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(configs) + 3), 4))
    width = 0.8 / max(1, len(wls))
    for k, wl in enumerate(wls):
        heights = [next((r["throughput"] for r in runs
                         if r["config"] == c and r["workload"] == wl), 0) for c in configs]
        ax.bar([i + k * width for i in range(len(configs))], heights, width,
               label=f"workload {wl}")
    red = results.get("baselines", {}).get("redis", {})
    if red.get("available") and "A" in red.get("mix_rps", {}):
        ax.axhline(red["mix_rps"]["A"], color="k", ls="--", lw=1,
                   label="redis-benchmark 50/50 GET/SET")
    ax.set_xticks([i + width * (len(wls) - 1) / 2 for i in range(len(configs))], configs)
    ax.set_ylabel("operations / s")
    ax.set_yscale("log" if red.get("available") else "linear")
    ax.set_title("throughput per configuration and workload")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    made["throughput"] = _save(fig, plt, out_dir, PLOTS["throughput"])

    # staleness vs time since write, one line per configuration (reads of all workloads)
    fig, ax = plt.subplots(figsize=(7, 4))
    for cfg in configs:
        merged: dict[int, list] = {}
        for r in runs:
            if r["config"] != cfg:
                continue
            for i, b in enumerate(r["staleness"]["buckets"]):
                m = merged.setdefault(i, [b, 0, 0])
                m[1] += b["reads"]
                m[2] += b["stale"]
        pts = [(i, s / n) for i, (_, n, s) in sorted(merged.items()) if n]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=cfg)
    first: list = next((r["staleness"]["buckets"] for r in runs), [])
    ax.set_xticks(range(len(first)), [_bucket_label(b) for b in first], rotation=45,
                  fontsize=7)
    ax.set_xlabel("time since the latest acknowledged write (ms)")
    ax.set_ylabel("fraction of reads that missed it")
    ax.set_title("measured staleness (PBS)")
    ax.grid(True, alpha=0.3)
    if configs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    made["staleness"] = _save(fig, plt, out_dir, PLOTS["staleness"])
    return made


def _save(fig, plt, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bucket_label(b: dict) -> str:
    lo, hi = b["lo_ms"], b["hi_ms"]
    return f">{lo:g}" if hi is None else f"{lo:g}-{hi:g}"


def _f(x, fmt="{:.2f}", none="n/a") -> str:
    return none if x is None else fmt.format(x)


def _fw(fw: dict | None) -> str:
    if not fw:
        return "none issued"
    return (f"{fw['outcome']} in {fw['latency_ms']:.0f} ms (started "
            f"{fw['started_after_ms']:.0f} ms after)")


def _pct(x) -> str:
    return _f(None if x is None else 100 * x, "{:.2f}%")


def _ratio(a, b) -> str:
    return "missing" if a is None or not b else f"{a / b:.2f}x"


def render_markdown(results: dict, plots: dict[str, str] | None = None,
                    plot_error: str | None = None) -> str:
    s = results.get("settings", {})
    m = results.get("machine", {})
    base = results.get("baselines", {})
    echo, red = base.get("zmq_echo", {}), base.get("redis", {})
    echo_p50 = echo["latency_ms"]["p50"] if echo.get("available") else None
    L: list[str] = []
    L += ["# zkv quorum benchmark", ""]
    L += [f"Machine: {m.get('processor') or m.get('machine')}, {m.get('cpus')} CPUs, "
          f"{m.get('platform')}, Python {m.get('python')}, libzmq {m.get('libzmq', '?')}.", ""]
    where = "given cluster" if s.get("cluster") else "local, loopback" + (
        "; the partition fault, where it ran, on a cluster of its own in network namespaces"
        if "partition" in (s.get("faults") or []) else "")
    L += [f"Settings: {s.get('nodes')} nodes ({where}), "
          f"{s.get('records')} records of {s.get('value_size')} bytes, {s.get('duration')} s per run, "
          f"{s.get('clients')} client processes x {s.get('inflight')} in flight, zipfian 0.99, "
          f"sync={s.get('sync')}, seed {s.get('seed')}{', quick' if s.get('quick') else ''}.", ""]

    g = results.get("goal", {})
    L += ["## Goal (N3 R2 W2, workload A)", ""]
    if g.get("missing"):
        L += [f"Not measured: {g['missing']}.", ""]
    else:
        tr = g.get("throughput_ratio")
        L.append("- throughput >= 0.4x redis-benchmark: " + (
            f"**{tr:.2f}x**, {'met' if g['throughput_met'] else 'SHORT'}" if tr is not None
            else f"missing ({g.get('throughput_missing')})"))
        pr = g.get("p99_ratio")
        L.append("- p99 <= 10x the raw pyzmq round trip (p50): " + (
            f"**{pr:.1f}x**, {'met' if g['p99_met'] else 'SHORT'} "
            f"({g['p99_ratio_to_echo_p99']:.1f}x the echo's own p99)" if pr is not None
            else f"missing ({g.get('p99_missing')})"))
        L.append("")

    L += ["## Baselines (same run)", ""]
    if echo.get("available"):
        el = echo["latency_ms"]
        L.append(f"- raw pyzmq ROUTER/DEALER echo, {echo['payload_bytes']}-byte payload: round trip "
                 f"p50 {el['p50']:.3f} ms, p99 {el['p99']:.3f} ms; pipelined "
                 f"({echo['pipelined_depth']} in flight) {echo['pipelined_rps']:.0f} round trips/s")
    else:
        L.append(f"- raw pyzmq echo: **missing** ({echo.get('reason', 'not run')})")
    if red.get("available"):
        t = red["tests"]
        L.append(f"- redis-benchmark ({red.get('version', '').split(' sha')[0]}), "
                 f"{red['value_bytes']}-byte values, {red['connections']} connections: "
                 f"SET {t['SET']['rps']:.0f}/s (p50 {_f(t['SET'].get('p50_latency_ms'), '{:.3f}')} ms), "
                 f"GET {t['GET']['rps']:.0f}/s (p50 {_f(t['GET'].get('p50_latency_ms'), '{:.3f}')} ms)")
    else:
        L.append(f"- redis-benchmark: **missing** ({red.get('reason', 'not run')})")
    L.append("")

    runs = results.get("runs", [])
    mix = red.get("mix_rps", {}) if red.get("available") else {}
    L += ["## Throughput and latency", "",
          "Latency in ms over successful operations (F: the whole read-modify-write). "
          "x redis: throughput / redis-benchmark's for the same GET/SET mix (F: n/a). "
          "x echo: p99 / raw pyzmq round-trip p50.", "",
          "| config | workload | ops/s | x redis | p50 | p95 | p99 | p99.9 | x echo | "
          "failed (timeouts) | siblings | stale reads |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lat = r["latency_ms"]
        L.append(
            f"| {r['config']} | {r['workload']} | {r['throughput']:.0f} | "
            f"{_ratio(r['throughput'], mix.get(r['workload'])) if mix.get(r['workload']) else 'n/a' if mix else 'missing'} | "
            f"{_f(lat['p50'])} | {_f(lat['p95'])} | {_f(lat['p99'])} | {_f(lat['p99.9'])} | "
            f"{_ratio(lat['p99'], echo_p50)} | {r['failed']} ({r['timeouts']}) | "
            f"{_pct(r['sibling_rate'])} | {_pct(r['staleness']['fraction'])} |")
    L.append("")

    L += ["## Measured staleness (PBS)", "",
          "Fraction of reads that missed the latest acknowledged write of their key, by time "
          "since that write (reads of every workload of the configuration). R + W > N should "
          "show 0.", ""]
    configs = list(dict.fromkeys(r["config"] for r in runs))
    first: list = next((r["staleness"]["buckets"] for r in runs), [])
    if first:
        L.append("| config | R+W>N | " + " | ".join(_bucket_label(b) + " ms" for b in first)
                 + " | all |")
        L.append("|---|---|" + "---:|" * (len(first) + 1))
        for cfg in configs:
            rs = [r for r in runs if r["config"] == cfg]
            cells = []
            for i in range(len(first)):
                n = sum(r["staleness"]["buckets"][i]["reads"] for r in rs)
                st = sum(r["staleness"]["buckets"][i]["stale"] for r in rs)
                cells.append(f"{100 * st / n:.2f}% of {n}" if n else "-")
            n = sum(r["staleness"]["reads"] for r in rs)
            st = sum(r["staleness"]["stale"] for r in rs)
            L.append(f"| {cfg} | {'yes' if rs[0]['strict'] else 'no'} | " + " | ".join(cells)
                     + f" | {_pct(st / n if n else None)} |")
        L.append("")

    av = results.get("availability", [])
    L += ["## Availability: one node paused, killed or cut off mid-workload A", ""]
    if av:
        L += ["Each fault hits the last node for the seconds shown (at least 3x the failure-"
              "detection time by default); phases are by the time an op started.", "",
              "| config | fault | phase | success | ops/s | p50 | p99 | p99.9 | failed | writes "
              "refused |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for a in av:
            what = f"{a.get('fault', 'pause')} {a['paused_node']} ({a['paused_seconds']:.1f} s)"
            for ph in ("before", "down", "after"):
                p = a["phases"][ph]
                L.append(f"| {a['config']} | {what} | {'during' if ph == 'down' else ph} | "
                         f"{_pct(p['success_rate'])} | {_f(p['throughput'], '{:.0f}')} | "
                         f"{_f(p['latency_ms']['p50'])} | {_f(p['latency_ms']['p99'])} | "
                         f"{_f(p['latency_ms'].get('p99.9'))} | "
                         f"{p['failed']} | {p.get('writes_refused', 'n/a')} |")
        L.append("")
        if any("first_write_after_fault" in a for a in av):
            L += ["| config | fault | first write after the fault | after recovery | "
                  "ops/s during / before | p99 during / before |", "|---|---|---|---|---:|---:|"]
            for a in av:
                r = a.get("during_vs_before", {})
                L.append(f"| {a['config']} | {a.get('fault', 'pause')} | "
                         f"{_fw(a.get('first_write_after_fault'))} | "
                         f"{_fw(a.get('first_write_after_recovery'))} | "
                         f"{_f(r.get('throughput'))} | {_f(r.get('p99'))} |")
            L.append("")
    else:
        L += ["Not run.", ""]

    L += ["## Plots", ""]
    if plots:
        for name, path in plots.items():
            L.append(f"![{name}]({os.path.basename(path)})")
    else:
        L.append(f"Plots **missing**: {plot_error or 'not written'}.")
    L.append("")
    for note in results.get("notes", []):
        L.append(f"- note: {note}")
    if results.get("load"):
        for ld in results["load"]:
            L.append(f"- load N={ld['n']}: {ld['records']} records in {ld['seconds']:.1f} s "
                     f"({ld['rate']:.0f} puts/s)")
    if "elapsed_seconds" in results:
        L.append(f"- suite wall time {results['elapsed_seconds']:.1f} s")
    L.append("")
    return "\n".join(L)


def write_all(results: dict, out_dir: str) -> dict[str, str]:
    """results.json, the plots (if matplotlib is there) and report.md; returns their paths."""
    paths = {"json": write_json(results, out_dir)}
    plots, err = None, None
    try:
        plots = write_plots(results, out_dir)
        paths.update(plots)
    except ImportError as exc:
        err = f"matplotlib is not installed ({exc}); pip install matplotlib"
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as fh:
        fh.write(render_markdown(results, plots, err))
    paths["markdown"] = md
    return paths


# ---- `zkv bench --throughput` (issue 12) -------------------------------------------------------
GOAL_NAMES = {
    "throughput_vs_redis": "peak throughput / redis-benchmark peak (50/50)",
    "node_cpu_us_per_op": "node CPU per op, sum over nodes (us)",
    "client_cpu_us_per_op": "client CPU per op (us)",
    "p99_half_peak_vs_echo_p50": "p99 at half of peak (paced) / raw echo p50",
    "p99_nearest_half_vs_echo_p50": "p99 of the cell nearest half of peak / raw echo p50",
    "seq_get_p50_vs_echo_p50": "sequential get p50 / raw echo p50",
}


def _xr(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}x"


def goal_table(goals: dict) -> list[str]:
    """Issue 12's goal lines as a markdown table (also what the CLI prints)."""
    L = ["| measure | value | goal | met | how |", "|---|---:|---|---|---|"]
    for name, label in GOAL_NAMES.items():
        g = goals.get(name)
        if g is None:
            continue
        v = g["value"]
        unit = "x" if "vs" in name else ""
        met = "n/a" if g["met"] is None else "MET" if g["met"] else "NOT MET"
        L.append(f"| {label} | {_f(v)}{unit if v is not None else ''} | {g['goal']}{unit} | "
                 f"{met} | {g['how']} |")
    return L


def cell_table(cells: list[dict]) -> list[str]:
    L = ["| clients | in flight | driver | ops/s | p50 ms | p99 ms | get p50 | put p50 | "
         "node CPU us/op | of it: loop / libzmq I/O | client CPU us/op | msg/frame | B/frame | "
         "failed |",
         "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        by = c.get("node_cpu_us_per_op_by_thread") or {}
        L.append(f"| {c['clients']} | {c['inflight']} | {c['driver']} | {c['throughput']:.0f} | "
                 f"{_f(c['latency_ms']['p50'], '{:.3f}')} | {_f(c['latency_ms']['p99'], '{:.3f}')}"
                 f" | {_f(c['get_latency_ms']['p50'], '{:.3f}')} | "
                 f"{_f(c['put_latency_ms']['p50'], '{:.3f}')} | {_f(c['node_cpu_us_per_op'], '{:.1f}')}"
                 f" | {_f(by.get('main'), '{:.1f}')} / {_f(by.get('zmq'), '{:.1f}')}"
                 f" | {_f(c['client_cpu_us_per_op'], '{:.1f}')} | "
                 f"{_f(c['messages_per_frame'], '{:.1f}')} | {_f(c['bytes_per_frame'], '{:.0f}')} | "
                 f"{c['failed']} |")
    return L


def render_throughput(res: dict) -> str:
    """report.md of a `zkv bench --throughput` run, from its results dict alone."""
    s = res.get("settings", {})
    m = res.get("machine", {})
    L = ["# zkv bench --throughput (issue 12)", "",
         f"N{s.get('n')} R{s.get('r')} W{s.get('w')}, {s.get('nodes')} local nodes, "
         f"{s.get('records')} records of {s.get('value_size')} bytes, {s.get('mix')}, "
         f"{s.get('keys')} keys, {s.get('duration')} s per cell, routing {s.get('routing')}, "
         f"sync {s.get('sync')}.", "",
         f"Machine: {m.get('processor', '?')}, {m.get('cpus', '?')} CPUs, {m.get('platform', '?')}"
         f", Python {m.get('python', '?')}, pyzmq {m.get('pyzmq', '?')} / libzmq "
         f"{m.get('libzmq', '?')}.", "", "## Goals", ""]
    L += goal_table(res.get("goal", {}))
    L += ["", "## Cells (client processes x operations in flight each)", "",
          "Node CPU: utime + stime of the 3 node processes (/proc), summed, per operation "
          "completed; of it, the nodes' loops (each process's main thread) and libzmq's I/O "
          "threads (the rest: fsync, compaction, libzmq's reaper). Client CPU: the client "
          "processes' own. msg/frame, B/frame: what the "
          "clients' frames to a node carried.", ""]
    L += cell_table(res.get("cells", []))
    if res.get("node_idle_cpu") is not None:
        L += ["", f"Idle nodes (before the cells): {res['node_idle_cpu']:.3f} CPU-seconds per "
              "second, summed over the nodes (included in the node CPU above, not subtracted)."]
    coord = res.get("coordinated_gets")
    if coord:
        L += ["", "## The 1 x 1 cell with every get through a coordinator (owner_reads=False)",
              "", "What client-coordinated reads change, in the same run: the goal's 1 x 1 "
              "cell asks R owners directly.", ""]
        L += cell_table([coord])
    it = res.get("seq_get_interleaved")
    if it:
        g, e = it["get_latency_ms"], it["echo_latency_ms"]
        L += ["", "## Sequential gets and raw echo round trips, interleaved", "",
              f"One process, {it['blocks']} blocks of {it['per_block']} echo round trips "
              f"({it['payload_bytes']} bytes) then {it['per_block']} gets (sync Client, R=2): "
              "both sampled at the same moments (the sequential get goal's measure).", "",
              "| | p50 ms | p99 ms |", "|---|---|---|",
              f"| get | {_f(g['p50'], '{:.3f}')} | {_f(g['p99'], '{:.3f}')} |",
              f"| raw echo | {_f(e['p50'], '{:.3f}')} | {_f(e['p99'], '{:.3f}')} |"]
    half = res.get("half_peak")
    if half:
        L += ["", f"## Half of peak (paced at {half.get('target_rate', 0):.0f} ops/s; latency "
              "from each operation's scheduled start)", ""]
        L += cell_table([half])
        sv = half.get("service_latency_ms")
        if sv:
            L += ["", f"From the actual send instead (without the client's own lag): p50 "
                  f"{_f(sv['p50'], '{:.3f}')} ms, p99 {_f(sv['p99'], '{:.3f}')} ms."]
    bc = res.get("batched_cells") or []
    if bc:
        b = res.get("batched") or {}
        L += ["", "## Batched calls (sync Client: get_many of the batch's keys, then put_many of "
              "them with the contexts read)", "",
              "Each operation's latency is its call's. Not the goals' measure (those are per "
              "operation sent alone); beside redis-benchmark unpipelined and pipelined alike.",
              ""]
        L += cell_table(bc)
        L += ["", f"Peak batched / redis-benchmark 50/50 peak (unpipelined): "
              f"{_xr(b.get('vs_redis'), 3)}; / redis-benchmark pipelined the same "
              f"(`redis-benchmark {b.get('redis_pipelined_command') or 'n/a'}`): "
              f"{_xr(b.get('vs_redis_pipelined'), 3)}."]
    L += ["", "## Batched raw pyzmq echo (each cell's clients, in flight, batch and frame "
          "size; no logic)", "",
          "zkv / echo: the cell's ops/s over the echo's messages/s, its node CPU per op over "
          "the echo server's CPU per message, its client CPU per op over the echo clients'.", "",
          "| clients | in flight | batch | B/frame | msg/s | server CPU us/msg | "
          "client CPU us/msg | frame RTT p50 ms | zkv / echo: rate | node CPU | client CPU |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in res.get("batched_echo", []):
        v = e.get("zkv_vs_echo") or {}
        L.append(f"| {e['clients']} | {e['inflight']} | {e['batch']} | {e['frame_bytes']} | "
                 f"{e['messages_per_second']:.0f} | {_f(e['server_cpu_us_per_message'], '{:.1f}')}"
                 f" | {_f(e['client_cpu_us_per_message'], '{:.1f}')} | "
                 f"{_f(e['frame_rtt_ms']['p50'], '{:.3f}')} | {_xr(v.get('throughput'), 3)} | "
                 f"{_xr(v.get('node_cpu'), 1)} | {_xr(v.get('client_cpu'), 1)} |")
    L += ["", "## Unbatched raw pyzmq echo (the latency goals divide by the mean of the two "
          "p50s)", ""]
    for when, name in (("start of the run", "zmq_echo"), ("end of the run", "zmq_echo_end")):
        echo = res.get("baselines", {}).get(name, {})
        if echo.get("available"):
            lat = echo["latency_ms"]
            L.append(f"- {when}: {echo['payload_bytes']}-byte payload, {echo['round_trips']} "
                     f"sequential round trips: p50 {_f(lat['p50'], '{:.3f}')} ms, p99 "
                     f"{_f(lat['p99'], '{:.3f}')} ms")
        elif echo:
            L.append(f"- {when}: **missing**: {echo.get('reason')}")
    L += ["", "## redis-benchmark (GET and SET, same value size)", "",
          "| connections | GET/s | SET/s | 50/50 ops/s | server CPU us/op | "
          "redis-benchmark CPU us/op |", "|---:|---:|---:|---:|---:|---:|"]
    for conns, r in res.get("baselines", {}).get("redis", {}).items():
        if not r.get("available"):
            L.append(f"| {conns} | missing: {r.get('reason')} | | | | |")
            continue
        t = r["tests"]
        L.append(f"| {conns} | {t['GET']['rps']:.0f} | {t['SET']['rps']:.0f} | "
                 f"{r['mix_rps']:.0f} | {_f(r.get('server_cpu_us_per_op'), '{:.1f}')} | "
                 f"{_f(r.get('client_cpu_us_per_op'), '{:.1f}')} |")
    L.append("")
    for note in res.get("notes", []):
        L.append(f"- note: {note}")
    if "elapsed_seconds" in res:
        L.append(f"- wall time {res['elapsed_seconds']:.1f} s")
    L.append("")
    return "\n".join(L)


def write_throughput(res: dict, out_dir: str) -> dict[str, str]:
    """results.json and report.md of a `zkv bench --throughput` run; returns their paths."""
    paths = {"json": write_json(res, out_dir)}
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as fh:
        fh.write(render_throughput(res))
    paths["markdown"] = md
    return paths
