"""Command-line entry points: `zkv` (operator and developer CLI) and `zkv-node` (a server).

Every command fails the same way: one line on stderr saying what is wrong, a non-zero exit,
never a traceback (ZKV_DEBUG=1 shows it); a closed pipe (`zkv ring | head`) ends it quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import re
import signal
import stat
import sys
import time
from collections import Counter

from zkv.errors import InvalidRequest, RequestTimeout, Unavailable, ZkvError

DEFAULT_NODE = "tcp://127.0.0.1:7001"  # --node's default, unless $ZKV_NODE names another
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `seq 1000 | head` reports for seq
# `zkv dump --store` and `zkv compact` finished, but met corrupt records: the keys they left
# out of the dump or dropped are named on stderr (not 1: the output is there; not 2: usage)
EXIT_DAMAGED = 4


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `zkv put: error: ... (zkv put --help)`, exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class Usage(InvalidRequest):
    """A command line the command cannot take (arguments that do not go together, one
    missing): reported as argparse reports its own, `zkv put: error: ... (see zkv put
    --help)`, exit 2. (`zkv put a` exited 1, as if a node had refused it.)"""


@contextlib.contextmanager
def _one_line_argparse_errors():
    """Subcommands with their own parsers (bench, compact) fail in one line too."""
    saved = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = Parser.error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = saved


def _deepest_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser the words of argv name: `zkv namespace create ...` -> its own."""
    for word in argv:
        choices = next((a.choices for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), None)
        if not choices or word not in choices:
            if word.startswith("-") or not choices:
                continue
            break
        parser = choices[word]
    return parser


def _negative_values_joined(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """argv with `--opt -3` written `--opt=-3` where --opt takes a value: a parser with an
    option that looks like a negative number (`zkv keys -0`) reads -3 as an option, and
    `zkv keys --limit -3` said only "expected one argument" instead of its type's reason."""
    options = _deepest_parser(parser, argv)._option_string_actions
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        action = options.get(word)
        if (action is not None and action.nargs is None and i + 1 < len(argv)
                and _NEGATIVE_RE.match(argv[i + 1])):
            out.append(f"{word}={argv[i + 1]}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


_NEGATIVE_RE = re.compile(r"-\d+(\.\d*)?$")


def endpoint(value: str) -> str:
    """argparse type of --node: tcp://HOST:PORT that can be connected to, or a member's id
    (anything not starting with tcp://; `member_endpoint` looks it up)."""
    from zkv.config import NODE_ID_RE, is_wildcard, parse_endpoint

    # (--node's default is $ZKV_NODE's value, checked here too: say where it came from)
    env = " (from $ZKV_NODE)" if value == os.environ.get("ZKV_NODE") else ""
    if not value.startswith("tcp://"):
        host, colon, port = value.rpartition(":")
        if NODE_ID_RE.match(value) and not (colon and host and port.isdigit()):
            return value
        bare = ":" in host and not host.startswith("[")  # an IPv6 literal: bracketed
        hint = (f" (tcp://{f'[{host}]' if bare else host}:{port}?)"
                if colon and port.isdigit() else "")
        raise argparse.ArgumentTypeError(f"{value!r}{env}: expected tcp://HOST:PORT (IPv6 as "
                                         f"tcp://[::1]:PORT) or a member's id{hint}")
    try:
        parse_endpoint(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}{env}") from None
    if is_wildcard(value):
        raise argparse.ArgumentTypeError(f"{value!r}{env}: a wildcard address cannot be "
                                         "connected to; name the node's host")
    return value


def default_node() -> str:
    """--node's default: $ZKV_NODE when set (an operator's cluster), else DEFAULT_NODE."""
    return os.environ.get("ZKV_NODE") or DEFAULT_NODE


def member_endpoint(node_id: str, timeout: float, keys: str | None) -> str:
    """The address of member `node_id` (`--node node3` for `--node tcp://HOST:PORT`), from
    the member table of the default node (`default_node()`)."""
    from zkv.client import Client

    via = default_node()
    if not via.startswith("tcp://"):
        if via == node_id:  # (no --node: $ZKV_NODE itself names a member, looked up nowhere)
            raise Usage(f"$ZKV_NODE={via!r}: expected tcp://HOST:PORT (a member's id is "
                        "looked up at $ZKV_NODE, so it cannot be one itself)")
        raise InvalidRequest(f"--node {node_id}: a member's id is looked up at $ZKV_NODE, "
                             f"which must be tcp://HOST:PORT, not {via!r}")
    try:
        with Client([via], timeout=timeout, keys=keys) as c:
            info = c.ring_info(via)
    except (Unavailable, RequestTimeout) as exc:
        raise Unavailable(f"--node {node_id}: a member's id is looked up at {via}, which did "
                          f"not answer ({exc}); give the node's tcp://HOST:PORT, or set "
                          "ZKV_NODE to a node that is up") from None
    for m in info.members:
        if m.id == node_id:
            return m.listen
    raise InvalidRequest(f"--node {node_id}: no such member in the table of {via} (members: "
                         f"{', '.join(sorted(m.id for m in info.members))})")


def positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: must be a positive number of seconds")
    return v


def positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be 1 or more")
    return v


def quorum_arg(value: str) -> int | str:
    """--r/--w/--pr/--pw of every command: a number, or one, quorum or all (of the
    namespace's N; zkv.client.core.level)."""
    from zkv.client.core import LEVELS

    if value.lower() in LEVELS:
        return value.lower()
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a number, or one of "
                                         f"{', '.join(LEVELS)}") from None


# ---- zkv-node ---------------------------------------------------------------------------------
def node_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="zkv-node",
        description="Run one zkv node. Every flag can also be set in the --config TOML file "
        "(same name, '_' for '-'); flags win over the file, the file over defaults.",
    )
    p.add_argument("--id", help="unique, stable node name")
    p.add_argument("--listen", help="tcp://HOST:PORT to bind for clients and peers (ROUTER); "
                   "0.0.0.0, * or [::] bind every interface and need --advertise")
    p.add_argument("--gossip", help="tcp://HOST:PORT to bind for this node's gossip PUB socket")
    p.add_argument("--advertise", help="tcp://HOST:PORT peers and clients use to reach --listen "
                   "(default: --listen itself)")
    p.add_argument("--advertise-gossip", dest="advertise_gossip",
                   help="tcp://HOST:PORT peers use to reach --gossip (default: --gossip, or "
                   "--advertise's host with --gossip's port)")
    p.add_argument("--data-dir", dest="data_dir", help="directory for data and cluster state")
    p.add_argument("--seed", action="append", default=None,
                   help="--listen endpoint of a running node to join through (repeatable)")
    p.add_argument("--rack", help="failure domain (default: 'default')")
    p.add_argument("--config", help="TOML file with any of these settings")
    p.add_argument("--keys", help="directory made by `zkv keygen`: CurveZMQ on every socket, "
                   "plain text refused (default: plain text, development only)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int,
                   help="serve /metrics, /healthz and /readyz over HTTP on this port (0: off)")
    p.add_argument("--metrics-host", dest="metrics_host",
                   help="address the metrics port binds (default 127.0.0.1; 0.0.0.0 for a "
                   "Prometheus on another machine)")
    g = p.add_argument_group("cluster-wide settings (used when this node forms a new cluster)")
    g.add_argument("--ring-size", dest="ring_size", type=int, help="partitions Q (default 256)")
    g.add_argument("--n", type=int, help="replicas per key (default 3)")
    g.add_argument("--r", type=int, help="default read quorum (default 2)")
    g.add_argument("--w", type=int, help="default write quorum (default 2)")
    g.add_argument("--auto-commit", dest="auto_commit", choices=["true", "false"],
                   help="commit membership changes at once (default true) or stage them until "
                   "`zkv cluster commit`")
    s = p.add_argument_group("node settings")
    s.add_argument("--sync", choices=["none", "interval", "always"],
                   help="durability: fsync never, every --sync-interval-ms, or before every ack")
    s.add_argument("--sync-interval-ms", dest="sync_interval_ms", type=int,
                   help="with --sync interval: milliseconds between fsyncs (default 50)")
    s.add_argument("--replica-timeout", dest="replica_timeout", type=float,
                   help="seconds a coordinator waits for replicas (default 1.0)")
    s.add_argument("--gossip-interval", dest="gossip_interval", type=float,
                   help="seconds between heartbeats (default 0.2)")
    s.add_argument("--down-after", dest="down_after", type=float,
                   help="seconds without a heartbeat before a peer counts as down (default "
                   "2.0; the phi accrual detector may say so sooner, from the heartbeats' "
                   "usual spacing: raise both on lossy or slow links)")
    s.add_argument("--max-value-size", dest="max_value_size", type=int,
                   help="largest value in bytes (default 16 MiB)")
    s.add_argument("--min-free-mb", dest="min_free_mb", type=int,
                   help="refuse writes (still serving reads) while less than this many MiB "
                   "are free on the data dir's file system (default 64; 0: only when a "
                   "write fails)")
    s.add_argument("--max-siblings", dest="max_siblings", type=int,
                   help="refuse a client write that would leave its key with more siblings "
                   "than this (default 100; 0: no limit); read the key and write back with "
                   "its context to resolve them")
    s.add_argument("--context-seals", dest="context_seals", choices=["require", "accept", "off"],
                   help="with --keys: seal the contexts given to clients and refuse a write "
                   "whose context this cluster did not issue for its key (require, the "
                   "default); accept and off: steps of a rolling upgrade from a version "
                   "without seals (README)")
    s.add_argument("--sibling-warn", dest="sibling_warn", type=int,
                   help="log and count keys with more siblings than this (default 25)")
    s.add_argument("--max-connections", dest="max_connections", type=int,
                   help="connections to --listen at most (clients and peers); past it the "
                   "one idle the longest is closed (default 10000, lowered to fit ulimit -n)")
    s.add_argument("--aae-interval", dest="aae_interval", type=float,
                   help="seconds between anti-entropy rounds (0 disables; default 0.2)")
    s.add_argument("--tombstone-grace", dest="tombstone_grace", type=float,
                   help="seconds before a tombstone all owners hold is reaped (default 60)")
    s.add_argument("--restore-old-snapshot", dest="restore_old_snapshot", action="store_true",
                   help="start on stores restored from a snapshot older than 2 x "
                   "--tombstone-grace + 60 s (refused by default: deletes made since it was "
                   "taken would come back; for rolling every node back to one moment)")
    s.add_argument("--purge-ended-namespaces", dest="purge_ended_namespaces",
                   action="store_true",
                   help="start on stores restored from a snapshot that holds keys of namespace "
                   "generations truncated or dropped since (refused by default, naming each: "
                   "the start would purge them; `zkv dump --store` copies them out first)")
    s.add_argument("--new-cluster", dest="new_cluster", action="store_true",
                   help="without --seed, found a new cluster even though the data dir holds "
                   "data and no cluster state (refused by default: a member whose cluster.json "
                   "was lost would found one of its own; for a cluster rebuilt from backups; "
                   "command line only)")
    s.add_argument("--handoff-batch", dest="handoff_batch", type=int,
                   help="hints delivered per owner per step (default 200; 0 holds every hint "
                   "until the owner is repaired otherwise: read repair, anti-entropy)")
    s.add_argument("--aae-concurrency", dest="aae_concurrency", type=int,
                   help="Merkle exchanges in flight at once (default 8)")
    s.add_argument("--transfer-rate", dest="transfer_rate", type=int,
                   help="the node's I/O budget in bytes/s: partition transfers, hint delivery, "
                   "anti-entropy and compaction share it (default 33554432 = 32 MiB/s)")
    s.add_argument("--transfer-concurrency", dest="transfer_concurrency", type=int,
                   help="partitions this node receives at once (default 2)")
    s.add_argument("--log-level", dest="log_level",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def node_main(argv: list[str] | None = None) -> int:
    from zkv import config

    # a SIGTERM/SIGINT during start-up (store recovery, join) still ends in a clean exit 0
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early_stop.append(signum))
    args = node_parser().parse_args(argv)
    try:
        cfg = config.load(vars(args))
    except InvalidRequest as exc:
        print(f"zkv-node: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s {cfg.id} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from zkv.node.antientropy import echo_window
    from zkv.node.conns import fd_limit_problem
    from zkv.node.membership import check_advertised_seed, check_founding, load_cluster
    from zkv.node.snapshots import check_ended, check_restored
    from zkv.node.transport import Node

    # (check_founding first: a damaged cluster.json is logged once, then refused)
    stray = fd_limit_problem() or check_founding(cfg.data_dir, cfg.seed, args.new_cluster)
    doc = {} if stray else load_cluster(os.path.join(cfg.data_dir, "cluster.json"))
    stray = stray or check_advertised_seed(cfg, doc, args.new_cluster)
    if stray:
        print(f"zkv-node: {stray}", file=sys.stderr)
        return 1
    try:
        saved = doc.get("namespaces")
        # both decided before either is logged: a restore check_restored refuses starts
        # nothing and purges nothing ("purged now" was logged above its refusal); check_ended
        # changes nothing, and must read the marks before check_restored removes them
        ended = check_ended(cfg.data_dir, saved, args.purge_ended_namespaces)
        restored = check_restored(cfg.data_dir, time.time_ns() // 1_000_000,
                                  echo_window(cfg.tombstone_grace), args.restore_old_snapshot)
        for line in [*ended, *([restored] if restored else [])]:
            logging.getLogger("zkv.node").warning("%s", line)
        node = Node(cfg, flags=vars(args))
    except ZkvError as exc:
        print(f"zkv-node: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"zkv-node: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # zmq bind errors and the like
        print(f"zkv-node: cannot start: {exc}", file=sys.stderr)
        return 1
    if early_stop:
        logging.getLogger("zkv.node").info("signal %d during start-up: stopping", early_stop[0])
        node.shutdown()
        _stopped()
        return 0
    try:
        node.run()  # joins through the seeds first when it knows no peer yet
    except ZkvError as exc:
        print(f"zkv-node: {exc}", file=sys.stderr)
        return 1
    finally:
        _stopped()
    return 0


def _stopped() -> None:
    """The node has stopped: a SIGTERM/SIGINT during the process's exit (its interpreter
    winding down takes a moment, and restores the default handlers) killed it with 143/130
    after a clean stop; a supervisor sending a second signal saw a failure (an outside run)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


# ---- zkv ----------------------------------------------------------------------------------------
class _ClosedStdout(io.RawIOBase):
    """The standard output of a process started with it closed (`zkv get k >&-`; Python
    then has none, and zkv failed with an AttributeError traceback): what is printed fails as
    `cat` says it does, "bad file descriptor", and the command exits 1."""

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(_ClosedStdout(), write_through=True)  # type: ignore[arg-type]
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows up here at the latest
    except BrokenPipeError:
        # the reader went away (`zkv ring | head`): stop quietly, and keep the interpreter's
        # own flush at exit from failing again
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("zkv: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # (what the last flush could not write: a closed or full stdout)
        return _fail(exc)


def _fail(exc: BaseException, hint: str = "") -> int:
    if os.environ.get("ZKV_DEBUG"):
        raise exc
    what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what += hint if what else ""
    print(f"zkv: {type(exc).__name__}: {what}" if what else f"zkv: {type(exc).__name__}",
          file=sys.stderr)
    return 1


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `bench` and `compact` own their flags: hand them everything after the subcommand
    # (argparse's REMAINDER would swallow nothing that starts with --)
    if argv[:1] in (["bench"], ["compact"]):
        try:
            with _one_line_argparse_errors():
                if argv[0] == "bench":
                    from zkv.bench import main as bench_main

                    return bench_main(argv[1:])
                from zkv.storage.compact_cli import main as compact_main

                return compact_main(argv[1:])
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except Exception as exc:
            return _fail(exc)
    p = Parser(prog="zkv", description="zkv: a Dynamo-style key-value store")
    # (metavar: "required: COMMAND", not the dest's name "cmd"; each --help lists them)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    local = sub.add_parser("local", help="a development cluster on this machine")
    lsub = local.add_subparsers(dest="local_cmd", required=True, metavar="COMMAND")
    up = lsub.add_parser("up", help="start nodes on loopback in the foreground (Ctrl-C stops)")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (1-100)")
    up.add_argument("--dir", default="./zkv-data", help="the nodes' data dirs (DIR/node1, "
                    "...) and the saved cluster; default ./zkv-data")
    up.add_argument("--base-port", dest="base_port", type=int, default=7001,
                    help="node K listens on BASE+K-1 for clients, BASE+1000+K-1 for gossip and "
                    "BASE+2100+K-1 for metrics (default 7001: 7001.., 8001.., 9101..)")
    up.add_argument("--no-demo", dest="demo", action="store_false", help="skip the guided demo")
    up.add_argument("--sync", default="interval", choices=["none", "interval", "always"])
    up.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    ladd = lsub.add_parser("add", help="start one more node in the running `zkv local up` "
                           "(it joins and receives its partitions)")
    ladd.add_argument("--dir", default="./zkv-data")
    lrm = lsub.add_parser("remove", help="make a node of the running `zkv local up` leave "
                          "(it hands its data off, then exits)")
    lrm.add_argument("node_id", metavar="NODE_ID")
    lrm.add_argument("--dir", default="./zkv-data")
    lre = lsub.add_parser("restart", help="start a node of the running `zkv local up` again on "
                          "its data dir (stopping it first with SIGTERM if it runs): a node "
                          "that died or was killed comes back and catches up")
    lre.add_argument("node_id", metavar="NODE_ID")
    lre.add_argument("--dir", default="./zkv-data")

    def with_node(sp):
        sp.add_argument("--node", default=default_node(), type=endpoint,
                        help="any node: tcp://HOST:PORT, or a member's id (looked up at the "
                        f"default node); default $ZKV_NODE, else {DEFAULT_NODE}")
        sp.add_argument("--timeout", type=positive, default=2.0, help="seconds (default 2)")
        sp.add_argument("--keys", help="client key of a keyed cluster (DIR/clients/NAME from "
                        "`zkv keygen`)")
        return sp

    def with_ns(sp):
        sp.add_argument("--namespace", default="default",
                        help="the key's namespace (default: 'default')")
        return sp

    g = with_ns(with_node(sub.add_parser("get", help="read a key (several: one batched call, "
                                         "each line prefixed with its key)")))
    g.add_argument("key", nargs="+", metavar="KEY", help="the key's bytes as given (a shell's "
                   "$'\\xff' for bytes that are not UTF-8)")
    g.add_argument("--r", type=quorum_arg, help="answers to wait for: a number, or one, quorum "
                   "or all (of the namespace's N)")
    g.add_argument("--pr", type=quorum_arg, help="of the R answers, this many must come from the "
                   "key's owners themselves, not stand-ins (a primary quorum: with pr + pw > N "
                   "every write acknowledged at pw is read)")
    g.add_argument("--raw", action="store_true",
                   help="write the value's bytes to stdout exactly as stored (no newline, no "
                   "label: binary-safe, for `> FILE`); one key; a key with siblings needs "
                   "--sibling")
    g.add_argument("--sibling", type=positive_int, metavar="I",
                   help="only the I-th sibling (1-based, in the order a plain get lists them)")
    pu = with_ns(with_node(sub.add_parser("put", help="write a key, or with --from many "
                                          "(one batched call)")))
    pu.add_argument("key", nargs="?", metavar="KEY")
    pu.add_argument("value", nargs="?", metavar="VALUE", help="the value's bytes as given (a "
                    "file's or stdin's: --value-file)")
    pu.add_argument("--from", dest="source", metavar="FILE",
                    help="blind-write every KEY<TAB>VALUE line of FILE ('-': stdin) in "
                    "batches of 1000 (blind: a key that already holds a value gets a "
                    "sibling); values end at the line's end; a line without a tab, or with "
                    "a key or value too large, stops the load there (the batches before it "
                    "are written)")
    pu.add_argument("--value-file", dest="value_file", metavar="FILE",
                    help="the value is FILE's bytes exactly ('-': stdin), instead of VALUE: "
                    "binary-safe; at most the value limit (16 MiB) is read")
    pu.add_argument("--w", type=quorum_arg, help="acknowledgements to wait for: a number, or "
                    "one, quorum or all (of the namespace's N)")
    pu.add_argument("--pw", type=quorum_arg, help="of the W acknowledgements, this many must "
                    "come from the key's owners themselves, not stand-ins (a primary quorum)")
    pu.add_argument("--context", help="hex context from a previous get (omit for a blind write)")
    pu.add_argument("--ttl", type=_duration, metavar="DURATION",
                    help="serve the value this long (90, 30m, 12h, 7d; each line's with "
                    "--from): an lww namespace whose own ttl is at least as long")
    d = with_ns(with_node(sub.add_parser("delete", help="delete a key (writes a tombstone)")))
    d.add_argument("key", metavar="KEY")
    d.add_argument("--w", type=quorum_arg, help="as put's")
    d.add_argument("--pw", type=quorum_arg, help="as put's")
    d.add_argument("--context", help="hex context; by default the current one is read first")
    nsp = sub.add_parser("namespace", help="create, alter, drop, truncate and list namespaces "
                         "(N, R, W, conflicts, ttl)")
    nsub = nsp.add_subparsers(dest="ns_cmd", required=True, metavar="COMMAND")
    nc = with_node(nsub.add_parser("create", help="create a namespace (admin key on a keyed "
                                   "cluster; settings are fixed once created)"))
    nc.add_argument("name", metavar="NAME")
    nc.add_argument("--n", type=int, help="replicas per key (default: the cluster's N, at most "
                    "the number of members)")
    nc.add_argument("--r", type=quorum_arg, help="default read quorum (default: a majority of N)")
    nc.add_argument("--w", type=quorum_arg, help="default write quorum (default: a majority of N)")
    nc.add_argument("--pr", type=quorum_arg, default=0, help="default primary read quorum: "
                    "answers that must come from the key's owners, not stand-ins (default 0: none; "
                    "README, \"Strict quorums\")")
    nc.add_argument("--pw", type=quorum_arg, default=0, help="default primary write quorum "
                    "(default 0: none)")
    nc.add_argument("--conflicts", choices=["siblings", "lww"], default="siblings",
                    help="siblings: keep concurrent writes for the client to merge (default); "
                    "lww: the last write by hybrid logical clock wins, the others are lost")
    nc.add_argument("--ttl", type=_duration, default=0, metavar="DURATION",
                    help="each value expires this long after its write (lww only): seconds, "
                    "or a number with s, m, h or d (90, 30m, 12h, 7d); default: never")
    na = with_node(nsub.add_parser("alter", help="change a namespace's default R and W and "
                                   "its ttl (admin key on a keyed cluster; N and conflicts "
                                   "are fixed)"))
    na.add_argument("name", metavar="NAME")
    # (refused, saying why: without it, argparse read --n as an abbreviation of --node)
    na.add_argument("--n", help=argparse.SUPPRESS)
    na.add_argument("--r", type=quorum_arg, help="the new default read quorum")
    na.add_argument("--w", type=quorum_arg, help="the new default write quorum")
    na.add_argument("--pr", type=quorum_arg, help="the new default primary read quorum (0: none)")
    na.add_argument("--pw", type=quorum_arg, help="the new default primary write quorum (0: none)")
    na.add_argument("--ttl", type=_duration, metavar="DURATION",
                    help="the new ttl (lww only; 0: no expiry): a lower one applies to every "
                    "value at once, a higher one never brings back a value that had expired")
    for verb, text in (("drop", "drop a namespace: every key of it is gone at once and "
                        "purged from every node in the background; the name may be created "
                        "again (admin key on a keyed cluster)"),
                       ("truncate", "empty a namespace, keeping it and its settings: every "
                        "key of it is gone at once (admin key on a keyed cluster)")):
        nd = with_node(nsub.add_parser(verb, help=text))
        nd.add_argument("name", metavar="NAME")
        nd.add_argument("--yes", action="store_true", help="really: every key of the "
                        "namespace is lost (refused without it)")
    nl = with_node(nsub.add_parser("list", help="every namespace and its settings"))
    nl.add_argument("--json", action="store_true")
    st = with_node(sub.add_parser("status", help="members, up/down, racks, partitions, hints"))
    st.add_argument("--json", action="store_true")
    rg = with_node(sub.add_parser("ring", help="partition -> preference list"))
    rg.add_argument("--json", action="store_true")
    rp = with_node(sub.add_parser("repair", help="run Merkle anti-entropy exchanges now"))
    rp.add_argument("--partition", type=int, default=-1, help="one partition (default: all)")
    ks = with_ns(with_node(sub.add_parser("keys", help="list the live keys of a namespace "
                                          "(a read of every key on --r owners a partition)")))
    ks.add_argument("--prefix", default="", help="only keys beginning with this")
    ks.add_argument("--r", type=quorum_arg, default=1, help="owners of each partition whose "
                    "keys are listed (their union; default 1: a key written a moment ago, or "
                    "while an owner was down, may be missed)")
    ks.add_argument("--limit", type=positive_int, help="stop after this many keys")
    ks.add_argument("--count", action="store_true", help="print how many, not the keys")
    ks.add_argument("-0", "--null", action="store_true", help="each key's bytes as they are, "
                    "ended by a NUL byte (for xargs -0), instead of a line each (where a "
                    "backslash shows as \\\\ and a byte not printable UTF-8 as \\xNN); a "
                    "key holding a NUL byte is left out, and counted (exit 1)")
    dp = with_ns(with_node(sub.add_parser("dump", help="write a namespace's keys and values "
                                          "(siblings too) as JSON lines, for zkv load")))
    dp.add_argument("--prefix", default="", help="only keys beginning with this")
    dp.add_argument("--r", type=quorum_arg, help="owners of each partition whose copies "
                    "are merged, as a get at R merges them (default: the namespace's R)")
    dp.add_argument("--out", metavar="FILE", help="write to FILE (complete, or not at all: "
                    "written beside it, then renamed over it; a symbolic link's file; a FIFO "
                    "or a device written into) instead of stdout ('-': stdout)")
    dp.add_argument("--store", metavar="DIR", action="append",
                    help="read the keys offline from this node store (a snapshot's data/, a "
                    "stopped node's DATA_DIR/data; repeat it for every node's: copies merged) "
                    "instead of a cluster: a generation a truncate or drop ended since "
                    "(README, \"Backups\"); exits 4 when a record failed its CRC (the dump "
                    "is written without it, the keys left out are named on stderr)")
    dp.add_argument("--generation", type=int, help="with --store: the namespace generation to "
                    "dump (default: the only one the stores hold)")
    ld = with_node(sub.add_parser("load", help="write a zkv dump into the cluster (blind "
                                  "writes: siblings stay siblings)"))
    ld.add_argument("source", metavar="FILE", help="the dump ('-': stdin)")
    ld.add_argument("--namespace", help="the namespace to load into (default: the dump's)")
    ld.add_argument("--w", type=quorum_arg, help="acknowledgements to wait for, as put's")
    ld.add_argument("--resume", metavar="ID", type=load_id_arg,
                    help="go on with the load of this id (an interrupted or stopped load "
                    "prints it) without writing anything it wrote twice; without it, a load "
                    "writes every value anew (a restore after the keys were deleted too)")
    cf = with_node(sub.add_parser("config", help="a node's settings as it runs with them; "
                                  "--set changes limits and throttles without a restart"))
    cf.add_argument("--set", dest="changes", metavar="NAME=VALUE", action="append", default=[],
                    help="change a runtime setting (repeatable; all or none are changed; "
                    "gone at the restart unless --save)")
    cf.add_argument("--save", action="store_true", help="and write the running value of "
                    "every runtime setting a restart would not start with into the node's "
                    "--config file (comments kept), as Redis' CONFIG REWRITE")
    cf.add_argument("--all", action="store_true", help="every member of the cluster (--node's "
                    "member table), one after the other")
    cf.add_argument("--json", action="store_true", help="the answers as JSON")
    sn = with_node(sub.add_parser("snapshot", help="hard-link a node's stores as they are now "
                                  "under DATA_DIR/snapshots/NAME on its machine (a backup to "
                                  "copy off; --all: every member)"))
    sn.add_argument("name", nargs="?", metavar="NAME", help="the snapshot's name (default: the UTC time, "
                    "YYYYMMDD-HHMMSS)")
    sn.add_argument("--all", action="store_true", help="every member of the cluster (--node's "
                    "member table), one after the other, under the same name")
    sn.add_argument("--list", action="store_true", help="list the node's (--all: every "
                    "node's) snapshots instead, with the disk space each alone holds")
    sn.add_argument("--remove", action="store_true", help="remove snapshot NAME instead "
                    "(--all: from every node)")
    sn.add_argument("--json", action="store_true", help="the answers as JSON")
    tp = with_node(sub.add_parser("top", help="live view of every node (Ctrl-C quits; one "
                                  "snapshot in a pipe)"))
    tp.set_defaults(timeout=1.0)
    tp.add_argument("--interval", type=positive, default=1.0, help="seconds between refreshes")
    tp.add_argument("--once", action="store_true", help="print one snapshot and exit")
    tp.add_argument("--json", action="store_true", help="one snapshot as JSON")
    kg = sub.add_parser("keygen", help="CurveZMQ keys: the cluster's pair and an admin client "
                        "key, or with --client one more client key")
    kg.add_argument("dir", metavar="DIR", help="the keys directory (nodes take it with --keys)")
    kg.add_argument("--client", help="write one more client key pair, DIR/clients/NAME")
    kg.add_argument("--admin", action="store_true", help="that client may also run cluster "
                    "changes and repair")
    cl = sub.add_parser("cluster", help="grow and shrink the cluster: leave, replace, "
                        "force-remove, plan, commit")
    csub = cl.add_subparsers(dest="cluster_cmd", required=True, metavar="COMMAND")
    c_leave = with_node(csub.add_parser("leave", help="hand off everything NODE_ID holds, "
                                        "then it leaves (its process exits 0)"))
    c_leave.add_argument("node_id", metavar="NODE_ID")
    c_repl = with_node(csub.add_parser("replace", help="NEW_ID (started with --seed) takes "
                                       "OLD_ID's place"))
    c_repl.add_argument("old_id", metavar="OLD_ID")
    c_repl.add_argument("new_id", metavar="NEW_ID")
    c_rm = with_node(csub.add_parser("force-remove", help="NODE_ID is gone for good; the other "
                                     "replicas refill its share"))
    c_rm.add_argument("node_id", metavar="NODE_ID")
    c_plan = with_node(csub.add_parser("plan", help="staged changes and the transfers they "
                                       "cause"))
    c_plan.add_argument("--json", action="store_true")
    c_commit = with_node(csub.add_parser("commit", help="apply the staged changes"))
    for sp in (c_leave, c_repl, c_rm, c_commit):
        sp.add_argument("--wait", action="store_true",
                        help="return once the change is complete: its data moved, the node "
                        "gone from the cluster, nothing settling (progress on stderr)")
    c_ac = with_node(csub.add_parser("auto-commit", help="commit changes at once (on) or "
                                     "stage them until `commit` (off)"))
    c_ac.add_argument("value", choices=["on", "off"])
    # listed for `zkv --help`; main() hands their arguments to their own parsers before this
    sub.add_parser("bench", help="the quorum benchmark suite (zkv bench --help)")
    sub.add_parser("compact", help="compact a stopped node's stores (zkv compact --help)")

    argv = _negative_values_joined(p, argv)
    args, extra = p.parse_known_args(argv)
    if extra:  # (named by the subcommand's parser: its --help lists what it takes)
        _deepest_parser(p, argv).error(
            f"unrecognized arguments: {' '.join(extra)}")
    try:
        node = getattr(args, "node", None)
        if node and not node.startswith("tcp://"):  # a member's id
            args.node = member_endpoint(node, args.timeout, args.keys)
        if args.cmd == "local":
            if args.local_cmd == "add":
                return local_add(args)
            if args.local_cmd == "remove":
                return local_remove(args)
            if args.local_cmd == "restart":
                return local_restart(args)
            return local_up(args)
        if args.cmd in ("get", "put", "delete"):
            return kv_command(args)
        if args.cmd == "status":
            return status_command(args)
        if args.cmd == "namespace":
            return namespace_command(args)
        if args.cmd == "ring":
            return ring_command(args)
        if args.cmd == "repair":
            return repair_command(args)
        if args.cmd == "snapshot":
            return snapshot_command(args)
        if args.cmd == "config":
            return config_command(args)
        if args.cmd == "keys":
            return keys_command(args)
        if args.cmd == "dump":
            return dump_command(args)
        if args.cmd == "load":
            return load_command(args)
        if args.cmd == "cluster":
            return cluster_command(args)
        if args.cmd == "top":
            from zkv.top import run

            return run(args.node, args.interval, args.timeout, args.once, args.json, args.keys)
        if args.cmd == "keygen":
            from zkv.security import keygen

            for path in keygen(args.dir, args.client, args.admin):
                print(path)
            return 0
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Usage as exc:
        if os.environ.get("ZKV_DEBUG"):
            raise
        _deepest_parser(p, argv).error(str(exc))  # (exits 2)
    except Exception as exc:  # ZkvError (unreachable, invalid), OSError, zmq errors, bugs
        return _fail(exc, _default_node_hint(args, argv, exc))
    return 2


def _default_node_hint(args, argv: list[str], exc: Exception) -> str:
    """What to add to "no node reachable" when the node asked was --node's default, not one
    the operator named (a fresh shell, a cluster on other ports): how to name one."""
    if not isinstance(exc, Unavailable) or getattr(args, "node", None) != DEFAULT_NODE:
        return ""
    if os.environ.get("ZKV_NODE") or any(w == "--node" or w.startswith("--node=")
                                         for w in argv):
        return ""
    return (f"; no --node given, so the default {DEFAULT_NODE} was asked: name a node of "
            "your cluster with --node tcp://HOST:PORT (or set ZKV_NODE), or start one with "
            "`zkv local up`")


def _key(s: str) -> bytes:
    # the bytes the shell passed, even when they are not UTF-8 (argv decodes with
    # surrogateescape; fsencode undoes it)
    return os.fsencode(s)


PUT_FROM_BATCH = 1000  # lines per put_many call of `zkv put --from`


def _lines(source: str):
    """(line number, key, value) of every KEY<TAB>VALUE line (bytes as they are; a blank line
    is skipped); InvalidRequest names the first line without a tab, or whose key or value
    the client would refuse."""
    from zkv import wire

    try:
        fh = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InvalidRequest(f"--from {source}: {exc.strerror or exc}") from None
    try:
        for no, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            key, tab, value = line.partition(b"\t")
            if not tab:
                raise InvalidRequest(f"{source}:{no}: expected KEY<TAB>VALUE")
            try:
                wire.check_key(key)
                wire.check_value(value)
            except InvalidRequest as exc:
                raise InvalidRequest(f"{source}:{no}: {exc}") from None
            yield no, key, value
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def put_from(c, args) -> int:
    """`zkv put --from FILE`: blind writes in batches; every line is checked before its batch
    is sent; a failed write is reported with its line and the rest go on (exit 1)."""
    done = failed = 0
    batch: list = []

    def flush() -> None:
        nonlocal done, failed
        got = c.put_many([(k, v) for _, k, v in batch], w=args.w, namespace=args.namespace,
                         return_exceptions=True, ttl=args.ttl, pw=args.pw)
        for (no, key, _), res in zip(batch, got, strict=True):
            if isinstance(res, Exception):
                failed += 1
                print(f"zkv: line {no} ({key.decode(errors='backslashreplace')[:60]}): "
                      f"{type(res).__name__}: {res}", file=sys.stderr)
            else:
                done += 1
        batch.clear()

    for item in _lines(args.source):
        batch.append(item)
        if len(batch) >= PUT_FROM_BATCH:
            flush()
    if batch:
        flush()
    print(f"ok: {done} written" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def _print_result(res, prefix: str = "", sibling: int | None = None) -> None:
    if not res.found:
        print(prefix + "(not found)")
    for i, v in enumerate(res.values):
        if sibling is not None and i + 1 != sibling:
            continue
        label = f"sibling {i + 1}/{len(res.values)}: " if len(res.values) > 1 else ""
        print(prefix + label + v.decode(errors="backslashreplace"))


def _write_raw(name: str, res, sibling: int | None) -> int:
    """`zkv get --raw`: the one value's bytes on stdout, nothing else, and its context on
    stderr (0); not found: nothing on stdout (3); several siblings and no --sibling: refused
    in one line, naming the choice (1)."""
    if sibling is None and len(res.values) > 1:
        raise InvalidRequest(f"{name} has {len(res.values)} siblings: --raw writes one, pick it "
                             f"with --sibling 1..{len(res.values)} (or resolve them: a get "
                             f"without --raw lists them and prints their context)")
    print(f"context: {res.context.hex()}", file=sys.stderr)
    if not res.found:
        print(f"zkv: {name}: not found", file=sys.stderr)
        return 3
    sys.stdout.buffer.write(res.values[0 if sibling is None else sibling - 1])
    sys.stdout.buffer.flush()
    return 0


def _value_file(path: str) -> bytes:
    """`zkv put --value-file`: FILE's (or stdin's) bytes, read no further than the client's
    value limit + 1 so that an oversized one is refused without holding it whole."""
    from zkv.wire import DEFAULT_MAX_VALUE as limit  # (the CLI's clients keep the default)

    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidRequest(f"--value-file {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InvalidRequest(f"--value-file {path}: more than {limit} bytes (the largest value "
                             f"a node takes by default)")
    return data


def kv_command(args) -> int:
    from zkv.client import Client

    if args.cmd == "put" and args.value_file is not None and (
            args.source is not None or args.key is None or args.value is not None):
        raise Usage("--value-file FILE takes KEY alone (not VALUE, not --from)")
    if args.cmd == "put" and args.value_file is None and (
            args.key is not None if args.source is not None
            else args.key is None or args.value is None):
        alone = args.source is None and args.key is not None  # (`echo v | zkv put k`)
        raise Usage("expected KEY VALUE, KEY --value-file FILE, or --from FILE"
                    + (": got KEY alone (its value from stdin: --value-file -)" if alone
                       else ""))
    if "" in (args.key if isinstance(args.key, list) else [args.key]):
        raise Usage("a key is 1 byte at least, got an empty one")  # (was exit 1, as refused)
    if args.cmd == "get" and args.raw and len(args.key) > 1:
        raise Usage("--raw writes one value: give one key")
    if args.cmd == "put" and args.source is not None and args.context:
        raise Usage("--from writes blind: --context names one key's version")
    try:
        ctx = bytes.fromhex(args.context) if args.cmd != "get" and args.context else None
    except ValueError:
        raise Usage(f"--context must be the hex string a get printed, got "
                    f"{args.context!r}") from None
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        if args.cmd == "get" and len(args.key) > 1:
            keys = [_key(k) for k in args.key]
            got = c.get_many(keys, r=args.r, namespace=args.namespace, pr=args.pr)
            for name, res in zip(map(_key_name, args.key), got, strict=True):
                _print_result(res, f"{name}: ", args.sibling)
                print(f"{name} context: {res.context.hex()}", file=sys.stderr)
            return 0 if all(r.found for r in got) else 3
        if args.cmd == "get":
            res = c.get(_key(args.key[0]), r=args.r, namespace=args.namespace, pr=args.pr)
            if args.sibling is not None and args.sibling > max(len(res.values), 1):
                raise InvalidRequest(f"--sibling {args.sibling}: {_key_name(args.key[0])} has "
                                     f"{len(res.values)} value(s)")
            if args.raw:
                return _write_raw(_key_name(args.key[0]), res, args.sibling)
            print(f"context: {res.context.hex()}", file=sys.stderr)
            if res.found and res.expires_at:  # (Redis' TTL)
                left = max(0, res.expires_at - int(time.time() * 1000))
                print(f"expires in {left / 1000:.1f} s (at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(res.expires_at / 1000))}"
                      f" UTC)", file=sys.stderr)
            _print_result(res, sibling=args.sibling)
            return 0 if res.found else 3
        if args.cmd == "put" and args.source is not None:
            return put_from(c, args)
        if args.cmd == "put":
            value = (_key(args.value) if args.value_file is None
                     else _value_file(args.value_file))
            new = c.put(_key(args.key), value, context=ctx, w=args.w, namespace=args.namespace,
                        ttl=args.ttl, pw=args.pw)
            print(f"ok (context {new.hex()})")
            return 0
        if ctx is None:
            ctx = c.get(_key(args.key), namespace=args.namespace).context
        c.delete(_key(args.key), context=ctx, w=args.w, namespace=args.namespace, pw=args.pw)
        print("deleted")
        return 0


def namespace_command(args) -> int:
    from zkv.client import Client

    if args.ns_cmd == "alter" and args.n is not None:
        raise Usage(f"N is fixed when a namespace is created; for another N, create a new "
                    f"namespace and copy {args.name!r} into it (zkv dump, zkv load)")
    if args.ns_cmd == "alter" and all(getattr(args, k) is None
                                      for k in ("r", "w", "ttl", "pr", "pw")):
        raise Usage("nothing to change (--r, --w, --pr, --pw or --ttl)")
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        if args.ns_cmd in ("create", "alter"):
            if args.ns_cmd == "create":
                ns = c.namespace_create(args.name, n=args.n, r=args.r, w=args.w,
                                        conflicts=args.conflicts, ttl=args.ttl, pr=args.pr,
                                        pw=args.pw)
            else:
                ns = c.namespace_alter(args.name, r=args.r, w=args.w, ttl=args.ttl,
                                       pr=args.pr, pw=args.pw)
            print(f"namespace {ns['name']}: " + _ns_line(ns))
            return 0
        if args.ns_cmd in ("drop", "truncate"):
            if not args.yes:
                raise InvalidRequest(f"zkv namespace {args.ns_cmd} {args.name}: every key of "
                                     f"the namespace is lost; add --yes to go ahead")
            if args.ns_cmd == "drop":
                c.namespace_drop(args.name)
                print(f"namespace {args.name}: dropped (every node purges its keys in the "
                      f"background; `zkv namespace create` makes it again, empty)")
            else:
                ns = c.namespace_truncate(args.name)
                print(f"namespace {args.name}: truncated, " + _ns_line(ns))
            return 0
        nss = c.namespaces()
        if args.json:
            print(json.dumps(nss, indent=2))
            return 0
        wide = max(24, *(len(ns["name"]) for ns in nss))  # (names run to 64 characters)
        print(f"{'NAME':<{wide}} {'N':>2} {'R':>2} {'W':>2} {'PR':>2} {'PW':>2}  "
              f"{'CONFLICTS':<9}  TTL")
        for ns in nss:
            ttl = _show_duration(ns["ttl"]) if ns.get("ttl") else "-"
            pr, pw = (ns.get(k) or "-" for k in ("pr", "pw"))
            print(f"{ns['name']:<{wide}} {ns['n']:>2} {ns['r']:>2} {ns['w']:>2} {pr:>2} {pw:>2}  "
                  f"{ns['conflicts']:<9}  {ttl}")
        return 0


def _ns_line(ns: dict) -> str:
    """n=3 r=2 w=2 conflicts=lww ttl=30m: a namespace's settings, as create and alter print."""
    return (f"n={ns['n']} r={ns['r']} w={ns['w']} "
            + "".join(f"{k}={ns[k]} " for k in ("pr", "pw") if ns.get(k))
            + f"conflicts={ns['conflicts']}"
            + (f" ttl={_show_duration(ns['ttl'])}" if ns.get("ttl") else ""))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """`--ttl`: whole seconds, or a whole number with a unit (s, m, h, d)."""
    m = re.fullmatch(r"\s*(\d{1,12})\s*([smhd]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds, or a "
                                         f"number with s, m, h or d (90, 30m, 12h, 7d)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _show_duration(seconds: int) -> str:
    """A ttl as the largest whole unit: 86400 -> 1d, 90 -> 90s."""
    for unit in "dhm":
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def status_command(args) -> int:
    from zkv.client import Client

    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        doc = c.status(args.node)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    ring = doc["ring"]
    print(f"node {doc['node']}: ring Q={ring['q']} N={ring['n']} R={ring['r']} W={ring['w']} "
          f"fingerprint {ring['fingerprint'][:12]}  keys here: {doc['keys']}")
    if doc.get("writes_refused"):
        print(f"WRITES REFUSED here: {doc['writes_refused']} (reads are served; writes go to "
              "the other owners meanwhile)")
    why = doc.get("unreached_by_peers")
    if why:  # ("peers cannot reach this node at its advertised addresses ...", reach.py)
        print("PEERS CANNOT REACH" + why[len("peers cannot reach"):]
              if why.startswith("peers cannot reach") else f"PEERS CANNOT REACH this node: {why}")
    if doc.get("cluster_json_unsaved"):
        print("CLUSTER.JSON NOT SAVED here (its disk did not take it): the cluster state lives "
              "in memory and is saved each gossip round once there is room")
    for name, st in (doc.get("storage") or {}).items():
        if "total_bytes" not in st:
            continue
        line = (f"store {name}: {st['total_bytes'] / (1 << 20):.1f} MiB in {st['segments']} "
                f"segment(s), {100 * st['dead_ratio']:.0f}% dead records (compaction frees "
                "them)")
        if st.get("free_bytes") is not None:
            line += f", {st['free_bytes'] / (1 << 20):.0f} MiB free on its disk"
        if st.get("compacting"):
            done, total = st["compacting"]
            line += f"; compacting, {100 * done / total if total else 0:.0f}% done"
        print(line)
        if st.get("corrupt") or st.get("corrupt_records") or st.get("damaged_regions"):
            regions = st.get("damaged_regions")
            print(f"CORRUPT RECORDS in store {name}: {st.get('corrupt_records', 0)} record(s) "
                  f"failed their CRC when read since the start, {st.get('corrupt', 0)} key(s) "
                  "await repair from a replica (anti-entropy refetches them; `zkv repair "
                  "--node` this node does it now)" + (
                      f"; {regions} damaged region(s) skipped at the start (the node refills "
                      "from the other owners)" if regions else ""))
    join = doc.get("joining")
    if join:
        seeds = ", ".join(x["endpoint"] + (f" ({x['seen']})" if x["seen"] else "")
                          for x in join["seeds"])
        print(f"JOINING for {join['asking_seconds']:.0f} s (gives up after "
              f"{join['gives_up_after_seconds']:.0f} s) through {seeds}")
    cl = doc.get("cluster") or {}
    if cl.get("unsettled_changes"):
        agreed = cl.get("agreed_seconds")
        print(f"settling: {cl['unsettled_changes']} ownership change(s) not settled here; gets "
              f"and puts of moved partitions also use the previous owners until every member "
              f"has had the state for {cl.get('settle_seconds', 0):g} s ("
              + ("not every member has it yet" if agreed is None else f"all have for {agreed:.1f} s")
              + ")")
    if cl.get("watching"):
        print(f"watching membership change(s) made here until done: "
              f"{', '.join(cl['watching'])} (made again if a concurrent cluster state drops "
              f"them; `zkv cluster plan` shows what is moving)")
    changed = doc.get("settings_changed")
    if changed:
        print("settings changed while running (zkv config, SIGHUP): " + ", ".join(
            f"{name} {was} -> {now}" for name, (was, now) in sorted(changed.items())))
    still = doc.get("stood_still") or {}
    if still.get("count"):
        print(f"stood still {still['count']} time(s) since start, the longest {still['longest']}"
              f" s (stopped, a frozen VM, starved of CPU, or blocked writing its log: "
              f"requests waited as long)")
    print(f"{'member':<14}{'state':<9}{'rack':<12}{'owned':>6}{'replicas':>9}  listen / reason")
    for m in doc["members"]:
        print(f"{m['id']:<14}{m['detail']:<9}{m['rack']:<12}{m['partitions']:>6}{m['replicas']:>9}"
              f"  {m['listen']} {m['reason']}" + ("  TAKES NO WRITES" if m.get("no_writes")
                                                   else "")
              # (a member joining, leaving or just left: "up" alone read as an owner)
              + (f"  {m['status'].upper()}" if m.get("status", "valid") != "valid" else "")
              # (restarted on an older version: NodeCore._check_version)
              + (f"\n{'':14}VERSION CANNOT SERVE THIS CLUSTER: {m['version_unfit']}"
                 if m.get("version_unfit") else ""))
    hints = doc.get("hints", {})
    print(f"hint backlog: {hints.get('backlog', 0)} ({hints.get('bytes', 0)} bytes)")
    for owner, b in sorted(hints.get("by_owner", {}).items()):
        print(f"  for {owner}: {b['count']} hint(s), {b['bytes']} bytes, oldest "
              f"{b['oldest_age_s']:.1f}s")
    ae = doc.get("antientropy") or {}
    if ae:
        lag = ae.get("max_seconds_since_agreement")
        print(f"anti-entropy: {ae.get('partitions_agreed', 0)}/{ae.get('partitions', 0)} "
              f"partitions agreed with every owner, worst lag "
              f"{'-' if lag is None else f'{lag:.1f}s'}, {ae.get('queued', 0)} queued"
              + (f", {ae['checking']} being compared by root" if ae.get("checking") else ""))
        if ae.get("partitions_owner_down"):
            print(f"  {ae['partitions_owner_down']} partition(s) with an owner down: agreed "
                  "as of before it went down at best (no exchange with it until it is back)")
        if ae.get("refill_partitions_left"):
            print(f"refilling after a lost disk: {ae['refill_partitions_left']} partition(s) not "
                  "yet exchanged with every other owner; reads of them here do not count "
                  "toward R")
        if ae.get("fresh_partitions_left"):
            print(f"new owner: {ae['fresh_partitions_left']} partition(s) gained at the last "
                  "ownership change not yet verified with every other owner; reads of them "
                  "here do not count toward R")
    transfers = doc.get("transfers")
    if transfers is not None:
        for line in transfer_lines(transfers, doc.get("node")):
            print(line)
    ex = doc.get("expiry")
    if ex:
        spaces = sorted(ex["namespaces"].items())  # (the first 10: 216 made an 8.6 KB line)
        more = f" and {len(spaces) - 10} more (`zkv namespace list`)" if len(spaces) > 10 else ""
        print("expiry: " + ", ".join(f"{name} ttl={_show_duration(ttl)}" if ttl else
                                     f"{name} ttl=none (what had expired before it was "
                                     "removed stays expired)"
                                     for name, ttl in spaces[:10]) + more
              + f"; {ex['dropped']} expired version(s) dropped here since start, "
              f"{ex['passes']} full sweep(s)")
    purge = doc.get("purge")
    if purge:
        print(f"dropped or truncated: {', '.join(purge['namespaces'])}; {purge['purged']} "
              f"dead version(s) purged here since start"
              + ("; the sweep is purging" if purge["sweeping"] else ""))
    m = doc.get("metrics") or {}
    if m:
        print("ready: yes" if m.get("ready") else
              f"ready: NO ({not_ready_words(m.get('ready_reason') or {})})")
    return 0


def not_ready_words(why: dict) -> str:
    """Why a node is not ready (its /readyz reason), in words: only the parts it knows (a
    node still starting has no ring or peers to speak of yet)."""
    parts = []
    if why.get("joined") is False:
        parts.append("not joined yet")
    disagree, unheard = why.get("peers_disagreeing") or [], why.get("peers_not_heard") or []
    if disagree:
        parts.append(f"ring differs from {', '.join(disagree)}'s")
    if unheard:
        parts.append(f"no ring heard yet from {', '.join(unheard)}")
    if why.get("ring_agreed") is False and not disagree and not unheard:
        parts.append("ring not agreed with every up peer")
    if why.get("pending_transfers_in"):
        parts.append(f"{why['pending_transfers_in']} partition(s) still to receive")
    if why.get("clock_behind_peers"):
        ahead = why.get("peers_refused_as_ahead_of_clock") or []
        parts.append("its wall clock is behind its peers' (their records refused as ahead of "
                     f"it: {', '.join(ahead)}): check NTP")
    if why.get("clock_skewed"):
        parts.append(f"its wall clock is {why['clock_skewed']} (check NTP)")
    if why.get("unreached_by_peers"):
        parts.append("its peers cannot reach it at its advertised addresses (check --advertise)")
    if why.get("reason") and not parts:
        parts.append(str(why["reason"]))  # (e.g. "starting": no observation yet)
    return "; ".join(parts) or "reason unknown"


def transfer_lines(transfers: list[dict], me: str | None = None) -> list[str]:
    """`zkv status`'s lines for the running change's transfers as node `me` sees them: those
    to it (incoming), from it (outgoing) and between other nodes (by their receivers'
    reports), each with how many are queued (not started: a node receives
    transfer_concurrency partitions at once), streaming, verifying and done, and the bytes
    of the partitions started (a queued one's size is not known yet); then each distinct
    reason an incoming transfer is stalled with how many share it (the --json document has
    every transfer). Without `me`, every transfer counts as incoming."""
    if not transfers:
        return ["transfers: none"]
    groups: dict[str, list[dict]] = {"incoming": [], "outgoing": [], "between other nodes": []}
    for t in transfers:
        way = ("incoming" if me is None or t.get("to") == me else
               "outgoing" if t.get("from") == me else "between other nodes")
        groups[way].append(t)
    lines = []
    for way, ts in groups.items():
        if not ts:
            continue
        started = [t for t in ts if t.get("started", True)]
        phases = Counter(t.get("phase", "?") if t.get("started", True) else "queued"
                         for t in ts)
        done = sum(t.get("bytes_done", 0) for t in started)
        total = sum(t.get("bytes_total", 0) for t in started)
        lines.append(f"transfers: {len(ts)} {way} ("
                     + ", ".join(f"{phases[p]} {p}" for p in ("queued", "streaming",
                                                             "verifying", "done") if phases[p])
                     + f"), {done} of {total} bytes of the {len(started)} partition(s) started")
    incoming = groups["incoming"]
    stalled = Counter(t["stalled"] for t in incoming if t.get("stalled"))
    for why, count in stalled.most_common(5):
        lines.append(f"  stalled, {count} partition(s): {why}")
    if len(stalled) > 5:
        lines.append(f"  ... {len(stalled) - 5} other reason(s) (zkv status --json)")
    return lines


def ring_command(args) -> int:
    from zkv._core.ring import Ring
    from zkv.client import Client

    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:  # the named node's view of the ring
        info = c.ring_info(args.node)
    owners = set(info.owners)  # the node's current ring ([] from an older node)
    ring = Ring([(m.id, m.rack) for m in info.members
                 if (m.id in owners if owners else not m.leaving)],
                q=info.q, n=info.n, tokens=info.tokens)
    rows = ring.describe()
    if args.json:
        print(json.dumps({"q": info.q, "n": info.n, "partitions": rows}, indent=1))
        return 0
    for row in rows:
        print(f"{row['partition']:>6}  {' '.join(row['preflist'])}")
    return 0


def cluster_command(args) -> int:
    from zkv.client import Client

    cmd = args.cluster_cmd
    action, a, b = {
        "leave": lambda: ("leave", args.node_id, ""),
        "replace": lambda: ("replace", args.old_id, args.new_id),
        "force-remove": lambda: ("force-remove", args.node_id, ""),
        "plan": lambda: ("plan", "", ""),
        "commit": lambda: ("commit", "", ""),
        "auto-commit": lambda: ("auto_commit", "true" if args.value == "on" else "false", ""),
    }[cmd]()
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        leaving = [""]  # commit --wait: the nodes its staged changes take out, read first
        if cmd == "commit" and getattr(args, "wait", False):
            leaving = [s["node"] for s in c.cluster("plan", "", "", args.node).get("staged", [])
                       if s["action"] in ("leave", "replace", "force-remove")] or [""]
        info = c.cluster(action, a, b, args.node)
        if cmd == "plan" and args.json:
            print(json.dumps(info, indent=2, sort_keys=True))
            return 0
        print_plan(info, cmd)
        if getattr(args, "wait", False):
            if cmd in ("leave", "replace", "force-remove") and not info.get("auto_commit"):
                print("zkv: --wait: the change is staged; `zkv cluster commit` applies it",
                      file=sys.stderr)
                return 1
            sys.stdout.flush()
            # (commit: its data moved, every node it takes out gone as a leave's --wait
            # waits for it; it said "--wait returns once it has" and refused --wait, then
            # returned while a replaced node handed over for 59 s: outside runs)
            for gone in (leaving if cmd == "commit" else
                         [args.old_id if cmd == "replace" else args.node_id]):
                _wait_change(c, args.node, gone)
            print(f"{cmd}: complete")
    return 0


CHANGE_POLL = 1.0  # s between looks at a change `zkv cluster ... --wait` waits for


LEAVE_SILENT_GIVE_UP = 120.0  # s --wait waits on a left node down without its goodbye


def _wait_change(c, node: str, gone: str) -> None:
    """Until the change that takes `gone` out is complete as `node` sees it: `gone` has left
    (its partitions handed off or refilled) and its process has exited (down, its last
    gossip saying so: a node that left hands its hints and last copies over first; a frozen
    one is down too), no transfer runs, no change is
    settling or watched. Progress on stderr when it changes. (`leave: committed` printed at once, and
    operators took it for the end: an outside run stopped a pod while its handoff ran.)"""
    from zkv.node.membership import SHUT_DOWN

    said = ""
    silent_since: float | None = None  # since when `gone` is down without its goodbye
    asked = [node]  # the node asked, then the other members it named (it may restart)
    while True:
        doc = None
        for ep in asked:
            try:
                doc = c.status(ep)
                break
            except ZkvError:  # (the node asked was the one leaving and has exited, or it
                continue      # is restarting: another member answers; an outside run's
                # --wait gave up at the claimant's restart while the leave went on)
        if doc is None:
            doc = c.status()
        members = {m["id"]: m for m in doc.get("members", [])}
        asked = [node] + [m["listen"] for m in members.values()
                          if m["id"] != gone and m["listen"] != node]
        cl = doc.get("cluster", {})
        moving = [t for t in doc.get("transfers", []) if t.get("phase") != "done"]
        left = []
        if gone in members and members[gone].get("status") != "left":
            left.append(f"{gone} is {members[gone].get('status')}")
        elif gone in members and members[gone].get("state") != "down":
            # left, and still up: handing its last hints and extra copies over before its
            # process exits (a SIGTERM right after "complete" cut that short: an outside run)
            left.append(f"{gone} has left and is handing its last copies over")
        elif gone in members and members[gone].get("reason") != SHUT_DOWN:
            # down, but it did not say it shut down: frozen (SIGSTOP, a stalled VM) with its
            # last copies still to hand over when it resumes ("complete" came while it was
            # frozen, 10-30 s before its handover: an outside run)
            left.append(f"{gone} has left and is down without saying it stopped (frozen? "
                        "it hands its last copies over when it resumes)")
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > LEAVE_SILENT_GIVE_UP:
                raise ZkvError(
                    f"{gone} has left but has been down for {LEAVE_SILENT_GIVE_UP:.0f} s "
                    "without saying it stopped: frozen, killed, or its goodbye was lost. If it "
                    "is frozen, it hands its last copies over when it resumes; if it was "
                    "killed, the other replicas hold its partitions (the writes it took as a "
                    "stand-in and had not handed over are in its data dir: start it again "
                    "to hand them over, and it exits)")
        else:
            silent_since = None
        leaving = sorted(i for i, m in members.items()
                         if i != gone and m.get("status") == "leaving")
        if leaving:
            left.append(f"{', '.join(leaving)} leaving")
        if moving:
            left.append(f"{len(moving)} transfer(s) running")
        if cl.get("unsettled_changes"):
            left.append(f"{cl['unsettled_changes']} change(s) settling")
        if cl.get("watching"):
            left.append("the change is still watched by its claimant")
        if not left:
            return
        now = "; ".join(left)
        if now != said:
            print(f"waiting: {now}", file=sys.stderr, flush=True)
            said = now
        time.sleep(CHANGE_POLL)


def print_plan(info: dict, cmd: str) -> None:
    """The plan a `zkv cluster` command answered, for people."""
    staged = info.get("staged", [])
    if cmd != "plan":  # (auto-commit off: a change is staged, not done, until a commit)
        how = ("staged, not applied: `zkv cluster commit` applies it" if cmd in (
            "leave", "replace", "force-remove") and not info.get("auto_commit") else
            "done" if cmd == "auto-commit" else "committed (the data moves now: --wait "
            "returns once it has; `zkv status` shows the transfers)")
        print(f"{cmd}: {how} (epoch {info['epoch']}, claimant {info.get('claimant')})")
    print(f"auto-commit: {'on' if info.get('auto_commit') else 'off'}")
    if staged and info.get("auto_commit"):  # (auto-commit on: the claimant applies them at
        # its next tick; "run commit" read as if they would wait, and a leave staged only to
        # look at its plan went ahead: an outside run)
        print("staged, applied now (auto-commit is on):")
    elif staged:
        print("staged (run `zkv cluster commit` to apply):")
    else:
        print("staged: nothing")
    for s in staged:
        print(f"  {s['action']} {s['node']}" + (f" -> {s['other']}" if s["other"] else ""))
    print("members after: " + ", ".join(f"{k} ({v})" for k, v in info["members"].items()))
    print("partitions owned after: " + ", ".join(f"{k} {v}"
                                                  for k, v in info["owned_after"].items()))
    transfers = info.get("transfers", [])
    if transfers:
        print("transfers (bytes estimated from the answering node's own partitions):")
        for t in transfers:  # one row per pair of nodes and N (namespaces with their own N)
            n = f"N={t['n']}" if "n" in t else ""
            print(f"  {t['from']:>12} -> {t['to']:<12} {n:>5} {t['partitions']:>5} partition(s)  "
                  f"{t['bytes']:>12} bytes")
        print(f"moved fraction {info['moved_fraction']:.3f} "
              f"(minimum {info['minimum_fraction']:.3f})")
    else:
        print("transfers: none")
    for w in info.get("warnings", []):
        print(f"WARNING: {w}")


def repair_command(args) -> int:
    from rich.progress import Progress

    from zkv.client import Client

    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        before = _ae_totals(c.status(args.node))
        info = c.repair(args.partition, args.node)
        total = info["queued"]
        print(f"repair: {total} (partition, owner) pair(s) over {info['partitions']} "
              f"partition(s): roots compared first, those that differ exchanged")
        if info.get("down"):
            print(f"skipped, down: {', '.join(info['down'])} (repair again once back up; "
                  "anti-entropy also runs on its own)")
        with Progress(transient=not sys.stdout.isatty()) as bar:
            task = bar.add_task("exchanging", total=total or 1)
            started = time.monotonic()
            while True:
                ae = c.status(args.node).get("antientropy", {})
                left = ae.get("queued", 0) + ae.get("running", 0) + ae.get("checking", 0)
                bar.update(task, completed=max(0, total - left))
                if left == 0:
                    break
                # (roots agree within tens of ms: poll often at first, then every 0.2 s)
                time.sleep(0.02 if time.monotonic() - started < 1.0 else 0.2)
        did = {k: v - before.get(k, 0) for k, v in _ae_totals({"antientropy": ae}).items()}
        # (copies: a key one owner lacked, taken from two others, counts twice; the owners
        # skipped as down were compared with nothing: an outside run read "126/126 in full
        # agreement" and exit 0 with one owner down)
        down = info.get("down") or []
        print(f"done: {did['root_checks']} root comparison(s), {did['exchanges']} full "
              f"exchange(s), {did['keys_repaired']} key copies repaired, {did['bytes_sent']} "
              f"bytes sent by this node meanwhile (routine rounds included); "
              f"{ae.get('partitions_agreed', 0)}/{ae.get('partitions', 0)} partitions in full "
              "agreement" + (f" among the owners up; not compared with {', '.join(down)} "
                             "(down): repair again once back" if down else ""))
    return 1 if down else 0


def keys_command(args) -> int:
    from zkv.client import Client

    out = sys.stdout.buffer
    count = nul = 0
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        for key in c.keys(args.namespace, _key(args.prefix), r=args.r):
            count += 1
            if args.count:
                pass
            elif not args.null:
                out.write(_shown_key(key) + b"\n")
            elif b"\0" in key:  # (NUL-ended, it would read as two keys: an outside run
                nul += 1  # split 500,014 keys into 578,952)
            else:
                out.write(key + b"\0")
            if args.limit is not None and count >= args.limit:
                break
    if args.count:
        out.write(b"%d\n" % count)
    out.flush()
    if nul:
        print(f"zkv: {nul} key(s) holding a NUL byte left out: -0 cannot show them (list them "
              f"without -0, where a NUL shows as \\x00)", file=sys.stderr)
        return 1
    return 0


def _key_name(arg: str) -> str:
    r"""A key given on the command line as messages and `get K1 K2` name it: as `zkv keys`
    lists it (a byte that is not printable UTF-8 as \xNN). Printed as it came, a key that
    is not UTF-8 was raw bytes on stdout and "\udcff" on stderr."""
    return _shown_key(_key(arg)).decode()


def _shown_key(key: bytes) -> bytes:
    r"""A key on one line that no other key prints as: a backslash as \\, and each byte that
    is not part of printable UTF-8 (a newline, a NUL, any control character, invalid UTF-8)
    as \xNN."""
    text = key.decode(errors="surrogateescape").replace("\\", "\\\\")
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else
                       "".join(f"\\x{b:02x}" for b in ch.encode(errors="surrogateescape"))
                       for ch in text)
    return text.encode()


def dump_command(args) -> int:
    from zkv import dump
    from zkv.client import Client

    if args.store and (args.prefix or args.r):
        raise InvalidRequest("--store dumps every key of a generation: no --prefix nor --r")
    if args.generation is not None and not args.store:
        raise InvalidRequest("--generation goes with --store (a cluster serves only the live "
                             "generation of a namespace)")
    with contextlib.ExitStack() as stack:
        c = None if args.store else stack.enter_context(
            Client([args.node], timeout=args.timeout, keys=args.keys))

        damaged: list[dump.StoreDamage] = []

        def write(f) -> str:
            """Dump into `f`; returns what was dumped, for the line on stderr."""
            if c is None:
                got = dump.dump_stores(args.store, f, args.namespace, args.generation,
                                       warn=lambda line: print(f"zkv: {line}",
                                                               file=sys.stderr),
                                       damage=damaged.append)
                return (f"{got.keys} key(s) of namespace {args.namespace!r} generation "
                        f"{got.generation}" + (f" ({got.expired} expired key(s) left out)"
                                               if got.expired else ""))
            count = dump.dump(c, f, args.namespace, _key(args.prefix), args.r)
            return f"{count} key(s) of namespace {args.namespace!r}"

        if args.out in (None, "-"):
            what = write(sys.stdout)
        else:
            out = os.path.realpath(args.out)  # (a symbolic link: its file, the link kept)
            # a FIFO or a device (/dev/stdout) is written into as it is: it cannot be swapped
            # in whole, and replacing it would destroy it
            try:
                special = not stat.S_ISREG(os.stat(out).st_mode)
            except OSError:
                special = False  # (none yet: made)
            target = out if special else out + ".tmp"
            try:
                f = open(target, "w")  # noqa: SIM115
            except OSError as exc:  # (named as --out: a .tmp beside it is ours)
                raise InvalidRequest(f"--out {args.out}: {exc.strerror or exc}") from None
            try:
                with f:
                    what = write(f)
                if not special:
                    os.replace(target, out)  # (a dump that failed leaves no file to be trusted)
            except BaseException:
                if not special:
                    with contextlib.suppress(OSError):
                        os.unlink(target)
                raise
    print(f"dumped {what}", file=sys.stderr)
    if damaged:
        return _dump_damage(damaged[0])
    return 0


def _dump_damage(hurt) -> int:
    """What corrupt records in the stores cost a `zkv dump --store` (dump.StoreDamage): each
    key left out on a line of its own, then a summary line; exit EXIT_DAMAGED."""
    for key in hurt.left_out:
        print(f"zkv: left out (corrupt record, no good copy): {_shown_key(key).decode()}",
              file=sys.stderr)
    parts = []
    if hurt.left_out:
        parts.append(f"{len(hurt.left_out)} key(s) LEFT OUT of the dump (named above): a "
                     "store's record of each failed its CRC and no store given holds a good "
                     "copy (a replica's store, or the cluster once repaired, has them)")
    if hurt.from_other_copies:
        parts.append(f"{hurt.from_other_copies} key(s) dumped from another store's copy "
                     "while one store's record of it failed its CRC (that one may have been "
                     "newer)")
    if hurt.regions:
        parts.append(f"{hurt.regions} damaged region(s) of the stores skipped (keys that "
                     "cannot be told may be missing)")
    print("zkv: STORE DAMAGED: " + "; ".join(parts), file=sys.stderr)
    return EXIT_DAMAGED


def load_id_arg(text: str) -> bytes:
    """--resume: the 16 hex digits of a load's id."""
    try:
        got = bytes.fromhex(text)
    except ValueError:
        got = b""
    if len(got) != 8:
        raise argparse.ArgumentTypeError(f"{text!r}: a load id is 16 hex digits, as the load "
                                         "that was interrupted printed it")
    return got


def load_command(args) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from zkv import dump
    from zkv.client import Client

    try:
        fh = sys.stdin if args.source == "-" else open(args.source)  # noqa: SIM115
    except OSError as exc:
        raise InvalidRequest(f"{args.source}: {exc.strerror or exc}") from None
    load_id = args.resume or dump.new_load_id()
    sent: list[int] = []  # (keys sent, after each batch)
    resume = (f"to go on without writing twice what was written: zkv load {args.source} "
              f"--resume {load_id.hex()}")
    # progress on stderr at a terminal only (a load of 500,000 keys takes minutes)
    shown = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                     console=Console(stderr=True), transient=True,
                     disable=not sys.stderr.isatty())
    try:
        head, records = dump.read(fh, args.source)
        if dump.unchecked(head):
            print(f"zkv: {args.source}: dump format 1 (an older zkv's) carries no checksums: "
                  "a value or key damaged in it is loaded as it reads", file=sys.stderr)
        namespace = args.namespace or head.get("namespace") or "default"
        with Client([args.node], timeout=args.timeout, keys=args.keys) as c, shown:
            target = next((ns for ns in c.namespaces() if ns["name"] == namespace), None)
            if target is None:
                raise InvalidRequest(f"namespace {namespace!r} does not exist in this cluster "
                                     f"(zkv namespace create {namespace} ... first)")
            task = shown.add_task(f"loading into {namespace!r}")

            def progress(keys: int, line: int) -> None:
                sent.append(keys)
                shown.update(task, description=f"loading into {namespace!r}: {keys} key(s) "
                                               f"sent, line {line}")

            res = dump.load(c, records, namespace, args.w, target, progress=progress,
                            load_id=load_id)
    except UnicodeDecodeError:
        raise InvalidRequest(f"{args.source}: not a zkv dump (not text)") from None
    except (KeyboardInterrupt, ZkvError) as exc:
        if sent or isinstance(exc, KeyboardInterrupt):  # (a batch or more written)
            print(f"zkv: {resume}", file=sys.stderr)
        raise
    finally:
        if fh is not sys.stdin:
            fh.close()
    by_key: dict[tuple[int, bytes], list] = {}  # (one key's siblings fail one by one)
    for no, key, err in res.failed:
        by_key.setdefault((no, key), []).append(err)
    for (no, key), errs in list(by_key.items())[:20]:
        many = f"{len(errs)} of its values refused, the first: " if len(errs) > 1 else ""
        fix = ("; the target keeps fewer siblings than the dump holds: raise its limit (zkv "
               "config --set max_siblings=N --all) before loading" if "zkv-node "
               "--max-siblings" in str(errs[0]) else "")
        print(f"zkv: {args.source}:{no} ({_shown_key(key).decode()[:60]}): "
              f"{many}{type(errs[0]).__name__}: {errs[0]}{fix}", file=sys.stderr)
    if len(by_key) > 20:
        print(f"zkv: ... and {len(by_key) - 20} key(s) more", file=sys.stderr)
    if res.stopped:
        print(f"zkv: stopped: {res.stopped}", file=sys.stderr)
    print(f"{'partly' if res.failed or res.stopped else 'ok'}: {res.loaded} key(s) loaded into "
          f"namespace {namespace!r}"
          + (f", {len(res.failed)} write(s) of {len(by_key)} key(s) failed" if res.failed
             else "")
          + (f", {res.expired} left out (expired since the dump)" if res.expired else "")
          + (f"; the rest of the file was not read ({resume}, once it is fixed)"
             if res.stopped else ""))
    if res.longer:
        why = ("has no ttl: they never expire there" if not target.get("ttl") else
               f"keeps no ttl of a write's own (created by an older version): they live its "
               f"ttl ({_show_duration(target['ttl'])}) from now")
        print(f"zkv: {res.longer} key(s) will be served longer than the dump says: namespace "
              f"{namespace!r} {why}", file=sys.stderr)
    if res.collapsed:
        print(f"zkv: {res.collapsed} key(s) had siblings in the dump; namespace {namespace!r} "
              f"is lww and keeps one value per key: one of each key's siblings was kept",
              file=sys.stderr)
    return 1 if res.failed or res.stopped else 0


def snapshot_command(args) -> int:
    from zkv.client import Client
    from zkv.wire import SnapshotAction

    if args.list and args.remove:
        raise Usage("--list or --remove, not both")
    if args.list and args.name:
        raise Usage("--list takes no NAME")
    if args.remove and not args.name:
        raise Usage("--remove takes the NAME of the snapshot to remove")
    action: SnapshotAction = "list" if args.list else "remove" if args.remove else "take"
    name = args.name or ("" if args.list else time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        got, failed = _on_targets(c, args, lambda target: c.snapshot(name, target, action))
    answers = [{"node": target, **info} if action != "take" else info for target, info in got]
    if not args.json:
        for target, info in got:
            _print_snapshot(action, target, info)
    if args.json:
        print(json.dumps(answers, indent=2))
    elif answers and action == "take":
        print("copy each off its machine, then remove it (it holds disk space once compaction "
              "replaces what it links); README, 'Backups'")
    return 1 if failed else 0


def config_command(args) -> int:
    from zkv.client import Client

    changes = {}
    for item in args.changes:
        name, sep, value = item.partition("=")
        if not sep or not name:  # (a command-line mistake: exit 2, as argparse's)
            raise Usage(f"--set {item!r}: expected NAME=VALUE (e.g. max_siblings=50)")
        changes[name.strip().replace("-", "_")] = value.strip()
    with Client([args.node], timeout=args.timeout, keys=args.keys) as c:
        got, failed = _on_targets(c, args, lambda target: c.config(changes, target, args.save))
    if args.json:
        print(json.dumps([{"node": target, **info} for target, info in got], indent=2))
        return 1 if failed else 0
    for target, info in got:
        if changes:
            for name, (old, new) in info["changed"].items():
                print(f"{target}: {name} {old} -> {new}")
            if not info["changed"]:
                print(f"{target}: already so, nothing changed")
        if args.save:
            saved = info["saved"]
            written = ", ".join(f"{k} = {v!r}" for k, v in saved["written"].items())
            print(f"{target}: saved to {saved['path']}: {written}" if written else
                  f"{target}: {saved['path']} already says what a restart should keep")
            if saved["flag_wins"]:
                print(f"{target}: not saved: {', '.join(saved['flag_wins'])} (its command line "
                      f"sets them, which wins over the file at a restart: change it there)")
        elif not changes:
            runtime, ignored = set(info["runtime"]), info.get("ignored") or {}
            for name, value in info["settings"].items():
                note = ("  (runtime: zkv config --set)" if name in runtime else
                        f"  (the cluster's; {ignored[name][0]} given, ignored)"
                        if name in ignored else "")
                print(f"{target}: {name:<22} {value!s:<24}{note}")
    return 1 if failed else 0


def _on_targets(c, args, ask) -> tuple[list[tuple[str, dict]], int]:
    """(target, answer) of `ask(target)` for --node, or with --all for every member (sorted),
    one after the other, and how many failed: with --all a target that fails is named on
    stderr and the others still asked; without, its error is the command's."""
    targets = (sorted(m.id for m in c.ring_info(args.node).members) if args.all
               else [args.node])
    got, failed = [], 0
    for target in targets:
        try:
            got.append((target, ask(target)))
        except ZkvError as exc:
            if not args.all:
                raise
            failed += 1
            print(f"zkv: {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return got, failed


def _print_snapshot(action: str, target: str, info: dict) -> None:
    if action == "take":
        print(f"{info['node']}: snapshot {info['name']!r} at {info['path']} "
              f"({info['bytes']} bytes linked, no data copied)")
    elif action == "remove":
        print(f"{target}: snapshot {info['removed']!r} removed ({info['freed']} bytes freed)")
    elif not info["snapshots"]:
        print(f"{target}: no snapshots")
    else:
        for snap in info["snapshots"]:
            when = (time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                  time.gmtime(snap["created_ms"] / 1000))
                    if snap.get("created_ms") else "-")
            what = ("INCOMPLETE (cut short: remove it)" if snap.get("incomplete")
                    else f"{snap['bytes']} bytes")
            print(f"{target}: {snap['name']:<24} {when}  {what}, {snap['held']} bytes held "
                  f"by it alone  {snap['path']}")


def _ae_totals(status: dict) -> dict[str, int]:
    """A node's anti-entropy counters summed over every N in use (status' antientropy.by_n)."""
    groups = status.get("antientropy", {}).get("by_n", {}).values()
    return {k: sum(g.get(k, 0) for g in groups)
            for k in ("root_checks", "exchanges", "keys_repaired", "bytes_sent")}


# ---- zkv local up -----------------------------------------------------------------------------
def local_add(args) -> int:
    from zkv.local import LocalCluster

    cluster = LocalCluster.attach(args.dir)
    n = cluster.add_node()
    print(f"zkv: {n.id} started at {n.listen} (rack {n.rack}, log {n.log_path}); it joins and "
          f"receives its partitions (watch with `zkv status`)")
    cluster.wait_settled(120.0)
    cluster.wait_ready(60.0)  # every /readyz 200 once this says so
    cluster.wait_changes_settled(60.0)  # (`zkv status` no longer says "settling:")
    cluster.wait_verified(60.0)  # its gained partitions count for reads (`zkv keys --r 2`)
    print(f"zkv: {n.id} owns its share; the cluster has settled")
    return 0


def _attached_node(args):
    """(the running `zkv local up` cluster of --dir, its node NODE_ID)."""
    from zkv.local import LocalCluster

    cluster = LocalCluster.attach(args.dir)
    try:
        return cluster, cluster.node(args.node_id)
    except StopIteration:
        raise ZkvError(f"no node {args.node_id} in {args.dir}/local.json (its nodes: "
                       f"{', '.join(n.id for n in cluster.nodes) or 'none'})") from None


def local_restart(args) -> int:
    cluster, n = _attached_node(args)
    for m in cluster.nodes:  # (a node that left, started again, exits in ~5 s: it said
        if m is n or not cluster.running_pid(m):  # "running again" and exit 0 all the same:
            continue                                # an outside run)
        try:
            members = {x["id"]: x for x in cluster.status_of(m, 2.0)["members"]}
        except ZkvError:
            continue
        if members.get(n.id, {"status": "left"}).get("status") == "left":  # (one that left
            # is soon no member at all: the review found the status check alone never hit)
            print(f"zkv: {n.id} is no member of the cluster any more (it left, or was replaced "
                  "or removed): started again it only hands over what it still holds and "
                  "exits; `zkv local add` starts a new node", file=sys.stderr)
            return 1
        break
    pid = cluster.running_pid(n)
    if pid:
        print(f"zkv: stopping {n.id} (pid {pid}) with SIGTERM")
        if not cluster.stop_by_pid(n):
            print(f"zkv: {n.id} did not exit within 30s: killed")
    cluster.start_again(n)
    print(f"zkv: {n.id} is running again at {n.listen} on its data dir; the hints other nodes "
          "hold for it and anti-entropy bring it up to date (watch with `zkv status`)")
    return 0


def local_remove(args) -> int:
    cluster, n = _attached_node(args)
    pid = cluster.running_pid(n)
    cluster.remove_node(n.id)
    print(f"zkv: {n.id} is leaving: handing its partitions off")
    deadline = time.monotonic() + 300
    while pid and time.monotonic() < deadline:
        if cluster.running_pid(n) != pid:  # (exited: gone, or a zombie not reaped yet)
            break
        time.sleep(0.2)
    else:
        if pid:
            raise ZkvError(f"{n.id} (pid {pid}) did not exit within 300s; see {n.log_path}")
    cluster.nodes = [m for m in cluster.nodes if m.id != n.id]
    cluster.save_manifest()
    print(f"zkv: {n.id} left the cluster and exited (its data dir {n.data_dir} is kept)")
    return 0


VERIFY_WAIT = 60.0  # s `zkv local up` waits for a new cluster's partitions to count for reads
RESTART_GRACE = 5.0  # s a node's exit waits to be reported: `zkv local restart` starts another


def local_up(args) -> int:
    from zkv.local import LocalCluster, node_number, saved_members

    if not 1 <= args.nodes <= 100:
        print(f"zkv: --nodes {args.nodes}: between 1 and 100", file=sys.stderr)
        return 2
    # a data dir from an earlier run: start every member its cluster has (one `zkv local
    # add` added, or left out stays down for good, its hints piling up on the others), and
    # no node that left it (`zkv local remove`: started again, it stays out and exits, and
    # the cluster never looked whole); a number up to --nodes never used joins as before
    # (and a node whose data dir holds no cluster state never joined: a run stopped in its
    # first second left node2 and node3 so, and every later run started node1 alone)
    owner = LocalCluster.owner_running(args.dir)
    if owner:  # (starting anyway stopped that one's nodes as this start failed: an outside run)
        print(f"zkv: a `zkv local up` (pid {owner}) already runs the cluster in {args.dir}; "
              f"stop it first (Ctrl-C in its terminal, or kill {owner}), or use another --dir",
              file=sys.stderr)
        return 1
    members, stated = saved_members(args.dir)
    # a member is one of this dir's only if its data dir is here (DIR/nodeK, holding the
    # cluster state it joined with); any other (an operator's own `zkv-node --seed`, named
    # nodeK or not) is left alone: started here too it was refused as a second process of
    # that member ("already in the cluster ... and up"), and the whole start failed
    managed = {m for m in members if m in stated and node_number(m) is not None}
    numbers = {k for m in managed if (k := node_number(m)) is not None and k <= 100}
    ids = sorted(numbers | {k for k in range(1, args.nodes + 1) if not members
                            or f"node{k}" not in (stated | members)})
    if not ids:
        print(f"zkv: {args.dir} holds a cluster of {', '.join(sorted(members))}, none of them a "
              "node this command starts (node1, node2, ...): use another --dir",
              file=sys.stderr)
        return 1
    if members and ids != list(range(1, args.nodes + 1)):
        why = "added by `zkv local add`" if numbers - set(range(1, args.nodes + 1)) else ""
        gone = [f"node{k}" for k in range(1, max(ids) + 1)
                if k not in ids and f"node{k}" not in members]
        if gone:
            why += ("; " if why else "") + f"{', '.join(gone)} left it"
        print(f"zkv: {args.dir} holds a cluster of {len(numbers)} node(s) from an earlier run"
              + (f" ({why})" if why else "") + ": starting " + (
                  f"all {len(ids)}" if not gone else ", ".join(f"node{k}" for k in ids)))
    rest = sorted(m for m in members if node_number(m) not in ids)
    if rest:
        print(f"zkv: {', '.join(rest)} also belong(s) to the cluster under {args.dir} but "
              f"not to this command (no data dir of its own here, or not nodeK): left alone, "
              f"neither started nor stopped", file=sys.stderr)
    top = 65535 - 2100 - max(ids) + 1
    if not 1 <= args.base_port <= top:
        print(f"zkv: --base-port {args.base_port}: between 1 and {top} (node K uses BASE+K-1 "
              "for clients, BASE+1000+K-1 for gossip and BASE+2100+K-1 for metrics)",
              file=sys.stderr)
        return 2
    args.nodes = len(ids)
    cluster = LocalCluster(args.nodes, args.dir, args.base_port, sync=args.sync, metrics=True,
                           ids=ids)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # and SIGINT whatever we inherited: a shell starts a background job (`zkv local up &`)
    # with SIGINT ignored, and Python then installs no handler of its own, so `kill -INT`
    # did nothing (Ctrl-C in a terminal still reaches the foreground job as before)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            cluster.start()
        except ZkvError as exc:
            print(f"zkv: cannot start the local cluster: {exc}", file=sys.stderr)
            return 1
        print(f"zkv: {args.nodes} node(s) up, data under {os.path.abspath(args.dir)}")
        for n in cluster.nodes:
            print(f"  {n.id}  {n.listen}  rack {n.rack}  metrics http://127.0.0.1:{n.metrics_port}"
                  f"/metrics  (log {n.log_path})")
        if args.demo:
            from zkv.demo import run_demo

            run_demo(cluster)
        if args.exit_after_demo:
            return 0
        # a new cluster's nodes gained their partitions as it formed: until each is settled
        # and compared with its other owners (~`settle` s, 5 by default), their copies do not
        # count toward a read's R, and `zkv keys --r 2` would fail (the demo takes longer).
        # "Serving" once they do (or after VERIFY_WAIT s anyway), nodes watched meanwhile
        verify_by: float | None = time.monotonic() + VERIFY_WAIT
        exited: dict[str, float] = {}  # node id -> when its process was seen gone
        while not stop["now"]:
            if verify_by is not None:
                left = cluster.unverified()
                if left and time.monotonic() < verify_by:
                    time.sleep(0.2)
                else:
                    if left:  # (serve anyway: reads count the other owners meanwhile)
                        print(f"zkv: partitions not verified within {VERIFY_WAIT:.0f}s ("
                              + ", ".join(f"{k}: {v}" for k, v in sorted(left.items()))
                              + ")", file=sys.stderr)
                    verify_by = None
                    at = "" if args.base_port == 7001 else f" --node {cluster.endpoints[0]}"
                    # (one node of an N=3 cluster: R=W=1, or the suggested put failed "1 of
                    # the required 2 replicas": a review. N stays 3, for the nodes it may get)
                    w, r = (" --w 1", " --r 1") if len(cluster.nodes) < 2 else ("", "")
                    print(f"\nServing until Ctrl-C. Try:  zkv status{at}   zkv put hello world"
                          f"{w}{at}   zkv get hello{r}{at}   zkv top{at}", flush=True)
            else:
                time.sleep(0.5)
            for n in cluster.nodes:
                if n.proc is not None and n.proc.poll() is not None and not n.reported:
                    # (a clean exit, as `zkv local restart` stops it before it starts another
                    # process: said once that one is not up within RESTART_GRACE s)
                    exited.setdefault(n.id, time.monotonic())
                    if n.proc.returncode == 0 and time.monotonic() - exited[n.id] < RESTART_GRACE:
                        continue
                    n.reported = True
                    if n.id not in cluster.manifest_ids() or (n.proc.returncode == 0
                                                              and cluster.running_pid(n)):
                        continue  # (`zkv local remove`: it left; or restarted meanwhile)
                    again = f"zkv local restart {n.id}" + (
                        "" if args.dir == "./zkv-data" else f" --dir {args.dir}")
                    print(f"zkv: {n.id} exited with code {n.proc.returncode}; see {n.log_path} "
                          f"(to start it again: {again})", flush=True)
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        cluster.stop()
        cluster.stop_attached()  # (nodes `zkv local add` or `zkv local restart` started)
        print("all nodes stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

