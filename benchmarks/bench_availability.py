"""Availability at the moment of failure (issue 10): the Numbers table, one command.

    python benchmarks/bench_availability.py [--only freeze,detect,pause,dups,heal] [--smoke]
                                            [--trials 3] [--json] [--dir DIR]

Real zkv-node processes at their default failure-detection settings (gossip every 0.2 s, down
after 2 s). Each measure, and what it runs:

- freeze: 5 nodes on loopback (N=3). After warm-up puts at w=3, 2 of 5 nodes are frozen
  (SIGSTOP, no notice). (a) The first w=3 put, sent straight to a live coordinator for a key
  whose preference list holds both frozen nodes (so it needs two stand-ins): outcome and
  latency against the coordinator's per-replica soft timeout (from `zkv status`,
  members[].soft_timeout_ms) + 2x the warm-up p99. (b) The first w=3 put through a
  zkv.AsyncClient given every node (token routing, 5 s timeout, connected to every node and
  holding the ring before the freeze): what a user sees, client failover included; the live node that
  coordinated it is found from the nodes' put counters, and its own soft timeout gives the
  bound, plus the client's hedge delay when the client's first try went to a frozen node.
  (c) 100 w=3 puts through zkv.AsyncClient over the 10 s after the freeze (one every 0.1 s,
  5 s timeout each): how many are refused.
- detect: one of 5 frozen (then killed with SIGKILL): time until every other node's status
  shows it suspect or down; after SIGCONT, until every node shows it up again.
- pause: `zkv bench --faults pause` (3 nodes, N3 R2 W2, workload A, a 6 s pause): throughput
  and p99 during the pause vs before.
- dups: 3 nodes and a client on network-namespace machines (zkv.netns, root only); 1,000
  puts (unique key and value, w=2, 5 s timeout) while node3's link is cut and restored twice,
  so replies are lost in flight and clients retry elsewhere; after the heal, every key read at
  r=3: keys with more than one sibling (duplicates: one value was written per key).
- heal: the same machines; node3 cut off for 6 s while 40 keys are written at w=2, then its
  link restored: time until node1, node2 and node3 all see each other up (status polled every
  50 ms over fresh connections), and what a client given only node3's endpoint reads of the 40
  acknowledged keys right after the heal (routing="any": node3 coordinates).

Prints a table (measure, value, goal, met) and the raw figures; `--json` prints one object.
`--smoke` runs every measure once with fewer operations (tests/test_bench.py runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import zmq

import zkv
from zkv import netns, wire
from zkv._core.ring import Ring
from zkv.local import LocalCluster

DEFAULT_TIMEOUT = 5.0


def status(ep: str, timeout: float = 1.0) -> dict:
    with zkv.Client([ep], timeout=timeout) as c:
        return c.status(ep)


def raw_request(ep: str, msg, timeout: float):
    """One request over a fresh DEALER: (reply or None, seconds)."""
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
        t0 = time.monotonic()
        s.send(wire.encode_one(msg))
        if not s.poll(int(timeout * 1000)):
            return None, time.monotonic() - t0
        (reply,) = wire.decode(s.recv(), 1 << 30)
        return reply, time.monotonic() - t0
    finally:
        ctx.destroy(0)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def wait_hints_drained(cl: LocalCluster, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(status(n.listen)["hints"]["backlog"] == 0 for n in cl.nodes if n.alive()):
                return
        except zkv.ZkvError:
            pass
        time.sleep(0.2)


# ---- freeze 2 of 5 -----------------------------------------------------------------------------
def measure_freeze(root: str, trials: int, puts_after: int) -> dict:
    out: dict = {"trials": []}
    cl = LocalCluster(5, os.path.join(root, "freeze"), base_port=None,
                      racks=["r1", "r2", "r3", "r4", "r5"])
    cl.start(60)
    try:
        eps = {n.id: n.listen for n in cl.nodes}
        with zkv.Client(list(eps.values()), timeout=DEFAULT_TIMEOUT) as c:
            info = c.ring_info()
        ring = Ring([(m.id, m.rack) for m in info.members], q=info.q, n=info.n)
        frozen = ["node4", "node5"]
        live = ["node1", "node2", "node3"]
        # keys whose preference list holds both frozen nodes and one live coordinator
        targets = []
        i = 0
        while len(targets) < trials:
            k = b"first:%d" % i
            pl = ring.preflist_for_key(k)
            if set(frozen) <= set(pl):
                targets.append((k, next(x for x in pl if x in live)))
            i += 1
        for trial in range(trials):
            warm = []
            with zkv.Client(list(eps.values()), timeout=DEFAULT_TIMEOUT) as c:
                for j in range(100):
                    t0 = time.monotonic()
                    c.put(b"warm:%d:%d" % (trial, j), b"w", w=3)
                    warm.append(time.monotonic() - t0)
            usual_p99 = p99(warm)
            key, coord = targets[trial]
            softs = {x: max(m.get("soft_timeout_ms") or 0.0 for m in status(eps[x])["members"]
                            if m["id"] in frozen) / 1e3 for x in live}
            soft = softs[coord]
            bound = soft + 2 * usual_p99
            def put_counts() -> dict[str, int]:
                return {x: status(eps[x])["metrics"]["ops"].get("put", 0) for x in live}

            counts = put_counts()
            # the user's client connects and learns the ring before the freeze
            loop = asyncio.new_event_loop()
            ac = loop.run_until_complete(_warm_client(list(eps.values()), b"warm:%d:0" % trial))
            for f in frozen:
                cl.pause(f)
            reply, lat = raw_request(eps[coord], wire.Put(1, key, b"v", b"", 3,
                                                          os.urandom(wire.WID_SIZE)), 10.0)
            raw = {"coordinator": coord, "key": key.decode(), "latency_s": round(lat, 4),
                   "outcome": ("ok" if isinstance(reply, wire.PutOk) else
                               "timeout" if reply is None else f"refused: {reply.message}"),
                   "bound_s": round(bound, 4), "soft_timeout_s": soft,
                   "usual_p99_s": round(usual_p99, 4)}
            # (b) + (c): the user's view, all endpoints, token routing; the first put alone,
            # so the live node that coordinated it shows in the put counters
            # the client's first try goes to the key's first owner it believes up; if that
            # one is frozen the put waits the client's hedge delay before asking the next
            first_ep = ac.core.candidates(b"after:%d:0" % trial)[0]
            hedge = ac.core.hedge_delay() if first_ep in {eps[f] for f in frozen} else 0.0
            try:
                t_first = time.monotonic()
                results = loop.run_until_complete(_paced_puts(ac, b"after:%d" % trial, 1,
                                                              t_first))
                after = put_counts()
                served = [x for x in live
                          if after[x] - counts[x] > (1 if x == coord else 0)]
                client_coord = served[0] if len(served) == 1 else ",".join(served) or "?"
                results += [(j + 1, *r[1:]) for j, r in enumerate(loop.run_until_complete(
                    _paced_puts(ac, b"after:%d:p" % trial, puts_after - 1,
                                t_first + 10.0 / puts_after, 10.0 - 10.0 / puts_after)))]
            finally:
                loop.run_until_complete(ac.close())
                loop.close()
            results.sort()
            first = results[0]
            refused = [r for r in results if not r[1]]
            out["trials"].append({
                "direct_to_live_coordinator": raw,
                "client_first_put": {
                    "ok": first[1], "latency_s": round(first[2], 4), "error": first[3],
                    "coordinator": client_coord, "client_hedge_s": hedge,
                    "bound_s": (round(hedge + softs[client_coord] + 2 * usual_p99, 4)
                                if client_coord in softs else None)},
                "puts_after": len(results), "refused": len(refused),
                "refusals": [r[3] for r in refused][:5],
                "p99_after_s": round(p99([r[2] for r in results]), 4)})
            print(f"freeze trial {trial + 1}: direct {raw['outcome']} in "
                  f"{raw['latency_s'] * 1e3:.0f} ms (bound {bound * 1e3:.0f} ms = soft "
                  f"{soft * 1e3:.0f} + 2 x p99 {usual_p99 * 1e3:.1f}); client first put via "
                  f"{client_coord} (soft {softs.get(client_coord, 0) * 1e3:.0f} ms, client "
                  f"hedge {hedge * 1e3:.0f} ms) "
                  f"{'ok' if first[1] else 'REFUSED'} in {first[2] * 1e3:.0f} ms; "
                  f"{len(refused)} of {len(results)} refused in the 10 s after", flush=True)
            for f in frozen:
                cl.resume(f)
            cl.wait_converged(60)
            wait_hints_drained(cl)
    finally:
        cl.stop()
    return out


async def _warm_client(eps: list[str], key: bytes):
    """A client that has talked to every node, as a long-lived one has: one it never
    connected to costs up to the client's CONNECT_WAIT (0.25 s) when it is frozen (the kernel
    accepts the TCP connection, the frozen process never completes the ZMTP handshake)."""
    ac = zkv.AsyncClient(eps, timeout=DEFAULT_TIMEOUT)
    await ac.get(key, r=1)
    for ep in eps:
        await ac.status(ep)
    return ac


async def _paced_puts(ac, prefix: bytes, count: int, t0: float,
                      span: float = 10.0) -> list[tuple]:
    """`count` w=3 puts spread evenly over `span` s from t0: (index, ok, seconds, error)."""
    results: list[tuple] = []

    async def one(j: int) -> None:
        await asyncio.sleep(max(0.0, t0 + j * span / count - time.monotonic()))
        t = time.monotonic()
        try:
            await ac.put(prefix + b":%d" % j, b"v%d" % j, w=3)
            results.append((j, True, time.monotonic() - t, ""))
        except zkv.ZkvError as exc:
            results.append((j, False, time.monotonic() - t, f"{type(exc).__name__}: {exc}"))

    await asyncio.gather(*(one(j) for j in range(count)))
    return results


# ---- detection ---------------------------------------------------------------------------------
def measure_detect(root: str, trials: int) -> dict:
    out: dict = {"pause": [], "kill": []}
    cl = LocalCluster(5, os.path.join(root, "detect"), base_port=None)
    cl.start(60)
    victim = "node5"
    others = [n for n in cl.nodes if n.id != victim]
    clients = {n.id: (n.listen, zkv.Client([n.listen], timeout=1.0)) for n in others}

    def views() -> dict[str, str]:
        v = {}
        for nid, (ep, c) in clients.items():
            try:
                doc = c.status(ep)
                v[nid] = next(m["detail"] for m in doc["members"] if m["id"] == victim)
            except (zkv.ZkvError, StopIteration):
                v[nid] = "?"
        return v

    def until(pred, t0: float, limit: float = 30.0) -> float | None:
        while time.monotonic() - t0 < limit:
            if pred(views()):
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    try:
        for kind in ("pause", "kill"):
            for _ in range(trials):
                cl.wait_converged(60)
                time.sleep(1.0)  # a steady heartbeat history
                t0 = time.monotonic()
                if kind == "pause":
                    cl.pause(victim)
                else:
                    cl.kill(victim)
                suspected = until(lambda v: all(x in ("suspect", "down") for x in v.values()), t0)
                down = until(lambda v: all(x == "down" for x in v.values()), t0)
                t1 = time.monotonic()
                if kind == "pause":
                    cl.resume(victim)
                else:
                    cl.restart(victim)
                back = until(lambda v: all(x == "up" for x in v.values()), t1)
                out[kind].append({"suspected_by_all_s": suspected, "down_at_all_s": down,
                                  "up_at_all_again_s": back})
                print(f"detect {kind}: suspected by every peer after {suspected:.2f} s, down "
                      f"at all after {down:.2f} s, up again at all {back:.2f} s after "
                      f"{'SIGCONT' if kind == 'pause' else 'the restart returned'}", flush=True)
    finally:
        for _, c in clients.values():
            c.close()
        cl.stop()
    return out


# ---- a 6 s pause of 1 of 3 under load (zkv bench) ---------------------------------------------
def measure_pause(root: str, smoke: bool) -> dict:
    out_dir = os.path.join(root, "bench-pause")
    cmd = [os.path.join(os.path.dirname(sys.executable), "zkv"), "bench", "--configs", "3,2,2",
           "--workloads", "A", "--faults", "pause", "--out", out_dir, "--duration", "2",
           "--records", "2000"]
    if smoke:
        cmd += ["--quick", "--records", "200", "--fault-seconds", "2"]
    else:
        cmd += ["--fault-seconds", "6", "--availability-duration", "18"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    with open(os.path.join(out_dir, "results.json")) as fh:
        doc = json.load(fh)
    a = doc["availability"][0]
    ph = a["phases"]
    res = {"command": " ".join(cmd[1:]), "paused_seconds": a["paused_seconds"],
           "throughput": {k: ph[k]["throughput"] for k in ph},
           "p99_ms": {k: ph[k]["latency_ms"]["p99"] for k in ph},
           "writes_refused": {k: ph[k]["writes_refused"] for k in ph},
           "during_vs_before": a["during_vs_before"],
           "first_write_after_fault": a["first_write_after_fault"]}
    print(f"pause 1 of 3 for {a['paused_seconds']:.1f} s: ops/s before {res['throughput']['before']:.0f}"
          f" during {res['throughput']['down']:.0f} after {res['throughput']['after']:.0f}; p99 "
          f"{res['p99_ms']['before']:.1f} / {res['p99_ms']['down']:.1f} / "
          f"{res['p99_ms']['after']:.1f} ms; refused writes {res['writes_refused']}", flush=True)
    return res


# ---- network namespaces: duplicates across a cut, reconnection after a heal ----------------------
HOSTS = {"node1": "10.215.0.1", "node2": "10.215.0.2", "node3": "10.215.0.3",
         "c": "10.215.0.100"}


def _netns_main(conn, tag: str, root: str, which: list[str], puts: int, trials: int) -> None:
    try:
        lab = netns.Lab(HOSTS, tag=tag)
        netns.enter(lab.ns("c"))
        names = ["node1", "node2", "node3"]
        cl = LocalCluster(3, os.path.join(root, "netns"), base_port=None,
                          hosts=[HOSTS[h] for h in names],
                          prefixes=[lab.exec_prefix(h) for h in names])
        out: dict = {}
        cl.start(60)
        try:
            if "dups" in which:
                out["dups"] = _dups(cl, lab, puts)
            if "heal" in which:
                out["heal"] = [_heal(cl, lab, t) for t in range(trials)]
        finally:
            cl.stop()
        conn.send(("ok", out))
    except Exception as exc:
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _dups(cl: LocalCluster, lab: netns.Lab, puts: int) -> dict:
    eps = cl.endpoints
    victim = "node3"
    acked: dict[bytes, bytes] = {}
    failed = 0
    lat: list[float] = []
    stop = threading.Event()
    cuts: list[tuple[float, float]] = []

    def cutter() -> None:  # cut 2.5 s, heal 2.5 s, while the puts run (at most twice)
        time.sleep(1.0)
        for _ in range(2):
            if stop.is_set():
                return
            t = time.monotonic()
            lab.cut(victim)
            stop.wait(2.5)
            lab.heal(victim)
            cuts.append((t, time.monotonic()))
            if stop.wait(2.5):
                return

    async def run() -> None:
        nonlocal failed
        sem = asyncio.Semaphore(16)
        async with zkv.AsyncClient(eps, timeout=DEFAULT_TIMEOUT, routing="any") as c:
            async def one(i: int) -> None:
                nonlocal failed
                k, v = b"dup:%d" % i, b"value-%d" % i
                async with sem:
                    await asyncio.sleep(max(0.0, t_begin + i * 10.0 / puts - time.monotonic()))
                    t0 = time.monotonic()
                    try:
                        await c.put(k, v, w=2)
                        acked[k] = v
                        lat.append(time.monotonic() - t0)
                    except zkv.ZkvError:
                        failed += 1

            await asyncio.gather(*(one(i) for i in range(puts)))

    th = threading.Thread(target=cutter)
    t_begin = time.monotonic()
    th.start()
    try:
        asyncio.run(run())
    finally:
        stop.set()
        th.join()
        lab.heal(victim)
    cl.wait_converged(60)
    wait_hints_drained(cl)
    time.sleep(2.0)  # a few anti-entropy rounds
    dup_keys, missing, multi = [], [], 0
    with zkv.Client(eps, timeout=DEFAULT_TIMEOUT) as c:
        for i in range(puts):
            k = b"dup:%d" % i
            vals = c.get(k, r=3).values
            if len(vals) > 1:
                multi += 1
                if len(set(vals)) < len(vals):
                    dup_keys.append(k.decode())
            if k in acked and acked[k] not in vals:
                missing.append(k.decode())
    retried = sum(1 for x in lat if x > 1.0)  # longer than a try: answered after a failover
    res = {"puts": puts, "acked": len(acked), "failed": failed, "cuts": len(cuts),
           "slow_puts_over_1s": retried, "keys_with_duplicate_siblings": len(dup_keys),
           "keys_with_several_siblings": multi, "acked_missing": len(missing),
           "examples": dup_keys[:5]}
    print(f"dups: {puts} puts across {len(cuts)} cuts of {victim}: {len(acked)} acked, "
          f"{failed} failed, {retried} took over 1 s; keys with duplicate siblings "
          f"{len(dup_keys)}, acknowledged missing {len(missing)}", flush=True)
    return res


def _heal(cl: LocalCluster, lab: netns.Lab, trial: int) -> dict:
    eps = {n.id: n.listen for n in cl.nodes}
    victim = "node3"
    cl.wait_converged(60)
    lab.cut(victim)
    t_cut = time.monotonic()
    keys = []
    with zkv.Client([eps["node1"], eps["node2"]], timeout=DEFAULT_TIMEOUT) as c:
        while time.monotonic() - t_cut < 2.5:  # the others route around node3 by now
            time.sleep(0.1)
        for i in range(40):
            k = b"heal:%d:%d" % (trial, i)
            c.put(k, b"v-" + k, w=2)
            keys.append(k)
    time.sleep(max(0.0, t_cut + 6.0 - time.monotonic()))
    lab.heal(victim)
    t_heal = time.monotonic()

    def sees_up(observer: str, others: list[str]) -> bool:
        reply, _ = raw_request(eps[observer], wire.Status(1), 0.3)
        if not isinstance(reply, wire.StatusOk):
            return False
        st = {m["id"]: m["detail"] for m in reply.info["members"]}
        return all(st.get(o) == "up" for o in others)

    # the client given only the healed node's endpoint, at once
    first_pass_missing = None
    first_pass_kinds: dict[str, int] = {}
    all_found_s = None
    seen: dict[str, float] = {}
    deadline = t_heal + 30.0
    with zkv.Client([eps[victim]], timeout=2.0, routing="any") as c3:
        while time.monotonic() < deadline and (len(seen) < 3 or all_found_s is None):
            now = time.monotonic() - t_heal
            for obs, others in (("node1", ["node3"]), ("node2", ["node3"]),
                                ("node3", ["node1", "node2"])):
                if obs not in seen and sees_up(obs, others):
                    seen[obs] = time.monotonic() - t_heal
            if all_found_s is None:
                miss = 0
                kinds: dict[str, int] = {}
                for k in keys:
                    try:
                        vals = c3.get(k).values
                        if vals != [b"v-" + k]:
                            miss += 1
                            kinds["not found" if not vals else "other values"] = kinds.get(
                                "not found" if not vals else "other values", 0) + 1
                    except zkv.ZkvError as exc:
                        miss += 1
                        kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                if first_pass_missing is None:
                    first_pass_missing = miss
                    first_pass_kinds = kinds
                if miss == 0:
                    all_found_s = now
            time.sleep(0.05)
    both = max(seen.values()) if len(seen) == 3 else None
    res = {"cut_seconds": round(t_heal - t_cut, 2), "seen_up_s": seen,
           "both_sides_up_s": both, "keys": len(keys),
           "healed_node_client_first_pass_missing": first_pass_missing,
           "healed_node_client_first_pass_kinds": first_pass_kinds,
           "healed_node_client_all_found_s": all_found_s}
    print(f"heal trial {trial + 1}: both sides up after "
          f"{'never (30 s)' if both is None else f'{both:.2f} s'} {seen}; client on node3 "
          f"only: {first_pass_missing} of 40 missing in its first pass {first_pass_kinds}, "
          f"all found after "
          f"{all_found_s if all_found_s is None else round(all_found_s, 2)} s", flush=True)
    return res


def measure_netns(root: str, which: list[str], puts: int, trials: int) -> dict:
    why = netns.unavailable()
    if why:
        return {"skipped": why}
    lab = netns.Lab(HOSTS, tag=f"za{os.getpid() % 100000}")
    try:
        lab.create()
    except netns.NetnsUnavailable as exc:
        return {"skipped": str(exc)}
    try:
        return netns.run_in_child(_netns_main, lab.tag, root, which, puts, trials)
    finally:
        lab.close()


# ---- the table ------------------------------------------------------------------------------------
def goals(res: dict) -> list[dict]:
    rows = []

    def row(measure, value, goal, met):
        rows.append({"measure": measure, "value": value, "goal": goal, "met": met})

    fr = res.get("freeze")
    if fr:
        for t in fr["trials"]:
            d = t["direct_to_live_coordinator"]
            row("first w=3 put after 2 of 5 freeze, to a live coordinator",
                f"{d['outcome']} in {d['latency_s'] * 1e3:.0f} ms (bound "
                f"{d['bound_s'] * 1e3:.0f} ms)", "ok, <= soft timeout + 2x p99",
                d["outcome"] == "ok" and d["latency_s"] <= d["bound_s"])
            f = t["client_first_put"]
            b = f.get("bound_s")
            row("first w=3 put after 2 of 5 freeze, zkv.AsyncClient (all nodes)",
                f"{'ok' if f['ok'] else 'refused'} in {f['latency_s'] * 1e3:.0f} ms (bound "
                + (f"{b * 1e3:.0f} ms)" if b else f"n/a: coordinator {f['coordinator']})"),
                "ok, <= [client hedge +] soft timeout + 2x p99",
                f["ok"] and b is not None and f["latency_s"] <= b)
            row("w=3 puts refused in the 10 s after freezing 2 of 5",
                f"{t['refused']} of {t['puts_after']}", "0", t["refused"] == 0)
    de = res.get("detect")
    if de:
        for kind in ("pause", "kill"):
            for t in de[kind]:
                s = t["suspected_by_all_s"]
                row(f"time until every peer suspects a {'frozen' if kind == 'pause' else 'killed'}"
                    " node", "never" if s is None else f"{s:.2f} s", "<= 2 s",
                    s is not None and s <= 2.0)
                b = t["up_at_all_again_s"]
                if kind == "pause":
                    row("time until every peer sees a resumed node up",
                        "never" if b is None else f"{b:.2f} s", "<= 1 s",
                        b is not None and b <= 1.0)
    pa = res.get("pause")
    if pa:
        r = pa["during_vs_before"]
        row(f"throughput during a {pa['paused_seconds']:.1f} s pause of 1 of 3 / before",
            f"{r['throughput']:.2f}", ">= 0.8", r["throughput"] is not None
            and r["throughput"] >= 0.8)
        row("p99 during that pause / before", f"{r['p99']:.2f}" if r["p99"] else "n/a",
            "<= 3", r["p99"] is not None and r["p99"] <= 3.0)
    ns = res.get("netns") or {}
    if "skipped" in ns:
        row("duplicate siblings / healed partition (namespaces)", "skipped: " + ns["skipped"],
            "", None)
    if ns.get("dups"):
        d = ns["dups"]
        row(f"duplicate siblings after {d['puts']} puts across {d['cuts']} network cuts",
            f"{d['keys_with_duplicate_siblings']} ({d['slow_puts_over_1s']} puts took > 1 s)",
            "0", d["keys_with_duplicate_siblings"] == 0)
        row("acknowledged puts missing after the cuts", str(d["acked_missing"]), "0",
            d["acked_missing"] == 0)
    for t in ns.get("heal", []):
        b = t["both_sides_up_s"]
        row("time until both sides of a healed partition see each other up",
            "never" if b is None else f"{b:.2f} s", "<= 2 s", b is not None and b <= 2.0)
        kinds = t.get("healed_node_client_first_pass_kinds", {})
        wrong = kinds.get("not found", 0) + kinds.get("other values", 0)
        row("acked keys a client of the healed node reads as not found right after the heal",
            f"{wrong} of {t['keys']}", "0", wrong == 0)
        row("... refused (QuorumError: it still sees the others down), until all found",
            f"{sum(kinds.values()) - wrong} of {t['keys']}, "
            f"{t['healed_node_client_all_found_s']:.2f} s", "(not a goal)", None)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="freeze,detect,pause,dups,heal")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="every measure once, fewer ops")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dir", default=None, help="keep node data and logs here")
    args = ap.parse_args(argv)
    which = [x.strip() for x in args.only.split(",") if x.strip()]
    trials = 1 if args.smoke else args.trials
    root = args.dir or tempfile.mkdtemp(prefix="zkv-bench-avail-")
    res: dict = {}
    try:
        if "freeze" in which:
            res["freeze"] = measure_freeze(root, trials, 20 if args.smoke else 100)
        if "detect" in which:
            res["detect"] = measure_detect(root, trials)
        if "pause" in which:
            res["pause"] = measure_pause(root, args.smoke)
        if {"dups", "heal"} & set(which):
            res["netns"] = measure_netns(root, which, 200 if args.smoke else 1000, trials)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    res["goals"] = goals(res)
    if args.json:
        print(json.dumps(res, default=str))
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "goals"}, default=str))
        print()
        print(f"{'measure':78} {'value':>34} {'goal':>30}  met")
        for g in res["goals"]:
            met = {True: "met", False: "NOT MET", None: "-"}[g["met"]]
            print(f"{g['measure'][:78]:78} {g['value'][:34]:>34} {g['goal'][:30]:>30}  {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
