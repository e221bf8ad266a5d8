"""Bind vs advertised addresses, wildcards, IPv6 literals, the metrics host (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zkv.config import NodeConfig, is_wildcard, load, parse_endpoint
from zkv.errors import InvalidRequest

BASE = {"id": "n1", "data_dir": "/tmp/zkv-unused", "gossip": "tcp://127.0.0.1:8001"}


def cfg(**kw) -> NodeConfig:
    return load({**BASE, "listen": "tcp://127.0.0.1:7001", **kw})


@pytest.mark.parametrize("ep, host, port", [
    ("tcp://127.0.0.1:7001", "127.0.0.1", 7001),
    ("tcp://node-3.zkv-peers.default.svc.cluster.local:7001",
     "node-3.zkv-peers.default.svc.cluster.local", 7001),
    ("tcp://[::1]:7001", "::1", 7001),
    ("tcp://[fd00::2]:65535", "fd00::2", 65535),
    ("tcp://*:7001", "*", 7001),
    ("tcp://zkv_node1:7001", "zkv_node1", 7001),  # (a container's name)
])
def test_endpoints_parse(ep, host, port):
    assert parse_endpoint(ep) == (host, port)


@pytest.mark.parametrize("ep", ["127.0.0.1:7001", "tcp://h", "tcp://h:0", "tcp://h:70000",
                                "tcp://::1:7001", "tcp://[nothex]:7001", "udp://h:1", "", None,
                                "tcp://h :1", "tcp://-:1", "tcp://a..b:1", "tcp://-a.b:1",
                                "tcp://a$b:1",
                                # what libzmq's connect refuses after a check let it through: a
                                # node given one as --seed failed every loop turn and never
                                # stopped on SIGTERM (an outside run)
                                "tcp://10.0.0.1:7001\n", "tcp://10.0.0.1:\u0665\u0667\u0660",
                                "tcp://[fe80::1%e\u00e9]:1", "tcp://h\u00e9:1",
                                "tcp://" + ".".join(["a" * 63] * 4) + ":1"])  # (255 > 253)
def test_bad_endpoints_are_refused_with_the_reason(ep):
    with pytest.raises(ValueError, match="tcp://HOST:PORT|port|IPv6|not a host name|at most"):
        parse_endpoint(ep)


def test_a_host_name_of_253_characters_is_taken():
    host = ".".join(["a" * 63] * 3 + ["a" * 61])
    assert parse_endpoint(f"tcp://{host}.:7001") == (host + ".", 7001)


def test_an_advertised_address_that_is_the_only_seed_of_a_new_node_is_refused():
    """--advertise copied from the seed's config (another machine's address, the node bound
    elsewhere): the node dropped its only seed as itself and founded a separate cluster under
    that address, without a word (an outside run). Refused with the reason; a founder whose
    seed list names its own address, or whose listen is a wildcard, starts as before."""
    from zkv.node.membership import check_advertised_seed

    seed = "tcp://10.0.0.1:7001"
    c = cfg(listen="tcp://10.0.0.4:7001", advertise=seed, seed=[seed])
    why = check_advertised_seed(c, {}, False)
    assert why is not None and "--advertise" in why and "only --seed" in why, why
    assert check_advertised_seed(c, {"cluster": {"id": "x"}}, False) is None  # a member
    assert check_advertised_seed(c, {}, True) is None  # --new-cluster
    other = cfg(listen="tcp://10.0.0.4:7001", advertise=seed, seed=[seed, "tcp://10.0.0.2:1"])
    assert check_advertised_seed(other, {}, False) is None  # joins through the other seed
    nat = cfg(listen="tcp://0.0.0.0:7001", advertise=seed, seed=[seed])
    assert check_advertised_seed(nat, {}, False) is None  # a founder binding every interface
    own = cfg(listen=seed, seed=[seed])
    assert check_advertised_seed(own, {}, False) is None  # its own listen address


def test_zkv_node_refuses_an_advertised_only_seed_before_it_binds(tmp_path):
    seed = "tcp://10.0.0.1:7001"
    out = subprocess.run(
        [sys.executable, "-P", "-m", "zkv.node", "--id", "n4", "--data-dir", str(tmp_path / "d"),
         "--listen", "tcp://127.0.0.1:1", "--gossip", "tcp://127.0.0.1:2",
         "--advertise", seed, "--seed", seed], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    assert "only --seed" in out.stderr and "--advertise" in out.stderr, out.stderr


def test_wildcards():
    for ep in ("tcp://0.0.0.0:1", "tcp://*:1", "tcp://[::]:1"):
        assert is_wildcard(ep)
    assert not is_wildcard("tcp://10.0.0.1:1")


@pytest.mark.parametrize("listen", ["tcp://0.0.0.0:7001", "tcp://*:7001", "tcp://[::]:7001"])
def test_wildcard_listen_without_advertise_is_refused_naming_the_flag(listen):
    with pytest.raises(InvalidRequest, match="--advertise"):
        cfg(listen=listen)


def test_wildcard_gossip_without_any_advertised_address_is_refused():
    with pytest.raises(InvalidRequest, match="--advertise-gossip"):
        cfg(gossip="tcp://0.0.0.0:8001")


def test_a_port_bound_twice_is_refused_unless_the_hosts_differ():
    with pytest.raises(InvalidRequest, match="--gossip and --listen both bind port 7001"):
        cfg(listen="tcp://127.0.0.1:7001", gossip="tcp://127.0.0.1:7001")
    with pytest.raises(InvalidRequest, match="--gossip and --listen"):  # a wildcard covers it
        cfg(listen="tcp://127.0.0.1:7001", gossip="tcp://0.0.0.0:7001",
            advertise="tcp://10.1.2.3:7001")
    with pytest.raises(InvalidRequest, match="--metrics-port and --gossip"):
        cfg(gossip="tcp://127.0.0.1:8001", metrics_port=8001)
    cfg(listen="tcp://127.0.0.2:7001", gossip="tcp://127.0.0.3:7001")  # two addresses: fine
    cfg(gossip="tcp://10.0.0.1:8001", metrics_port=8001)  # /metrics on loopback only


def test_advertise_is_what_peers_are_told():
    c = cfg(listen="tcp://0.0.0.0:7001", gossip="tcp://0.0.0.0:8001",
            advertise="tcp://10.1.2.3:7001")
    assert c.listen == "tcp://0.0.0.0:7001"  # what is bound
    assert c.advertised_listen == "tcp://10.1.2.3:7001"
    assert c.advertised_gossip == "tcp://10.1.2.3:8001"  # advertise's host, gossip's port
    c = cfg(listen="tcp://[::]:7001", gossip="tcp://[::]:8001", advertise="tcp://[fd00::3]:7001")
    assert c.advertised_gossip == "tcp://[fd00::3]:8001"
    c = cfg(advertise_gossip="tcp://10.9.9.9:9000")
    assert (c.advertised_listen, c.advertised_gossip) == ("tcp://127.0.0.1:7001",
                                                          "tcp://10.9.9.9:9000")


def test_advertised_address_cannot_itself_be_a_wildcard():
    with pytest.raises(InvalidRequest, match="--advertise tcp://0.0.0.0:7001"):
        cfg(listen="tcp://0.0.0.0:7001", advertise="tcp://0.0.0.0:7001")


def test_ipv6_literals_accepted():
    c = cfg(listen="tcp://[::1]:7001", gossip="tcp://[::1]:8001", seed=["tcp://[::1]:7002"])
    assert c.advertised_listen == "tcp://[::1]:7001"


def test_metrics_host_and_advertise_from_the_toml_file(tmp_path):
    p = tmp_path / "n.toml"
    p.write_text('metrics_host = "0.0.0.0"\nmetrics_port = 9101\n'
                 'advertise = "tcp://10.0.0.7:7001"\n')
    c = load({**BASE, "listen": "tcp://0.0.0.0:7001", "config": str(p)})
    assert (c.metrics_host, c.metrics_port, c.advertised_listen) == (
        "0.0.0.0", 9101, "tcp://10.0.0.7:7001")
    assert cfg().metrics_host == "127.0.0.1"  # loopback unless asked


def _node(*args, timeout=30):
    return subprocess.run([sys.executable, "-P", "-m", "zkv.node", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, says", [
    (["--listen", "tcp://0.0.0.0:7001"], "--advertise"),
    (["--listen", "tcp://*:7001"], "--advertise"),
    (["--listen", "tcp://localhost"], "--listen"),
    (["--listen", "tcp://127.0.0.1:7001", "--seed", "10.0.0.1:7001"], "--seed"),
    (["--listen", "tcp://127.0.0.1:7001", "--metrics-port", "x"], "--metrics-port"),
    (["--listen", "tcp://127.0.0.1:7001", "--bogus"], "--bogus"),
    (["--listen", "tcp://127.0.0.1:8001"], "--gossip and --listen both bind port 8001"),
    (["--listen", "tcp://127.0.0.1:7001", "--metrics-port", "7001"],
     "--metrics-port and --listen both bind port 7001"),
])
def test_zkv_node_refuses_bad_addresses_in_one_line(tmp_path, args, says):
    out = _node("--id", "n1", "--gossip", "tcp://127.0.0.1:8001", "--data-dir",
                str(tmp_path / "d"), *args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert not os.path.exists(tmp_path / "d")  # refused before touching anything


def test_max_connections_from_flag_file_and_default(tmp_path, monkeypatch):
    """Issue 13: the connection cap is a setting like any other; the node lowers it to what
    the fd limit leaves (logged), never below 16, raising its soft fd limit to the hard one
    first."""
    from zkv.cli import node_parser
    from zkv.node import conns

    assert cfg().max_connections == 10_000
    toml = tmp_path / "n.toml"
    toml.write_text("max_connections = 500\n")
    assert cfg(config=str(toml)).max_connections == 500
    flags = vars(node_parser().parse_args(["--max-connections", "300"]))
    assert cfg(config=str(toml), max_connections=flags["max_connections"]).max_connections == 300
    with pytest.raises(InvalidRequest, match="max_connections 3"):
        cfg(max_connections=3)
    limits = [1024, 1024]  # (soft, hard) of a fake process

    def setrlimit(_, new):
        assert new[1] == limits[1] and new[0] <= new[1]  # (never the hard limit itself)
        limits[:] = new

    monkeypatch.setattr(conns.resource, "getrlimit", lambda _: tuple(limits))
    monkeypatch.setattr(conns.resource, "setrlimit", setrlimit)
    assert conns.effective_cap(10_000) == 1024 - conns.FD_RESERVE
    assert conns.effective_cap(500) == 500
    # a soft limit under the hard one is raised to it first (each data segment holds two)
    limits[:] = [1024, 4096]
    assert conns.effective_cap(10_000) == 4096 - conns.FD_RESERVE and limits == [4096, 4096]
    assert conns.fd_limit_problem() is None
    limits[:] = [40, 40]  # (a node started so took every descriptor and answered nobody)
    assert conns.fd_limit_problem().startswith(
        f"the open-file limit (ulimit -n) is 40; a node needs at least {conns.MIN_FDS}")


def test_a_node_refuses_to_start_under_too_low_an_open_file_limit(tmp_path):
    """Under ulimit -n 40 a node started, answered no handshake and flapped; at 24 it blamed
    its metrics port. zkv-node says what is wrong and exits 1, touching no data dir."""
    import resource
    import subprocess
    import sys

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    out = subprocess.run([sys.executable, "-m", "zkv.node", "--id", "n1", "--listen",
                          "tcp://127.0.0.1:1", "--gossip", "tcp://127.0.0.1:2", "--data-dir",
                          str(tmp_path / "d")], capture_output=True, text=True, timeout=60,
                         preexec_fn=low)
    assert out.returncode == 1 and "open-file limit (ulimit -n) is 40" in out.stderr, out
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("line, says", [
    ('replica_timeout = "2"', 'replica_timeout = "2": a number, not a string'),
    ("min_free_mb = true", "min_free_mb = true: an integer, not a boolean"),
    ("sync_interval_ms = 50.5", "sync_interval_ms = 50.5: an integer, not a number with a "
                                "fraction"),
    ('max_siblings = "lots"', 'max_siblings = "lots": an integer, not a string'),
    ('auto_commit = "yes"', 'auto_commit = "yes": true or false, not a string'),
    ("rack = 3", "rack = 3: a string, not an integer"),
    ("seed = [1]", "seed = [1]: a list of strings, not a list holding an integer"),
])
def test_a_config_file_value_of_the_wrong_type_is_refused_naming_the_setting(tmp_path, line,
                                                                             says):
    """A string where a number goes reached a comparison ("'<' not supported between
    instances of 'int' and 'str'", naming no setting); true and 50.5 passed as integers."""
    conf = tmp_path / "node.toml"
    conf.write_text(f'id = "x"\nlisten = "tcp://127.0.0.1:7001"\ngossip = "tcp://127.0.0.1:'
                    f'7002"\ndata_dir = "{tmp_path / "d"}"\n{line}\n')
    with pytest.raises(InvalidRequest) as err:
        load({"config": str(conf)})
    assert str(err.value) == f"invalid node configuration: {says}"


def test_whole_seconds_in_a_config_file_are_taken_as_seconds(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text(f'id = "x"\nlisten = "tcp://127.0.0.1:7001"\ngossip = "tcp://127.0.0.1:'
                    f'7002"\ndata_dir = "{tmp_path / "d"}"\nreplica_timeout = 2\n')
    cfg = load({"config": str(conf)})
    assert cfg.replica_timeout == 2.0 and type(cfg.replica_timeout) is float


def test_a_metrics_port_in_use_is_named_with_its_address_and_flag(tmp_path):
    """It said only "zkv-node: cannot start: [Errno 98] Address already in use" (a listen or
    gossip clash names its address)."""
    import socket

    from ops_helpers import free_port

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        out = _node("--id", "n1", "--listen", f"tcp://127.0.0.1:{free_port()}", "--gossip",
                    f"tcp://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
                    "--metrics-port", str(port))
    finally:
        busy.close()
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("zkv-node: cannot start: [Errno 98] Address already in use "
                               f"(addr='http://127.0.0.1:{port}', --metrics-host 127.0.0.1 "
                               f"--metrics-port {port})"), lines[0]
