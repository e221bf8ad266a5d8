"""The embedding path: a separately built Cython module cimports zkv._core.ring and calls its
C API (c_partition, c_preflist, c_walk); its answers must equal the Python API's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zkv._core.ring import Ring

REPO = Path(__file__).resolve().parents[1]

PYX = """
from libc.stdint cimport uint16_t, uint32_t
from zkv._core.ring cimport Ring, partition_of_hash
from zkv._core.murmur3 cimport zkv_hash64

def parts(Ring ring, list keys):
    cdef bytes k
    return [ring.c_partition(k, len(k)) for k in keys]

def parts_inline(Ring ring, list keys):
    cdef bytes k
    return [partition_of_hash(zkv_hash64(<const char*>k, len(k)), ring.q_bits) for k in keys]

def preflist(Ring ring, uint32_t p):
    cdef const uint16_t* row = ring.c_preflist(p)
    return tuple([ring.members[row[i]] for i in range(ring.plen)])

def walk(Ring ring, uint32_t p):
    cdef uint16_t buf[64]
    cdef uint32_t got = ring.c_walk(p, buf, 64)
    return tuple([ring.members[buf[i]] for i in range(got)])
"""

SETUP = """
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(
    name="ring_embed",
    ext_modules=cythonize(
        [Extension("ring_embed", ["ring_embed.pyx"], include_dirs=[{core!r}])],
        include_path=[{repo!r}],
        compiler_directives={{"language_level": 3}},
        quiet=True,
    ),
    script_args=["build_ext", "--inplace", "-q"],
)
"""


@pytest.mark.timeout(120)
def test_cimport_ring_from_another_extension(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    (tmp_path / "ring_embed.pyx").write_text(textwrap.dedent(PYX))
    (tmp_path / "setup.py").write_text(
        SETUP.format(core=str(REPO / "zkv" / "_core"), repo=str(REPO))
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    build = subprocess.run(
        [sys.executable, "setup.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=110,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    sys.path.insert(0, str(tmp_path))
    try:
        import ring_embed  # noqa: PLC0415
    finally:
        sys.path.remove(str(tmp_path))

    ring = Ring([(f"n{i}", f"r{i % 3}") for i in range(7)], q=64, n=3)
    keys = [b"", b"a", b"cart:42", bytes(range(40))] + [b"k%d" % i for i in range(200)]
    expected = [ring.partition(k) for k in keys]
    assert ring_embed.parts(ring, keys) == expected
    assert ring_embed.parts_inline(ring, keys) == expected
    for p in range(ring.q):
        assert ring_embed.preflist(ring, p) == ring.preflist(p)
        assert ring_embed.walk(ring, p) == ring.walk(p)
