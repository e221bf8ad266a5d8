"""zkv's Cython core: pure algorithms over bytes and ints, free of I/O and clocks, and the
transport's per-frame socket calls (zsock, the one module here that does I/O).

- ring:   fixed-partition consistent-hash ring (murmur3 -> partition -> preference list)
- dvv:    dotted version vector sets (causality, siblings, contexts)
- merkle: per-partition hash trees for anti-entropy
- keydir: the storage engine's in-memory C hash table
- record: the storage engine's on-disk record codec
- zsock:  non-blocking receive/send/ZMQ_EVENTS on pyzmq sockets, straight into libzmq

Each module ships .pxd (for ``cimport zkv._core.X``), .pyx and .pyi.
"""

import importlib.machinery as _machinery
import os as _os

_here = _os.path.dirname(__file__)
if not any(name.endswith(suffix) for name in _os.listdir(_here)
           for suffix in _machinery.EXTENSION_SUFFIXES):
    # (a source checkout imported instead of the installed package: `python` started in the
    # clone's root puts it first on sys.path, and nothing is compiled there)
    raise ImportError(
        f"zkv's compiled core is not built in {_here}: this is a source tree without its C "
        "extensions. If zkv is installed (pip install .), run Python outside this directory "
        "(the current directory comes first on sys.path); to work in the tree, build it in "
        "place: pip install -e . (or python setup.py build_ext --inplace)")
