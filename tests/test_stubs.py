"""The `.pyi` stubs of zkv._core say what the compiled modules really are (mypy's stubtest),
apart from the Cython artifacts listed, each with its reason, in stubtest_allowlist.txt."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ["zkv._core.ring", "zkv._core.merkle", "zkv._core.keydir", "zkv._core.record",
           "zkv._core.dvv"]


def test_core_stubs_match_the_compiled_modules():
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", *MODULES, "--allowlist",
                          os.path.join(HERE, "stubtest_allowlist.txt")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_an_application_using_zkv_client_is_type_checked(tmp_path):
    """`zkv.Client` (the README's style) was `Any` to a type checker: the package's
    `__getattr__` loads it lazily, so `mypy --strict` passed put("k", ...) and r=2.0. The
    package names it for type checkers too."""
    app = tmp_path / "app.py"
    app.write_text("import zkv\n\n\n"
                   "def f() -> None:\n"
                   "    with zkv.Client(['tcp://127.0.0.1:7001']) as c:\n"
                   "        c.put('k', b'v')\n"
                   "        res: zkv.GetResult = c.get(b'k', r=2.0)\n"
                   "        print(res.values)\n")
    root = os.path.dirname(HERE)
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--follow-imports=silent", "app.py"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MYPYPATH": root}, cwd=tmp_path)
    errors = [line for line in out.stdout.splitlines() if line.startswith("app.py:")]
    assert any('"put" of "Client"' in e and '"str"' in e for e in errors), out.stdout
    assert any('"r" to "get" of "Client"' in e and '"float"' in e for e in errors), out.stdout
    assert len(errors) == 2, out.stdout
