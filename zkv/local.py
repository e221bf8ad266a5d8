"""LocalCluster: real zkv-node processes on loopback, for `zkv local up`, tests and benchmarks.

Each node is a separate `python -P -m zkv.node` process with its own data directory and log
file; the cluster can kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), stop (SIGTERM) and
restart any of them. Every address is on 127.0.0.1.

`-P` keeps the current directory off the node's sys.path: run from a clone after a plain
`pip install .`, `-m` would otherwise import the clone's uncompiled `zkv/` (no Cython
extensions) instead of the installed package.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from zkv.errors import ZkvError

NODE_COMMAND = [sys.executable, "-P", "-m", "zkv.node"]  # -P: never the cwd's zkv/ (see above)


def pid_alive(pid: int) -> bool:
    """Is process `pid` still there? (A node watches the process that started it; the CLI
    waits for a node that leaves to exit.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but someone else's
        return True
    return True


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now. SO_REUSEADDR, as ZeroMQ binds: connections
    of a cluster just stopped linger in TIME_WAIT for a minute and must not count as busy
    (a listening socket still does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


FIRST_PORT = 10_000  # free_ports picks from here up to the kernel's ephemeral range
PORTS_ENV = "ZKV_LOCAL_PORTS"  # "LO-HI": free_ports picks from LO up to HI (exclusive) instead
_given: collections.deque[int] = collections.deque(maxlen=4096)  # handed out lately, here


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where outgoing connections take their
    local ports): free_ports stays below it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_span() -> tuple[int, int]:
    """The ports free_ports picks from: [FIRST_PORT, ephemeral_low()), or the range
    $ZKV_LOCAL_PORTS names ("LO-HI", HI exclusive), so that processes picking side by side
    (the test suite's parallel workers, and the nodes and `zkv local` runs they start) never
    pick the same port in the moment between a pick and its bind."""
    raw = os.environ.get(PORTS_ENV)
    if not raw:
        return FIRST_PORT, ephemeral_low()
    try:
        lo, hi = (int(x) for x in raw.split("-"))
    except ValueError:
        raise ZkvError(f"${PORTS_ENV}={raw!r}: expected LO-HI, e.g. 20000-25000") from None
    if not 1024 <= lo < hi <= 65536:
        raise ZkvError(f"${PORTS_ENV}={raw!r}: expected 1024 <= LO < HI <= 65536")
    return lo, hi


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now, below the kernel's ephemeral range and
    not handed out by this process lately. (bind(0) picks from that range, where the local end
    of any outgoing connection, a node's link to a peer or a client's, can take a port between
    its pick and the node's bind: a test's node then failed "Address already in use" in a CI
    rehearsal.) Falls back to bind(0) where the range leaves too little room below it, unless
    $ZKV_LOCAL_PORTS names the range (`port_span`): too few free there is an error."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        first, end = port_span()
        span, chosen = end - first, bool(os.environ.get(PORTS_ENV))
        if span >= 1000 or chosen:
            start = random.randrange(span)
            for i in range(span):
                port = first + (start + i) % span
                if port in _given:
                    continue
                s = socket.socket(fam)
                try:
                    s.bind((host, port))  # (no SO_REUSEADDR: a port in TIME_WAIT is passed over)
                except OSError:
                    s.close()
                    continue
                socks.append(s)
                ports.append(port)
                if len(ports) == count:
                    break
        if chosen and len(ports) < count:
            raise ZkvError(f"fewer than {count} free ports on {host} in ${PORTS_ENV}="
                           f"{os.environ[PORTS_ENV]}")
        while len(ports) < count:
            s = socket.socket(fam)
            socks.append(s)
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    _given.extend(ports)
    return ports


def node_number(node_id: str) -> int | None:
    """K of a `zkv local` node's id "nodeK" (None for any other id)."""
    m = re.fullmatch(r"node([1-9][0-9]{0,5})", node_id)
    return int(m.group(1)) if m else None


def saved_members(directory: str) -> tuple[set[str], set[str]]:
    """The members of the cluster whose nodes keep their data under `directory` (a `zkv local
    up` run before), by the newest cluster state any node's cluster.json holds: ids of every
    status but left; empty when there is none. And the data dirs (names) that hold a cluster
    state at all: one that holds none never joined (a run stopped in its first second)."""
    from zkv.node import ownership as own
    from zkv.node.membership import load_cluster

    best = None
    stated: set[str] = set()
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return set(), stated
    for name in names:
        path = os.path.join(directory, name, "cluster.json")
        if not os.path.isfile(path):
            continue
        try:
            st = own.decode(bytes.fromhex(load_cluster(path).get("cluster") or ""))
        except (ValueError, TypeError):
            continue
        stated.add(name)
        if best is None or st.rank() > best.rank():
            best = st
    return (set(best.members) if best is not None else set()), stated


@dataclass
class LocalNode:
    id: str
    listen: str
    gossip: str
    rack: str
    data_dir: str
    log_path: str
    extra: list[str] = field(default_factory=list)
    metrics_port: int = 0  # /metrics, /healthz, /readyz on 127.0.0.1 (0: off)
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS]
    proc: subprocess.Popen | None = None
    paused: bool = False
    reported: bool = False
    log_from: int = 0  # where its log stood when it was last started (what tail reads from)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def process(self) -> subprocess.Popen:
        """The node's process (the last one started)."""
        if self.proc is None:
            raise ZkvError(f"{self.id} was never started")
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _unverified(doc: dict) -> str:
    """A status document's partitions whose copies do not count for reads yet, "" if none."""
    ae = doc.get("antientropy") or {}
    count = ae.get("fresh_partitions_left", 0) + ae.get("refill_partitions_left", 0)
    return f"{count} partition(s)" if count else ""


class LocalCluster:
    def __init__(self, nodes: int = 3, directory: str = "./zkv-data", base_port: int | None = 7001,
                 *, racks: list[str] | None = None, sync: str = "interval",
                 extra_args: list[str] | None = None, n: int | None = None,
                 metrics: bool = False, keys: str | None = None,
                 hosts: list[str] | None = None, prefixes: list[list[str]] | None = None,
                 ids: list[int] | None = None) -> None:
        """`hosts`/`prefixes` (one per node): each node listens on its own address, port 7001
        (gossip 8001), started behind its prefix (a zkv.netns.Lab machine: the caller must
        then run in a namespace that reaches those addresses). Default: all on 127.0.0.1.
        `ids`: the nodes' numbers (node K: ports BASE+K-1, ...), for a data dir whose cluster
        lost a node in the middle (`zkv local remove node2`); default 1..`nodes`."""
        ids = list(ids) if ids is not None else list(range(1, nodes + 1))
        nodes = len(ids)
        self.dir = os.path.abspath(directory)
        # keys: a `zkv keygen` directory; nodes run with --keys, and this class talks to them
        # with its admin client key
        self.keys = os.path.abspath(keys) if keys else None
        self.client_keys = os.path.join(self.keys, "clients", "admin") if self.keys else None
        if base_port is None:
            ports = free_ports(3 * nodes)
            listen_ports, gossip_ports = ports[:nodes], ports[nodes:2 * nodes]
            metrics_ports = ports[2 * nodes:]
        else:
            listen_ports = [base_port + k - 1 for k in ids]
            gossip_ports = [base_port + 1000 + k - 1 for k in ids]
            metrics_ports = [base_port + 2100 + k - 1 for k in ids]  # 7001 -> 9101
        if hosts is not None:
            listen_ports, gossip_ports, metrics = [7001] * nodes, [8001] * nodes, False
        hosts = hosts or ["127.0.0.1"] * nodes
        prefixes = prefixes or [[] for _ in range(nodes)]
        racks = racks or ["rack-a", "rack-b", "rack-c"]
        self.racks = racks
        self.base_port = base_port
        self.metrics = metrics
        self.owner_pid = os.getpid()  # nodes stop when this process is gone
        self.extra = list(extra_args or []) + ["--sync", sync]
        if self.keys:
            self.extra += ["--keys", self.keys]
        if n is not None:
            self.extra += ["--n", str(n), "--r", str(min(2, n)), "--w", str(min(2, n))]
        self.nodes = [
            LocalNode(
                id=f"node{k}",
                listen=f"tcp://{hosts[i]}:{listen_ports[i]}",
                gossip=f"tcp://{hosts[i]}:{gossip_ports[i]}",
                rack=racks[(k - 1) % len(racks)],
                data_dir=os.path.join(self.dir, f"node{k}"),
                log_path=os.path.join(self.dir, f"node{k}.log"),
                metrics_port=metrics_ports[i] if metrics else 0,
                prefix=list(prefixes[i]),
            )
            for i, k in enumerate(ids)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [n.listen for n in self.nodes]

    def node(self, node_id: str) -> LocalNode:
        return next(n for n in self.nodes if n.id == node_id)

    # ---- process control --------------------------------------------------------------------
    def _spawn(self, n: LocalNode, seed: str | None) -> None:
        os.makedirs(self.dir, exist_ok=True)
        cmd = [*n.prefix, *NODE_COMMAND, "--id", n.id, "--listen", n.listen,
               "--gossip", n.gossip, "--data-dir", n.data_dir, "--rack", n.rack,
               *self.extra, *n.extra]
        if n.metrics_port:
            cmd += ["--metrics-port", str(n.metrics_port)]
        if seed:
            cmd += ["--seed", seed]
        log = open(n.log_path, "ab")
        n.log_from = log.tell()  # (an exit is explained by this run's lines, not an older run's)
        # the node stops by itself if this process dies without stopping it (no strays)
        env = dict(os.environ, ZKV_EXIT_WITH_PARENT=str(self.owner_pid))
        try:
            n.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        n.paused = False
        n.reported = False
        with open(self.pid_path(n), "w") as fh:  # for tools/faults.py
            fh.write(f"{n.proc.pid}\n")

    # ---- growing and shrinking (issue 11) -------------------------------------------------
    def add_node(self, timeout: float = 30.0, rack: str | None = None) -> LocalNode:
        """Start one more node that joins through a live one (`zkv local add`); returns it
        once its port is open (the claimant then commits its join and it receives its
        partitions: wait for that with `wait_settled`). It is numbered past every node this
        cluster has, and past every data dir left behind (a node that left keeps its own: it
        would stay out, or start empty beside the data of another life)."""
        i = max([node_number(m.id) or 0 for m in self.nodes], default=0)
        while os.path.exists(os.path.join(self.dir, f"node{i + 1}")):
            i += 1
        if self.base_port is None:
            lp, gp, mp = free_ports(3)
        else:
            lp, gp, mp = self.base_port + i, self.base_port + 1000 + i, self.base_port + 2100 + i
        n = LocalNode(id=f"node{i + 1}", listen=f"tcp://127.0.0.1:{lp}",
                      gossip=f"tcp://127.0.0.1:{gp}", rack=rack or self.racks[i % len(self.racks)],
                      data_dir=os.path.join(self.dir, f"node{i + 1}"),
                      log_path=os.path.join(self.dir, f"node{i + 1}.log"),
                      metrics_port=mp if self.metrics else 0)
        for ep in (n.listen, n.gossip):
            host, port = ep[len("tcp://"):].rsplit(":", 1)
            if not port_free(host, int(port)):
                raise ZkvError(f"address in use: {ep}")
        live = [m.listen for m in self.nodes if m.alive() or m.proc is None]
        if not live:
            raise ZkvError("no node of the cluster is running to join through")
        self.nodes.append(n)
        self._spawn(n, live[0])
        self._wait_port(n, timeout)
        self.save_manifest()
        return n

    def remove_node(self, node_id: str, timeout: float = 120.0) -> int | None:
        """`zkv cluster leave` for one node, then wait for its process to exit (0 after it
        handed its data off). Returns the exit code (None: not started by this object)."""
        from zkv.client import Client

        n = self.node(node_id)
        others = [m.listen for m in self.nodes if m is not n and (m.alive() or m.proc is None)]
        with Client(others, timeout=5.0, keys=self.client_keys) as c:
            c.cluster("leave", node_id)
        if n.proc is None:
            return None
        try:
            return n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ZkvError(f"{node_id} did not leave within {timeout:.0f}s: "
                           f"{self.tail(n)}") from None

    def status_of(self, n: LocalNode, timeout: float = 1.0) -> dict:
        """Node n's status document (ZkvError if it does not answer within `timeout` s)."""
        from zkv.client import Client

        with Client([n.listen], timeout=timeout, keys=self.client_keys) as c:
            return c.status(n.listen)

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Until no change is moving (every transfer done, every member valid) on every live
        node, and all agree on the ring."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            prints, ok = set(), True
            for n in self.nodes:
                if not n.alive():
                    continue
                try:
                    doc = self.status_of(n, 1.0)
                except ZkvError as exc:
                    ok, last = False, f"{n.id}: {exc}"
                    break
                cl = doc.get("cluster", {})
                if cl.get("staged") and not cl.get("auto_commit", True):
                    # (it waited its whole timeout, then said only "did not settle": an
                    # outside run)
                    raise ZkvError("the change is staged, not applied: auto-commit is off "
                                   "(`zkv cluster commit` applies it, `zkv cluster auto-commit "
                                   "on` applies the next ones)")
                live = {m.id for m in self.nodes if m.alive()}
                statuses = {m["id"]: m["status"] for m in doc["members"] if m["id"] in live}
                if cl.get("moving") or cl.get("staged") or any(
                        s != "valid" for s in statuses.values()):
                    ok, last = False, f"{n.id}: moving, {statuses}, {len(doc['transfers'])} " \
                                      f"transfer(s)"
                    break
                prints.add(doc["ring"]["fingerprint"])
            if ok and len(prints) == 1:
                return
            time.sleep(0.2)
        raise ZkvError(f"the cluster did not settle within {timeout:.0f}s ({last})"
                       + self._said(last.split(":", 1)[0]))

    def _pending_on_live(self, pending) -> dict[str, str]:
        """node id -> what `pending(status document)` says is left there, for each live node
        where it is not "" (one pass)."""
        left: dict[str, str] = {}
        for n in self.nodes:
            if n.alive():
                try:
                    why = pending(self.status_of(n, 1.0))
                except ZkvError as exc:
                    why = str(exc)
                if why:
                    left[n.id] = why
        return left

    def _wait_every_live(self, timeout: float, what: str, pending) -> None:
        """Until `pending(status document)` is "" on every live node (else what is left
        there); ZkvError naming `what` and each node's last answer at `timeout`."""
        deadline = time.monotonic() + timeout
        left: dict[str, str] = {}
        while time.monotonic() < deadline:
            left = self._pending_on_live(pending)
            if not left:
                return
            time.sleep(0.2)
        raise ZkvError(f"{what} within {timeout:.0f}s ("
                       + ", ".join(f"{k}: {v}" for k, v in sorted(left.items())) + ")")

    def wait_changes_settled(self, timeout: float = 60.0) -> None:
        """Until no live node has an ownership change still settling (`zkv status`'s
        "settling:" line: gets and puts of moved partitions still ask the previous owners
        too), which ends `settle` seconds after every member had the change: after
        `wait_settled` (transfers done), a few seconds more."""
        def settling(doc: dict) -> str:
            left = doc.get("cluster", {}).get("unsettled_changes")
            return f"{left} change(s) settling" if left else ""

        self._wait_every_live(timeout, "ownership changes did not settle", settling)

    def wait_verified(self, timeout: float = 60.0) -> None:
        """Until no live node has partitions whose copies do not count for a client's own
        reads: refilling after a lost disk, or gained at an ownership change (a cluster's
        forming included) not yet settled and exchanged with the other owners."""
        self._wait_every_live(timeout, "partitions not verified", _unverified)

    def unverified(self) -> dict[str, str]:
        """`wait_verified`'s condition, asked once: node id -> its partitions still
        unverified, for each live node that has some."""
        return self._pending_on_live(_unverified)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every live node is ready as its /readyz says (node/health.py): the rings
        agree by every peer's gossip too, which trails wait_settled's view by up to a gossip
        round (a demo or a person's first request in that round met a 503 there)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for n in self.nodes:
                if not n.alive():
                    continue
                try:
                    summary = self.status_of(n, 1.0)["metrics"]
                except ZkvError as exc:
                    last = f"{n.id}: {exc}"
                    break
                if not summary["ready"]:
                    last = f"{n.id}: {summary['ready_reason']}"
                    break
            else:
                return
            time.sleep(0.1)
        raise ZkvError(f"the cluster was not ready within {timeout:.0f}s ({last})"
                       + self._said(last.split(":", 1)[0]))

    def manifest_path(self) -> str:
        return os.path.join(self.dir, "local.json")

    def save_manifest(self) -> None:
        """DIR/local.json: the nodes and the owning process, for `zkv local add/remove`."""
        doc = {"owner_pid": self.owner_pid, "base_port": self.base_port, "metrics": self.metrics,
               "racks": self.racks, "extra": self.extra, "keys": self.keys,
               "nodes": [{"id": n.id, "listen": n.listen, "gossip": n.gossip, "rack": n.rack,
                          "data_dir": n.data_dir, "log_path": n.log_path,
                          "metrics_port": n.metrics_port} for n in self.nodes]}
        tmp = self.manifest_path() + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, self.manifest_path())

    def manifest_ids(self) -> set[str]:
        """The ids local.json lists now (`zkv local add` and `remove` change it)."""
        try:
            with open(self.manifest_path()) as fh:
                return {row.get("id") for row in json.load(fh).get("nodes", [])}
        except (OSError, ValueError, AttributeError):
            return {n.id for n in self.nodes}

    @staticmethod
    def owner_running(directory: str) -> int:
        """The pid of the `zkv local up` (or other owner) that manages the cluster in
        `directory`, as its local.json says, 0 unless that process is still there."""
        try:
            with open(os.path.join(os.path.abspath(directory), "local.json")) as fh:
                pid = int(json.load(fh)["owner_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return pid if pid > 0 and pid_alive(pid) else 0

    @classmethod
    def attach(cls, directory: str) -> LocalCluster:
        """The cluster a running `zkv local up` in `directory` manages (from local.json)."""
        path = os.path.join(os.path.abspath(directory), "local.json")
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ZkvError(f"no running `zkv local up` in {directory} ({getattr(exc, 'strerror', None) or exc}): "
                           "start one with `zkv local up`, or give the --dir it runs on"
                           ) from None
        if not cls.owner_running(directory):
            raise ZkvError(f"the `zkv local up` of {directory} is not running")
        self = cls(0, directory, doc.get("base_port"), racks=doc.get("racks"),
                   metrics=bool(doc.get("metrics")), keys=doc.get("keys"))
        self.extra = list(doc.get("extra", self.extra))
        self.owner_pid = int(doc["owner_pid"])
        self.nodes = [LocalNode(**row) for row in doc.get("nodes", [])]
        return self

    def pid_path(self, n: LocalNode) -> str:
        return os.path.join(self.dir, f"{n.id}.pid")

    def running_pid(self, n: LocalNode) -> int:
        """The pid of node n's process as its pid file names it, 0 unless that process is
        still there and is that node (a pid is reused once its process is gone; a zombie's
        command line is empty)."""
        try:
            with open(self.pid_path(n)) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            return 0
        if not pid_alive(pid):
            return 0
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:  # no /proc: trust the pid file
            return pid
        # its id and its data dir: clusters in other dirs name their nodes node1.. too, and a
        # pid file gone stale may name one of theirs once pids wrap (an outside run)
        return pid if (b"--id" in args and n.id.encode() in args
                       and os.fsencode(n.data_dir) in args) else 0

    def stop_by_pid(self, n: LocalNode, timeout: float = 30.0) -> bool:
        """SIGTERM node n's process (found by `running_pid`, resumed if paused) and wait for it
        to exit; False if it had to be killed. For a node this object did not start (`zkv
        local add`, `zkv local restart`: their processes' parent is another command)."""
        pid = self.running_pid(n)
        if not pid:
            return True
        for sig in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running_pid(n) != pid:  # (gone, or a zombie no one has reaped yet)
                return True
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return False

    def start_again(self, n: LocalNode, timeout: float = 60.0) -> None:
        """Start node n again on its data dir and addresses (`zkv local restart`), through a
        running member if any, and wait until it answers ready and every running member sees
        it up (the moment its hints start to flow back)."""
        others = [m for m in self.nodes if m is not n and self.running_pid(m)]
        self._spawn(n, others[0].listen if others else None)
        self._wait_port(n, timeout)
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                why = self._not_back(n, others)
            except ZkvError as exc:
                why = str(exc)
            if not why:
                return
            time.sleep(0.1)
        raise ZkvError(f"{n.id} was not back within {timeout:.0f}s ({why}); see {n.log_path}")

    def _not_back(self, n: LocalNode, others: list[LocalNode]) -> str:
        """Why node n is not back yet ("" once it is ready and each of `others` sees it up)."""
        summary = self.status_of(n, 1.0)["metrics"]
        if not summary["ready"]:
            return str(summary["ready_reason"])
        for m in others:
            seen = {x["id"]: x["state"] for x in self.status_of(m, 1.0)["members"]}
            if seen.get(n.id) != "up":
                return f"{m.id} sees it {seen.get(n.id, 'nowhere')}"
        return ""

    def stop_attached(self) -> None:
        """Stop the nodes of local.json this object did not start (added or restarted by
        other commands), so that none outlives `zkv local up`."""
        try:
            with open(self.manifest_path()) as fh:
                rows = json.load(fh).get("nodes", [])
        except (OSError, ValueError):
            return
        mine = {n.id for n in self.nodes if n.alive()}
        for row in rows:
            if row.get("id") not in mine:
                self.stop_by_pid(LocalNode(**row), 15.0)

    def _check_ports_free(self) -> None:
        busy = []
        for n in self.nodes:
            if n.prefix:  # another machine's ports: not ours to probe
                continue
            for ep in (n.listen, n.gossip):
                host, port = ep[len("tcp://"):].rsplit(":", 1)
                if not port_free(host.strip("[]"), int(port)):
                    busy.append(ep)
            if n.metrics_port and not port_free("127.0.0.1", n.metrics_port):
                busy.append(f"http://127.0.0.1:{n.metrics_port}")
        if busy:
            raise ZkvError(f"address(es) in use: {', '.join(busy)} (another cluster running? "
                           "pick other ports with --base-port)")

    def start(self, timeout: float = 30.0) -> None:
        # the data directory first: a bad --dir is reported as such whatever the ports hold
        os.makedirs(self.dir, exist_ok=True)
        self._check_ports_free()  # else we would talk to whoever holds them and call it ours
        atexit.register(self.stop)  # belt and braces: nodes also watch their parent
        for i, n in enumerate(self.nodes):
            self._spawn(n, None if i == 0 else self.nodes[0].listen)
            if i == 0:
                self._wait_port(n, timeout)
        self.wait_converged(timeout)
        self.wait_settled(timeout)
        self.wait_ready(timeout)
        self.save_manifest()

    def _wait_port(self, n: LocalNode, timeout: float) -> None:
        """Until node n answers a request on its client port (a ZeroMQ one: a bare TCP
        connect made every start log "1 connection handshake(s) failed", a warning meant for
        wrong keys and strangers: an outside run)."""
        from zkv import security, wire

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not n.alive():
                raise ZkvError(f"{n.id} exited with code {n.process.returncode}: {self.tail(n)}")
            try:
                security.request(n.listen, [wire.RingInfo(1)], self.client_keys, timeout=0.3)
                return
            except ZkvError:
                time.sleep(0.05)
        raise ZkvError(f"{n.id} did not open {n.listen} within {timeout}s: {self.tail(n)}")

    def wait_converged(self, timeout: float = 30.0, expect_up: list[str] | None = None) -> None:
        """Until every live node sees every node it should as up, in its current life (the
        incarnation it reports of itself: a node restarted a moment ago is still "up" in the
        others' views of its last life until they notice the gap), with the same ring."""
        want = set(expect_up if expect_up is not None else
                   [n.id for n in self.nodes if n.alive() and not n.paused])
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            ok = True
            prints = set()
            lives: dict[str, dict[str, int]] = {}  # node -> member -> incarnation in its view
            for n in self.nodes:  # each one first: the loop below stops at the first node
                # not seeing all (a node3 that exited "Address already in use" read "node1
                # sees up ['node1', 'node2']" after the whole timeout: a loaded test run)
                if n.id in want and not n.alive():
                    raise ZkvError(f"{n.id} exited with code {n.process.returncode}: {self.tail(n)}")
            for n in self.nodes:
                if n.id not in want:
                    continue
                try:
                    doc = self.status_of(n, 0.5)
                except ZkvError as exc:
                    ok, last = False, f"{n.id}: {exc}"
                    break
                up = {m["id"] for m in doc["members"] if m["detail"] == "up"}
                if expect_up is not None:
                    up &= {x.id for x in self.nodes}  # exactly these up, the others down
                    down = {m["id"] for m in doc["members"] if m["state"] == "down"}
                    if up != want or down | want != {x.id for x in self.nodes}:
                        ok, last = False, f"{n.id} sees up {sorted(up)}, down {sorted(down)}"
                        break
                if not want <= up:
                    ok, last = False, f"{n.id} sees up {sorted(up)}"
                    break
                prints.add(doc["ring"]["fingerprint"])
                lives[n.id] = {m["id"]: m["incarnation"] for m in doc["members"]}
            if ok:
                stale = sorted(f"{v} sees {w}'s life {view[w]}, not {lives[w].get(w)}"
                               for v, view in lives.items() for w in want
                               if w in view and w in lives and view[w] != lives[w].get(w))
                if stale:
                    ok, last = False, stale[0]
            if ok and len(prints) == 1:
                return
            time.sleep(0.1)
        raise ZkvError(f"cluster did not converge within {timeout}s ({last})")

    def signal(self, node_id: str, sig: int) -> None:
        n = self.node(node_id)
        if n.alive():
            os.kill(n.process.pid, sig)

    def kill(self, node_id: str) -> None:
        n = self.node(node_id)
        if n.alive():
            if n.paused:
                os.kill(n.process.pid, signal.SIGCONT)
            n.process.kill()
            n.process.wait(10)
        n.paused = False

    def pause(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGSTOP)
        self.node(node_id).paused = True

    def resume(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGCONT)
        self.node(node_id).paused = False

    def terminate(self, node_id: str, timeout: float = 15.0) -> int | None:
        n = self.node(node_id)
        if not n.alive():
            return n.proc.returncode if n.proc else None
        if n.paused:
            self.resume(node_id)
        n.process.terminate()
        try:
            return n.process.wait(timeout)
        except subprocess.TimeoutExpired:
            n.process.kill()
            n.process.wait(5)
            return None

    def restart(self, node_id: str, timeout: float = 30.0) -> None:
        n = self.node(node_id)
        if n.alive():
            self.kill(node_id)
        others = [m.listen for m in self.nodes if m is not n and m.alive()]
        self._spawn(n, others[0] if others else None)
        self._wait_port(n, timeout)

    def stop(self) -> None:
        for n in self.nodes:
            if n.alive() and n.paused:
                os.kill(n.process.pid, signal.SIGCONT)
                n.paused = False
        for n in self.nodes:
            if n.alive():
                n.process.terminate()
        deadline = time.monotonic() + 15
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(5)

    def tail(self, n: LocalNode, lines: int = 15) -> str:
        """The last `lines` lines its log got since its start (an exit named a line of the
        run before: an outside run)."""
        try:
            with open(n.log_path, "rb") as fh:
                fh.seek(n.log_from)
                got = fh.read().decode(errors="replace").splitlines(keepends=True)
        except OSError:
            return "(no log)"
        return "".join(got[-lines:]) or "(nothing in its log)"

    def _said(self, node_id: str) -> str:
        """The last WARNING or ERROR line node `node_id` logged since its start, to name
        with a wait that timed out ("" if none)."""
        n = next((x for x in self.nodes if x.id == node_id), None)
        if n is None:
            return ""
        lines = [x for x in self.tail(n, 200).splitlines() if " WARNING " in x or " ERROR " in x]
        return f"; {n.id}'s log: {lines[-1].strip()}" if lines else ""

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
