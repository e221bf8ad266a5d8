"""Build the Cython core (zkv/_core/*.pyx). Everything else lives in pyproject.toml.

Set ZKV_DEBUG=1 for a debug build: -O0 -g, bounds and wraparound checks on.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("ZKV_DEBUG", "") not in ("", "0")

cflags = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-strict-aliasing"]
directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        path[:-4].replace(os.sep, "."),
        [path],
        extra_compile_args=cflags,
        include_dirs=["zkv/_core"],
    )
    for path in sorted(glob.glob(os.path.join("zkv", "_core", "*.pyx")))
]


class ParallelBuildExt(build_ext):
    """Compiles the extensions' C side by side (`build_ext -j`, one per core unless told):
    serially the C compiler alone took ~60 s of a 2-core machine's `pip install .`, -j 2 ~34 s
    (the quick start, CI's install and the test that installs from a clone each pay it)."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["."],
        nthreads=os.cpu_count() or 1,
    ),
)
