"""Build the Cython core (zkv/_core/*.pyx). Everything else lives in pyproject.toml.

Set ZKV_DEBUG=1 for a debug build: -O0 -g, bounds and wraparound checks on.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

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

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["."],
        nthreads=os.cpu_count() or 1,
    ),
)
