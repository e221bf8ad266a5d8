"""`zkv top` in a real terminal (tmux), as a person sees it: rows refresh in place, Ctrl-C
leaves cleanly (issue 14). The pipe behaviour is in test_ops_cli.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from ops_helpers import ZKV, wait_for

import zkv

pytestmark = pytest.mark.cluster


@pytest.fixture
def tmux():
    tool = shutil.which("tmux")
    if tool is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    sock = f"zkvtop{os.getpid()}"

    def run(*args, **kw):
        return subprocess.run([tool, "-L", sock, *args], capture_output=True, text=True,
                              timeout=30, **kw)
    yield run
    run("kill-server")


def test_top_live_in_tmux_refreshes_in_place_and_quits_on_ctrl_c(cluster3, tmux):
    ep = cluster3.endpoints[0]
    with zkv.Client(cluster3.endpoints, timeout=5.0) as c:
        for i in range(40):
            c.put(b"top:hot", b"%d" % i)
    # the shell ignores SIGINT (else Ctrl-C ends it too and the pane closes); zkv top gets it
    shell_cmd = (f"trap '' INT; (trap - INT; exec {ZKV} top --node {ep} --interval 0.3); "
                 "echo ZKV-TOP-EXIT=$?; sleep 60")
    out = tmux("new-session", "-d", "-x", "220", "-y", "40", "-s", "t",
               "env", "-u", "COLUMNS", "-u", "LINES", "TERM=xterm-256color", "sh", "-c", shell_cmd)
    assert out.returncode == 0, out.stderr

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "t").stdout

    def rows_shown():
        s = screen()
        return s if all(f"node{i}" in s for i in (1, 2, 3)) and "ready" in s else None
    try:
        first = wait_for(rows_shown, what="three rows on screen")
    except AssertionError:
        raise AssertionError(f"screen was:\n{screen()}") from None
    assert "top:hot" in first  # the hottest key of the node that coordinated it
    clock = re.search(r"zkv top\s+(\d\d:\d\d:\d\d)", first)[1]
    # a later frame: new clock, same single header (redrawn in place, not scrolled)
    later = wait_for(lambda: (s := screen()) and (m := re.search(r"zkv top\s+(\d\d:\d\d:\d\d)",
                                                                 s)) and m[1] != clock and s,
                     what="a refresh", timeout=15)
    assert later.count("zkv top ") == 1, later
    rows = re.findall(r"^\W*node[123]\b.*$", later, re.M)
    assert len(rows) == 3 and all(" up " in row for row in rows), later
    tmux("send-keys", "-t", "t", "C-c")
    done = wait_for(lambda: (s := screen()) and "ZKV-TOP-EXIT=" in s and s, what="exit",
                    timeout=15)
    assert "ZKV-TOP-EXIT=0" in done and "Traceback" not in done and "KeyboardInterrupt" \
        not in done, done
    time.sleep(0.1)
