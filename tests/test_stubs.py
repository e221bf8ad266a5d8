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
