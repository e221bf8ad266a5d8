"""A running node's settings (zkv/node/settings.py): `Config` reads them and changes the
runtime ones (all or none), each change reaches the part of the node that holds it, clients
cannot ask, and SIGHUP takes what the --config file now says (real processes: `zkv config`)."""

from __future__ import annotations

import json
import os
import signal

import msgspec
import pytest
from ops_helpers import http, one_line_error, wait_for, zkv
from test_security_core import OUTSIDER, Node, _member

from zkv import config, wire
from zkv.client import Client
from zkv.errors import InvalidRequest
from zkv.node.core import ADMIN, CLIENT, GOSSIP


def _log(n) -> str:
    with open(n.log_path, errors="replace") as fh:
        return fh.read()


def _config(node: Node, changes: dict[str, str], role: str = ADMIN, save: bool = False):
    (reply,) = node.ask(OUTSIDER, [wire.Config(7, changes, save)], role)
    return reply


CONF = """# node1's settings: comments and layout survive a save
max_siblings = 100   # the default, said out loud
seed = ["tcp://127.0.0.1:7002"]

log_level = "INFO"
"""


def test_save_writes_the_runtime_changes_into_the_config_file_and_keeps_the_rest(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text(CONF)
    node = Node(tmp_path, config=str(conf))
    try:
        _config(node, {"handoff_batch": "9"})  # changed before, not saved then
        assert conf.read_text() == CONF
        ok = _config(node, {"max_siblings": "7", "replica_timeout": "0.75"}, save=True)
        assert ok.info["changed"] == {"max_siblings": [100, 7], "replica_timeout": [1.0, 0.75]}
        assert ok.info["saved"] == {"path": str(conf), "flag_wins": [], "written": {
            "handoff_batch": 9, "max_siblings": 7, "replica_timeout": 0.75}}
        text = conf.read_text()
        assert text.startswith("# node1's settings: comments and layout survive a save\n")
        assert "max_siblings = 7   # the default, said out loud" in text
        assert 'seed = ["tcp://127.0.0.1:7002"]' in text and "\n\nlog_level" in text
        # what a restart reads: the saved values, every other setting as it was
        again = config.load({"config": str(conf), "id": "node1", "listen": "tcp://127.0.0.1:1",
                             "gossip": "tcp://127.0.0.1:2", "data_dir": str(tmp_path)})
        assert (again.max_siblings, again.replica_timeout, again.handoff_batch) == (7, 0.75, 9)
        assert again.seed == ("tcp://127.0.0.1:7002",) and again.log_level == "INFO"
        assert not list(tmp_path.glob("node.toml.*"))  # (no temp file left)
        # saved again with nothing new: nothing to write, the file untouched
        before = conf.stat().st_mtime_ns
        assert _config(node, {}, save=True).info["saved"]["written"] == {}
        assert conf.stat().st_mtime_ns == before
        # a setting back at what the file says is not written; one the file lacks is added
        ok = _config(node, {"sibling_warn": "3"}, save=True)
        assert ok.info["saved"]["written"] == {"sibling_warn": 3}
        assert "sibling_warn = 3" in conf.read_text()
    finally:
        node.close()


def test_save_leaves_out_a_setting_the_command_line_sets(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text("max_siblings = 50\n")
    node = Node(tmp_path, config=str(conf), max_siblings=50)
    # started as `zkv-node --config node.toml --max-siblings 20 ...`: the flag wins there
    node.core.flags = {"config": str(conf), "max_siblings": 20, "id": "node1",
                       "listen": node.cfg.listen, "gossip": node.cfg.gossip,
                       "data_dir": node.cfg.data_dir, "sibling_warn": None}
    try:
        ok = _config(node, {"max_siblings": "30", "sibling_warn": "5"}, save=True)
        assert ok.info["saved"]["flag_wins"] == ["max_siblings"]
        assert ok.info["saved"]["written"] == {"sibling_warn": 5}
        assert node.core.cfg.max_siblings == 30  # (changed all the same)
        assert conf.read_text() == "max_siblings = 50\nsibling_warn = 5\n"
    finally:
        node.close()


@pytest.mark.parametrize("how, why", [
    ("no file", "started without --config: there is no file to save to"),
    ("bad toml", "cannot read config file"),
    ("a directory", "cannot read config file"),
    ("unknown setting", "unknown setting(s) in"),
])
def test_a_save_that_cannot_be_written_changes_nothing(tmp_path, how, why):
    conf = tmp_path / "node.toml"
    kw = {}
    if how != "no file":
        conf.write_text("max_siblings = 100\n")
        kw["config"] = str(conf)
    node = Node(tmp_path, **kw)
    try:
        if how == "bad toml":
            conf.write_text("max_siblings = [")
        elif how == "a directory":
            conf.unlink()
            conf.mkdir()
        elif how == "unknown setting":
            conf.write_text("max_siblingz = 3\n")
        before = node.core.cfg
        err = _config(node, {"max_siblings": "3"}, save=True)
        assert type(err) is wire.Error and err.code == wire.E_INVALID and why in err.message, err
        assert node.core.cfg is before and node.core.replica.max_siblings == 100
        assert not list(tmp_path.glob("node.toml.*"))
    finally:
        node.close()


def test_save_settings_fails_whole_on_a_file_it_cannot_replace(tmp_path):
    conf = tmp_path / "ro" / "node.toml"
    conf.parent.mkdir()
    conf.write_text("# mine\nmax_siblings = 100\n")
    with pytest.raises(InvalidRequest, match="cannot save to config file"):
        config.save_settings(str(tmp_path / "ro" / "nothere.toml"), {"max_siblings": 3})
    link = tmp_path / "link.toml"  # a symlink: the file it names is replaced, the link stays
    link.symlink_to(conf)
    config.save_settings(str(link), {"max_siblings": 3})
    assert link.is_symlink() and conf.read_text() == "# mine\nmax_siblings = 3\n"


def test_config_reads_every_setting_and_changes_runtime_ones_where_they_are_used(tmp_path):
    node = Node(tmp_path)
    try:
        ok = _config(node, {})
        assert type(ok) is wire.ConfigOk and ok.info["changed"] == {}
        assert set(ok.info["settings"]) == set(config.FIELDS)
        assert ok.info["settings"]["max_siblings"] == 100
        assert set(ok.info["runtime"]) == config.RUNTIME
        ok = _config(node, {"max_siblings": "2", "min_free_mb": "7", "transfer_rate": "65536",
                            "sync_interval_ms": "20", "log_level": "DEBUG",
                            "handoff_batch": "5"})
        assert ok.info["changed"] == {"handoff_batch": [200, 5], "log_level": ["INFO", "DEBUG"],
                                      "max_siblings": [100, 2], "min_free_mb": [64, 7],
                                      "sync_interval_ms": [50, 20],
                                      "transfer_rate": [32 << 20, 65536]}
        core = node.core
        assert core.cfg.max_siblings == 2 and core.background.cfg.handoff_batch == 5
        assert core.replica.max_siblings == 2
        assert core.store.min_free_bytes == 7 << 20 == core.handoff.store.min_free_bytes
        assert core.transfers.budget.rate == 65536 and core.transfers.budget.tokens <= 65536
        assert core.store._interval == 0.02
        # the new limit holds: a third concurrent write of a key is refused
        for i, value in enumerate((b"a", b"b")):
            (put,) = node.ask(OUTSIDER, [wire.Put(20 + i, b"k", value, w=1)], CLIENT)
            assert type(put) is wire.PutOk
        (put,) = node.ask(OUTSIDER, [wire.Put(30, b"k", b"c", w=1)], CLIENT)
        assert type(put) is wire.Error and "siblings" in put.message, put
        assert _config(node, {"max_siblings": "2"}).info["changed"] == {}  # already so
        # `zkv status` says what differs from the start (a restart would undo it)
        from zkv.node.status import status

        changed = status(core)["settings_changed"]
        assert changed["max_siblings"] == [100, 2] and changed["log_level"] == ["INFO", "DEBUG"]
        _config(node, {"max_siblings": "100"})
        assert "max_siblings" not in status(core)["settings_changed"]
    finally:
        node.close()
        import logging

        logging.getLogger("zkv").setLevel(logging.NOTSET)


@pytest.mark.parametrize("changes, why", [
    ({"nope": "1"}, "unknown setting 'nope'"),
    ({"max_sibling": "1"}, "unknown setting 'max_sibling' (did you mean max_siblings"),
    ({"max_siblings": "lots"}, "max_siblings='lots': not an integer"),
    ({"max_siblings": "-1"}, "max_siblings -1: between 0 (no limit) and 1000000"),
    ({"replica_timeout": "0"}, "replica_timeout 0.0: above 0"),
    ({"log_level": "LOUD"}, "log_level 'LOUD': one of DEBUG"),
    ({"transfer_rate": "9" * 300}, "transfer_rate 999"),  # (no float overflow half-way)
    ({"replica_timeout": "nan"}, "replica_timeout nan: above 0"),
    ({"n": "5"}, "n: set at start only (restart the node with the new value)"),
    ({"listen": "tcp://127.0.0.1:9", "max_siblings": "3"}, "listen: set at start only"),
])
def test_a_bad_change_changes_nothing_and_says_why(tmp_path, changes, why):
    node = Node(tmp_path)
    try:
        before = node.core.cfg
        err = _config(node, changes)
        assert type(err) is wire.Error and err.code == wire.E_INVALID and why in err.message, err
        assert node.core.cfg is before and node.core.replica.max_siblings == 100
    finally:
        node.close()


def test_clients_cannot_read_or_change_settings(tmp_path):
    node = Node(tmp_path)
    try:
        err = _config(node, {"max_siblings": "1"}, CLIENT)
        assert type(err) is wire.Error and node.core.cfg.max_siblings == 100
    finally:
        node.close()


def test_parse_setting_types_values_as_the_defaults_are():
    assert config.parse_setting("transfer_rate", "1024") == 1024
    assert config.parse_setting("replica_timeout", "0.5") == 0.5
    assert config.parse_setting("auto_commit", "false") is False
    assert config.parse_setting("log_level", "ERROR") == "ERROR"
    with pytest.raises(InvalidRequest, match="auto_commit='yes': not true or false"):
        config.parse_setting("auto_commit", "yes")


@pytest.mark.cluster
def test_zkv_config_and_sighup_change_a_running_node(make_cluster, tmp_path):
    c = make_cluster(3)
    ep = c.endpoints
    out = zkv("config", "--node", ep[0])
    assert out.returncode == 0, out
    assert any(line.startswith("tcp://") and " max_siblings " in line and "(runtime" in line
               for line in out.stdout.splitlines()), out.stdout
    out = zkv("config", "--set", "max-siblings=3", "--set", "handoff_batch=50", "--all",
              "--node", ep[0])
    assert out.returncode == 0, out
    assert sorted(out.stdout.splitlines()) == sorted(
        f"{n}: {name} {old} -> {new}" for n in ("node1", "node2", "node3")
        for name, old, new in (("handoff_batch", 200, 50), ("max_siblings", 100, 3)))
    with Client(ep, timeout=5) as cl:
        assert cl.config(node="node2")["settings"]["max_siblings"] == 3
    out = zkv("status", "--node", ep[1])
    assert ("settings changed while running (zkv config, SIGHUP): handoff_batch 200 -> 50, "
            "max_siblings 100 -> 3") in out.stdout, out.stdout
    assert "n: set at start only" in one_line_error(zkv("config", "--set", "n=5", "--node",
                                                        ep[0]))
    out = zkv("config", "--set", "max_siblings", "--node", ep[0])
    assert out.returncode == 2 and "expected NAME=VALUE" in one_line_error(out)  # (usage)
    # SIGHUP: node3 started without --config: it says so and changes nothing
    node3 = c.node("node3")
    os.kill(node3.process.pid, signal.SIGHUP)
    wait_for(lambda: "no --config file to read again" in _log(node3), 10, "the refusal")
    # a node started with one takes what the file now says (runtime settings), and logs
    # the rest as waiting for a restart; a file that does not load changes nothing
    conf = tmp_path / "node4.toml"
    conf.write_text('max_siblings = 40\nlog_level = "INFO"\n')
    more = make_cluster(1, n=1, extra_args=["--config", str(conf)])
    n4 = more.nodes[0]
    with Client(more.endpoints, timeout=5) as cl:
        assert cl.config()["settings"]["max_siblings"] == 40
        conf.write_text('max_siblings = 9\nsibling_warn = 4\nring_size = 64\n')
        os.kill(n4.process.pid, signal.SIGHUP)
        wait_for(lambda: cl.config()["settings"]["max_siblings"] == 9, 10, "the reload")
        settings = cl.config()["settings"]
        assert settings["sibling_warn"] == 4 and settings["ring_size"] != 64
        wait_for(lambda: "ring_size, which take effect at the next restart only"
                 in _log(n4), 10, "the restart-only warning")
        conf.write_text("max_siblings = [")
        os.kill(n4.process.pid, signal.SIGHUP)
        wait_for(lambda: "cannot read config file" in _log(n4), 10, "the error")
        assert cl.config()["settings"]["max_siblings"] == 9 and n4.alive()
    out = zkv("config", "--json", "--node", more.endpoints[0])
    assert json.loads(out.stdout)[0]["settings"]["max_siblings"] == 9
    # --save: the change goes into the file (its comment kept), and a restart keeps it
    conf.write_text("# node4\nmax_siblings = 9  # for the carts\n")
    out = zkv("config", "--set", "max_siblings=12", "--set", "sibling_warn=6", "--save",
              "--node", more.endpoints[0])
    assert out.returncode == 0, out
    assert out.stdout.splitlines()[-1] == (
        f"{more.endpoints[0]}: saved to {conf}: max_siblings = 12, sibling_warn = 6"), out.stdout
    assert conf.read_text() == "# node4\nmax_siblings = 12  # for the carts\nsibling_warn = 6\n"
    more.restart("node1")
    with Client(more.endpoints, timeout=5) as cl:
        settings = cl.config()["settings"]
        assert (settings["max_siblings"], settings["sibling_warn"]) == (12, 6)
    # a node started without --config cannot save: one line, nothing changed
    assert "no file to save to" in one_line_error(zkv("config", "--set", "max_siblings=4",
                                                      "--save", "--node", ep[2]))
    with Client(ep, timeout=5) as cl:
        assert cl.config(node="node3")["settings"]["max_siblings"] == 3


def test_max_connections_and_aae_interval_change_while_running(tmp_path):
    node = Node(tmp_path)
    seen = []
    node.core.settings_hooks.append(seen.append)
    try:
        ok = _config(node, {"max_connections": "64", "aae_interval": "1.5"})
        assert ok.info["changed"] == {"aae_interval": [0.2, 1.5], "max_connections": [10000, 64]}
        assert node.core.max_identities == 64  # (identities with requests in flight)
        assert [cfg.max_connections for cfg in seen] == [64]  # the transport's cap is told
        assert node.core.background.cfg.aae_interval == 1.5
        for value, why in (("0", "cannot be turned off while the node runs"),
                           ("15", "max_connections 15: between 16 and 1000000")):
            name = "aae_interval" if value == "0" else "max_connections"
            err = _config(node, {name: value})
            assert type(err) is wire.Error and why in err.message, err
        assert node.core.cfg.aae_interval == 1.5 and len(seen) == 1
    finally:
        node.close()


def test_sighup_never_turns_anti_entropy_on_or_off(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text("aae_interval = 0\nmax_siblings = 8\n")
    node = Node(tmp_path, config=str(conf))
    try:
        from zkv.node import settings

        settings.reload(node.core)  # the file says 0: logged as waiting for a restart
        assert node.core.cfg.aae_interval == 0.2 and node.core.cfg.max_siblings == 8
    finally:
        node.close()


@pytest.mark.cluster
def test_a_lowered_connection_cap_sheds_the_excess_at_once_and_holds(make_cluster):
    """120 idle connections are open when `zkv config --set max_connections=32` lowers the
    cap: the node shuts those past it down at once (it used to wait for new ones to come).
    120 more opened after it are held to the new cap (each one past it closes another, the
    quietest), and a client is served."""
    import zmq

    c = make_cluster(1, n=1, metrics=True)
    pid = c.nodes[0].process.pid

    def refused() -> float:
        text = http(f"http://127.0.0.1:{c.nodes[0].metrics_port}/metrics")[1]
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("zkv_connections_refused_total"))

    def fds() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    rest = fds()
    ctx = zmq.Context()
    socks: list = []

    def open_idle(n: int) -> list:  # idle connections, each asking once (no redial if closed)
        new = []
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 60_000)
            s.connect(c.endpoints[0])
            s.send(wire.encode_one(wire.RingInfo(len(socks) + 1)))
            socks.append(s)
            new.append(s)
        return new

    try:
        for s in open_idle(120):  # every one answered: all open under the default cap
            assert s.poll(5000) and s.recv()
        assert refused() == 0
        out = zkv("config", "--set", "max_connections=32", "--node", c.endpoints[0])
        assert out.returncode == 0 and "max_connections 10000 -> 32" in out.stdout, out
        wait_for(lambda: refused() >= 120 + 1 - 32, 10, "the connections past the cap shut")
        wait_for(lambda: fds() <= rest + 32 + 8, 10, "the node to hold no more than the cap")
        before = refused()
        open_idle(120)  # each one past the cap closes another (one fits: the CLI's has gone)
        wait_for(lambda: refused() >= before + 119, 20, "the new connections past the cap")
        assert fds() <= rest + 32 + 8  # (plus its own fds)
        with Client(c.endpoints, timeout=5) as cl:
            cl.put(b"k", b"v")
            assert cl.get(b"k").values == [b"v"]
    finally:
        for s in socks:
            s.close()
        ctx.term()


def test_an_alter_follows_one_made_where_the_clock_runs_ahead(tmp_path):
    """The registry holds an alter stamped 30 s ahead of this node's clock (made on a node
    whose clock runs ahead, within the skew allowed): an alter here still follows it, and
    wins everywhere, instead of being refused for a `changed` that does not follow."""
    from zkv.node.namespaces import Registry

    node = Node(tmp_path)
    try:
        core = node.core
        for i in (2, 3):  # (members of this version: they take ttls and alters)
            node.gossip(i, [_member(i, hb=2, features=wire.FEATURES)])
        created = node.ask(OUTSIDER, [wire.NsCreate(1, "s", 3, 0, 0, "lww", 60)], ADMIN)
        assert not [m for m in created if type(m) is wire.Error], created
        ahead = msgspec.structs.replace(core.namespaces.get("s"), r=1,
                                        changed=core.hlc.limit() - (30_000 << 16))
        other = Registry.for_cluster(3, 2, 2)
        other.merge([ahead])
        core.handle((GOSSIP, "node2"), [wire.Gossip(0, "node2", 16, 3, 2, 2,
                                                    [_member(2, hb=3, features=wire.FEATURES)],
                                                    namespaces=other.encode())],
                    node.t)
        assert core.namespaces.get("s").r == 1  # (taken: within the skew bound)
        replies = node.ask(OUTSIDER, [wire.NsAlter(2, "s", 3, -1, -1)], ADMIN)
        assert not [m for m in replies if type(m) is wire.Error], replies
        now = core.namespaces.get("s")
        assert now.r == 3 and now.changed > ahead.changed
    finally:
        node.close()


def test_a_log_level_change_is_logged_whatever_the_level_it_sets(tmp_path, caplog):
    """The level was applied before the "settings changed" line, so `zkv config --set
    log_level=WARNING` (or a SIGHUP taking it from the file) logged nothing: the line is now
    a WARNING, written while the old level shows it (else under the new one)."""
    import logging

    from zkv.node import settings

    conf = tmp_path / "node.toml"
    conf.write_text('log_level = "INFO"\n')
    node = Node(tmp_path, config=str(conf))
    try:
        caplog.set_level(logging.INFO, logger="zkv")  # (restored after the test)

        def said() -> list[tuple[int, str]]:
            out = [(r.levelno, r.getMessage()) for r in caplog.records
                   if r.getMessage().startswith("settings changed")]
            caplog.clear()
            return out

        assert type(_config(node, {"log_level": "WARNING"})) is wire.ConfigOk
        assert said() == [(logging.WARNING, "settings changed: log_level 'INFO' -> 'WARNING'")]
        _config(node, {"max_siblings": "7"})  # an INFO line under WARNING: not shown
        assert said() == []
        _config(node, {"log_level": "ERROR", "max_siblings": "8"})
        assert said() == [(logging.WARNING, "settings changed: log_level 'WARNING' -> 'ERROR', "
                                            "max_siblings 7 -> 8")]
        _config(node, {"log_level": "INFO"})  # from a level that showed none: under the new
        assert said() == [(logging.WARNING, "settings changed: log_level 'ERROR' -> 'INFO'")]
        conf.write_text('log_level = "WARNING"\n')
        settings.reload(node.core)  # SIGHUP (max_siblings back to what a restart takes)
        assert said() == [(logging.WARNING, "settings changed: log_level 'INFO' -> 'WARNING', "
                                            "max_siblings 8 -> 100")]
    finally:
        node.close()


def test_cluster_wide_settings_given_at_a_restart_are_named_as_ignored(tmp_path, caplog):
    """`--n 5 --r 1 --w 1 --ring-size 64` on a member's restart were ignored without a word,
    and `zkv config` listed them as the settings in force (an outside run). The node logs
    each one it ignores, and Config answers the cluster's values with `ignored` naming what
    was given."""
    import time

    from zkv.config import NodeConfig
    from zkv.node import ownership as own
    from zkv.node import settings
    from zkv.node.core import NodeCore
    from zkv.node.stores import open_stores

    cfg = NodeConfig(id="node1", listen="tcp://127.0.0.1:7001", gossip="tcp://127.0.0.1:8001",
                     data_dir=str(tmp_path / "n1"), ring_size=64, n=5, r=1, w=1,
                     auto_commit=False)
    store, handoff = open_stores(cfg)
    state = own.founding("node1", "default", [], founded=1)  # (auto_commit on)
    with caplog.at_level("WARNING", logger="zkv.node"):
        core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                        now=1000.0, saved={"settings": {"q": 256, "n": 3, "r": 2, "w": 2},
                                           "cluster": own.encode(state).hex()})
    try:
        said = caplog.text
        for line in ("ring_size 64 ignored: the cluster's is 256", "n 5 ignored: the cluster's "
                     "is 3", "r 1 ignored: the cluster's is 2", "w 1 ignored",
                     "auto_commit False ignored: the cluster's is True"):
            assert line in said, said
        doc = settings.info(core, {})
        assert [doc["settings"][k] for k in ("ring_size", "n", "r", "w", "auto_commit")] == [
            256, 3, 2, 2, True]
        assert doc["ignored"] == {"ring_size": [64, 256], "n": [5, 3], "r": [1, 2],
                                  "w": [1, 2], "auto_commit": [False, True]}
    finally:
        store.close()
        handoff.close()
    # a node given the defaults (or the cluster's own values) says nothing
    caplog.clear()
    cfg = NodeConfig(id="node1", listen="tcp://127.0.0.1:7001", gossip="tcp://127.0.0.1:8001",
                     data_dir=str(tmp_path / "n2"))
    store, handoff = open_stores(cfg)
    with caplog.at_level("WARNING", logger="zkv.node"):
        core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                        now=1000.0, saved={"settings": {"q": 64, "n": 5, "r": 3, "w": 3}})
    try:
        assert "ignored" not in caplog.text and settings.info(core, {})["ignored"] == {}
    finally:
        store.close()
        handoff.close()


def test_a_default_value_given_on_the_command_line_is_named_as_ignored_too(tmp_path, caplog):
    """`--n 3` (the default) given to a member of an N=5 cluster was not named: the value
    could not be told from one not given. The command line's flags (and the --config file)
    say what was given; what was not given is not named, whatever its value."""
    import time

    from zkv.config import NodeConfig
    from zkv.node import settings
    from zkv.node.core import NodeCore
    from zkv.node.stores import open_stores

    conf = tmp_path / "node.toml"
    conf.write_text("r = 2\n")  # the default, from the file
    flags = {"id": "node1", "n": 3, "w": None, "config": str(conf)}
    cfg = NodeConfig(id="node1", listen="tcp://127.0.0.1:7001", gossip="tcp://127.0.0.1:8001",
                     data_dir=str(tmp_path / "n1"), config=str(conf))
    store, handoff = open_stores(cfg)
    with caplog.at_level("WARNING", logger="zkv.node"):
        core = NodeCore(cfg, store, handoff, incarnation=time.time_ns() // 1_000_000,
                        now=1000.0, saved={"settings": {"q": 64, "n": 5, "r": 3, "w": 3}},
                        flags=flags)
    try:
        assert "n 3 ignored: the cluster's is 5" in caplog.text, caplog.text
        assert "r 2 ignored: the cluster's is 3" in caplog.text, caplog.text
        assert settings.info(core, {})["ignored"] == {"n": [3, 5], "r": [2, 3]}  # (w: not given)
    finally:
        store.close()
        handoff.close()


def test_a_lowered_aae_interval_applies_at_once(tmp_path):
    """aae_interval raised to 3600 then lowered to 0.2 at runtime: the next round stayed an
    hour away (its date was fixed when the last round was planned), and anti-entropy was
    off meanwhile while `zkv config` showed 0.2 (an outside run). The next round is due the
    interval, as it is now, after the last one."""
    node = Node(tmp_path)
    bg = node.core.background
    try:
        node.run_for(1.0)
        assert bg.aae_planned > -1e9  # a round was planned
        assert type(_config(node, {"aae_interval": "3600"})) is not wire.Error
        bg.exchange_queue.clear()  # (the round's exchanges done: peers here never answer)
        bg.queued.clear()
        planned = bg.aae_planned
        node.run_for(2.0)
        assert bg.aae_planned == planned  # an hour away
        assert type(_config(node, {"aae_interval": "0.2"})) is not wire.Error
        node.run_for(1.0)
        assert bg.aae_planned > planned  # at once
    finally:
        node.close()
