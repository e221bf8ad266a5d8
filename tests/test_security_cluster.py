"""Real node processes with CurveZMQ keys (DESIGN.md 2.5), and the fuzz tool in CI.

Nodes are started through `transport.Node(cfg)` with `cfg.keys` (zkv-node --keys), on loopback with free ports; every process is stopped at
the end. Clients are `zkv.security.request` (what `Client(keys=...)` builds on)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import zkv
from zkv import security, wire
from zkv.errors import ZkvError
from zkv.local import free_ports
from zkv.node.core import JOIN_LOG_EVERY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = """
import json, logging, sys
from zkv.config import NodeConfig
from zkv.node.transport import Node
doc = json.loads(sys.argv[1])
doc["seed"] = tuple(doc.get("seed", ()))
logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
doc["keys"] = sys.argv[2] or None
Node(NodeConfig(**doc)).run()
"""


class KeyedCluster:
    def __init__(self, tmp, count: int = 3, keys: str | None = None) -> None:
        self.tmp = tmp
        self.keys = keys
        self.procs: dict[str, subprocess.Popen] = {}
        self.cfgs: dict[str, dict] = {}
        ports = free_ports(2 * count)
        for i in range(count):
            self.add(f"node{i + 1}", ports[i], ports[count + i], keys)

    def add(self, node_id: str, port: int, gport: int, keys: str | None) -> dict:
        cfg = {"id": node_id, "listen": f"tcp://127.0.0.1:{port}",
               "gossip": f"tcp://127.0.0.1:{gport}", "data_dir": str(self.tmp / node_id),
               "rack": f"rack-{node_id}", "gossip_interval": 0.1, "down_after": 3.0,
               "sync": "none"}
        if self.cfgs:
            cfg["seed"] = [next(iter(self.cfgs.values()))["listen"]]
        self.cfgs[node_id] = cfg
        log = open(self.tmp / f"{node_id}.log", "ab")
        env = dict(os.environ, ZKV_EXIT_WITH_PARENT=str(os.getpid()), PYTHONPATH=ROOT)
        self.procs[node_id] = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, json.dumps(cfg), keys or ""], stdout=log,
            stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        log.close()
        return cfg

    def ep(self, node_id: str = "node1") -> str:
        return self.cfgs[node_id]["listen"]

    def log(self, node_id: str) -> str:
        return (self.tmp / f"{node_id}.log").read_text(errors="replace")

    def call(self, msgs, node_id="node1", keys="admin", timeout=3.0):
        path = os.path.join(self.keys, "clients", keys) if keys and self.keys else None
        return security.request(self.ep(node_id), msgs, keys=path, timeout=timeout)

    def wait_up(self, ids: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                ok = True
                for nid in ids:
                    (doc,) = self.call([wire.Status(1)], nid, timeout=1.0)
                    up = {m["id"] for m in doc.info["members"]
                          if m["detail"] == "up" and m["status"] == "valid"}
                    ok = ok and set(ids) <= up
                    last = (nid, sorted(up))
                if ok:
                    return
            except ZkvError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"cluster not up: {last}\n{self.log('node1')[-2000:]}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    keys = str(tmp / "keys")
    security.keygen(keys)
    security.keygen(keys, client="app")
    c = KeyedCluster(tmp, 3, keys)
    try:
        c.wait_up(["node1", "node2", "node3"])
        yield c
    finally:
        c.stop()


def test_keygen_layout_and_modes(tmp_path):
    written = security.keygen(str(tmp_path / "k"))
    names = sorted(os.path.relpath(p, tmp_path / "k") for p in written)
    assert names == sorted(["cluster.key", "cluster.key_secret", "clients/admin.key",
                            "clients/admin.key_secret"])
    for p in written:
        if p.endswith("_secret"):
            assert os.stat(p).st_mode & 0o777 == 0o600
    with pytest.raises(ZkvError, match="refusing to overwrite"):
        security.keygen(str(tmp_path / "k"))
    security.keygen(str(tmp_path / "k"), client="ops", admin=True)
    assert 'role = admin' in (tmp_path / "k" / "clients" / "ops.key").read_text()
    # a client key where no cluster key is: refused (it could never connect), saying how
    with pytest.raises(ZkvError, match="holds no cluster key: `zkv keygen"):
        security.keygen(str(tmp_path / "none"), client="app")
    assert not (tmp_path / "none").exists()


def test_keys_that_name_no_client_key_say_what_to_pass(tmp_path):
    """`--keys DIR` (the nodes' directory) or a path with no key: named for what it is, not
    "cannot read key DIR.key_secret: Invalid certificate file" (the operator run)."""
    security.keygen(str(tmp_path / "k"))
    with pytest.raises(ZkvError, match=r"is a directory: pass a client's key, DIR/clients/NAME "
                                       r"\(.*clients/admin\)"):
        security.client_keys(str(tmp_path / "k"))
    with pytest.raises(ZkvError, match="no such key"):
        security.client_keys(str(tmp_path / "k" / "clients" / "nobody"))
    assert security.client_keys(str(tmp_path / "k" / "clients" / "admin")).name == "admin"


def test_keyed_cluster_serves_keyed_clients(keyed):
    app = os.path.join(keyed.keys, "clients", "app")
    with zkv.Client([keyed.ep()], timeout=5.0, keys=app) as c:
        assert c.put(b"k", b"v", w=3)
    with zkv.Client([keyed.ep("node2")], timeout=5.0, keys=app) as c:
        assert c.get(b"k", r=3).values == [b"v"]

    async def async_round_trip():
        async with zkv.AsyncClient([keyed.ep("node3")], timeout=5.0, keys=app) as c:
            await c.put(b"k2", b"v2", w=3)
            return (await c.get(b"k2", r=3)).values

    assert asyncio.run(async_round_trip()) == [b"v2"]
    assert "CurveZMQ on every socket" in keyed.log("node1")


def test_keyed_cluster_seals_contexts_and_refuses_one_it_did_not_issue(keyed):
    """With keys every context a client gets is sealed for its key, whether owners answered
    the read (client-coordinated) or a coordinator did, or a put; a write whose context is
    bare, another key's, or altered is refused (nothing stored: the siblings stay), also
    through the CLI; the sealed one resolves them, as Client.update does (zkv/node/seal.py)."""
    from zkv.errors import InvalidRequest
    from zkv.node.seal import PREFIX, SEALED

    app = os.path.join(keyed.keys, "clients", "app")
    with zkv.Client([keyed.ep()], timeout=5.0, keys=app) as c, \
            zkv.Client([keyed.ep("node2")], timeout=5.0, keys=app, owner_reads=False) as coord:
        assert c.put(b"s", b"alice", w=3)[0] == SEALED
        c.put(b"s", b"bob", w=3)  # blind: two siblings
        owners, coordinated = c.get(b"s"), coord.get(b"s", r=3)
        for got in (owners, coordinated):
            assert got.context[0] == SEALED and sorted(got.values) == [b"alice", b"bob"]
        assert owners.context == coordinated.context  # the same copy, the same seal
        other = coord.get(b"t", r=3).context if c.put(b"t", b"x", w=3) else b""
        altered = bytearray(owners.context)
        altered[5] ^= 0x40
        for bad, why in ((owners.context[PREFIX:], "not sealed by this cluster"),
                         (other, "not issued by this cluster for this key"),
                         (bytes(altered), "not issued by this cluster for this key")):
            with pytest.raises(InvalidRequest, match=why):
                c.put(b"s", b"mallory", bad, w=3)
        cli = subprocess.run(["zkv", "put", "s", "mallory", "--context", bytes(altered).hex(),
                              "--node", keyed.ep("node3"), "--keys", app],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0 and "not issued by this cluster" in cli.stderr, cli.stderr
        assert sorted(coord.get(b"s", r=3).values) == [b"alice", b"bob"]
        c.update(b"s", lambda values: b"+".join(sorted(values)), w=3)
        assert coord.get(b"s", r=3).values == [b"alice+bob"]
        # a namespace's keys (an lww one: its owners seal the context of the collapsed copy)
        admin = os.path.join(keyed.keys, "clients", "admin")
        with zkv.Client([keyed.ep()], timeout=5.0, keys=admin) as a:
            a.namespace_create("last", n=3, conflicts="lww")
        c.put(b"s", b"one", w=3, namespace="last")
        got = c.get(b"s", namespace="last")  # owner reads, sealed by the owners
        assert got.context[0] == SEALED and got.values == [b"one"]
        c.put(b"s", b"two", got.context, w=3, namespace="last")
        assert coord.get(b"s", r=3, namespace="last").values == [b"two"]
        with pytest.raises(InvalidRequest, match="not issued by this cluster for this key"):
            c.put(b"s", b"three", got.context, w=3)  # the same key in another namespace


def test_a_keyed_node_keeps_its_data_to_its_user(keyed, tmp_path, caplog):
    """With --keys the values were encrypted on the network but world-readable on disk
    (segments, hints, cluster.json 0644 under a 0755 data dir: an outside review). A keyed
    node creates everything its user's only; a data dir others could read already is named
    in a WARNING with the fix."""
    c = zkv.Client([keyed.ep()], timeout=3.0, keys=os.path.join(keyed.keys, "clients", "app"))
    with c:
        c.put(b"private", b"v", w=3)
    root = keyed.tmp / "node1"
    seen = 0
    for where, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(where, name)
            assert os.stat(path).st_mode & 0o077 == 0, (path, oct(os.stat(path).st_mode))
            seen += 1
    assert seen >= 5 and os.stat(root).st_mode & 0o077 == 0
    old = os.umask(0o022)
    try:
        (tmp_path / "open").mkdir(mode=0o755)
        with caplog.at_level("WARNING", logger="zkv.security"):
            why = security.private_data(str(tmp_path / "open"))
        assert why is not None and "mode 0755" in why and "chmod -R go-rwx" in why
        assert why in caplog.text
        assert security.private_data(str(tmp_path / "fresh")) is None
    finally:
        os.umask(old)


def _curve_router():
    """(context, a CURVE server ROUTER on a free loopback port, its port, the node's
    Connections watching it) for the handshake tests."""
    import zmq

    from zkv.node.conns import Connections

    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    router = ctx.socket(zmq.ROUTER)
    router.curve_server, router.curve_publickey, router.curve_secretkey = 1, public, secret
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return ctx, router, port, Connections(router, port, 100, 1 << 20, lambda ident: None)


def test_failed_handshakes_are_counted_by_reason_and_logged(caplog):
    """A plain-text client knocking at a keyed node left no trace (the ZAP handler logs the
    keys it refuses, but a handshake that fails before it is never asked): failed handshakes
    on the request port are counted in zkv_handshakes_failed_total{reason} and logged (the
    first, then every 1000th)."""
    import zmq

    from zkv.node.metrics import NodeMetrics

    ctx, router, port, conns = _curve_router()
    metrics = NodeMetrics()
    dealers = []  # (kept open: one closed before its handshake failed is an "other")
    try:
        with caplog.at_level("WARNING", logger="zkv.node"):
            for _ in range(3):  # plain text, to a CURVE server
                d = ctx.socket(zmq.DEALER)
                dealers.append(d)
                d.linger = 0
                d.connect(f"tcp://127.0.0.1:{port}")
                try:  # (the connection's handshake is what fails; a blocking send to it hung
                    d.send(b"hello", zmq.NOBLOCK)  # the CI rehearsal of 4583b68 for 300 s)
                except zmq.Again:
                    pass
            deadline = time.monotonic() + 10
            while conns.failed_total < 3 and time.monotonic() < deadline:
                conns.drain()
                time.sleep(0.05)
        counted = _handshakes_failed(conns, metrics)
        assert counted == {"protocol": 3.0}, counted
        assert len([r for r in caplog.records if "handshake(s) failed" in r.getMessage()]) == 1
    finally:
        for d in dealers:
            d.close(0)
        conns.close()
        router.close(0)
        ctx.destroy(0)


def _handshakes_failed(conns, metrics) -> dict[str, float]:
    """zkv_handshakes_failed_total by reason, as the metrics port exports it."""
    from prometheus_client.exposition import generate_latest

    conns.report(metrics)
    text = generate_latest(metrics.registry).decode()
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("zkv_handshakes_failed_total{")}


def test_a_connection_closed_before_its_handshake_is_counted_but_no_warning(caplog):
    """A client that gave up on a node while it was paused (SIGSTOP; a `zkv status` that
    timed out) leaves a connection the node accepts when it resumes and finds closed before
    its handshake: libzmq reports that as a failed handshake with no detail, and the node
    logged WARNING "1 connection handshake(s) failed ..., the last: other" after every such
    pause. It is nothing to act on: counted (reason "other"), logged at DEBUG only; a real
    refusal (plain text to a keyed node: "protocol") is still a WARNING."""
    import socket

    import zmq

    from zkv.node.metrics import NodeMetrics

    ctx, router, port, conns = _curve_router()
    metrics = NodeMetrics()
    dealer = None
    try:
        with caplog.at_level("WARNING", logger="zkv.node"):
            for _ in range(2):  # connect and close at once, before any greeting
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            deadline = time.monotonic() + 10
            while conns.failed_total < 2 and time.monotonic() < deadline:
                conns.drain()
                time.sleep(0.05)
            assert conns.failed_total == 2 and not caplog.records, caplog.records
            dealer = ctx.socket(zmq.DEALER)  # plain text to a CURVE server: a refusal
            dealer.linger = 0
            dealer.connect(f"tcp://127.0.0.1:{port}")
            while conns.failed_total < 3 and time.monotonic() < deadline:
                conns.drain()
                time.sleep(0.05)
        counted = _handshakes_failed(conns, metrics)
        assert counted == {"other": 2.0, "protocol": 1.0}, counted
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert len(said) == 1 and said[0][0] == "WARNING", said
        assert "1 connection handshake(s) failed" in said[0][1] and "protocol" in said[0][1]
    finally:
        if dealer is not None:
            dealer.close(0)
        conns.close()
        router.close(0)
        ctx.destroy(0)


def test_keyless_client_gets_authentication_error_naming_the_endpoint(keyed):
    # told, within the timeout, not left to time out (RequestTimeout) or fail over (Unavailable)
    with zkv.Client([keyed.ep()], timeout=5.0) as c:
        with pytest.raises(zkv.AuthenticationError, match=keyed.ep()):
            c.get(b"k")

    async def async_get():
        async with zkv.AsyncClient([keyed.ep()], timeout=5.0) as c:
            await c.get(b"k")

    with pytest.raises(zkv.AuthenticationError, match=keyed.ep()):
        asyncio.run(async_get())
    with pytest.raises(security.AuthenticationError, match=keyed.ep()) as err:
        keyed.call([wire.Get(1, b"k")], keys=None, timeout=5.0)
    assert "a node that requires keys (this side has none)" in str(err.value)


def test_foreign_key_gets_authentication_error(keyed, tmp_path):
    other = str(tmp_path / "other")
    security.keygen(other)
    shutil.copy(os.path.join(keyed.keys, "cluster.key"), os.path.join(other, "clients"))
    with zkv.Client([keyed.ep()], timeout=5.0, keys=os.path.join(other, "clients", "admin")) as c:
        with pytest.raises(zkv.AuthenticationError, match="refused this client's key"):
            c.status()


def test_client_keys_reloaded_without_restart(keyed, tmp_path):
    security.keygen(keyed.keys, client="late")
    (ok,) = keyed.call([wire.Status(1)], keys="late", timeout=5.0)
    assert type(ok) is wire.StatusOk
    os.remove(os.path.join(keyed.keys, "clients", "late.key"))
    deadline = time.monotonic() + 5
    while True:  # a removed key stops working (new connections)
        try:
            keyed.call([wire.Status(1)], keys="late", timeout=1.0)
        except security.AuthenticationError:
            break
        assert time.monotonic() < deadline, "removed key still accepted"
        time.sleep(0.2)


def test_a_removed_key_is_refused_on_the_connections_it_opened_too(keyed):
    """A security review: ZAP runs at the handshake only, so a key's connections opened
    before its file was removed still wrote at once and read 20 s later. Every request
    frame's User-Id is checked against the keys allowed now (the ZAP thread re-reads the key
    files every RELOAD_CHECK, handshakes or not)."""
    security.keygen(keyed.keys, client="temp")
    with zkv.Client([keyed.ep(f"node{i}") for i in (1, 2, 3)], timeout=3.0,
                    keys=os.path.join(keyed.keys, "clients", "temp")) as c:
        c.put(b"revoke:1", b"before", w=1)
        os.remove(os.path.join(keyed.keys, "clients", "temp.key"))
        deadline = time.monotonic() + 10
        while True:  # the same client, its connections open: refused within a second or so
            try:
                c.put(b"revoke:2", b"after", w=1)
            except (zkv.InvalidRequest, security.AuthenticationError) as exc:
                assert "no longer allowed" in str(exc) or isinstance(
                    exc, security.AuthenticationError), exc
                break
            assert time.monotonic() < deadline, "a removed key still served"
            time.sleep(0.2)
        with pytest.raises((zkv.InvalidRequest, security.AuthenticationError)):
            c.get(b"revoke:1")


def test_client_keys_send_client_messages_only(keyed):
    (err,) = keyed.call([wire.RGet(1, b"k")], keys="app")
    assert type(err) is wire.Error and "cluster peers only" in err.message
    (err,) = keyed.call([wire.Repair(1, -1)], keys="app")
    assert type(err) is wire.Error and "admin" in err.message
    (ok,) = keyed.call([wire.Repair(1, -1)], keys="admin")
    assert type(ok) is wire.RepairOk
    # namespaces and membership changes need the admin key (issue 15 / 11)
    (err,) = keyed.call([wire.NsCreate(1, "byapp", 1)], keys="app")
    assert type(err) is wire.Error and "admin" in err.message
    (err,) = keyed.call([wire.Cluster(1, "leave", "node3")], keys="app")
    assert type(err) is wire.Error and "admin" in err.message
    (ok,) = keyed.call([wire.NsList(1)], keys="app")
    assert type(ok) is wire.NsOk and b"byapp" not in ok.registry
    (ok,) = keyed.call([wire.NsCreate(1, "byadmin", 1)], keys="admin", timeout=10.0)
    assert type(ok) is wire.NsOk, ok
    (ok,) = keyed.call([wire.Cluster(1, "plan")], keys="admin")
    assert type(ok) is wire.ClusterOk, ok
    # a client key claiming a peer's routing identity is still a client
    path = os.path.join(keyed.keys, "clients", "app")
    (err,) = security.request(keyed.ep(), [wire.LeafKeys(1, 0, [0])], keys=path,
                              identity=b"peer:node2")
    assert type(err) is wire.Error


def test_client_keys_cannot_listen_to_gossip(keyed):
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    security.client_socket(sub, security.ClientKeys(os.path.join(keyed.keys, "clients", "app")))
    watch = security.HandshakeWatch(sub, keyed.cfgs["node1"]["gossip"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(keyed.cfgs["node1"]["gossip"])
    try:
        deadline = time.monotonic() + 5
        while watch.failure() is None:
            assert not sub.poll(100), "a client key received gossip"
            assert time.monotonic() < deadline
        assert "refused" in watch.failure()
    finally:
        watch.close()
        sub.close(0)
        ctx.term()


def test_keyless_node_cannot_join(keyed):
    port, gport = free_ports(2)
    keyed.add("intruder", port, gport, None)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            (doc,) = keyed.call([wire.Status(1)])
            assert "intruder" not in {m["id"] for m in doc.info["members"]}
            time.sleep(0.3)
        (doc,) = security.request(f"tcp://127.0.0.1:{port}", [wire.Status(1)])
        assert doc.info["joining"]["seeds"][0]["endpoint"] == keyed.ep()
        # its log says why no seed lets it in: the handshake, not silence
        deadline = time.monotonic() + JOIN_LOG_EVERY + 15
        while "not joined after" not in keyed.log("intruder") and time.monotonic() < deadline:
            time.sleep(0.2)
        said = keyed.log("intruder")
        assert (f"{keyed.ep()} (its handshake failed: ZeroMQ handshake failed: a node that "
                "requires keys (this side has none)") in said, said
    finally:
        p = keyed.procs.pop("intruder")
        p.terminate()
        p.wait(10)


def test_fuzz_tool_small_run(tmp_path):
    """CI run of tools/fuzz_node.py: mutated frames of every type, node serving, nothing lost."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fuzz_node.py"),
                        "--frames", "2000", "--keys", "50", "--check-every", "500",
                        "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "crashes: 0" in r.stdout and "lost: 0" in r.stdout


def test_cli_keygen_keyed_nodes_and_keyed_cli(tmp_path):
    """The operator's path: `zkv keygen`, `zkv-node --keys`, `zkv ... --keys`; a keyless CLI
    call is refused in one line naming the node."""
    from zkv.local import LocalCluster

    keys = str(tmp_path / "keys")
    out = subprocess.run(["zkv", "keygen", keys], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "cluster.key_secret" in out.stdout
    assert os.stat(os.path.join(keys, "clients", "admin.key_secret")).st_mode & 0o777 == 0o600
    assert subprocess.run(["zkv", "keygen", keys, "--client", "app"],
                          capture_output=True, timeout=60).returncode == 0
    again = subprocess.run(["zkv", "keygen", keys], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1  # one line, no traceback
    assert "refusing to overwrite" in again.stderr
    cl = LocalCluster(3, str(tmp_path / "c"), base_port=None, keys=keys,
                      extra_args=["--gossip-interval", "0.1", "--down-after", "1.0"])
    cl.start()
    try:
        app = os.path.join(keys, "clients", "app")
        node = cl.endpoints[0]
        put = subprocess.run(["zkv", "put", "k", "v", "--node", node, "--keys", app],
                             capture_output=True, text=True, timeout=60)
        assert put.returncode == 0, put.stderr
        got = subprocess.run(["zkv", "get", "k", "--node", node, "--keys", app],
                             capture_output=True, text=True, timeout=60)
        assert got.stdout.strip() == "v"
        bare = subprocess.run(["zkv", "status", "--node", node], capture_output=True, text=True,
                              timeout=60)
        assert bare.returncode != 0
        assert bare.stderr.count("\n") == 1 and "AuthenticationError" in bare.stderr
        assert node in bare.stderr
    finally:
        cl.stop()
