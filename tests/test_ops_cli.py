"""Every CLI subcommand in a pipe and with bad input: one line, non-zero exit, no traceback."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from ops_helpers import ZKV, free_port, one_line_error, zkv

pytestmark = pytest.mark.cluster

# a port nothing listens on: an unreachable node
DEAD = f"tcp://127.0.0.1:{free_port()}"
FAST = ["--timeout", "0.5"]

TALKERS = {  # subcommand -> arguments that are fine apart from what each case breaks
    "get": ["get", "k"],
    "put": ["put", "k", "v"],
    "delete": ["delete", "k"],
    "status": ["status"],
    "ring": ["ring"],
    "repair": ["repair"],
    "top": ["top", "--once", "--interval", "0.1"],
    "keys": ["keys"],
    "snapshot": ["snapshot", "--list"],
    "config": ["config"],
}


@pytest.mark.parametrize("cmd", sorted(TALKERS))
def test_bad_endpoint(cmd):
    for bad in ("localhost:7001", "tcp://h:99999", "tcp://0.0.0.0:7001"):
        line = one_line_error(zkv(*TALKERS[cmd], "--node", bad))
        assert "--node" in line and bad in line, line


def test_an_address_without_its_scheme_is_refused_with_the_fix():
    line = one_line_error(zkv("status", "--node", "localhost:7001"))
    assert "expected tcp://HOST:PORT" in line and "(tcp://localhost:7001?)" in line, line
    line = one_line_error(zkv("status", "--node", "fd00::1:7001"))  # (IPv6: in brackets)
    assert "(tcp://[fd00::1]:7001?)" in line, line


@pytest.mark.parametrize("cmd", sorted(TALKERS))
def test_unreachable_node(cmd):
    out = zkv(*TALKERS[cmd], "--node", DEAD, *FAST)
    line = one_line_error(out)
    assert DEAD in line or "no answer" in line, line


@pytest.mark.parametrize("cmd", sorted(TALKERS))
def test_bad_flag(cmd):
    """Named by the subcommand's own parser, whose --help lists what it takes (the top
    parser's "see zkv --help" listed the subcommands only)."""
    line = one_line_error(zkv(*TALKERS[cmd], "--bogus"))
    assert "--bogus" in line and f"(see zkv {cmd} --help)" in line, line


def test_a_bad_flag_of_a_nested_subcommand_names_it():
    line = one_line_error(zkv("namespace", "create", "x", "--bogus"))
    assert "zkv namespace create: error" in line and "(see zkv namespace create --help)" in line


def test_a_negative_number_given_to_a_flag_gets_the_flags_own_reason():
    """`zkv keys` has a -0 flag, so argparse read --limit's -3 as a flag and said only
    "expected one argument"; the value now reaches --limit's own check."""
    line = one_line_error(zkv("keys", "--limit", "-3", "--node", DEAD, *FAST))
    assert "argument --limit: '-3': must be 1 or more" in line, line
    assert "zkv keys: error" in line


@pytest.mark.parametrize("cmd", ["get", "put", "delete"])
def test_bad_key(cmd):
    args = list(TALKERS[cmd])
    args[1] = ""  # keys are 1 byte to 64 KiB
    line = one_line_error(zkv(*args, "--node", DEAD, *FAST))
    assert "key" in line.lower(), line
    args[1] = "k" * (64 * 1024 + 1)
    line = one_line_error(zkv(*args, "--node", DEAD, *FAST))
    assert "key" in line.lower(), line


def test_bad_values_of_other_flags():
    cases = [
        (["get", "k", "--r", "0"], "r"),
        (["put", "k", "v", "--w", "x"], "--w"),
        (["put", "k", "v", "--context", "zz"], "--context"),
        (["status", "--timeout", "-1"], "--timeout"),
        (["top", "--interval", "0"], "--interval"),
        (["repair", "--partition", "x"], "--partition"),
        (["nosuchcommand"], "nosuchcommand"),
        ([], "required"),
    ]
    for args, says in cases:
        line = one_line_error(zkv(*args, "--node", DEAD, *FAST) if args and args[0] != "nosuch"
                              "command" else zkv(*args))
        assert says in line, (args, line)


def test_usage_errors_exit_2_in_one_line_naming_the_subcommands_help(tmp_path):
    """A command line a subcommand cannot take is a usage error, as argparse's own: one line
    `zkv CMD: error: ... (see zkv CMD --help)`, exit 2, before any node is asked (`zkv put a`
    exited 1, the code of a refusal or a failure, with "zkv: InvalidRequest: ...")."""
    f = tmp_path / "v"
    f.write_text("v")
    cases = [
        (["put", "a"], "put", "expected KEY VALUE, KEY --value-file FILE, or --from FILE: "
         "got KEY alone (its value from stdin: --value-file -)"),
        (["put"], "put", "expected KEY VALUE"),
        (["put", "--from", str(f), "k"], "put", "expected KEY VALUE"),
        (["put", "k", "v", "--value-file", str(f)], "put", "--value-file FILE takes KEY alone"),
        (["put", "--from", str(f), "--context", "00"], "put", "--from writes blind"),
        (["put", "k", "v", "--context", "zz"], "put", "--context must be the hex string"),
        (["delete", "k", "--context", "zz"], "delete", "--context must be the hex string"),
        (["get", "a", "b", "--raw"], "get", "--raw writes one value: give one key"),
        (["get", ""], "get", "a key is 1 byte at least"),
        (["put", "", "v"], "put", "a key is 1 byte at least"),
        (["delete", ""], "delete", "a key is 1 byte at least"),
        (["namespace", "alter", "x"], "namespace alter", "nothing to change"),
        (["namespace", "alter", "x", "--n", "2"], "namespace alter", "N is fixed"),
        (["snapshot", "--list", "--remove"], "snapshot", "--list or --remove, not both"),
        (["snapshot", "s1", "--list"], "snapshot", "--list takes no NAME"),
        (["snapshot", "--remove"], "snapshot", "--remove takes the NAME"),
        (["config", "--set", "max_siblings"], "config", "expected NAME=VALUE"),
        (["get"], "get", "the following arguments are required: KEY"),
        (["cluster", "replace", "n1"], "cluster replace", "required: NEW_ID"),
        (["namespace", "create"], "namespace create", "required: NAME"),
        (["cluster", "auto-commit", "maybe"], "cluster auto-commit", "invalid choice"),
    ]
    cases.append((["keygen"], "keygen", "required: DIR"))  # (takes no --node)
    for args, cmd, says in cases:
        out = zkv(*args, *(["--node", DEAD, *FAST] if cmd != "keygen" else []))
        line = one_line_error(out)
        assert out.returncode == 2, (args, out)
        assert line.startswith(f"zkv {cmd}: error: ") and says in line, (args, line)
        assert line.endswith(f"(see zkv {cmd} --help)"), (args, line)


def test_local_up_bad_input(tmp_path):
    assert "--nodes" in one_line_error(zkv("local", "up", "--nodes", "0", "--dir",
                                           str(tmp_path)))
    assert "--base-port" in one_line_error(zkv("local", "up", "--base-port", "70000", "--dir",
                                               str(tmp_path)))
    assert "--bogus" in one_line_error(zkv("local", "up", "--bogus"))
    assert "local" in one_line_error(zkv("local"))
    (tmp_path / "file").write_text("")  # --dir under a regular file cannot be made
    line = one_line_error(zkv("local", "up", "--no-demo", "--dir", str(tmp_path / "file" / "d"),
                              "--base-port", str(free_port())))
    assert "file" in line, line


def test_local_up_refuses_a_port_in_use_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(zkv("local", "up", "--no-demo", "--nodes", "1", "--dir",
                                  str(tmp_path), "--base-port", str(port)))
    assert f"tcp://127.0.0.1:{port}" in line and "in use" in line


def test_bench_compact_and_keygen_bad_input(tmp_path):
    assert "--bogus" in one_line_error(zkv("bench", "--bogus"))
    assert "--bogus" in one_line_error(zkv("compact", "--data-dir", str(tmp_path), "--bogus"))
    assert "--data-dir" in one_line_error(zkv("compact"))
    gone = zkv("compact", "--data-dir", str(tmp_path / "none"))  # (exit 1: an error, 2 is
    assert "none does not exist" in one_line_error(gone) and gone.returncode == 1  # usage)
    (tmp_path / "notes.txt").write_text("mine")  # a directory of something else: left alone
    assert "notes.txt is not a directory" in one_line_error(
        zkv("compact", "--data-dir", str(tmp_path / "notes.txt")))
    assert "holds no zkv store" in one_line_error(zkv("compact", "--data-dir", str(tmp_path)))
    # (keygen into a file: it read "FileExistsError: [Errno 17] File exists: ...")
    out = zkv("keygen", str(tmp_path / "notes.txt"))
    assert out.returncode == 1 and "notes.txt is a file, not a keys directory" in \
        one_line_error(out), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_node_refuses_a_port_in_use_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        out = subprocess.run([ZKV + "-node", "--id", "x", "--listen", busy, "--gossip",
                              f"tcp://127.0.0.1:{free_port()}", "--data-dir",
                              str(tmp_path / "d")], capture_output=True, text=True, timeout=30)
    assert "in use" in one_line_error(out)


# ---- against a real cluster ----------------------------------------------------------------------
def _closed_pipe(args) -> subprocess.CompletedProcess:
    """Run zkv with its stdout a pipe whose reader is already gone (`zkv ring | true`)."""
    p = subprocess.Popen([ZKV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    p.stdout.close()  # the reader exits before zkv writes
    err = p.stderr.read().decode()
    p.stderr.close()
    return subprocess.CompletedProcess(args, p.wait(60), "", err)


def test_every_output_command_in_a_closed_pipe(cluster3):
    ep = cluster3.endpoints[0]
    zkv("put", "pipe-key", "v", "--node", ep)
    for args in (["ring"], ["ring", "--json"], ["status"], ["status", "--json"],
                 ["get", "pipe-key"], ["get", "pipe-key", "--raw"], ["keys"],
                 ["keys", "--count"], ["snapshot", "--list"], ["config"], ["config", "--json"],
                 ["put", "pipe-key", "v2"], ["delete", "pipe-key"],
                 ["top", "--once", "--interval", "0.1"], ["top", "--json", "--interval", "0.1"],
                 ["repair"]):
        out = _closed_pipe([*args, "--node", ep])
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, (args, out)
        assert out.returncode in (0, 141), (args, out)  # 141: like `seq 1000000 | true`


def test_a_command_started_with_its_stdout_closed_fails_cleanly(cluster3):
    """`zkv get k >&-` (stdout closed before it started: Python then has no sys.stdout)
    failed with an AttributeError traceback. What it prints fails as `cat` does, bad file
    descriptor, exit 1."""
    ep = cluster3.endpoints[0]
    zkv("put", "closed-key", "v", "--node", ep)
    for args in (["get", "closed-key"], ["get", "closed-key", "--raw"], ["status", "--json"],
                 ["put", "closed-key", "v2"]):
        out = subprocess.run(f"{ZKV} {' '.join(args)} --node {ep} >&-", shell=True,
                             capture_output=True, text=True, timeout=60)
        assert "Traceback" not in out.stderr and out.returncode == 1, (args, out)
        assert out.stderr.endswith("zkv: OSError: [Errno 9] standard output is closed\n")


def test_ring_into_head_through_a_shell(cluster3):
    out = subprocess.run(f"{ZKV} ring --node {cluster3.endpoints[0]} | head -2", shell=True,
                         capture_output=True, text=True, timeout=60)
    assert len(out.stdout.splitlines()) == 2 and out.stderr == ""


def test_top_in_a_pipe_prints_one_snapshot_of_every_node(cluster3):
    ep = cluster3.endpoints[0]
    out = zkv("top", "--node", ep, "--interval", "0.2")  # stdout is a pipe here
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("zkv top") and "3 member(s)" in lines[0]
    assert sum(1 for x in lines if x.startswith("zkv top")) == 1  # one snapshot
    for n in cluster3.nodes:
        assert any(n.id in x and " up " in x for x in lines), out.stdout
    doc = json.loads(zkv("top", "--node", ep, "--json", "--interval", "0.2").stdout)
    rows = {r["id"]: r for r in doc["nodes"]}
    assert set(rows) == {"node1", "node2", "node3"}
    assert all(r["state"] == "up" and r["hints"] == 0 for r in rows.values())


def test_top_says_why_a_killed_and_a_frozen_node_do_not_answer(make_cluster):
    """A node's row gives the reason it could not be asked, not the exception's first 40
    characters ("Unavailable: no node reachable: tried tc"): a killed node refuses the TCP
    connection, a frozen one (SIGSTOP) takes it and never answers."""
    c = make_cluster(3)
    c.kill("node3")
    c.pause("node2")
    try:
        out = zkv("top", "--once", "--node", c.endpoints[0])
        assert out.returncode == 0, out.stderr
        rows: dict[str, str] = {}  # node -> its row's text, wrapped lines joined
        node = ""
        for line in out.stdout.splitlines():
            cells = [x.strip() for x in line.split("│")[1:-1]]
            if len(cells) > 3:
                node = cells[0] or node
                rows[node] = (rows.get(node, "") + " " + cells[2]).strip()
        assert rows["node3"] == "no TCP connection: down, or not listening there", rows
        assert rows["node2"] == ("it accepted the TCP connection but did not complete the "
                                 "ZeroMQ handshake: paused (SIGSTOP), overloaded, on a slow "
                                 "link, or not a "
                                 "zkv node"), rows
        assert "TCP" not in rows["node1"], rows  # (it answered: ready, or why not)
    finally:
        c.resume("node2")


def test_node_named_by_its_member_id_through_zkv_node(cluster3):
    """`--node ID` is the member's address from the table of the default node ($ZKV_NODE
    here: the fixture's ports are not 7001's); an unknown id names the members, and a
    default node that does not answer says where the id was looked up."""
    import os

    env = {**os.environ, "ZKV_NODE": cluster3.endpoints[0]}
    second = cluster3.nodes[1]
    out = zkv("status", "--node", second.id, env=env)
    assert out.returncode == 0 and out.stdout.startswith(f"node {second.id}:"), out
    out = zkv("ring", "--node", second.id, env=env)
    assert out.returncode == 0 and out.stdout, out
    line = one_line_error(zkv("status", "--node", "nobody", env=env))
    assert "no such member" in line and all(n.id in line for n in cluster3.nodes), line
    line = one_line_error(zkv("status", "--node", second.id, *FAST,
                              env={**os.environ, "ZKV_NODE": DEAD}))
    assert f"looked up at {DEAD}, which did not answer" in line, line


def test_status_text_shows_readiness_and_members(cluster3):
    out = zkv("status", "--node", cluster3.endpoints[0])
    assert out.returncode == 0 and "ready: yes" in out.stdout, out
    for n in cluster3.nodes:
        assert n.listen in out.stdout


def test_get_of_several_keys_and_put_from_a_file(cluster3, tmp_path):
    ep = cluster3.endpoints[0]
    rows = [(f"bulk:{i}", f"value {i}") for i in range(2500)]  # three batches
    src = tmp_path / "load.tsv"
    src.write_text("".join(f"{k}\t{v}\n" for k, v in rows) + "\n")
    out = zkv("put", "--from", str(src), "--node", ep, "--w", "2")
    assert out.returncode == 0 and out.stdout.strip() == "ok: 2500 written", out
    out = zkv("get", "bulk:7", "bulk:2499", "bulk:none", "--node", ep)
    assert out.returncode == 3  # one of them is missing
    assert out.stdout.splitlines() == ["bulk:7: value 7", "bulk:2499: value 2499",
                                       "bulk:none: (not found)"]
    assert "bulk:7 context: " in out.stderr
    out = zkv("get", "bulk:1", "bulk:2", "--node", ep)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2
    # stdin, and a line without a tab: one line naming it, nothing of its batch written
    out = subprocess.run([ZKV, "put", "--from", "-", "--node", ep], input="a:1\tx\nbroken\n",
                         capture_output=True, text=True, timeout=60)
    assert "-:2: expected KEY<TAB>VALUE" in one_line_error(out)
    big = tmp_path / "big.tsv"  # a value over the limit: named by its line, not its batch slot
    big.write_text("a:1\tfine\n" * 3 + "a:2\t" + "x" * (16 * 1024 * 1024 + 1) + "\n")
    line = one_line_error(zkv("put", "--from", str(big), "--node", ep))
    assert f"{big}:4: value of {16 * 1024 * 1024 + 1} bytes exceeds" in line, line
    assert zkv("get", "a:1", "--node", ep).returncode == 3
    for bad in (["put", "--from", str(src), "k", "v"], ["put", "--from", str(src), "k"],
                ["put", "k"], ["put"],
                ["put", "--from", str(src), "--context", "00"],
                ["put", "--from", str(tmp_path / "missing.tsv")]):
        assert one_line_error(zkv(*bad, "--node", ep))


def test_binary_values_round_trip_through_value_file_and_raw(cluster3, tmp_path):
    """`put --value-file` stores a file's (or stdin's) bytes exactly and `get --raw` writes
    them back exactly (no newline, no label, not decoded); siblings need --sibling; a file
    over the value limit is refused without being written."""
    ep = cluster3.endpoints[0]
    blob = bytes(range(256)) * 1000 + b"\n\x00\xff"  # not UTF-8, ends in bytes a print mangles
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    assert zkv("put", "bin:1", "--value-file", str(src), "--node", ep).returncode == 0
    got = subprocess.run([ZKV, "get", "bin:1", "--raw", "--node", ep], capture_output=True,
                         timeout=60)
    assert got.returncode == 0 and got.stdout == blob, (got.returncode, len(got.stdout))
    assert got.stderr.startswith(b"context: ")
    put = subprocess.run([ZKV, "put", "bin:2", "--value-file", "-", "--node", ep],
                         input=blob, capture_output=True, timeout=60)
    assert put.returncode == 0, put
    got = subprocess.run([ZKV, "get", "bin:2", "--raw", "--node", ep], capture_output=True,
                         timeout=60)
    assert got.stdout == blob
    # not found: nothing on stdout, exit 3
    got = subprocess.run([ZKV, "get", "bin:none", "--raw", "--node", ep], capture_output=True,
                         timeout=60)
    assert got.returncode == 3 and got.stdout == b"" and b"not found" in got.stderr
    # two blind writes: siblings; --raw names the choice, --sibling makes it
    for v in ("one", "two"):
        assert zkv("put", "sib:1", v, "--node", ep, "--w", "3").returncode == 0
    listed = zkv("get", "sib:1", "--node", ep, "--r", "3").stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in listed] == ["sibling 1/2", "sibling 2/2"]
    values = [line.split(": ", 1)[1] for line in listed]
    assert sorted(values) == ["one", "two"]
    line = one_line_error(zkv("get", "sib:1", "--raw", "--node", ep))
    assert "2 siblings" in line and "--sibling 1..2" in line, line
    for i, v in enumerate(values, 1):
        got = subprocess.run([ZKV, "get", "sib:1", "--raw", "--sibling", str(i), "--node", ep,
                              "--r", "3"], capture_output=True, timeout=60)
        assert got.returncode == 0 and got.stdout == v.encode(), got
    assert zkv("get", "sib:1", "--sibling", "2", "--node", ep, "--r", "3").stdout.splitlines() \
        == [f"sibling 2/2: {values[1]}"]
    # over the limit: refused before anything is sent (the key stays as it was)
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)
    line = one_line_error(zkv("put", "bin:1", "--value-file", str(huge), "--node", ep))
    assert "more than 16777216 bytes" in line, line
    got = subprocess.run([ZKV, "get", "bin:1", "--raw", "--node", ep], capture_output=True,
                         timeout=60)
    assert got.stdout == blob
    for bad in (["put", "k", "v", "--value-file", str(src)], ["put", "--value-file", str(src)],
                ["put", "k", "--value-file", str(tmp_path / "missing")],
                ["put", "--from", str(src), "k", "--value-file", str(src)],
                ["get", "a", "b", "--raw"], ["get", "sib:1", "--sibling", "3"],
                ["get", "k", "--sibling", "0"]):
        assert one_line_error(zkv(*bad, "--node", ep)), bad


# ---- what `zkv status` prints, from a status document (no node) -----------------------------
def _t(to: str, frm: str, phase: str, done: int, total: int, started: bool = True) -> dict:
    return {"partition": 0, "n": 3, "from": frm, "to": to, "bytes_done": done,
            "bytes_total": total, "phase": phase, "started": started, "stalled": ""}


def test_status_transfer_lines_say_queued_streaming_done_by_direction_and_started_bytes():
    """The line read "transfers: 193 incoming (streaming 171, done 22), 2207958 of 2278790
    bytes": queued partitions (transfer_concurrency at a time) counted as streaming, their
    size 0 made the bytes read ~97% done, and a node sending to others, or only seeing
    others' transfers, called them incoming."""
    from zkv.cli import transfer_lines

    ts = ([_t("n6", "n1", "done", 100, 100)] * 2 + [_t("n6", "n2", "streaming", 30, 90)]
          + [_t("n6", "n1", "streaming", 0, 0, started=False)] * 5
          + [_t("n5", "n6", "streaming", 10, 40)] + [_t("n4", "n2", "verifying", 7, 7)])
    assert transfer_lines(ts, "n6") == [
        "transfers: 8 incoming (5 queued, 1 streaming, 2 done), 230 of 290 bytes of the 3 "
        "partition(s) started",
        "transfers: 1 outgoing (1 streaming), 10 of 40 bytes of the 1 partition(s) started",
        "transfers: 1 between other nodes (1 verifying), 7 of 7 bytes of the 1 partition(s) "
        "started"]
    assert transfer_lines(ts[-2:], "n6")[0].startswith("transfers: 1 outgoing (")
    assert transfer_lines([], "n6") == ["transfers: none"]


def test_status_says_why_not_ready_in_words_without_unknown_parts():
    """`ready: NO (joined False, ring agreed None, disagreeing None, not heard None, transfers
    in None)` printed Python's None for what a starting node does not know yet."""
    from zkv.cli import not_ready_words

    assert not_ready_words({"joined": False, "reason": "starting"}) == "not joined yet"
    assert not_ready_words({"reason": "starting"}) == "starting"
    assert not_ready_words({"joined": True, "ring_agreed": False, "ring": "80f717f91aca",
                            "peers_disagreeing": ["n2"], "peers_not_heard": ["n3", "n4"],
                            "pending_transfers_in": 12}) == (
        "ring differs from n2's; no ring heard yet from n3, n4; 12 partition(s) still to "
        "receive")
    assert "None" not in not_ready_words({"joined": None, "ring_agreed": None})
    # a clock behind its peers' read "reason unknown" (an outside clock-skew run)
    assert not_ready_words({"joined": True, "ring_agreed": True, "pending_transfers_in": 0,
                            "peers_refused_as_ahead_of_clock": ["n1", "n2"],
                            "clock_behind_peers": True}) == (
        "its wall clock is behind its peers' (their records refused as ahead of it: n1, n2): "
        "check NTP")


def test_cluster_wait_needs_the_left_nodes_goodbye_and_asks_other_members(monkeypatch, capsys):
    """`zkv cluster leave --wait` said "complete" while the leaving node was frozen (down,
    its last copies not yet handed over: an outside run, 10-30 s early); it now waits for
    the node's goodbye gossip, gives up with an explanation past LEAVE_SILENT_GIVE_UP, and
    asks another member when the node it asked is restarting."""
    from zkv import cli
    from zkv.errors import Unavailable
    from zkv.node.membership import SHUT_DOWN

    monkeypatch.setattr(cli, "CHANGE_POLL", 0.0)

    def doc(state: str, reason: str) -> dict:
        return {"members": [
            {"id": "n1", "listen": "tcp://a:1", "status": "valid", "state": "up", "reason": ""},
            {"id": "n2", "listen": "tcp://a:2", "status": "valid", "state": "up", "reason": ""},
            {"id": "n3", "listen": "tcp://a:3", "status": "left", "state": state,
             "reason": reason}], "cluster": {}, "transfers": []}

    class FakeClient:
        def __init__(self, answers):
            self.answers, self.asked = answers, []

        def status(self, ep=None):
            self.asked.append(ep)
            what = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            if isinstance(what, Exception):
                raise what
            return what

    frozen = doc("down", "no heartbeat for 9.0s (phi 12.0)")
    c = FakeClient([frozen, frozen, Unavailable("restarting"), doc("down", SHUT_DOWN)])
    cli._wait_change(c, "tcp://a:1", "n3")
    assert c.asked[:3] == ["tcp://a:1", "tcp://a:1", "tcp://a:1"]
    assert c.asked[3] == "tcp://a:2"  # (the node asked did not answer: another member)
    assert "down without saying it stopped" in capsys.readouterr().err
    monkeypatch.setattr(cli, "LEAVE_SILENT_GIVE_UP", 0.0)
    with pytest.raises(cli.ZkvError, match="without saying it stopped: frozen, killed"):
        cli._wait_change(FakeClient([frozen]), "tcp://a:1", "n3")
    # commit --wait (no node named): until no member is leaving and nothing moves
    leaving = doc("up", "")
    leaving["members"][2]["status"] = "leaving"
    c = FakeClient([leaving, leaving, doc("down", SHUT_DOWN)])
    cli._wait_change(c, "tcp://a:1", "")
    assert len(c.asked) == 3 and "n3 leaving" in capsys.readouterr().err


def test_print_plan_says_staged_changes_apply_now_under_auto_commit(capsys):
    """`zkv cluster auto-commit on` with a leave staged listed it under "run commit to
    apply" while the claimant applied it two seconds later (an outside run)."""
    from zkv.cli import print_plan

    info = {"epoch": 3, "claimant": "n1", "auto_commit": True, "members": {"n1": "valid"},
            "owned_after": {"n1": 16}, "staged": [{"action": "leave", "node": "n4",
                                                   "other": ""}]}
    print_plan(info, "auto-commit")
    out = capsys.readouterr().out
    assert "staged, applied now (auto-commit is on):\n  leave n4\n" in out
    print_plan({**info, "auto_commit": False}, "plan")
    assert "staged (run `zkv cluster commit` to apply):\n  leave n4\n" in capsys.readouterr().out


def test_an_unreachable_default_node_says_how_to_name_one(monkeypatch, capsys):
    """From a fresh shell (no --node, no $ZKV_NODE) against a cluster on other ports, every
    command said only "no node reachable: tried tcp://127.0.0.1:7001 (...)": now it says
    that was --node's default and how to name a node. A node named and unreachable is not
    given that advice."""
    from zkv import cli

    dead = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setattr(cli, "DEFAULT_NODE", dead)
    monkeypatch.delenv("ZKV_NODE", raising=False)
    monkeypatch.delenv("ZKV_DEBUG", raising=False)
    assert cli.main(["status", *FAST]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"no node reachable: tried {dead}" in line, line
    assert f"no --node given, so the default {dead} was asked" in line, line
    assert "--node tcp://HOST:PORT (or set ZKV_NODE)" in line, line
    for named in (["--node", dead], [f"--node={dead}"]):
        assert cli.main(["get", "k", *named, *FAST]) == 1
        line = capsys.readouterr().err.strip()
        assert f"tried {dead}" in line and "no --node given" not in line, line
    monkeypatch.setenv("ZKV_NODE", dead)
    assert cli.main(["status", *FAST]) == 1
    assert "no --node given" not in capsys.readouterr().err


def test_a_missing_subcommand_is_named_as_such_and_local_without_a_cluster_says_what_to_do(
        tmp_path):
    """`zkv cluster` said "the following arguments are required: cluster_cmd" (argparse's
    name for it inside zkv); `zkv local add` with no `zkv local up` running showed a raw
    "[Errno 2] No such file or directory: '.../local.json'" and no way forward."""
    for args in ([], ["local"], ["cluster"], ["namespace"]):
        out = zkv(*args)
        line = one_line_error(out)
        assert out.returncode == 2 and "the following arguments are required: COMMAND" in line
        assert "_cmd" not in line and "cmd" not in line.split("required:")[1], line
    line = one_line_error(zkv("local", "add", "--dir", str(tmp_path / "none")))
    assert "no running `zkv local up` in" in line and "Errno" not in line, line
    assert "start one with `zkv local up`, or give the --dir it runs on" in line, line


def test_a_key_that_is_not_utf8_is_named_as_zkv_keys_lists_it(cluster3):
    """`zkv get $'\\xff\\xfe' k2` labelled the first key's lines with its raw bytes on stdout
    and "\\udcff\\udcfe" on stderr; `--raw` said "zkv: \\udcff\\udcfe: not found". A key is
    named as `zkv keys` lists it, \\xNN for each byte that is not printable UTF-8, in both."""
    ep = cluster3.endpoints[0]
    bad, nl = b"\xff\xfe", b"a\nb"
    assert subprocess.run([ZKV, "put", bad, b"v1", "--node", ep], capture_output=True,
                          timeout=60).returncode == 0
    got = subprocess.run([ZKV, "get", bad, nl, "--node", ep], capture_output=True, timeout=60)
    assert got.returncode == 3, got  # (a\nb: not found)
    assert got.stdout.splitlines() == [b"\\xff\\xfe: v1", b"a\\x0ab: (not found)"], got
    assert [line.split(b" context: ")[0] for line in got.stderr.splitlines()] == [
        b"\\xff\\xfe", b"a\\x0ab"], got.stderr
    listed = subprocess.run([ZKV, "keys", "--node", ep], capture_output=True, timeout=60)
    assert b"\\xff\\xfe" in listed.stdout.splitlines(), listed
    got = subprocess.run([ZKV, "get", nl, "--raw", "--node", ep], capture_output=True,
                         timeout=60)
    assert got.returncode == 3 and b"zkv: a\\x0ab: not found" in got.stderr, got
    assert b"\\udc" not in got.stderr


def test_a_bad_zkv_node_is_named_as_the_environments(monkeypatch):
    """$ZKV_NODE=localhost:7001 failed as "argument --node: 'localhost:7001': ..." to an
    operator who had given no --node; $ZKV_NODE=n1 (a member's id) as "--node n1: a member's
    id is looked up at $ZKV_NODE, which must be tcp://HOST:PORT, not 'n1'", exit 1. Both
    now say $ZKV_NODE, exit 2; a --node given wins over it as before."""
    import os

    for bad, says in (("localhost:7001", "'localhost:7001' (from $ZKV_NODE): expected "
                       "tcp://HOST:PORT"),
                      ("tcp://0.0.0.0:7001", "(from $ZKV_NODE): a wildcard address"),
                      ("n1", "$ZKV_NODE='n1': expected tcp://HOST:PORT (a member's id is "
                       "looked up at $ZKV_NODE, so it cannot be one itself)")):
        env = {**os.environ, "ZKV_NODE": bad}
        out = zkv("status", *FAST, env=env)
        line = one_line_error(out)
        assert out.returncode == 2 and says in line and "zkv status: error:" in line, line
        out = zkv("status", "--node", DEAD, *FAST, env=env)
        assert out.returncode == 1 and DEAD in one_line_error(out) and "ZKV_NODE" not in \
            out.stderr, out
