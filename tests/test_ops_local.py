"""`zkv local up` as a newcomer runs it: from a clone after a plain `pip install .`, restarted
right after Ctrl-C, and never importing the clone's uncompiled source tree (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ops_helpers import free_base_port, http, sigint_default, wait_for, zkv

from zkv.errors import ZkvError
from zkv.local import (
    FIRST_PORT,
    NODE_COMMAND,
    LocalCluster,
    ephemeral_low,
    free_ports,
    port_free,
    port_span,
    saved_members,
)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parent.parent


def _time_wait_on(port: int) -> None:
    """Leave a TIME_WAIT connection on 127.0.0.1:port, as a cluster just stopped does: the
    server side (the node) closes first, and nothing listens any more. The listener sets
    SO_REUSEADDR as ZeroMQ's does (Linux lets a bind past a TIME_WAIT only when both did)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen()
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # active close: the server side holds TIME_WAIT
    time.sleep(0.05)
    cli.close()
    srv.close()


def test_time_wait_does_not_count_as_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _time_wait_on(port)
    with socket.socket() as plain:  # what the old check did: fails for a minute
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    assert port_free("127.0.0.1", port)
    with socket.socket() as s:  # a listener still counts as busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not port_free("127.0.0.1", port)


def test_free_ports_are_distinct_bindable_and_out_of_the_ephemeral_range():
    """Ports for nodes come from below the range outgoing connections take their local ports
    from (a CI rehearsal's node lost its port to one), never twice from one process."""
    first, second = free_ports(20), free_ports(20)
    assert len(set(first + second)) == 40
    low = ephemeral_low()
    lo, hi = port_span()  # (or the range $ZKV_LOCAL_PORTS names: a shared host's rule)
    assert os.environ.get("ZKV_LOCAL_PORTS") or (lo, hi) == (FIRST_PORT, low)
    assert all(lo <= p < hi for p in first + second), (lo, hi, first + second)
    for p in first:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_free_ports_stay_in_the_range_zkv_local_ports_names(monkeypatch):
    """$ZKV_LOCAL_PORTS (how the suite's parallel workers keep apart) bounds every pick; a
    malformed one, or one with too few free ports, is a clear error, never a port outside."""
    lo = port_span()[0]  # (a window of the ports this run may take: a shared host's rule)
    hi = min(lo + 500, port_span()[1])
    monkeypatch.setenv("ZKV_LOCAL_PORTS", f"{lo}-{hi}")
    got = free_ports(40)
    assert len(set(got)) == 40 and all(lo <= p < hi for p in got), got
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        monkeypatch.setenv("ZKV_LOCAL_PORTS", f"{busy}-{busy + 1}")
        with pytest.raises(ZkvError, match="fewer than 1 free ports"):
            free_ports(1)
    for bad in ("20000", "x-y", "20500-20000", "80-90", "60000-70000"):
        monkeypatch.setenv("ZKV_LOCAL_PORTS", bad)
        with pytest.raises(ZkvError, match="ZKV_LOCAL_PORTS"):
            free_ports(1)


def test_a_node_that_exits_while_the_cluster_starts_is_named_with_its_reason(tmp_path,
                                                                            monkeypatch):
    """A node whose port was taken between the check and its bind (an outgoing connection's
    local port, say) exits "Address already in use": the start says so, naming that node and
    its log, not "did not converge within 30s (node1 sees up ['node1'])" at the end of the
    timeout (the status loop stopped at node1, which never sees node2, before node2's exit
    was looked at: two loaded test runs read only that)."""
    base = free_base_port(2)
    cl = LocalCluster(2, str(tmp_path / "c"), base, extra_args=["--gossip-interval", "0.1"])
    monkeypatch.setattr(cl, "_check_ports_free", lambda: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))  # node2's client port
        taken.listen()
        try:
            with pytest.raises(ZkvError) as err:
                cl.start(timeout=20)
        finally:
            cl.stop()
    said = str(err.value)
    assert "node2 exited with code 1" in said and "Address already in use" in said, said


def test_restart_right_after_stop_reuses_the_ports(tmp_path):
    base = free_base_port()
    first = LocalCluster(3, str(tmp_path / "c"), base, extra_args=["--gossip-interval", "0.1"])
    first.start()
    try:
        import zkv as zkvpkg
        with zkvpkg.Client(first.endpoints, timeout=5.0) as c:
            for i in range(30):
                c.put(b"k%d" % i, b"v")
    finally:
        first.stop()
    _time_wait_on(base + 1)  # whatever the kernel kept, make sure one port is in TIME_WAIT
    again = LocalCluster(3, str(tmp_path / "c"), base, extra_args=["--gossip-interval", "0.1"])
    again.start()  # the old check raised "address(es) in use" here
    try:
        import zkv as zkvpkg
        with zkvpkg.Client(again.endpoints, timeout=5.0) as c:
            assert c.get(b"k7", r=2).values == [b"v"]
    finally:
        again.stop()


def test_nodes_never_import_the_current_directory(tmp_path):
    """A `zkv/` package in the working directory (a clone) must not shadow the installed one."""
    fake = tmp_path / "zkv"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the clone shadowed the install')\n")
    assert "-P" in NODE_COMMAND
    out = subprocess.run([sys.executable, "-c", (
        "from zkv.local import LocalCluster\n"
        "c = LocalCluster(1, 'data', None)\n"
        "c.start(timeout=30)\n"
        "c.stop()\n"
        "print('served')\n")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONSAFEPATH="1"))  # -c would import ./zkv too, like -m did
    assert out.returncode == 0 and "served" in out.stdout, out.stderr[-2000:]


def _copy_repo(dst: Path) -> None:
    """The repository's files as a fresh clone has them: no builds, caches or data."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                               check=True, timeout=30).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                 and not {".git", "build", "__pycache__", "zkv-data"} & set(p.parts)]
    for f in filter(None, files):
        src = REPO / f
        if src.suffix in (".so", ".c") and "_core" in src.parts or not src.is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)


@pytest.mark.timeout(900)
def test_quick_start_from_a_clone_after_plain_pip_install(tmp_path):
    """README: `pip install . && zkv local up`, in the repository root, in a fresh venv."""
    clone = tmp_path / "clone"
    _copy_repo(clone)
    assert not list((clone / "zkv" / "_core").glob("*.so"))  # uncompiled, as cloned
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_ = venv / "bin"
    pip = subprocess.run([bin_ / "python", "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", "."], cwd=clone, capture_output=True,
                         text=True, timeout=800)
    if pip.returncode != 0 and ("NewConnectionError" in pip.stderr
                                or "No matching distribution" in pip.stderr):
        pytest.skip(f"no package index reachable: {pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr[-3000:]
    base = free_base_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_}:{env.get('PATH', '')}"
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([bin_ / "zkv", "local", "up", "--base-port", str(base)], cwd=clone,
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=env, start_new_session=True, preexec_fn=sigint_default)
    try:
        wait_for(lambda: "Serving until Ctrl-C" in (tmp_path / "up.log").read_text()
                 or up.poll() is not None, timeout=180, what="the demo to finish")
        text = (tmp_path / "up.log").read_text()
        assert up.poll() is None, text
        assert "demo done." in text and "ImportError" not in text, text
        # the person's next commands, from the same directory
        put = subprocess.run([bin_ / "zkv", "put", "hello", "world", "--node",
                              f"tcp://127.0.0.1:{base}"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=60)
        get = subprocess.run([bin_ / "zkv", "get", "hello", "--node",
                              f"tcp://127.0.0.1:{base + 2}"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=60)
        assert put.returncode == 0 and get.stdout.strip() == "world", (put, get)
        # Python started here imports the uncompiled tree, not the installed package: say so
        shadow = subprocess.run([bin_ / "python", "-c", "import zkv; zkv.Client"], cwd=clone,
                                env=env, capture_output=True, text=True, timeout=60)
        assert shadow.returncode == 1 and "compiled core is not built" in shadow.stderr \
            and "run Python outside this directory" in shadow.stderr, shadow.stderr[-2000:]
        ready = http(f"http://127.0.0.1:{base + 2100}/readyz")  # zkv local up waited for it
        assert ready[0] == 200, ready
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0
        text = (tmp_path / "up.log").read_text()
        assert "all nodes stopped" in text and "Traceback" not in text, text
        for i in range(3):  # every node is gone: their ports are free again
            assert port_free("127.0.0.1", base + i)
        pids = [int((clone / "zkv-data" / f"node{i}.pid").read_text()) for i in (1, 2, 3)]
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        # and again at once, as a person would after Ctrl-C (TIME_WAIT must not block it)
        again = subprocess.run([bin_ / "zkv", "local", "up", "--no-demo", "--base-port",
                                str(base), "--exit-after-demo"], cwd=clone, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "node(s) up" in again.stdout, again
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        log.close()


def _sigint_ignored() -> None:
    """preexec_fn: SIGINT ignored, as a shell starts a background job (`zkv local up &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _local_up(tmp_path, base: int, *extra: str, preexec=sigint_default) -> subprocess.Popen:
    """`zkv local up --no-demo` (the CLI module of this checkout) on tmp_path/d, its output
    read through the returned process's stdout."""
    return subprocess.Popen([sys.executable, "-P", "-m", "zkv.cli", "local", "up", "--no-demo",
                             *extra, "--base-port", str(base), "--dir", str(tmp_path / "d")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, start_new_session=True, preexec_fn=preexec)


def _until_serving(p: subprocess.Popen) -> list[str]:
    """The lines `zkv local up` printed up to its "Serving until Ctrl-C"."""
    seen = []
    for line in p.stdout:
        seen.append(line)
        if "Serving until Ctrl-C" in line:
            break
    return seen


def test_zkv_local_up_ctrl_c_then_up_again(tmp_path):
    """The CLI itself (editable install): Ctrl-C, then `zkv local up` at once succeeds. Its
    "Serving" line comes once every partition counts for reads: `zkv keys --r 2` (each
    partition listed by two owners) works at once. The second time it starts as a shell's
    background job, with SIGINT ignored, and `kill -INT` stops it all the same. A second
    `zkv local up` on its dir is refused and leaves it serving."""
    base = free_base_port()
    node = f"tcp://127.0.0.1:{base}"
    for round_ in range(2):
        p = _local_up(tmp_path, base, preexec=sigint_default if round_ == 0 else _sigint_ignored)
        try:
            seen = _until_serving(p)
            assert any("node(s) up" in x for x in seen), (round_, "".join(seen))
            listed = zkv("keys", "--r", "2", "--node", node)
            assert listed.returncode == 0, (round_, listed.stderr)
            assert listed.stdout.split() == ([] if round_ == 0 else ["r"]), listed.stdout
            assert zkv("put", "r", str(round_), "--node", node).returncode == 0
            if round_ == 0:  # a second `zkv local up` on its dir stopped its nodes as it failed
                for other in (base, free_base_port()):
                    again = _local_up(tmp_path, other)
                    said = again.communicate(timeout=60)[0]
                    assert again.returncode == 1 and "already runs the cluster" in said, said
                    assert f"(pid {p.pid})" in said, said
                assert zkv("get", "r", "--r", "3", "--node", node).stdout.strip() == "0"
            p.send_signal(signal.SIGINT)
            rest = p.communicate(timeout=60)[0]  # (TimeoutExpired: SIGINT did not stop it)
            assert p.returncode == 0 and "all nodes stopped" in rest, rest
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def test_local_up_again_leaves_a_member_it_never_started_alone(tmp_path):
    """A member an operator started on their own (`zkv-node --id node4 ... --seed` of the
    `zkv local up` cluster, its data dir elsewhere) is no node of the local dir: `zkv local
    up` run again started a second node4 on DIR/node4, which the cluster refused ("already
    in the cluster ... and up") and the whole start failed. It now starts its own three,
    says once that node4 is left alone, and node4 serves on, untouched."""
    base = free_base_port()
    node = f"tcp://127.0.0.1:{base}"
    listen, gossip = free_ports(2)
    p = _local_up(tmp_path, base)
    own = None
    try:
        _until_serving(p)
        own = subprocess.Popen([sys.executable, "-P", "-m", "zkv.node", "--id", "node4",
                                "--listen", f"tcp://127.0.0.1:{listen}",
                                "--gossip", f"tcp://127.0.0.1:{gossip}",
                                "--data-dir", str(tmp_path / "mine" / "node4"),
                                "--seed", node], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

        def node4_up() -> bool:
            said = zkv("status", "--json", "--node", node)
            return said.returncode == 0 and '"node4"' in said.stdout and json.loads(
                said.stdout)["members"][-1]["state"] == "up"

        wait_for(node4_up, 60, "node4 up in the local cluster")
        # and in the cluster state the local nodes saved, which the next `zkv local up` reads
        # (node4 is up in the gossip table a while before the claimant stages and commits its
        # join: a busy host stopped the nodes inside that while, and nothing said node4)
        wait_for(lambda: "node4" in saved_members(str(tmp_path / "d"))[0], 60,
                 "node4 in the cluster state saved under DIR")
        p.send_signal(signal.SIGINT)
        assert "all nodes stopped" in p.communicate(timeout=60)[0]
        p = _local_up(tmp_path, base)
        seen = "".join(_until_serving(p))
        assert "3 node(s) up" in seen and "cannot start" not in seen, seen
        assert seen.count("node4") == 1 and "node4 also belong(s) to the cluster" in seen, seen
        assert "left alone" in seen and not (tmp_path / "d" / "node4").exists(), seen
        assert own.poll() is None  # (still its operator's, serving)
        got = zkv("status", "--json", "--node", node)
        states = {m["id"]: m["state"] for m in json.loads(got.stdout)["members"]}
        assert states == dict.fromkeys(["node1", "node2", "node3", "node4"], "up"), states
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[0]
        assert p.returncode == 0 and own.poll() is None, rest  # (not stopped with them)
    finally:
        for proc in (p, own):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_zkv_local_up_of_one_node_suggests_commands_that_work(tmp_path):
    """`zkv local up --nodes 1` (an N=3 cluster of one node, for the nodes it may get)
    suggested `zkv put hello world`, which failed "1 of the required 2 replicas" (a review):
    it suggests --w 1 and --r 1, and they work."""
    base = free_base_port(1)
    p = _local_up(tmp_path, base, "--nodes", "1")
    try:
        seen = _until_serving(p)
        said = seen[-1].split("Try:")[1]
        cmds = [c.split() for c in said.split("   ") if c.strip()]
        put = next(c for c in cmds if c[1] == "put")
        get = next(c for c in cmds if c[1] == "get")
        assert "--w" in put and "--r" in get, said
        assert zkv(*put[1:]).returncode == 0, "".join(seen)
        got = zkv(*get[1:])
        assert got.returncode == 0 and got.stdout.strip() == "world", got
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_a_node_that_exits_at_start_is_explained_by_its_own_run(tmp_path):
    """`zkv local restart` on a node that refused to start quoted a line its log got in the
    run before (an outside run). Only what this run logged explains its exit."""
    cl = LocalCluster(1, str(tmp_path / "c"), base_port=None, extra_args=["--ring-size", "3"])
    os.makedirs(tmp_path / "c")
    (tmp_path / "c" / "node1.log").write_text(
        "2026-12-07 01:42:40,711 node1 WARNING zkv.storage: taking over stale lock\n")
    try:
        with pytest.raises(ZkvError) as got:
            cl.start()
    finally:
        cl.stop()
    said = str(got.value)
    assert "node1 exited with code 2" in said and "ring_size 3" in said, said
    assert "stale lock" not in said, said


def test_a_pid_file_naming_another_clusters_node_is_not_taken_for_ours(tmp_path):
    """Clusters in other dirs name their nodes node1.. too: a stale pid file that names
    another cluster's node1 (pids wrap) made `zkv local` and tools/faults.py take it for
    theirs, to signal it (an outside run). The node's data dir must be theirs too. Nothing
    here starts a node: the pid is this test's own process, made to look like another
    cluster's node1 by its command line."""
    import importlib.util

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "zkv.node",
                              "--id", "node1", "--data-dir", str(tmp_path / "a" / "node1")])
    try:
        deadline = time.monotonic() + 10  # (its command line, once it has one: a CI run's
        while time.monotonic() < deadline:  # check read none)
            with open(f"/proc/{other.pid}/cmdline", "rb") as fh:
                if b"--data-dir" in fh.read():
                    break
            time.sleep(0.05)
        a = LocalCluster(1, str(tmp_path / "a"), base_port=None)
        b = LocalCluster(1, str(tmp_path / "b"), base_port=None)
        for c in (a, b):
            os.makedirs(c.dir, exist_ok=True)
            Path(c.pid_path(c.nodes[0])).write_text(f"{other.pid}\n")
        assert a.running_pid(a.nodes[0]) == other.pid
        assert b.running_pid(b.nodes[0]) == 0
        spec = importlib.util.spec_from_file_location(
            "faults", Path(__file__).parent.parent / "tools" / "faults.py")
        faults = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(faults)
        assert faults.nodes(a.dir) == {"node1": other.pid}
        assert faults.nodes(b.dir) == {}
    finally:
        other.kill()
        other.wait()
