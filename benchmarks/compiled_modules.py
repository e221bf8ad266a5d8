"""Would compiling the node's and client's Python modules with Cython, as they are, pay?

The node's CPU at the peak is ~36% interpreter (RESULTS.md, perf), and the simulator spends
~70% of its time in `zkv/node` and `zkv/client`. Cython compiles a plain .py module to C
without changes (no .pxd: every variable still a Python object), which removes the bytecode
dispatch but not the attribute, dict and call work on Python objects. This measures what
that is worth before anyone adds it to the build: a copy of this checkout (its `zkv/_core`
extensions built in place) with `--modules` compiled in the copy, against this checkout,
alternating per round:

- the simulator's throughput (`tools/simulate.py --load`, each `--clients` kind): client
  operations per CPU second;
- a real 3-node cluster under one AsyncClient with 64 operations in flight (the child of
  `benchmarks/compare_load.py`): node and client CPU per operation.

    python benchmarks/compiled_modules.py [--rounds 3] [--modules zkv.node.core,...]

Nothing is left behind: the copy lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from compare_load import CHILD
from compare_rtt import side_env

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("zkv.node.core,zkv.node.coordinator,zkv.node.replica,zkv.node.quorum,zkv.node.op,"
           "zkv.wire,zkv.client.core")
BUILD = r"""
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup
mods = sys.argv[1].split(",")
exts = [Extension(m, [m.replace(".", "/") + ".py"], extra_compile_args=["-O2"]) for m in mods]
setup(script_args=["build_ext", "--inplace", "-j", "2"],
      ext_modules=cythonize(exts, quiet=True, nthreads=2,
                            compiler_directives={"language_level": 3,
                                                 "annotation_typing": False}))
"""


def _copy(modules: str, dst: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.c", "build")
    for part in ("zkv", "tools", os.path.join("tests", "sim")):
        shutil.copytree(os.path.join(HERE, part), os.path.join(dst, part), ignore=ignore)
    subprocess.run([sys.executable, "-c", BUILD, modules], cwd=dst, check=True,
                   capture_output=True)
    for m in modules.split(","):  # what the copy's processes import is the compiled module
        where = subprocess.run([sys.executable, "-P", "-c", f"import {m}; print({m}.__file__)"],
                               capture_output=True, text=True, env=side_env(dst),
                               cwd=tempfile.gettempdir(), check=True).stdout.strip()
        if not where.startswith(dst) or not where.endswith(".so"):
            raise SystemExit(f"{m}: the copy imports {where}, not its compiled module")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modules", default=MODULES, help="comma-separated modules to compile")
    ap.add_argument("--clients", default="core,sim", help="simulate.py --load --client kinds")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--ops", type=int, default=200, help="per worker, real cluster rounds")
    args = ap.parse_args()
    if not glob.glob(os.path.join(HERE, "zkv", "_core", "*.so")):
        raise SystemExit("build the extensions in place first: python setup.py build_ext "
                         "--inplace")
    with tempfile.TemporaryDirectory() as copy:
        _copy(args.modules, copy)
        sides = [("pure    ", HERE), ("compiled", copy)]
        for rnd in range(args.rounds):
            for name, src in sides[::1 if rnd % 2 else -1]:
                for kind in filter(None, args.clients.split(",")):
                    out = subprocess.run([sys.executable, "tools/simulate.py", "--load",
                                          "--client", kind], cwd=src, capture_output=True,
                                         text=True, check=True, env=side_env(src))
                    print(f"{name}  {out.stdout.strip()}", flush=True)
                out = subprocess.run([sys.executable, "-P", "-c", CHILD, src,
                                      str(args.inflight), str(args.ops)], capture_output=True,
                                     text=True, env=side_env(src), cwd=tempfile.gettempdir(),
                                     check=True)
                print(f"{name}  real cluster: {out.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
