"""The quorum benchmark suite behind `zkv bench`: YCSB workloads per (N, R, W), measured
staleness, same-run baselines, results.json + report.md + plots.

Local (default): starts ``--nodes`` zkv-node processes on loopback per distinct N, loads the
records, runs every configuration and workload, then the availability run: workload A while
the last node is paused (SIGSTOP), killed (SIGKILL, then restarted) and, as root, cut off the
network (its own cluster of nodes in network namespaces, zkv.netns); each fault lasts
``--fault-seconds`` (default 6 s, 3x the failure-detection time), with throughput, p99 and
refused writes before / during / after it and the outcome of the first write after it.

Multi-machine: start the nodes yourself (``zkv-node ... --n 3`` on each machine), then run
``zkv bench --cluster tcp://10.0.0.1:7001,tcp://10.0.0.2:7001 --configs "3,2,2;3,1,1"`` from a
client machine. Every configuration must use the cluster's N; keys get a run-specific prefix
so earlier data is not touched; the availability run is skipped (the suite cannot pause
remote processes). Run clients on a machine other than the nodes' to measure the nodes alone.

``--conflict-modes`` runs only the namespaces workload instead (issue 15, conflicts.py): the
same concurrent read-modify-write writers against an ``lww`` and a ``siblings`` namespace,
reporting how many acknowledged writes each lost.

``--throughput`` runs only issue 12's peak-throughput matrix instead (throughput.py): 3 local
nodes, N3 R2 W2, 1, 4 and 16 client processes x 1-64 operations in flight each, with CPU per
operation of nodes and clients, the batched and unbatched raw pyzmq echo and redis-benchmark
in the same run, and the issue's goal lines (``--quick``: a 2 x 2 matrix, about a minute).

``--security`` runs only the cost-of-security workload instead (issue 13, security.py):
workload A against a plain and a CurveZMQ (``--keys``) local cluster in the same run,
printing throughput and p99 of each and their ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["main", "build_parser", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zkv bench",
        description="The quorum benchmark suite: YCSB A/B/C/F per (N,R,W) with latency "
        "percentiles, measured staleness, an availability run and same-run baselines "
        "(raw pyzmq echo, redis-benchmark when installed).",
        epilog="Multi-machine: start zkv-node processes yourself and pass --cluster "
        "tcp://HOST:PORT,...; configurations must match the cluster's N. Local nodes take free "
        "ports from 10000 up to the kernel's ephemeral range, or from the range "
        "$ZKV_LOCAL_PORTS=LO-HI names (a host shared with others).")
    p.add_argument("--nodes", type=int, default=None, help="local nodes per cluster (default 3)")
    p.add_argument("--configs", default=None,
                   help='"N,R,W;N,R,W;..." (default the seed\'s figure 2: '
                   '"3,2,2;3,1,1;3,1,3;3,3,1"); N,R,W,PR,PW adds primary quorums (e.g. "3,2,2;3,2,2,2,2": the cost of '
                   'strict quorums in latency, and in availability under faults)')
    p.add_argument("--workloads", default=None, help="comma list of A,B,C,F (default all)")
    p.add_argument("--records", type=int, default=None, help="records loaded (default 10000)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per configuration and workload (default 10)")
    p.add_argument("--clients", type=int, default=None, help="client processes (default 2)")
    p.add_argument("--inflight", type=int, default=None,
                   help="requests in flight per client process (default 8)")
    p.add_argument("--value-size", dest="value_size", type=int, default=None,
                   help="value bytes (default 1024)")
    p.add_argument("--availability-duration", dest="availability_duration", type=float,
                   default=None, help="seconds of each availability run; 0 skips it (default 12)")
    p.add_argument("--faults", default=None,
                   help="faults of the availability run, a comma list of pause (SIGSTOP), kill "
                   "(SIGKILL, then restart) and partition (the node's link cut, nodes in network "
                   "namespaces; root only, else skipped with a note); default all three")
    p.add_argument("--fault-seconds", dest="fault_seconds", type=float, default=None,
                   help="how long each fault lasts (default 6: 3x the nodes' 2 s failure "
                   "detection, so the run shows the cluster after it noticed)")
    p.add_argument("--out", default="bench-out", help="output directory (default bench-out)")
    p.add_argument("--quick", action="store_true", help="small and short: about a minute (less with --faults pause,kill)")
    p.add_argument("--cluster", default=None,
                   help="tcp://HOST:PORT,... of a running cluster instead of local nodes")
    p.add_argument("--seed", type=int, default=42, help="seed of every request stream")
    p.add_argument("--sync", default="interval", choices=["none", "interval", "always"],
                   help="local nodes' durability mode (default interval)")
    p.add_argument("--timeout", type=float, default=2.0, help="client timeout per call, s")
    p.add_argument("--routing", default=None, choices=["any", "token"],
                   help="any (default; --throughput: token): spread requests over every node, like clients behind "
                   "a load balancer, which is what shows replica staleness; token: send each "
                   "key to its owners (zkv.Client's default): gets read R owners' copies "
                   "directly (owner reads), R=1 from the key's write coordinator, so they "
                   "are rarely stale")
    p.add_argument("--conflict-modes", dest="conflict_modes", action="store_true",
                   help="run only the conflict-mode workload: --clients x --inflight writers "
                   "add to --keys shared sets for --duration s in an lww and a siblings "
                   "namespace; reports acknowledged writes lost per mode")
    p.add_argument("--security", action="store_true",
                   help="run only the cost-of-security workload: workload A for --duration s "
                   "per round against a plain and a CurveZMQ (--keys) local cluster, "
                   "alternating, with --clients x --inflight requests in flight; prints "
                   "throughput and p99 of both and their ratios")
    p.add_argument("--throughput", action="store_true",
                   help="run only the peak-throughput matrix of issue 12: N3 R2 W2 on 3 local "
                   "nodes, 50/50 get/put of --value-size values, client processes x in flight "
                   "each (--matrix), --duration s per cell (default 5; --quick: 2 s and a 2 x 2 "
                   "matrix), node and client CPU per op, batched get_many/put_many cells "
                   "(--batch), batched and unbatched raw pyzmq echo and redis-benchmark "
                   "(unpipelined, and pipelined for the batched cells) in the same run; "
                   "writes results.json and report.md")
    p.add_argument("--matrix", default=None,
                   help='--throughput cells as "CLIENTS:INFLIGHT" comma lists (default '
                   '"1,4,16:1,4,16,64"; --quick "1,4:1,16")')
    p.add_argument("--batch", default=None,
                   help="--throughput: keys per get_many / put_many call of the batched cells "
                   "(1 and 4 client processes, after the matrix), a comma list; 0: none "
                   "(default 64)")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds per mode of the --security workload (default 2)")
    p.add_argument("--keys", type=int, default=8,
                   help="shared sets of the conflict-mode workload (default 8)")
    return p


QUICK = {"records": 500, "duration": 1.0, "clients": 2, "inflight": 4,
         "availability_duration": 1.5, "redis_requests": 5000, "echo_round_trips": 1000}


def settings_from_args(args: argparse.Namespace):
    from zkv.bench.runner import FIGURE2_CONFIGS, Settings, parse_configs, parse_faults
    from zkv.bench.workloads import parse_workloads
    from zkv.config import endpoint_problem

    s = Settings(out=args.out, seed=args.seed, sync=args.sync, timeout=args.timeout,
                 quick=args.quick, routing=args.routing or "any")
    if args.quick:
        for k, v in QUICK.items():
            setattr(s, k, v)
    for k in ("nodes", "records", "duration", "clients", "inflight", "value_size",
              "availability_duration"):
        v = getattr(args, k)
        if v is not None:
            setattr(s, k, v)
    s.configs = parse_configs(FIGURE2_CONFIGS if args.configs is None else args.configs)
    s.workloads = [w.name for w in parse_workloads(args.workloads or "A,B,C,F")]
    if args.faults is not None:
        s.faults = parse_faults(args.faults)
    if args.fault_seconds is not None:
        if not 0 < args.fault_seconds < math.inf:
            raise ValueError("--fault-seconds must be positive")
        s.fault_seconds = args.fault_seconds
    if args.cluster:
        s.cluster = [e.strip() for e in args.cluster.split(",") if e.strip()]
        for ep in s.cluster:  # (checked before the baselines run, not after them)
            why = endpoint_problem(ep)
            if why is not None:
                raise ValueError(f"--cluster {why}")
    for name in ("nodes", "records", "clients", "inflight"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    # (a finite number: nan passed `<= 0` and a cell never ended)
    if not 0 < s.duration < math.inf:
        raise ValueError("--duration must be positive")
    if not 0 < s.timeout < math.inf:
        raise ValueError("--timeout must be positive")
    if not 0 <= s.availability_duration < math.inf:
        raise ValueError("--availability-duration must not be negative (0 skips the phase)")
    if sum(map(bool, (args.throughput, args.security, args.conflict_modes))) > 1:
        raise ValueError("--throughput, --security and --conflict-modes each run alone: "
                         "pick one")
    if os.path.exists(s.out) and not os.path.isdir(s.out):  # (checked before the run: it
        raise ValueError(f"--out {s.out}: a file, not a directory")  # failed at the end)
    try:  # (made now: one that cannot be made failed the run at its end, results lost)
        os.makedirs(s.out, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {s.out}: cannot make it ({exc.strerror or exc})") from None
    if not os.access(s.out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {s.out}: not writable")
    if s.value_size < 16:
        raise ValueError("--value-size must be at least 16 (the write-id header)")
    from zkv.wire import DEFAULT_MAX_VALUE

    # (the baselines ran 5 min before a put was refused; a --cluster may take larger values)
    if s.value_size > DEFAULT_MAX_VALUE and not s.cluster:
        raise ValueError(f"--value-size {s.value_size}: above a node's value limit "
                         f"({DEFAULT_MAX_VALUE} bytes, zkv-node --max-value-size)")
    if not s.cluster:
        big = [c.label for c in s.configs if c.n > s.nodes]
        if big:
            raise ValueError(f"{', '.join(big)} need(s) at least N nodes: --nodes "
                             f"{max(c.n for c in s.configs)} (now {s.nodes})")
    return s


def main(argv: list[str] | None = None) -> int:
    """`zkv bench`: run the suite, write results.json, report.md and the plots to --out."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"zkv bench: {exc}", file=sys.stderr)
        return 2
    if settings.cluster and not (args.throughput or args.security):
        try:  # (a run at the cluster's N labelled with --configs' N read as a broken quorum)
            _check_cluster_n(settings)
        except ValueError as exc:
            print(f"zkv bench: {exc}", file=sys.stderr)
            return 2
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):  # the cleanup of Ctrl-C (a node paused by
        signal.signal(sig, _interrupted)  # the pause fault was left stopped for good)
    if args.throughput:
        return throughput_mode(args, settings, argv)
    if args.conflict_modes:
        return conflict_modes(args, settings)
    if args.security:
        return security_mode(args, settings)
    from zkv.bench.report import write_all
    from zkv.bench.runner import Suite

    suite = Suite(settings)
    try:
        results = suite.run()
    except KeyboardInterrupt:
        print("zkv bench: interrupted", file=sys.stderr)
        return 130
    paths = write_all(results, settings.out)
    g = results.get("goal", {})
    suite.log(f"[bold]wrote[/] {', '.join(sorted(paths.values()))}")
    if g.get("throughput_ratio") is not None or g.get("p99_ratio") is not None:
        suite.log(f"goal N3 R2 W2 A: throughput {_x(g.get('throughput_ratio'))} redis "
                  f"(>= 0.4x), p99 {_x(g.get('p99_ratio'))} pyzmq round trip (<= 10x)")
    return 0


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def _check_cluster_n(s) -> None:
    """ValueError unless every --configs N is the N of the --cluster's default namespace: a
    configuration's R and W are sent with each request, its N is the cluster's."""
    from zkv.client import Client
    from zkv.errors import ZkvError

    try:
        with Client(s.cluster, timeout=s.timeout) as c:
            n = c.ring_info().n
    except ZkvError as exc:
        raise ValueError(f"--cluster: cannot read its ring: {exc}") from None
    wrong = [cfg.label for cfg in s.configs if cfg.n != n]
    if wrong:
        raise ValueError(f"--configs {', '.join(wrong)}: the cluster's N is {n} (every "
                         "configuration must have it: N is the cluster's, only R and W are "
                         "chosen per request)")


def conflict_modes(args: argparse.Namespace, s) -> int:
    """`zkv bench --conflict-modes`: the conflict-mode workload alone (see conflicts.py)."""
    import tempfile

    from zkv.bench import conflicts, report

    if args.keys < 1:
        print("zkv bench: --keys must be at least 1", file=sys.stderr)
        return 2
    writers = s.clients * s.inflight
    n = min(3, s.nodes)
    cluster = None
    root = tempfile.mkdtemp(prefix="zkv-bench-conflicts-")
    try:
        if s.cluster:
            endpoints = s.cluster
        else:
            from zkv.local import LocalCluster

            cluster = LocalCluster(s.nodes, root, base_port=None, sync=s.sync)
            cluster.start()
            endpoints = cluster.endpoints
        print(f"conflict modes: {writers} concurrent writers, {args.keys} shared sets, "
              f"{s.duration:g}s per mode, N={n} (majority R/W), {s.nodes} nodes")
        res = conflicts.run(endpoints, writers=writers, keys=args.keys, duration=s.duration,
                            timeout=s.timeout, seed=s.seed, n=n)
    finally:
        if cluster is not None:
            cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {report.write_json(res, s.out, 'conflicts.json')}")
    return 0


def parse_matrix(spec: str) -> tuple[list[int], list[int]]:
    """"1,4,16:1,4,16,64" -> ([1, 4, 16], [1, 4, 16, 64])."""
    try:
        left, right = spec.replace(" ", "").split(":")
        clients = [int(x) for x in left.split(",") if x]
        inflight = [int(x) for x in right.split(",") if x]
    except ValueError:
        raise ValueError(f"--matrix {spec!r}: CLIENTS:INFLIGHT, e.g. 1,4,16:1,4,16,64") from None
    if not clients or not inflight or min(clients + inflight) < 1:
        raise ValueError(f"--matrix {spec!r}: positive integers on both sides")
    if max(inflight) > 256:
        raise ValueError("--matrix: at most 256 in flight per client (a node's per-connection "
                         "cap)")
    return clients, inflight


def throughput_mode(args: argparse.Namespace, s, argv: list[str] | None = None) -> int:
    """`zkv bench --throughput`: issue 12's peak-throughput matrix (see throughput.py)."""
    from zkv.bench import report
    from zkv.bench import throughput as tp

    if s.cluster:
        print("zkv bench: --throughput starts its own local nodes (no --cluster)",
              file=sys.stderr)
        return 2
    clients, inflight = ((list(tp.QUICK_CLIENTS), list(tp.QUICK_INFLIGHT)) if s.quick
                         else (list(tp.MATRIX_CLIENTS), list(tp.MATRIX_INFLIGHT)))
    if args.matrix:
        try:
            clients, inflight = parse_matrix(args.matrix)
        except ValueError as exc:
            print(f"zkv bench: {exc}", file=sys.stderr)
            return 2
    try:
        batches = tp.MATRIX_BATCH if args.batch is None else tuple(
            int(x) for x in args.batch.split(",") if x.strip() and int(x))
        if any(not 1 <= b <= 4096 for b in batches):
            raise ValueError
    except ValueError:
        print(f"zkv bench: --batch wants keys per call, 1 to 4096 (or 0), got {args.batch!r}",
              file=sys.stderr)
        return 2
    run = tp.Run(records=args.records or (1000 if s.quick else 10_000),
                 duration=args.duration or (2.0 if s.quick else 5.0),
                 value_size=s.value_size, clients=clients, inflight=inflight,
                 batches=batches, echo_duration=1.0 if s.quick else 2.0,
                 echo_round_trips=1000 if s.quick else 5000,
                 redis_requests=5000 if s.quick else 50_000,
                 timeout=max(s.timeout, 5.0), seed=s.seed, sync=s.sync,
                 routing=args.routing or "token")
    try:
        res = run.run()
    except KeyboardInterrupt:
        print("zkv bench: interrupted", file=sys.stderr)
        return 130
    res["argv"] = list(argv if argv is not None else sys.argv[1:])
    paths = report.write_throughput(res, s.out)
    print()
    print("\n".join(report.goal_table(res["goal"])))
    print(f"wrote {', '.join(sorted(paths.values()))}")
    return 0


def security_mode(args: argparse.Namespace, s) -> int:
    """`zkv bench --security`: workload A, plain vs CurveZMQ, same run (see security.py)."""
    from zkv.bench import report
    from zkv.bench import security as sec
    from zkv.security import has_curve

    if s.cluster:
        print("zkv bench: --security starts its own local clusters (no --cluster)",
              file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("zkv bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    if not has_curve():
        print("zkv bench: this pyzmq has no libsodium-backed CurveZMQ", file=sys.stderr)
        return 2
    inflight = s.clients * s.inflight
    records = s.records
    print(f"security: workload A, {s.nodes} nodes, {records} records, {inflight} requests in "
          f"flight, {s.duration:g}s x {args.rounds} round(s) per mode, plain vs CurveZMQ")
    res = sec.run(nodes=s.nodes, records=records, duration=s.duration, inflight=inflight,
                  value_size=s.value_size, rounds=args.rounds, timeout=max(s.timeout, 5.0),
                  seed=s.seed, sync=s.sync)
    for line in sec.format_summary(res):
        print(line)
    print(f"wrote {report.write_json(res, s.out, 'security.json')}")
    return 0


def _x(v) -> str:
    return "missing" if v is None else f"{v:.2f}x"
